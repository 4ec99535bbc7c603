"""A small asyncio TCP server on a thread of the test's process, for the load tools'
tests against servers that are not ours (their own behaviour written in ``serve``):
``with running(MyServer()) as server:`` starts it on a free loopback port, and at
the end closes every connection it holds and stops it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import TypeVar

__all__ = ["ThreadServer", "running"]


class ThreadServer:
    """Subclasses write ``serve``: one connection's life, from its first byte."""

    def __init__(self) -> None:
        self.port = 0
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop: asyncio.Event | None = None
        self.handlers: set[asyncio.Task[None]] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            await self.serve(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            self.handlers.discard(task)

    def run(self) -> None:
        """The thread's body: serve until ``stop`` is set, then close every connection."""

        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self.stop = asyncio.Event()
            server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            self.ready.set()
            async with server:
                await self.stop.wait()
                for task in list(self.handlers):  # every connection closed before the loop
                    task.cancel()
                await asyncio.gather(*self.handlers, return_exceptions=True)

        asyncio.run(main())


Server = TypeVar("Server", bound=ThreadServer)


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    """``server`` serving on its thread for the block (ready before it starts)."""
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert server.ready.wait(10), "the test server did not start in 10 s"
    try:
        yield server
    finally:
        assert server.loop is not None and server.stop is not None
        server.loop.call_soon_threadsafe(server.stop.set)
        thread.join(10)
