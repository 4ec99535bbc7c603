"""Pure-Python publish checker: the reference twin of ``src_ext/publish_ext.pyx``.

Theory of operation
-------------------
* One job: turn a decoded publish body (``orjson.loads`` of a ``POST /publish``
  body, or of one line of ``POST /publish/stream``) into ``PublishRequest``
  objects, fast, when the body has one of the common shapes and every event in
  it is valid. The common shapes: one event object, or ``{"events": [...]}``
  with 1 to ``max_events`` of them, where each event is an object with the
  fields ``topic`` and ``data`` and optionally ``event``, ``id`` and ``retry``.
* Anything else gives ``None``, never an error: a body in another shape (an
  event with ``topics``), or with something wrong in it. The caller
  (``sse_fast._publish_checks.parse_publish_body``) then runs the full check, which
  takes the rarer shapes and words every error. So the rules are written twice
  (here as "valid", there with the messages) and the parity tests check that
  this never accepts what the full check refuses, nor answers differently.
* The rules (those of ``sse_fast._publish_checks``; the character set and the
  reserved prefix come from ``sse_fast._core.request``): ``topic`` a non-empty string
  of at most ``max_topic_length`` characters from A-Z a-z 0-9 and
  ``._~:/@!$&'()+,;=%-``; ``data`` any JSON value but null; ``event`` a
  non-empty one-line string not starting with ``sse-fast-``; ``id`` a non-empty
  string of at most ``max_id_length`` characters without CR, LF or NUL;
  ``retry`` a non-negative integer.
* ``requests_of_lines``: the same for each line of ``POST /publish/stream``'s
  body, in one call per chunk: a line gets its requests when it is at most
  ``max_line`` bytes, JSON (``orjson.loads``) of a common shape with every
  event valid and, in a batch, no id given twice; else ``None`` (a blank line
  too), and the caller takes that line alone through the full check, which
  words its answer. The rules are those of ``requests_of`` plus
  ``sse_fast._publish_checks``' distinct ids in a batch.
* ``ack_lines``: the other way, the acks of lines once published, in one call
  per chunk: each line ``[number, requests, ack]`` gets ``ack`` =
  ``{"line":<number>,"ids":[...]}`` and a newline, its ids the next
  ``len(requests)`` of the publish's ids, in order (JSON as ``orjson.dumps``
  writes it). ``ValueError`` when the ids are not exactly as many as the
  requests.
* Nothing is kept between calls; no I/O.
"""

from __future__ import annotations

from typing import Any

import orjson

from .request import RESERVED_EVENT_PREFIX, TOPIC_NAME, PublishRequest

__all__ = ["ack_lines", "requests_of", "requests_of_lines"]

_FIELDS = frozenset({"topic", "data", "event", "id", "retry"})  # the common shape's


def requests_of(
    document: object, max_topic_length: int, max_id_length: int, max_events: int
) -> list[PublishRequest] | None:
    """The publish requests of ``document`` (a decoded publish body) when it has a
    common shape and every event is valid; else ``None`` (see the module doc)."""
    if type(document) is not dict:
        return None
    if "events" not in document:
        request = _request(document, max_topic_length, max_id_length)
        return None if request is None else [request]
    if len(document) != 1:
        return None
    events = document["events"]
    if type(events) is not list or not 0 < len(events) <= max_events:
        return None
    out = []
    for raw in events:
        if type(raw) is not dict:
            return None
        request = _request(raw, max_topic_length, max_id_length)
        if request is None:
            return None
        out.append(request)
    return out


def requests_of_lines(
    lines: list[bytes],
    max_line: int,
    max_topic_length: int,
    max_id_length: int,
    max_events: int,
) -> list[list[PublishRequest] | None]:
    """``requests_of`` for each of ``lines`` (publish bodies, one per line): its
    requests, or ``None`` where the line is longer than ``max_line`` bytes, not
    JSON (a blank line too), not of a common shape, has an invalid event, or
    gives one id to two events of a batch (see the module doc)."""
    if type(lines) is not list:
        raise TypeError(f"lines must be a list, not {type(lines).__name__}")
    out: list[list[PublishRequest] | None] = []
    for line in lines:
        if len(line) > max_line:
            out.append(None)
            continue
        try:
            document = orjson.loads(line)
        except orjson.JSONDecodeError:
            out.append(None)
            continue
        requests = requests_of(document, max_topic_length, max_id_length, max_events)
        if requests is not None and len(requests) > 1 and not _distinct_ids(requests):
            requests = None
        out.append(requests)
    return out


def ack_lines(lines: list[list[Any]], ids: list[str]) -> None:
    """Each line's ack into ``line[2]``, its ids the next ``len(line[1])`` of ``ids``
    (see the module doc)."""
    if type(lines) is not list or type(ids) is not list:
        raise TypeError("lines and ids must be lists")
    if sum(len(line[1]) for line in lines) != len(ids):
        raise ValueError("as many ids as the lines have requests are needed")
    start = 0
    for line in lines:
        count = len(line[1])
        line[2] = b'{"line":%d,"ids":%b}\n' % (line[0], orjson.dumps(ids[start : start + count]))
        start += count


def _distinct_ids(requests: list[PublishRequest]) -> bool:
    """No id given to two of ``requests`` (events without one never clash)."""
    seen = set()
    for request in requests:
        if request.id is not None:
            if request.id in seen:
                return False
            seen.add(request.id)
    return True


def _request(
    raw: dict[str, Any], max_topic_length: int, max_id_length: int
) -> PublishRequest | None:
    topic = raw.get("topic")
    data = raw.get("data")
    if data is None or type(topic) is not str or not 0 < len(topic) <= max_topic_length:
        return None
    if not TOPIC_NAME.fullmatch(topic):
        return None
    if len(raw) == 2:
        return PublishRequest((topic,), data)
    if not _FIELDS.issuperset(raw):
        return None
    event = raw.get("event")
    if event is not None and (
        type(event) is not str
        or not event
        or "\r" in event
        or "\n" in event
        or event.startswith(RESERVED_EVENT_PREFIX)
    ):
        return None
    event_id = raw.get("id")
    if event_id is not None and (
        type(event_id) is not str
        or not 0 < len(event_id) <= max_id_length
        or "\r" in event_id
        or "\n" in event_id
        or "\0" in event_id
    ):
        return None
    retry = raw.get("retry")
    if retry is not None and (type(retry) is not int or retry < 0):
        return None
    return PublishRequest((topic,), data, event, event_id, retry)
