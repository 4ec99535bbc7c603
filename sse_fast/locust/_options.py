"""The command-line options of the locust users, what they build, and the thresholds.

Every option is also an environment variable (in brackets in ``--help``) and, for
Python users, a class attribute of the user class that wins over the option. The
names follow ``sse-fast loadgen``'s where the concept is the same, with ``--sse-``
in front so that none clashes with locust's own (``--host``, ``-u``, ``-t`` ...).

The builders here turn (class attributes, options) into the objects of
``sse_fast.loadtarget``: a ``Subscription``, ``Stamps``, an ``HttpPublish`` or a
``CommandPublish``. They run per class, not per user, so the master (which runs no
users) names the same rows as its workers.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..loadtarget import (
    UNITS,
    CommandPublish,
    HttpPublish,
    Stamps,
    Subscription,
    TemplateError,
    parse_header,
    sse_fast_publish,
)

#: the reconnection delay before a stream sends ``retry:`` (ms; what browsers use)
DEFAULT_RETRY_MS = 3000
#: sse_fast's subscribe request, the default
SSE_FAST_STREAM = "/events?topic={topic}"
#: each worker's user numbers ``{user}`` start at its index times this
USERS_PER_WORKER = 1_000_000


#: (option, environment variable, default, what it limits)
THRESHOLDS = (
    ("--sse-max-lost", "SSE_MAX_LOST", "0", "lost events (and refused resumes)"),
    ("--sse-max-duplicates", "SSE_MAX_DUPLICATES", "0", "duplicate events"),
    ("--sse-max-publish-failures", "SSE_MAX_PUBLISH_FAILURES", "10%", "failed publishes"),
    ("--sse-max-refusals", "SSE_MAX_REFUSALS", "5%", "refused or failed subscribe requests"),
    ("--sse-max-stream-errors", "SSE_MAX_STREAM_ERRORS", "5%", "streams that broke"),
)

_FLAG = {"action": "store_true", "default": False}
_LIST = {"action": "append", "default": None}
_PLACES = "{topic}, {topic_raw}, {topic_json}"
#: every option: (flag, environment variable, argparse keywords)
OPTIONS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("--sse-topic", "SSE_TOPIC", {"default": "bench", "help": "topic to subscribe and publish to "
     "(to subscribe, sse_fast takes a topic pattern too: 'user/*', with --sse-publish-topic)"}),
    ("--sse-publish-topic", "SSE_PUBLISH_TOPIC", {"default": None, "help": "topic the "
     "publisher publishes to (default: --sse-topic), e.g. 'user/1' under --sse-topic 'user/*'"}),
    ("--sse-url", "SSE_URL", {"default": None, "help": "the stream's URL, or its path under "
     f"--host; placeholders {_PLACES}, {{user}} (default: sse_fast's /events?topic={{topic}})"}),
    ("--sse-header", "SSE_HEADER", {**_LIST, "help": "'Name: value' sent with each subscribe "
     "request (repeatable; placeholders allowed, e.g. 'Authorization: Bearer user-{user}')"}),
    ("--sse-event", "SSE_EVENT", {**_LIST, "help": "event name that counts (repeatable; "
     "default: every event; one without 'event:' is 'message')"}),
    ("--sse-time-field", "SSE_TIME_FIELD", {"default": "t", "help": "dotted JSON path of the "
     "publish time in the event's data ('' for none)"}),
    ("--sse-time-unit", "SSE_TIME_UNIT", {"default": "s", "choices": sorted(UNITS),
     "help": "unit of the publish time"}),
    ("--sse-seq-field", "SSE_SEQ_FIELD", {"default": "s", "help": "dotted JSON path of the "
     "sequence number ('' for none)"}),
    ("--sse-source-field", "SSE_SOURCE_FIELD", {"default": "w", "help": "dotted JSON path of "
     "the publisher: one sequence per publisher ('' for none)"}),
    ("--sse-seq-per-stream", "SSE_SEQ_PER_STREAM", {**_FLAG, "help": "the sequence starts "
     "again on each connection: count gaps and repeats within a stream only"}),
    ("--sse-read-timeout", "SSE_READ_TIMEOUT", {"type": float, "default": 60.0,
     "help": "seconds without data before a stream counts as dead"}),
    ("--sse-retry", "SSE_RETRY", {"type": float, "default": DEFAULT_RETRY_MS / 1000, "help":
     "seconds to wait before reconnecting until the stream sends 'retry:' (browsers: 3)"}),
    ("--sse-reconnect-every", "SSE_RECONNECT_EVERY", {"type": float, "default": 0.0,
     "help": "end each stream after this many seconds, then reconnect as after a drop (0: never)"}),
    ("--sse-compressed", "SSE_COMPRESSED", {"default": "", "help": "ask for compressed "
     "streams with this Accept-Encoding (e.g. 'zstd' or 'gzip, deflate, zstd') and decode "
     "them; the 'stream end' row's size is then the bytes on the wire"}),
    ("--sse-no-resume", "SSE_NO_RESUME", {**_FLAG, "help": "reconnect without Last-Event-ID, "
     "as a new page would"}),
    ("--publish-rate", "SSE_PUBLISH_RATE", {"type": float, "default": 1.0,
     "help": "publishes per second per PublisherUser"}),
    ("--publishers", "SSE_PUBLISHERS", {"type": int, "default": 1,
     "help": "number of PublisherUser users (fixed_count; 0: none)"}),
    ("--sse-publish-url", "SSE_PUBLISH_URL", {"default": None, "help": "URL (or path under "
     f"--host) to publish to; placeholders {_PLACES}, {{data}}, {{data_json}}, {{data_url}} "
     "(default: sse_fast's POST /publish)"}),
    ("--sse-publish-method", "SSE_PUBLISH_METHOD", {"default": "POST",
     "help": "HTTP method of a publish"}),
    ("--sse-publish-body", "SSE_PUBLISH_BODY", {"default": "{data}", "help": "body template "
     "of a publish, e.g. '{\"body\": {data}}' (other braces are literal)"}),
    ("--sse-publish-header", "SSE_PUBLISH_HEADER", {**_LIST, "help": "'Name: value' sent with "
     "each publish (repeatable; placeholders allowed)"}),
    ("--sse-publish-command", "SSE_PUBLISH_COMMAND", {"default": None, "help": "publish by "
     "running this command per event (no shell; placeholders in its words; exit 0: done)"}),
    *(
        (flag, env, {"default": default, "help": f"most {what} a passing run may have: a "
         "count, or a share of the attempts (e.g. 5%%)"})
        for flag, env, default, what in THRESHOLDS
    ),
    ("--sse-min-events", "SSE_MIN_EVENTS", {"type": int, "default": 1, "help": "fewest "
     "counted events a passing run must have (none counted: nothing was measured)"}),
)  # fmt: skip


def add_arguments(parser: Any) -> None:
    """Add the users' options to locust's parser (``init_command_line_parser``)."""
    for flag, env, keywords in OPTIONS:
        parser.add_argument(flag, env_var=env, **keywords)


def option(environment: Any, name: str, default: Any) -> Any:
    """The parsed option ``name`` (``sse_url``), or ``default`` when it is not set."""
    options = getattr(environment, "parsed_options", None)
    value = getattr(options, name, None) if options is not None else None
    return default if value is None else value


@dataclass(frozen=True)
class Threshold:
    """A limit on a count: at most ``count`` of them, or at most ``ratio`` of the attempts."""

    option: str
    count: int | None = None
    ratio: float | None = None

    @classmethod
    def parse(cls, option: str, text: Any) -> Threshold:
        """``"3"`` (a count) or ``"2.5%"`` (a share of the attempts); ``ValueError`` otherwise."""
        value = str(text).strip()
        match = re.fullmatch(r"(\d+(?:\.\d+)?)%", value)
        if match:
            return cls(option, ratio=float(match.group(1)) / 100)
        if value.isdigit():
            return cls(option, count=int(value))
        raise ValueError(f"{option} {value!r}: give a count (e.g. 0) or a share of them (e.g. 5%)")

    def exceeded(self, found: int, attempts: int) -> bool:
        """Whether ``found`` out of ``attempts`` is over the limit."""
        if self.count is not None:
            return found > self.count
        return found > (self.ratio or 0.0) * attempts

    def __str__(self) -> str:
        return str(self.count) if self.count is not None else f"{(self.ratio or 0) * 100:g}%"


def thresholds(environment: Any) -> dict[str, Threshold]:
    """The thresholds of this run by option name (``--sse-max-lost`` ...)."""
    out = {}
    for name, _env, default, _what in THRESHOLDS:
        value = option(environment, name[2:].replace("-", "_"), default)
        out[name] = Threshold.parse(name, value)
    return out


# -- what the options build ------------------------------------------------------


def _headers(lines: Any) -> dict[str, str]:
    return dict(parse_header(line) for line in (lines or ()))


def absolute(url: str, host: str | None, option_name: str) -> str:
    """``url`` as a full URL: a path is put under ``host``."""
    if url.startswith(("http://", "https://")):
        return url
    if not url.startswith("/"):
        raise TemplateError(
            f"{option_name} {url!r}: give a full http:// URL or a path starting with /"
        )
    if not host:
        raise TemplateError(f"{option_name} {url!r} is a path: give --host too, or a full URL")
    return host.rstrip("/") + url


def origin(url: str | None) -> str | None:
    """``scheme://host:port`` of a full URL (None for a path or nothing)."""
    if not url or not url.startswith(("http://", "https://")):
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def row_name(url: str) -> str:
    """A request's row name: its URL template's path, without query (``/rooms/{topic}/stream``)."""
    if url.startswith(("http://", "https://")):
        url = urlsplit(url).path or "/"
    return url.split("?", 1)[0] or "/"


