"""A subscription's messages in bulk: what one socket read already holds.

redis-py's ``PubSub.get_message`` took 53 % of a node's busy event loop, which
spent 27-35 us per event (``benches/notifications.py``'s redis-calls at 15,000/s,
py-spy): a timeout context and the running loop looked up for it, a retry wrapper, the
health check, metrics hooks, a dict, a debug line built from the whole message,
and the garbage those leave): at tens of thousands of events a second, most of
the loop. One socket read (up to 64 KiB) holds many messages (15-22 at 25,000-35,000
events/s there), and once ``get_message`` has returned the first, the rest are in
hiredis's buffer.

* ``buffered_reader``: that buffer (hiredis's ``Reader`` behind the subscription's
  connection), or None: with redis-py's pure-Python parsers (no hiredis), or a
  redis-py that keeps it elsewhere. Then the read loop takes every message
  through ``get_message``, as before: slower, never different.
* ``take``: hands each published message (``message``, ``smessage``) already
  whole in the buffer to a callback, in order, without awaiting anything; it
  stops at the first reply of another kind and returns it, or returns None once
  no whole reply is left.
* ``settle``: what ``get_message`` makes of such a reply (a confirmation, a pong, a push
  of another kind, an error), through redis-py's own path: its bookkeeping of
  channels, its push handlers, its errors raised as they would have been.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "buffered_reader",
    "settle",
    "take",
]

try:  # the sentinel redis-py's hiredis parser makes its Reader return for "not whole yet"
    from redis._parsers.hiredis import NOT_ENOUGH_DATA
except ImportError:  # pragma: no cover - a redis-py without it: get_message for each
    NOT_ENOUGH_DATA = None

#: the kinds of a published message (``SUBSCRIBE``'s, ``SSUBSCRIBE``'s)
MESSAGES = frozenset((b"message", b"smessage"))


def buffered_reader(pubsub: Any) -> Any | None:
    """The hiredis ``Reader`` holding what ``pubsub``'s connection read, or None: no
    hiredis, a connection redis-py marked as disconnected (what is left in its buffer is
    not to be read), or a ``push_handler_func`` given to ``pubsub`` (which every message
    must reach; the channels are subscribed without handlers of their own, as the nodes
    do)."""
    if NOT_ENOUGH_DATA is None:  # pragma: no cover - see the import
        return None
    if getattr(pubsub, "push_handler_func", None) is not None:
        return None
    parser = getattr(getattr(pubsub, "connection", None), "_parser", None)
    reader = getattr(parser, "_reader", None)
    if reader is None or not getattr(parser, "_connected", False):
        return None
    return reader if callable(getattr(reader, "gets", None)) else None


def take(reader: Any, message: Callable[[bytes, bytes], None]) -> Any:
    """Call ``message(channel, data)`` for each published message whole in ``reader``'s
    buffer, in order; the first reply of another kind is returned, None once the buffer
    holds no whole reply."""
    gets = reader.gets
    while True:
        reply = gets()
        if isinstance(reply, list) and len(reply) == 3 and reply[0] in MESSAGES:
            message(reply[1], reply[2])
        elif reply is NOT_ENOUGH_DATA or reply is False:  # (a RESP3 false: skipped, as by
            return None  # get_message, which reads whatever follows it)
        else:
            return reply


async def settle(pubsub: Any, reply: Any) -> dict[str, Any] | None:
    """What ``pubsub.get_message`` would have returned for ``reply``, had it read it
    (None for what it would have skipped); an error reply is raised, as it would have
    been."""
    if isinstance(reply, BaseException):
        raise reply
    if isinstance(reply, list) and reply and isinstance(reply[0], BaseException):
        raise reply[0]
    connection = pubsub.connection
    parser = connection._parser
    push = getattr(parser, "_hiredis_PushNotificationType", None)
    if push is not None and isinstance(reply, push):  # RESP3: its push handlers first
        reply = await parser.handle_push_response(reply)
    if connection.health_check_interval and reply in pubsub.health_check_response:
        return None
    if not reply:
        return None
    message: dict[str, Any] | None = await pubsub.handle_message(reply)
    return message
