"""The Cython publish checker; the same API as ``sse_fast._core.publish_py`` (whose
module docstring holds the theory of operation).

The API of both implementations, written once: ``.ci/stubtest.sh`` checks the
compiled module and the pure twin (``sse_fast._core.publish_py``) against it with
``mypy.stubtest``, and ``tests/test_parity.py`` reads it back in every test run.
"""

from typing import Any

from sse_fast._core.request import PublishRequest

__all__ = ["ack_lines", "requests_of", "requests_of_lines"]

def ack_lines(lines: list[list[Any]], ids: list[str]) -> None: ...
def requests_of(
    document: object, max_topic_length: int, max_id_length: int, max_events: int
) -> list[PublishRequest] | None: ...
def requests_of_lines(
    lines: list[bytes],
    max_line: int,
    max_topic_length: int,
    max_id_length: int,
    max_events: int,
) -> list[list[PublishRequest] | None]: ...