def subscription(cls: Any, environment: Any, host: str | None) -> Subscription:
    """The subscribe request of user class ``cls``: its ``url`` and ``headers`` attributes,
    else ``--sse-url`` and ``--sse-header``, else sse_fast's ``/events?topic=``."""
    url = cls.url or option(environment, "sse_url", None) or SSE_FAST_STREAM
    headers = (
        cls.headers
        if cls.headers is not None
        else _headers(option(environment, "sse_header", None))
    )
    return Subscription(absolute(url, host, "--sse-url"), headers)


def subscribe_row(cls: Any, environment: Any) -> str:
    """The row name of ``cls``'s subscribe requests."""
    if cls.subscribe_name:
        return str(cls.subscribe_name)
    return row_name(cls.url or option(environment, "sse_url", None) or SSE_FAST_STREAM)


def stamps(environment: Any) -> Stamps:
    """The ``Stamps`` the options describe (``--sse-time-field`` ... ``--sse-event``)."""
    return Stamps(
        time=option(environment, "sse_time_field", "t") or None,
        sequence=option(environment, "sse_seq_field", "s") or None,
        source=option(environment, "sse_source_field", "w") or None,
        unit=option(environment, "sse_time_unit", "s"),
        events=frozenset(option(environment, "sse_event", None) or ()),
    )


