"""``PublisherUser``: numbered, timestamped publishes at a fixed rate, to any server.

Each publish is the text ``{"t": <wall-clock s>, "s": <sequence>, "w": <publisher>,
"r": <attempt>}``, handed to the publish target: an ``HttpPublish`` (its templates
filled with the text as ``{data}``; a 2xx answer confirms), a ``CommandPublish``
(a command per event; exit status 0 confirms), or sse_fast's ``POST /publish`` (the
answer's ``ids`` confirm). One not confirmed is sent again with the same ``s`` and
``r`` + 1, so a subscriber tells a resend apart from a duplicate and the failure is
a publish failure, never a lost event.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any, ClassVar

import orjson
from locust import FastHttpUser, task

from ..loadtarget import CommandPublish, HttpPublish
from . import _options

__all__ = ["PUBLISHED_THROUGH", "UNANSWERED", "PublisherUser"]

_publisher_numbers = itertools.count(1)
#: at a publisher's stop, a row whose length is its last confirmed sequence number
PUBLISHED_THROUGH = "published through"
#: one row per publish sent whose answer was lost (it may have been published)
UNANSWERED = "publish unanswered"


class PublisherUser(FastHttpUser):
    """Publishes numbered, timestamped events at ``--publish-rate`` per second.

    Class attributes (None: the command-line options decide): ``publish`` (an
    ``HttpPublish`` or ``CommandPublish``: ``--sse-publish-url`` and its method, body
    and headers, or ``--sse-publish-command``; by default sse_fast's ``POST /publish``),
    ``topic`` (``--sse-publish-topic``, else ``--sse-topic``), ``publish_name`` (the
    row's name). Override ``send``
    to publish some other way.
    """

    fixed_count = 1
    publish: ClassVar[HttpPublish | CommandPublish | None] = None
    topic: str | None = None
    publish_name: ClassVar[str | None] = None

    def __init__(self, environment: Any) -> None:
        target = type(self).publish
        url = target.url if isinstance(target, HttpPublish) else None
        url = url or _options.option(environment, "sse_publish_url", None)
        if self.host is None and environment.host is None:
            self.host = _options.origin(url)  # a full publish URL needs no --host
        super().__init__(environment)

    def on_start(self) -> None:
        """Read the options (``--sse-topic``, ``--publish-rate``: ``ValueError`` unless
        positive, the publish target) and name this publisher."""
        env = self.environment
        if self.topic is None:
            self.topic = _options.option(env, "sse_publish_topic", None) or _options.option(
                env, "sse_topic", "bench"
            )
        rate = float(_options.option(env, "publish_rate", 1.0))
        if rate <= 0:
            raise ValueError("--publish-rate must be positive (publishes per second)")
        self.period = 1.0 / rate
        self.target = _options.publish(type(self), env, self.host)
        self.request_type, self.row = _options.publish_row(type(self), env)
        # sse_fast's own API confirms a publish with the ids it gave the events
        self.confirm_ids = type(self).publish is None and not (
            _options.option(env, "sse_publish_command", None)
            or _options.option(env, "sse_publish_url", None)
        )
        worker = getattr(env.runner, "worker_index", 0)
        self.w = f"{worker}-{os.getpid()}-{next(_publisher_numbers)}"
        self.s = 0  # last confirmed sequence number
        self.r = 0  # attempts so far for sequence self.s + 1
        self.next_at = time.monotonic()

    def on_stop(self) -> None:
        """Report the last sequence number confirmed (``PUBLISHED_THROUGH``)."""
        self._row(PUBLISHED_THROUGH, length=self.s)

    def _row(self, name: str, length: int = 0) -> None:
        self.environment.events.request.fire(
            request_type="SSE",
            name=name,
            response_time=0,
            response_length=length,
            exception=None,
            context={},
        )

    def wait_time(self) -> float:
        """Seconds until the next publish is due, keeping ``--publish-rate`` (no burst after
        falling behind)."""
        self.next_at += self.period
        now = time.monotonic()
        if self.next_at < now - self.period:
            self.next_at = now  # fell behind (slow publishes): no burst to catch up
        return max(0.0, self.next_at - now)

    @task
    def publish_next(self) -> None:
        """Publish the next numbered event (``t`` time, ``s`` sequence number, ``w`` publisher,
        ``r`` attempt); one not confirmed is sent again with the same number."""
        s = self.s + 1
        data = orjson.dumps({"t": time.time(), "s": s, "w": self.w, "r": self.r}).decode()
        if self.send(data):
            self.s = s
            self.r = 0
        else:
            self.r += 1  # unconfirmed: send the same s again next time (r tells a resend apart)

    def send(self, data: str) -> bool:
        """Publish the text ``data`` once, report it as a row, and say whether it was
        confirmed."""
        target = self.target
        if isinstance(target, CommandPublish):
            return self._run(target, data)
        method, path, headers, body = target.request(self.topic or "", data)
        address = target.address
        url = f"{address.scheme}://{address.host}:{address.port}{path}"
        with self.client.request(
            method,
            url,
            name=self.row,
            data=body,  # type: ignore[arg-type]  # bytes are sent as they are
            headers=headers,
            catch_response=True,
        ) as response:
            status = response.status_code
            ok = bool(200 <= status < 300)
            if ok and self.confirm_ids:
                try:
                    ok = bool(response.json().get("ids"))
                except (ValueError, AttributeError, TypeError):
                    ok = False
            if ok:
                response.success()
            else:
                error = getattr(response, "error", None)
                why = (response.text or "") if status else repr(error)
                response.failure(f"publish not confirmed: {status} {why:.200}")
                if not status and not isinstance(error, ConnectionRefusedError):
                    self._row(UNANSWERED)  # sent, its answer lost: it may have been published
        return ok

    def _run(self, target: CommandPublish, data: str) -> bool:
        # locust patches subprocess for gevent: the command's wait does not block the hub
        started = time.perf_counter()
        ok, why = target.run(self.topic or "", data)
        self.environment.events.request.fire(
            request_type=self.request_type,
            name=self.row,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0,
            exception=None if ok else RuntimeError(f"publish not confirmed: {why}"),
            context={},
        )
        return ok
