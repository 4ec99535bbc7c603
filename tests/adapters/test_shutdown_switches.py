"""Each adapter's own shutdown switch (``sse_fast/_shutdown.py``): SIGTERM and SIGINT
end the open streams of every adapter whose switch is on. sse-starlette's
``AppStatus.enable_automatic_graceful_drain`` is the Starlette drop-in's switch and
only its own: turned off, the aiohttp and Django adapters' streams still end, and a
mounted hub still drains."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sse_fast import _shutdown
from sse_fast import aiohttp as sse_aiohttp
from sse_fast import django as sse_django
from sse_fast.starlette import AppStatus
from sse_fast.starlette import _control as starlette_control

#: each adapter's registry of open streams (what a signal ends)
REGISTRIES: dict[str, _shutdown.OpenStreams[Any]] = {
    "starlette": starlette_control.streams,
    "aiohttp": sse_aiohttp._streams,
    "django": sse_django._streams,
}


class Held:
    """An open stream as a registry holds it (weakly), by the adapter's name."""

    def __init__(self, name: str) -> None:
        self.name = name


def test_turning_off_starlettes_drain_leaves_the_other_adapters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        stopped: list[Held] = []
        drained: list[str] = []
        held = {name: Held(name) for name in REGISTRIES}
        for name, registry in REGISTRIES.items():
            monkeypatch.setattr(registry, "_stop", stopped.append)
            registry.add(held[name], loop)

        def mounted_drain() -> None:  # what App.running adds (sse_fast/app/_routing.py)
            drained.append("mounted hub")

        _shutdown.add(mounted_drain)

        async def signal_comes() -> list[str]:
            """What SIGTERM and SIGINT do in front of the server's handler."""
            stopped.clear()
            drained.clear()
            _shutdown.trigger()
            await asyncio.sleep(0)  # the stops, scheduled on this loop, run
            return sorted(s.name for s in stopped) + drained

        try:
            AppStatus.enable_automatic_graceful_drain = False
            assert await signal_comes() == ["aiohttp", "django", "mounted hub"]
            stopped.clear()
            assert starlette_control.shutdown_streams() == 1  # by hand, it still ends them
            await asyncio.sleep(0)
            assert [s.name for s in stopped] == ["starlette"]
            AppStatus.enable_automatic_graceful_drain = True
            assert await signal_comes() == ["aiohttp", "django", "starlette", "mounted hub"]
        finally:
            AppStatus.enable_automatic_graceful_drain = True
            _shutdown.discard(mounted_drain)
            for name, registry in REGISTRIES.items():
                registry.discard(held[name])

    asyncio.run(main())


def test_each_adapter_has_a_switch_of_its_own() -> None:
    try:
        AppStatus.disable_automatic_graceful_drain()
        assert [registry.on_signals for registry in REGISTRIES.values()] == [False, True, True]
        AppStatus.enable_automatic_graceful_drain_mode()
        assert all(registry.on_signals for registry in REGISTRIES.values())
    finally:
        AppStatus.enable_automatic_graceful_drain = True
