"""What may be published, checked in one place (the server's; users build
``PublishRequest`` and catch ``PublishError``, both of ``sse_fast.publishing``).

Every way into the hub goes through here: the HTTP publish endpoints parse
their JSON bodies with ``parse_publish_body`` (the common shapes checked
natively by ``requests_of``, ``_publish_ext``; the rest, and the wording of
every error, here); embedders build ``PublishRequest`` objects and the hub
checks their topics; a subscription's topics and its
``Last-Event-ID`` are checked with ``check_topic`` (``check_subscription_pattern``
for a topic pattern) and ``check_event_id``, the
same rules a published id obeys (an id that could not have been published
cannot be resumed from). Errors are ``PublishError`` with the HTTP status to
answer with and a sentence saying what was wrong.
"""

from __future__ import annotations

from typing import Any

import orjson

from ._core import requests_of
from ._core.request import RESERVED_EVENT_PREFIX, TOPIC_CHARACTERS, TOPIC_NAME, PublishRequest
from ._patterns import literal_prefix
from .publishing import PublishError
from .settings import LimitSettings

__all__ = [
    "PUBLISH_FIELDS",
    "check_cursor_length",
    "check_distinct_ids",
    "check_event_id",
    "check_subscription_pattern",
    "check_topic",
    "parse_event",
    "parse_publish_body",
    "parse_publish_document",
]

#: the fields an event object of a publish body may have
PUBLISH_FIELDS = frozenset({"topic", "topics", "data", "event", "id", "retry"})


def check_topic(name: object, limits: LimitSettings) -> str:
    """A topic name, or ``PublishError`` saying what is wrong with it."""
    if not isinstance(name, str):
        raise PublishError(f"topic must be a string, got {type(name).__name__}")
    if not name:
        raise PublishError("topic must not be empty")
    if len(name) > limits.max_topic_length:
        raise PublishError(
            f"topic is {len(name)} characters long; the limit is {limits.max_topic_length}"
        )
    if not TOPIC_NAME.fullmatch(name):
        raise PublishError(
            f"topic {name[:50]!r} has characters outside A-Z a-z 0-9 and ._~:/@!$&'()+,;=%-"
        )
    return name


def check_subscription_pattern(pattern: str, limits: LimitSettings) -> str:
    """A subscription's topic pattern (``*``: any run of characters, ``?``: one; see
    ``_patterns.py``), or ``PublishError`` saying what is wrong with it: too long, a
    character no topic has, too many wildcards, or too broad (fewer whole segments
    before its first wildcard than ``pattern_literal_segments``)."""
    if len(pattern) > limits.max_pattern_length:
        raise PublishError(
            f"pattern is {len(pattern)} characters long; the limit is "
            f"{limits.max_pattern_length} (max_pattern_length)"
        )
    if not TOPIC_NAME.fullmatch(pattern.replace("*", "a").replace("?", "a")):
        raise PublishError(
            f"pattern {pattern[:50]!r} has characters outside * ? and the topic characters "
            f"A-Z a-z 0-9 and {TOPIC_CHARACTERS[62:]} (no character classes: list topics "
            "one by one instead)"
        )
    wildcards = pattern.count("*") + pattern.count("?")
    if wildcards > limits.max_pattern_wildcards:
        raise PublishError(
            f"pattern {pattern[:50]!r} has {wildcards} wildcards; at most "
            f"{limits.max_pattern_wildcards} (max_pattern_wildcards)"
        )
    needed = limits.pattern_literal_segments
    if literal_prefix(pattern).count("/") < needed:
        raise PublishError(
            f"pattern {pattern[:50]!r} is too broad: it must start with {needed} whole "
            f"segment{'s' if needed > 1 else ''} before its first wildcard (like "
            f"'{'x/' * needed}*'; pattern_literal_segments)"
        )
    return pattern


def check_event_id(value: str, limits: LimitSettings, what: str = "id") -> str:
    """An event id (published, or sent back as ``Last-Event-ID``): one line, no
    NUL (the SSE parser would drop such an id), at most
    ``max_last_event_id_length`` characters."""
    if len(value) > limits.max_last_event_id_length:
        raise PublishError(f"{what} is longer than {limits.max_last_event_id_length} characters")
    if "\r" in value or "\n" in value or "\0" in value:
        raise PublishError(f"{what} must not contain CR, LF or NUL")
    return value


#: the longest component of a cursor: "." + a partition (4 digits) + ":" + a delta (19)
CURSOR_COMPONENT = 25


def check_cursor_length(value: str, limits: LimitSettings, partitions: int) -> str:
    """A ``Last-Event-ID`` that is a cursor (``hub/_cursor.py``: the id of a stream over
    several partitions, one component per partition it covers): ``max_last_event_id_length``
    or what ``max_topics_per_connection`` topics (or a pattern stream over every partition)
    can make over the broker's ``partitions``, whichever is longer (the server's own ids
    always come back); one line, no NUL."""
    # a pattern stream's covers any partition, and the rest (``*``)
    components = max(limits.max_topics_per_connection, partitions + 1)
    longest = max(limits.max_last_event_id_length, 20 + CURSOR_COMPONENT * components)
    if len(value) > longest:
        raise PublishError(
            f"Last-Event-ID is longer than {longest} characters (a cursor of at most "
            f"{components} components)"
        )
    if "\r" in value or "\n" in value or "\0" in value:
        raise PublishError("Last-Event-ID must not contain CR, LF or NUL")
    return value