def publish(cls: Any, environment: Any, host: str | None) -> HttpPublish | CommandPublish:
    """How user class ``cls`` publishes: its ``publish`` attribute, else
    ``--sse-publish-command``, else ``--sse-publish-url`` with its method, body and
    headers, else sse_fast's ``POST /publish`` (with ``$SSE_FAST_PUBLISH_TOKEN``)."""
    if cls.publish is not None:
        return cls.publish  # type: ignore[no-any-return]
    command = option(environment, "sse_publish_command", None)
    if command:
        return CommandPublish(command)
    url = option(environment, "sse_publish_url", None)
    if url:
        return HttpPublish(
            absolute(url, host, "--sse-publish-url"),
            method=option(environment, "sse_publish_method", "POST"),
            body=option(environment, "sse_publish_body", "{data}"),
            headers=_headers(option(environment, "sse_publish_header", None)),
        )
    base = host or "http://127.0.0.1:8000"
    return sse_fast_publish(base, os.environ.get("SSE_FAST_PUBLISH_TOKEN", ""))


def publish_row(cls: Any, environment: Any) -> tuple[str, str]:
    """``(request type, row name)`` of ``cls``'s publishes."""
    if cls.publish is None and option(environment, "sse_publish_command", None):
        return "CMD", cls.publish_name or "publish command"
    target = cls.publish
    if isinstance(target, CommandPublish):
        return "CMD", cls.publish_name or "publish command"
    if isinstance(target, HttpPublish):
        return target.method, cls.publish_name or row_name(target.url)
    url = option(environment, "sse_publish_url", None)
    method = option(environment, "sse_publish_method", "POST") if url else "POST"
    return method, cls.publish_name or row_name(url or "/publish")


def check(environment: Any) -> None:
    """Refuse bad options before the run (``ValueError`` or ``TemplateError`` saying which)."""
    thresholds(environment)
    host = getattr(environment, "host", None) or "http://127.0.0.1"
    url = option(environment, "sse_url", None) or SSE_FAST_STREAM
    Subscription(
        absolute(url, host, "--sse-url"), _headers(option(environment, "sse_header", None))
    )
    stamps(environment)
    command = option(environment, "sse_publish_command", None)
    publish_url = option(environment, "sse_publish_url", None)
    if command:
        CommandPublish(command)
    elif publish_url:
        HttpPublish(
            absolute(publish_url, host, "--sse-publish-url"),
            method=option(environment, "sse_publish_method", "POST"),
            body=option(environment, "sse_publish_body", "{data}"),
            headers=_headers(option(environment, "sse_publish_header", None)),
        )
    if float(option(environment, "publish_rate", 1.0)) <= 0:
        raise ValueError("--publish-rate must be positive (publishes per second per publisher)")
