"""The Cython SSE frame encoder; the same API as ``sse_fast._core.encoder_py``.

The API of both implementations, written once: ``.ci/stubtest.sh`` checks the
compiled module and the pure twin (``sse_fast._core.encoder_py``) against it with
``mypy.stubtest``, and ``tests/test_parity.py`` reads it back in every test run.
"""

from collections.abc import Iterable, Sequence
from typing import Any

from typing_extensions import disjoint_base

from sse_fast._core.errors import EncodeError as EncodeError

__all__ = ["ID_FIRST_ORDER", "ORDER", "Event", "encode", "encode_many", "encode_sequenced"]

ORDER: str
ID_FIRST_ORDER: str

def encode(
    data: Any = None,
    *,
    event: str | None = None,
    id: str | int | None = None,
    retry: int | None = None,
    comment: str | None = None,
    sep: str = "\n",
    order: str = ...,
) -> bytes: ...
def encode_many(events: Iterable[Event]) -> bytes: ...
def encode_sequenced(
    requests: Sequence[Any], first: int, accepted_at: float, item_type: type[Any]
) -> list[Any]: ...
def utf8_error_at(raw: bytes) -> int: ...
def _rebuild_event(
    data: Any, event: str | None, id: str | int | None, retry: int | None, comment: str | None
) -> Event: ...

@disjoint_base  # a Cython cdef class
class Event:
    """One immutable event, validated and encoded once."""

    @property
    def data(self) -> Any:
        """The payload as given (``str``, bytes, or a value sent as JSON), or ``None``."""
    @property
    def event(self) -> str | None:
        """The ``event:`` field (the event's type), or ``None``."""
    @property
    def id(self) -> str | int | None:
        """The ``id:`` field, or ``None``."""
    @property
    def retry(self) -> int | None:
        """The ``retry:`` field (milliseconds), or ``None``."""
    @property
    def comment(self) -> str | None:
        """The comment, written as ``:`` lines before the fields, or ``None``."""
    def __init__(
        self,
        data: Any = None,
        *,
        event: str | None = None,
        id: str | int | None = None,
        retry: int | None = None,
        comment: str | None = None,
    ) -> None: ...
    def encode(self) -> bytes: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...