def parse_event(raw: Any, limits: LimitSettings, where: str) -> PublishRequest:
    """Validate one event object of a publish body, saying what is wrong with it
    (``parse_publish_body`` takes the common shapes natively, ``requests_of``,
    and comes here for the rest)."""
    if type(raw) is not dict:
        raise PublishError(f"{where} must be a JSON object")
    if not PUBLISH_FIELDS.issuperset(raw):
        unknown = set(raw) - PUBLISH_FIELDS
        raise PublishError(
            f"{where}: unknown field(s) {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(PUBLISH_FIELDS))}"
        )
    if "topic" in raw:
        if "topics" in raw:
            raise PublishError(f"{where}: give either topic or topics, not both")
        names: tuple[str, ...] = (check_topic(raw["topic"], limits),)
    elif "topics" in raw:
        topics = raw["topics"]
        if not isinstance(topics, list) or not topics:
            raise PublishError(f"{where}: topics must be a non-empty list of names")
        names = tuple(dict.fromkeys(check_topic(t, limits) for t in topics))
        if len(names) > limits.max_topics_per_connection:
            raise PublishError(
                f"{where}: {len(names)} topics; "
                f"at most {limits.max_topics_per_connection} per event"
            )
    else:
        raise PublishError(f"{where}: topic (or topics) is required")
    data = raw.get("data")
    if data is None:
        raise PublishError(
            f"{where}: data is required (any JSON value but null; "
            "strings are sent as text, other values as JSON)"
        )
    event = raw.get("event")
    if event is not None:
        if not isinstance(event, str) or not event or "\r" in event or "\n" in event:
            raise PublishError(f"{where}: event must be a non-empty one-line string")
        if event.startswith(RESERVED_EVENT_PREFIX):
            raise PublishError(
                f"{where}: event names starting with {RESERVED_EVENT_PREFIX!r} "
                "are reserved for the server"
            )
    event_id = raw.get("id")
    if event_id is not None:
        if not isinstance(event_id, str) or not event_id:
            raise PublishError(
                f"{where}: id must be a non-empty string (omit it to let the server assign one)"
            )
        check_event_id(event_id, limits, f"{where}: id")
    retry = raw.get("retry")
    if retry is not None and (not isinstance(retry, int) or isinstance(retry, bool) or retry < 0):
        raise PublishError(f"{where}: retry must be a non-negative integer (milliseconds)")
    return PublishRequest(names, data, event, event_id, retry)


def parse_publish_body(
    body: bytes, limits: LimitSettings, where: str = "body"
) -> list[PublishRequest]:
    """The events of a ``POST /publish`` body: one event object, or
    ``{"events": [...]}``. Nothing is returned unless every event is valid."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PublishError(f"{where} is not valid JSON: {exc}") from None
    requests = requests_of(
        document,
        limits.max_topic_length,
        limits.max_last_event_id_length,
        limits.max_events_per_batch,
    )
    if requests is None:  # not one of the common shapes, all valid (checked natively)
        requests = parse_publish_document(document, limits, where)
    if len(requests) > 1:
        check_distinct_ids(requests)
    return requests


def check_distinct_ids(requests: list[PublishRequest]) -> None:
    """Refuse a batch in which two events have the same id: the second would be
    taken for a retry of the first and dropped (nothing of the batch is published)."""
    seen: dict[str, int] = {}
    for index, request in enumerate(requests):
        event_id = request.id
        if event_id is None:
            continue
        first = seen.setdefault(event_id, index)
        if first != index:
            raise PublishError(
                f"events[{index}]: id {event_id[:50]!r} is also the id of events[{first}]; "
                "the events of one batch need different ids (an id seen again is taken "
                "for a retry and not published twice). Nothing was published"
            )


def parse_publish_document(
    document: Any, limits: LimitSettings, where: str = "body"
) -> list[PublishRequest]:
    """``parse_publish_body`` for a decoded body, every shape and every rule checked
    in Python, each error worded (the native ``requests_of`` takes the common
    shapes first; the tests hold the two to the same answers)."""
    if type(document) is dict and "events" not in document:
        return [parse_event(document, limits, where)]
    if not isinstance(document, dict):
        raise PublishError(f'{where} must be a JSON object: one event, or {{"events": [...]}}')
    if set(document) != {"events"}:
        raise PublishError("a batch body has only the field events")
    events = document["events"]
    if not isinstance(events, list) or not events:
        raise PublishError("events must be a non-empty list")
    if len(events) > limits.max_events_per_batch:
        raise PublishError(
            f"batch of {len(events)} events; the limit is {limits.max_events_per_batch}",
            status=413,
        )
    return [parse_event(raw, limits, f"events[{i}]") for i, raw in enumerate(events)]
