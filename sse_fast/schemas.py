"""Typed channels: declared events on families of topics.

A **stream** is a family of topics named by a channel pattern
(``item:{item_id}``, ``user:{user_id:int}``, or a plain topic such as
``alerts``) and the event types published on it: ``msgspec.Struct`` classes,
named by their class name, which becomes the SSE ``event:`` field::

    class CommentAdded(msgspec.Struct):
        comment_id: int
        author: str
        text: str

    comments = Stream("comments", "item:{item_id}", [CommentAdded, CommentDeleted])

Registered with the hub (``Hub.declare(comments)``, or ``--schemas
module:attribute`` for ``sse-fast serve``), it changes what a publish to a
matching topic must be:

* its ``event`` names one of the stream's types (it may be left out when the
  stream has just one);
* its ``data`` converts to that type (``msgspec.convert``, strict: a str is no
  int). A wrong field gets a 400 that names it (``Expected `int`, got `str` -
  at `$.comment_id```) and nothing of the request is published;
* what is published is the record as msgspec writes it back: every field, in
  declaration order, defaults filled in, unknown fields dropped (unless the
  Struct forbids them: then they are refused).

Topics no pattern matches publish as before, and with no stream declared the
publish path does not look at schemas at all. The schema is served as JSON
Schema at ``GET /schema`` (``Schemas.json_schema``), which ``sse-fast codegen``
also reads.

Why msgspec Structs and not dataclasses: checking a declared event costs
about a tenth (``benches/schema_validation.py``: Struct convert and back, a
dataclass through msgspec and ``asdict``, a dataclass checked by hand, pydantic).

Pattern parameters: ``{name}`` matches one or more topic characters other than
``/`` and ``:`` (the usual separators); ``{name:int}`` matches decimal digits.
A topic matched by two streams' patterns belongs to the one declared first.

A channel ending in ``/*`` declares a **pattern stream** (``user/{user_id:int}/*``):
its topics are every topic under it (``user/7/inbox``, ``user/7/orders/12``), and a
client subscribes to all of them at once with the pattern ``stream.topic(user_id=7)``
gives (``user/7/*``: a subscription by pattern, ``docs/edge/patterns.md``); the
generated clients' subscribe functions do. A publish names its topic under it:
``stream.request(record, subtopic="inbox", user_id=7)``.

What a publish through Redis ``EVALSHA`` (another language writing to the
stream directly) carries is not checked: checks happen where a publish enters
the edge (``POST /publish``, ``/publish/stream``, ``Hub.publish``).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ._channel_patterns import (
    _KINDS,
    PARAMETER,
    SEGMENT,
    SchemaError,
    check_stream_name,
    compile_channel,
    is_pattern_channel,
)
from ._core.request import RESERVED_EVENT_PREFIX, PublishRequest
from .publishing import PublishError

if TYPE_CHECKING:
    import msgspec

__all__ = ["SchemaError", "Schemas", "Stream", "load"]


def _msgspec() -> Any:
    try:
        import msgspec
    except ImportError:
        raise SchemaError(
            "typed channels need msgspec: python -m pip install 'sse_fast[schemas]'"
        ) from None
    return msgspec


class Stream:
    """A channel pattern and the event types published on its topics."""

    def __init__(
        self,
        name: str,
        channel: str,
        events: Sequence[type[msgspec.Struct]],
        *,
        description: str = "",
    ) -> None:
        ms = self._msgspec = _msgspec()  # (looked up once: check runs on each publish)
        self.name = check_stream_name(name)
        self.channel = channel
        self.description = description
        self.pattern, self.parameters = compile_channel(name, channel)  # parameters: name -> kind
        #: whether the channel ends in ``/*`` (a pattern stream: every topic under it)
        self.is_pattern = is_pattern_channel(channel)
        if not events:
            raise SchemaError(f"stream {name!r}: declare at least one event type")
        self.events: dict[str, type[msgspec.Struct]] = {}
        for kind in events:
            if not (isinstance(kind, type) and issubclass(kind, ms.Struct)):
                raise SchemaError(
                    f"stream {name!r}: {kind!r} is not a msgspec.Struct class "
                    "(declare events as `class Name(msgspec.Struct): ...`)"
                )
            if kind.__struct_config__.omit_defaults or any(
                f.default is ms.UNSET for f in ms.structs.fields(kind)
            ):
                raise SchemaError(
                    f"stream {name!r}: {kind.__name__} leaves fields out (omit_defaults or "
                    "UNSET): events are written back whole, every field present"
                )
            event = kind.__name__
            if event in self.events:
                raise SchemaError(f"stream {name!r}: two event types are named {event!r}")
            if event.startswith(RESERVED_EVENT_PREFIX):
                raise SchemaError(f"stream {name!r}: event names {RESERVED_EVENT_PREFIX}* are ours")
            self.events[event] = kind

    def match(self, topic: str) -> dict[str, str] | None:
        """The parameters of ``topic`` if it is one of this stream's, else None."""
        found = self.pattern.fullmatch(topic)
        return None if found is None else found.groupdict()

    def topic(self, **parameters: object) -> str:
        """The topic of these parameters: ``comments.topic(item_id=42)`` -> ``"item:42"``;
        of a pattern stream, the pattern a client subscribes to (``"user/7/*"``)."""
        if set(parameters) != set(self.parameters):
            raise SchemaError(
                f"stream {self.name!r} ({self.channel}) takes parameters "
                f"{sorted(self.parameters)}, got {sorted(parameters)}"
            )

        def value(match: re.Match[str]) -> str:
            text = str(parameters[match.group(1)])
            kind = self.parameters[match.group(1)]
            if not re.fullmatch(_KINDS[kind], text):
                raise SchemaError(
                    f"stream {self.name!r}: parameter {match.group(1)}={text!r} is no "
                    f"{'decimal number' if kind == 'int' else 'topic segment (no / or :)'}"
                )
            return text

        return PARAMETER.sub(value, self.channel)

    def request(
        self,
        record: msgspec.Struct,
        *,
        id: str | None = None,
        retry: int | None = None,
        subtopic: str | None = None,
        **parameters: object,
    ) -> PublishRequest:
        """A ``PublishRequest`` of ``record`` (one of this stream's types) to the topic of
        ``parameters``: ``await hub.publish([comments.request(CommentAdded(...), item_id=42)])``.
        A pattern stream's topic is ``subtopic`` under the pattern's
        (``request(record, subtopic="inbox", user_id=7)`` -> ``user/7/inbox``)."""
        event = type(record).__name__
        if self.events.get(event) is not type(record):
            raise SchemaError(f"stream {self.name!r} has no event type {type(record).__name__}")
        topic = self.topic(**parameters)
        if self.is_pattern:
            topic = topic[:-1] + (subtopic or "")
            if not subtopic or not self.pattern.fullmatch(topic):
                raise SchemaError(
                    f"stream {self.name!r} ({self.channel}) is a pattern stream: name the "
                    f"topic under it with subtopic= (topic characters), got {subtopic!r}"
                )
        elif subtopic is not None:
            raise SchemaError(
                f"stream {self.name!r} ({self.channel}) has one topic per parameters: "
                "subtopic= is for a pattern stream (a channel ending in /*)"
            )
        data = self._msgspec.to_builtins(record)
        return PublishRequest((topic,), data, event, id, retry)

    def check(self, request: PublishRequest, topic: str) -> PublishRequest:
        """``request`` with its data as the declared type writes it, or a 400."""
        ms = self._msgspec
        if request.event is None:
            if len(self.events) != 1:
                raise PublishError(
                    f"topic {topic!r} is of stream {self.name!r} ({self.channel}): name its "
                    f"event, one of {', '.join(self.events)}"
                )
            (event,) = self.events
        else:
            event = request.event
        kind = self.events.get(event)
        if kind is None:
            raise PublishError(
                f"topic {topic!r} is of stream {self.name!r} ({self.channel}), which has no "
                f"event {event!r}; its events: {', '.join(self.events)}"
            )
        try:
            record = ms.convert(request.data, kind)
        except ms.ValidationError as exc:
            raise PublishError(f"event {event} to topic {topic!r}: {exc}") from None
        return request._replace(data=ms.to_builtins(record), event=event)


