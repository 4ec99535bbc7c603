"""What a load test needs to know of the SSE server under test, whoever wrote it.

The load tools (``sse-fast loadgen`` and the locust users of ``sse_fast.locust``)
speak sse_fast's API unless told otherwise. This module is how they are told:

``Template``
    A URL or body with ``{name}`` placeholders, filled per request. Names:
    ``{topic}`` (percent-encoded: for URLs), ``{topic_raw}``, ``{topic_json}`` (a JSON
    string literal), ``{user}`` (the subscriber's index), ``{data}`` (the text to
    publish), ``{data_json}`` (it as a JSON string literal), ``{data_url}``
    (percent-encoded). Any other brace is literal text, so JSON bodies need no
    escaping; a ``{word}`` that is not one of these names is refused when the template
    is made (a typo is not sent as is).
``Stamps``
    Where the publish time, the sequence number and the publisher are in an event's
    data: dotted paths into its JSON (``t``, ``s``, ``w`` by default, what the tools
    publish), the time's unit, and which event names count. ``read(event, data)``
    gives a ``Stamp`` or None (an event that does not count).
``HttpPublish`` / ``CommandPublish``
    How one event is published: an HTTP request from templates (``sse_fast_publish()``
    is sse_fast's ``POST /publish``), or a command run per event (its arguments are
    templates, run without a shell).

Nothing here does I/O except ``CommandPublish.run``; both tools import it without
their own dependencies.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit

import orjson

__all__ = [
    "NAMES",
    "PUBLISH_NAMES",
    "SUBSCRIBE_NAMES",
    "UNITS",
    "Address",
    "CommandPublish",
    "HttpPublish",
    "Stamp",
    "StampReader",
    "Stamps",
    "Subscription",
    "Template",
    "TemplateError",
    "parse_header",
    "split_url",
    "sse_fast_publish",
    "sse_fast_subscribe",
]

#: the placeholder names a ``Template`` fills, and what each is
NAMES = {
    "topic": "the topic, percent-encoded (for URLs)",
    "topic_raw": "the topic as it is",
    "topic_json": "the topic as a JSON string literal, quotes included",
    "user": "the subscriber's index: 0, 1, 2, ...",
    "data": "the text to publish (JSON with the publish time and sequence number)",
    "data_json": "that text as a JSON string literal, quotes included",
    "data_url": "that text, percent-encoded",
}
#: the names a subscription's URL and headers may use
SUBSCRIBE_NAMES = ("topic", "topic_raw", "topic_json", "user")
#: the names a publish's URL, body, headers and command may use
PUBLISH_NAMES = ("topic", "topic_raw", "topic_json", "data", "data_json", "data_url")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: the time units ``Stamps`` reads, in seconds
UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


class TemplateError(ValueError):
    """A template names a placeholder that does not exist, or a URL is not one."""


class Template:
    """A text with ``{name}`` placeholders (see ``NAMES``); other braces are literal."""

    __slots__ = ("names", "parts", "text")

    def __init__(self, text: str, allowed: Sequence[str] = tuple(NAMES)) -> None:
        self.text = text
        self.parts: list[str] = []  # literal, name, literal, name, ..., literal
        position = 0
        for match in _PLACEHOLDER.finditer(text):
            name = match.group(1)
            if name not in NAMES:
                known = ", ".join("{" + n + "}" for n in allowed)
                raise TemplateError(f"unknown placeholder {{{name}}} in {text!r}; known: {known}")
            if name not in allowed:
                known = ", ".join("{" + n + "}" for n in allowed)
                raise TemplateError(f"{{{name}}} has no value in {text!r}; here: {known}")
            self.parts += [text[position : match.start()], name]
            position = match.end()
        self.parts.append(text[position:])
        self.names = frozenset(self.parts[1::2])

    def fill(self, topic: str = "", data: str = "", user: int = 0) -> str:
        """The text with every placeholder replaced."""
        if len(self.parts) == 1:
            return self.text
        values = _values(self.names, topic, data, user)
        out = []
        for index, part in enumerate(self.parts):
            out.append(values[part] if index % 2 else part)
        return "".join(out)

    def __repr__(self) -> str:
        return f"Template({self.text!r})"


def _values(names: frozenset[str], topic: str, data: str, user: int) -> dict[str, str]:
    values: dict[str, str] = {}
    for name in names:
        if name == "topic":
            values[name] = quote(topic, safe="")
        elif name == "topic_raw":
            values[name] = topic
        elif name == "topic_json":
            values[name] = orjson.dumps(topic).decode()
        elif name == "user":
            values[name] = str(user)
        elif name == "data":
            values[name] = data
        elif name == "data_json":
            values[name] = orjson.dumps(data).decode()
        elif name == "data_url":
            values[name] = quote(data, safe="")
    return values


class Address(NamedTuple):
    """Where a URL points: scheme, host, port, and the path with its query (a template)."""

    scheme: str
    host: str
    port: int
    path: Template


def split_url(url: str, allowed: Sequence[str] = tuple(NAMES)) -> Address:
    """``url`` (``http://host:port/path?query``, placeholders allowed after the host) split
    into an ``Address``; ``TemplateError`` when it is not an http URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TemplateError(f"{url!r} is not an http:// URL (e.g. http://127.0.0.1:8000/events)")
    if "{" in parts.netloc:
        raise TemplateError(f"{url!r}: placeholders go in the path or the query, not the host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise TemplateError(f"{url!r}: {exc}") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Address(parts.scheme, parts.hostname, port, Template(path, allowed))


def parse_header(line: str) -> tuple[str, str]:
    """``"Name: value"`` as ``(name, value)``; ``ValueError`` saying what is wrong otherwise."""
    name, sep, value = line.partition(":")
    name = name.strip()
    if not sep or not name or any(c in name for c in " \t\r\n") or "\n" in value:
        raise ValueError(f"{line!r} is not a header: write it as 'Name: value'")
    return name, value.strip()


class Stamp(NamedTuple):
    """What an event carries for the load tools: publish time (wall-clock seconds; None:
    no latency), sequence number (None: no loss count) and publisher (sequences are per
    publisher)."""

    sent_at: float | None
    sequence: int | None
    source: Any


#: ``read(event_name, data)`` of a user's own: a Stamp, or None for an event that does not count
StampReader = Callable[[str, str], "Stamp | None"]


def _path(text: str | None) -> tuple[str, ...] | None:
    if text is None or text == "":
        return None
    parts = tuple(text.split("."))
    if any(not p for p in parts):
        raise ValueError(f"{text!r} is not a dotted path into the event's JSON (e.g. 'meta.sent')")
    return parts


def _dig(body: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if isinstance(body, dict):
            body = body.get(key)
        elif isinstance(body, list) and key.isdigit() and int(key) < len(body):
            body = body[int(key)]
        else:
            return None
    return body


@dataclass(frozen=True)
class Stamps:
    """Where the publish time, sequence number and publisher are in an event's JSON data.

    ``time``, ``sequence`` and ``source`` are dotted paths (``"meta.sent_at"``; a list
    index is a number, ``"items.0.t"``), None or ``""`` for "not there". ``unit`` is the
    time's unit (``s``, ``ms``, ``us``, ``ns``). ``events`` are the event names that count
    (empty: every event; an event without ``event:`` is ``message``). ``reader``, when
    given, replaces all of this: ``reader(event_name, data)`` returns a ``Stamp`` or None.
    """

    time: str | None = "t"
    sequence: str | None = "s"
    source: str | None = "w"
    unit: str = "s"
    events: frozenset[str] = frozenset()
    reader: StampReader | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"unit {self.unit!r}: use one of {', '.join(UNITS)}")
        for path in (self.time, self.sequence, self.source):
            _path(path)

    @cached_property
    def _paths(self) -> tuple[tuple[str, ...] | None, ...]:
        return _path(self.time), _path(self.sequence), _path(self.source)

    def counts(self, event: str) -> bool:
        """Whether events named ``event`` count (``""`` is ``message``)."""
        return not self.events or (event or "message") in self.events

    def read(self, event: str, data: str) -> Stamp | None:
        """The event's ``Stamp``: None when it does not count (another event name) or its data
        has neither a time nor a sequence where these paths point."""
        if not self.counts(event):
            return None
        if self.reader is not None:
            return self.reader(event or "message", data)
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        return self.stamp(body)

    def stamp(self, body: Any) -> Stamp | None:
        """The ``Stamp`` of decoded JSON ``body`` (see ``read``)."""
        sent_at = sequence = None
        time_path, seq_path, source_path = self._paths
        if time_path is not None:
            value = _dig(body, time_path)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                sent_at = float(value) * UNITS[self.unit]
        if seq_path is not None:
            value = _dig(body, seq_path)
            if isinstance(value, int) and not isinstance(value, bool):
                sequence = value
        if sent_at is None and sequence is None:
            return None
        source = _dig(body, source_path) if source_path is not None else None
        if isinstance(source, (dict, list)):
            source = orjson.dumps(source).decode()
        return Stamp(sent_at, sequence, source)


@dataclass(frozen=True)
class Subscription:
    """The request of one subscriber: ``url`` (a full URL; ``{topic}``, ``{topic_raw}``,
    ``{topic_json}`` and ``{user}`` in its path and query) and ``headers`` (values may hold
    them too, e.g. a per-user token)."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._headers  # noqa: B018  (refuses a bad URL or header now)

    @cached_property
    def address(self) -> Address:
        """Where the subscribers connect."""
        return split_url(self.url, SUBSCRIBE_NAMES)

    @cached_property
    def _headers(self) -> dict[str, Template]:
        self.address  # noqa: B018
        return {k: Template(v, SUBSCRIBE_NAMES) for k, v in self.headers.items()}

    def path(self, topic: str, user: int = 0) -> str:
        """The path and query subscriber ``user`` asks for."""
        return self.address.path.fill(topic=topic, user=user)

    def header_values(self, topic: str, user: int = 0) -> dict[str, str]:
        """The extra headers subscriber ``user`` sends."""
        return {k: v.fill(topic=topic, user=user) for k, v in self._headers.items()}


def sse_fast_subscribe(base: str = "http://127.0.0.1:8000") -> Subscription:
    """sse_fast's subscription: ``GET {base}/events?topic=<topic>``."""
    return Subscription(base.rstrip("/") + "/events?topic={topic}")


#: the default body of a publish to sse_fast
SSE_FAST_BODY = '{"topic": {topic_json}, "data": {data_json}}'


@dataclass(frozen=True)
class HttpPublish:
    """One publish as an HTTP request: ``url`` (a full URL; placeholders in its path and
    query), ``method``, ``body`` and ``headers`` (values may hold placeholders too).
    A 2xx answer is a success."""

    url: str
    method: str = "POST"
    body: str = "{data}"
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Z]+", self.method):
            raise TemplateError(f"method {self.method!r}: write it in capitals, e.g. POST")
        self._templates  # noqa: B018  (refuses a bad URL, body or header now)

    @cached_property
    def address(self) -> Address:
        """Where the requests go."""
        return split_url(self.url, PUBLISH_NAMES)

    @cached_property
    def _templates(self) -> tuple[Template, dict[str, Template]]:
        self.address  # noqa: B018
        body = Template(self.body, PUBLISH_NAMES)
        headers = {k: Template(v, PUBLISH_NAMES) for k, v in self.headers.items()}
        return body, headers

    def request(self, topic: str, data: str) -> tuple[str, str, dict[str, str], bytes]:
        """``(method, path with query, headers, body)`` of publishing ``data`` to ``topic``."""
        body, headers = self._templates
        path = self.address.path.fill(topic=topic, data=data)
        filled = {k: v.fill(topic=topic, data=data) for k, v in headers.items()}
        return self.method, path, filled, body.fill(topic=topic, data=data).encode()


def sse_fast_publish(base: str = "http://127.0.0.1:8000", token: str = "") -> HttpPublish:
    """sse_fast's publish: ``POST {base}/publish`` of ``{"topic": ..., "data": ...}`` (JSON),
    with ``Authorization: Bearer <token>`` when a token is given."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return HttpPublish(base.rstrip("/") + "/publish", body=SSE_FAST_BODY, headers=headers)


@dataclass(frozen=True)
class CommandPublish:
    """One publish as a command run per event: ``argv`` (a list, or one string split as a
    shell would, without running a shell), each argument a template. Exit status 0 is a
    success; it is killed after ``timeout`` seconds."""

    argv: tuple[str, ...]
    timeout: float = 10.0

    def __init__(self, argv: str | Sequence[str], timeout: float = 10.0) -> None:
        words = tuple(shlex.split(argv) if isinstance(argv, str) else argv)
        if not words:
            raise TemplateError("the publish command is empty")
        for word in words:
            Template(word, PUBLISH_NAMES)
        object.__setattr__(self, "argv", words)
        object.__setattr__(self, "timeout", timeout)

    def command(self, topic: str, data: str) -> list[str]:
        """The command line that publishes ``data`` to ``topic``."""
        return [Template(word, PUBLISH_NAMES).fill(topic=topic, data=data) for word in self.argv]

    def run(self, topic: str, data: str) -> tuple[bool, str]:
        """Run it: ``(True, "")``, or ``(False, why)`` (exit status and the end of stderr)."""
        try:
            done = subprocess.run(
                self.command(topic, data),
                capture_output=True,
                timeout=self.timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return False, f"the publish command ran over {self.timeout:g} s"
        except OSError as exc:
            return False, f"the publish command could not start: {exc}"
        if done.returncode == 0:
            return True, ""
        tail = done.stderr.decode("utf-8", "replace").strip()[-200:]
        return False, f"exit {done.returncode}" + (f": {tail}" if tail else "")
