"""How a subscriber reads one event: which event names count, and its ``Stamp``.

Theory of operation. ``Reading(stamps)`` is built once per client process from the
run's ``sse_fast.loadtarget.Stamps`` and shared by its subscribers. ``counts(name)``
says whether events of that name count at all (others, such as a chat's ``joined``,
are skipped without a word); ``read(name, data)`` gives ``(sent_at, sequence,
source)`` or None when the data has no stamp where the paths point (an "unstamped"
event, reported, since it usually means a wrong ``--time-field``).

Every event passes here, so the common shapes get a reader of their own: when each
path is one key (``t``, ``s``, ``w``: what the load tools publish) the JSON object is
read with ``dict.get``; nested paths go through ``Stamps.stamp``, a user's
``reader`` function through ``Stamps.read``. The ``Stamps`` crosses to spawned client
processes by pickling; ``picklable`` refuses a reader that cannot, saying why.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import orjson

from ..loadtarget import UNITS, Stamp, Stamps

__all__ = ["Reading", "picklable"]

_NUMBERS = (int, float)


class Reading:
    """Which events count and their stamps, as ``Stamps`` says (see the module docstring)."""

    __slots__ = ("events", "keys", "read", "stamps")

    def __init__(self, stamps: Stamps) -> None:
        self.stamps = stamps
        self.events = stamps.events  # empty: every event counts
        self.read: Callable[[str, str], Stamp | tuple[Any, ...] | None] = _reader(stamps)
        #: the keys (time, sequence, source; None: not there) when every path is one key
        #: and the time is in seconds: the subscribers read these inline, as ``read`` does
        self.keys: tuple[str | None, str | None, str | None] | None = None
        paths = (stamps.time, stamps.sequence, stamps.source)
        if (
            stamps.reader is None
            and stamps.unit == "s"
            and not any("." in (p or "") for p in paths)
        ):
            self.keys = (stamps.time or None, stamps.sequence or None, stamps.source or None)

    def counts(self, name: str) -> bool:
        """Whether events named ``name`` count (``""`` is ``message``)."""
        return not self.events or (name or "message") in self.events


def _reader(stamps: Stamps) -> Callable[[str, str], Stamp | tuple[Any, ...] | None]:
    if stamps.reader is not None:
        reader = stamps.reader
        return lambda name, data: reader(name or "message", data)
    paths = (stamps.time, stamps.sequence, stamps.source)
    if all(p is None or p == "" or "." not in p for p in paths):
        return _flat_reader(stamps)
    loads, stamp = orjson.loads, stamps.stamp

    def nested(name: str, data: str) -> Stamp | None:
        try:
            return stamp(loads(data))
        except orjson.JSONDecodeError:
            return None

    return nested


def _flat_reader(stamps: Stamps) -> Callable[[str, str], tuple[Any, ...] | None]:
    """The reader of paths that are single keys of a JSON object (the hot path: every
    check is a class identity; ``body.get(None)`` is None for a path not given)."""
    time_key, seq_key, source_key = stamps.time or None, stamps.sequence or None, stamps.source
    source_key = source_key or None
    scale = UNITS[stamps.unit]
    loads, decode_error = orjson.loads, orjson.JSONDecodeError

    def flat(name: str, data: str) -> tuple[Any, ...] | None:
        try:
            body = loads(data)
            sent_at = body.get(time_key)
            sequence = body.get(seq_key)
            source = body.get(source_key)
        except (decode_error, AttributeError):  # not JSON, or not an object
            return None
        if sent_at.__class__ is not float or scale != 1.0:
            sent_at = sent_at * scale if sent_at.__class__ in _NUMBERS else None
        if sequence.__class__ is not int:
            sequence = None
            if sent_at is None:
                return None
        if source.__class__ is dict or source.__class__ is list:
            source = orjson.dumps(source).decode()
        return sent_at, sequence, source

    return flat


def picklable(stamps: Stamps) -> None:
    """Refuse (``ValueError``) a ``Stamps`` the spawned client processes cannot receive."""
    try:
        pickle.dumps(stamps)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise ValueError(
            f"Stamps(reader={stamps.reader!r}) cannot reach the client processes, which are "
            f"spawned and get it by pickling ({exc}): define the reader as a function at the "
            "top level of an importable module (not a lambda or a nested function)"
        ) from None
