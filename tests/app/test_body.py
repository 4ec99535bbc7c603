"""Request bodies read within a deadline (``sse_fast/app/_body.py``), in process:
the late read's answer, a drain's cut, and cancellations that are not ours."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sse_fast.app._body import BodyDeadlines
from sse_fast.app._http import HTTPError
from sse_fast.hub import Hub
from sse_fast.settings import Settings

SCOPE: dict[str, Any] = {"http_version": "1.1", "server": ("127.0.0.1", 1), "client": None}


def _deadlines(**settings: Any) -> tuple[BodyDeadlines, Hub]:
    hub = Hub(Settings(**settings))
    return BodyDeadlines(hub.settings.limits, hub.settings.streams, hub), hub


async def _forever() -> bytes:
    await asyncio.get_running_loop().create_future()
    raise AssertionError("never")  # pragma: no cover


def test_a_body_late_past_body_timeout_is_a_408_naming_it() -> None:
    async def main() -> None:
        deadlines, _ = _deadlines(body_timeout=0.05)
        with pytest.raises(HTTPError) as info:
            await asyncio.wait_for(deadlines.read(SCOPE, _forever()), 2)
        assert info.value.status == 408 and info.value.reason == "body_timeout"
        assert "within 0.05 s (body_timeout)" in info.value.message
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    asyncio.run(main())


def test_a_drain_cuts_the_reads_when_drain_timeout_ends() -> None:
    async def main() -> None:
        deadlines, hub = _deadlines(body_timeout=60, drain_timeout=0.05)
        reading = asyncio.ensure_future(deadlines.read(SCOPE, _forever()))
        await asyncio.sleep(0)
        await hub.drain()
        with pytest.raises(HTTPError) as info:
            await asyncio.wait_for(reading, 2)
        assert info.value.status == 503 and info.value.reason == "draining"

    asyncio.run(main())


def test_a_cancellation_beside_ours_is_not_swallowed() -> None:
    """The server cancels the request (its client left) in the same loop iteration
    as the sweep that found the read late: the task ends cancelled, not with a 408."""

    async def main() -> None:
        deadlines, _ = _deadlines(body_timeout=60)
        reading = asyncio.ensure_future(deadlines.read(SCOPE, _forever()))
        await asyncio.sleep(0)
        (task,) = deadlines._reading
        deadlines._reading[task] = 0.0  # late
        deadlines._sweep(asyncio.get_running_loop())  # ours
        reading.cancel()  # and the server's
        with pytest.raises(asyncio.CancelledError):
            await reading

    asyncio.run(main())


def test_a_read_being_cancelled_is_left_to_its_canceller() -> None:
    async def main() -> None:
        deadlines, _ = _deadlines(body_timeout=60)
        reading = asyncio.ensure_future(deadlines.read(SCOPE, _forever()))
        await asyncio.sleep(0)
        (task,) = deadlines._reading
        reading.cancel()  # pending, not yet delivered
        deadlines._reading[task] = 0.0
        deadlines._sweep(asyncio.get_running_loop())
        assert task not in deadlines._cut
        with pytest.raises(asyncio.CancelledError):
            await reading

    asyncio.run(main())