class Schemas:
    """The declared streams of a hub, and the check a publish goes through."""

    def __init__(self, streams: Iterable[Stream] = ()) -> None:
        self.streams: dict[str, Stream] = {}
        self._json_schema: dict[str, Any] | None = None
        self._matcher: re.Pattern[str] | None = None
        #: every pattern's text before its first parameter: a topic that starts with
        #: none of them is no stream's, known without the regex (None: a pattern
        #: starts with a parameter)
        self._prefixes: tuple[str, ...] | None = None
        self._by_group: dict[str, Stream] = {}
        for stream in streams:
            self.add(stream)

    def __bool__(self) -> bool:
        return bool(self.streams)

    def add(self, stream: Stream) -> None:
        """Declare ``stream``; ``SchemaError`` for something other than a ``Stream`` or a name
        already declared."""
        if not isinstance(stream, Stream):
            raise SchemaError(f"declare Stream objects, not {type(stream).__name__}")
        if stream.name in self.streams:
            raise SchemaError(f"two streams are named {stream.name!r}")
        self.streams[stream.name] = stream
        self._json_schema = None
        # one alternation over every pattern: one regex call per topic of a publish
        groups, self._by_group = [], {}
        for index, each in enumerate(self.streams.values()):
            group = f"s{index}"
            self._by_group[group] = each
            body = re.sub(r"\(\?P<\w+>", "(?:", each.pattern.pattern)
            groups.append(f"(?P<{group}>{body})")
        self._matcher = re.compile("|".join(groups))
        # the text before a parameter or a pattern stream's *
        prefixes = tuple(
            re.split(r"[{*]", each.channel, maxsplit=1)[0] for each in self.streams.values()
        )
        self._prefixes = None if "" in prefixes else prefixes

    def stream_of(self, topic: str) -> Stream | None:
        """The declared stream whose channel ``topic`` matches, or None."""
        if self._matcher is None:
            return None
        found = self._matcher.fullmatch(topic)
        return None if found is None or found.lastgroup is None else self._by_group[found.lastgroup]

    def check(self, requests: Sequence[PublishRequest]) -> Sequence[PublishRequest]:
        """The requests with declared events checked and written back (``requests``
        itself when none is declared); PublishError (400) on the first that is
        wrong: nothing is published."""
        matcher = self._matcher
        if matcher is None:
            return requests
        fullmatch, by_group, prefixes = matcher.fullmatch, self._by_group, self._prefixes
        out: list[PublishRequest] | None = None
        for index, request in enumerate(requests):
            topics = request.topics
            if len(topics) == 1:  # the common case: a prefix test, at most one regex call
                if prefixes is not None and not topics[0].startswith(prefixes):
                    continue
                found = fullmatch(topics[0])
                if found is None:
                    continue
                stream, first = by_group[found.lastgroup or ""], topics[0]
            else:
                declared = self._declared(topics)
                if declared is None:
                    continue
                stream, first = declared
            if out is None:
                out = list(requests)
            out[index] = stream.check(request, first)
        return requests if out is None else out

    def _declared(self, topics: Sequence[str]) -> tuple[Stream, str] | None:
        """The stream of the declared ones among ``topics`` and the first of them;
        a 400 when they are of two streams."""
        stream: Stream | None = None
        first = ""
        for topic in topics:
            found = self.stream_of(topic)
            if found is None:
                continue
            if stream is None:
                stream, first = found, topic
            elif found is not stream:
                raise PublishError(
                    f"one event to topics of two streams ({first!r} of {stream.name!r}, "
                    f"{topic!r} of {found.name!r}): publish one event per stream"
                )
        return None if stream is None else (stream, first)

    def json_schema(self) -> dict[str, Any]:
        """The streams as JSON Schema: ``{"streams": {name: {"channel", "parameters",
        "events": {event: {"$ref"}}}}, "$defs": {...}}`` (served at ``GET /schema``)."""
        if self._json_schema is not None:
            return self._json_schema
        ms = _msgspec()
        kinds = [kind for stream in self.streams.values() for kind in stream.events.values()]
        refs, definitions = ms.json.schema_components(kinds, ref_template="#/$defs/{name}")
        ref_of = {kind: ref["$ref"] for kind, ref in zip(kinds, refs, strict=True)}
        streams = {}
        for stream in self.streams.values():
            streams[stream.name] = {
                "channel": stream.channel,
                "description": stream.description,
                "parameters": {
                    name: (
                        {"type": "integer", "minimum": 0}
                        if kind == "int"
                        else {"type": "string", "pattern": f"^{SEGMENT}$"}
                    )
                    for name, kind in stream.parameters.items()
                },
                "events": {  # msgspec names two classes of one name by module
                    event: {"$ref": ref_of[kind]} for event, kind in stream.events.items()
                },
            }
        self._json_schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "streams": streams,
            "$defs": definitions,
        }
        return self._json_schema


def load(spec: str) -> Schemas:
    """``module:attribute`` (a Stream, a sequence of them, or a Schemas) as Schemas;
    SchemaError saying what is wrong."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise SchemaError(f"schemas {spec!r}: give module:attribute (e.g. myapp.events:streams)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SchemaError(f"schemas {spec!r}: cannot import {module_name}: {exc}") from None
    try:
        value = getattr(module, attribute)
    except AttributeError:
        raise SchemaError(f"schemas {spec!r}: {module_name} has no {attribute!r}") from None
    if isinstance(value, Schemas):
        return value
    if isinstance(value, Stream):
        return Schemas([value])
    if isinstance(value, (list, tuple)) and all(isinstance(v, Stream) for v in value):
        return Schemas(value)
    raise SchemaError(
        f"schemas {spec!r} is a {type(value).__name__}: give a Stream, a list of them, or Schemas"
    )
