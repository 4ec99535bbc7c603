"""stop_task: a task that swallows a cancellation (as Python 3.11's wait_for
can) is still stopped, and one that never stops is given up on with a warning."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading

import pytest

from sse_fast._tasks import stop_task
from sse_fast.testing import wait_for


def test_a_task_that_swallows_one_cancellation_is_stopped() -> None:
    async def main() -> None:
        swallowed = 0

        async def loop() -> None:
            nonlocal swallowed
            while True:
                try:
                    await asyncio.sleep(3600)  # until cancelled
                except asyncio.CancelledError:
                    swallowed += 1
                    if swallowed > 1:
                        raise

        task = asyncio.get_running_loop().create_task(loop())
        await asyncio.sleep(0)
        # the naive way waits forever: the first cancel is swallowed (and the task,
        # in the same step, waits again)
        task.cancel()
        await wait_for(lambda: swallowed, what="the first cancel swallowed")
        assert not task.done() and swallowed == 1
        assert await stop_task(task, timeout=2)
        assert task.cancelled() and swallowed == 2

    asyncio.run(main())


def test_a_task_that_never_stops_is_given_up_on(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        stop = False

        async def stubborn() -> None:
            while not stop:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(3600)  # until cancelled (and then again)

        task = asyncio.get_running_loop().create_task(stubborn())
        await asyncio.sleep(0)
        assert not await stop_task(task, timeout=0.3)
        assert "did not stop within 0.3 s" in caplog.text
        stop = True
        task.cancel()
        await task

    asyncio.run(main())


def test_an_ended_task_and_none_are_fine() -> None:
    async def main() -> None:
        async def fails() -> None:
            raise ValueError("boom")

        task = asyncio.get_running_loop().create_task(fails())
        await asyncio.sleep(0)
        assert await stop_task(task)
        assert await stop_task(None)

    asyncio.run(main())


def test_step_gives_what_is_ready_and_the_rest_of_what_waits() -> None:
    from sse_fast._tasks import step

    async def main() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        queue.put_nowait(1)
        assert step(queue.get()) == (True, 1)  # ready: no suspension
        ready, rest = step(queue.get())
        assert not ready
        asyncio.get_running_loop().call_later(0.01, queue.put_nowait, 2)
        assert await rest == 2

        async def fails() -> None:
            await asyncio.sleep(0)
            raise ValueError("boom")

        ready, rest = step(fails())
        with pytest.raises(ValueError, match="boom"):
            await rest

        async def ends() -> None:
            raise StopAsyncIteration

        with pytest.raises(StopAsyncIteration):
            step(ends())

        # a cancellation of the task awaiting the rest reaches the awaitable
        reached: list[str] = []

        async def waits() -> None:
            try:
                await asyncio.sleep(3600)  # until cancelled
            except asyncio.CancelledError:
                reached.append("cancelled")
                raise

        async def awaiter() -> None:
            _, rest = step(waits())
            await rest

        task = asyncio.get_running_loop().create_task(awaiter())
        await asyncio.sleep(0)  # its first step, run before this one goes on: it awaits the rest
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert reached == ["cancelled"]

        # abandoning an async generator's step runs its cleanup and frees it
        cleaned: list[str] = []

        async def generator():  # type: ignore[no-untyped-def]
            try:
                await asyncio.sleep(3600)  # until abandoned
                yield 1
            finally:
                await asyncio.sleep(0)  # cleanup that waits
                cleaned.append("done")

        agen = generator()
        ready, rest = step(agen.__anext__())
        assert not ready
        await rest.abandon(1.0)
        assert cleaned == ["done"]
        await agen.aclose()  # not "already running"

    asyncio.run(main())


def test_running_loop_is_the_running_loop_of_this_thread_and_none_after() -> None:
    """``running_loop`` (get_running_loop without its getpid per call) answers as
    asyncio does: the loop running in the asking thread, a new one once it runs,
    another thread's own loop there, and RuntimeError once the loop stopped."""
    from sse_fast import _tasks
    from sse_fast._tasks import running_loop

    async def ask() -> tuple[asyncio.AbstractEventLoop, asyncio.AbstractEventLoop]:
        return running_loop(), asyncio.get_running_loop()

    first, expected = asyncio.run(ask())
    assert first is expected
    with pytest.raises(RuntimeError, match="no running event loop"):
        running_loop()  # the loop found before is stopped (and closed)
    second, expected = asyncio.run(ask())
    assert second is expected and second is not first

    # a loop running in another thread meanwhile: each thread gets its own
    in_thread: list[asyncio.AbstractEventLoop] = []

    async def main() -> None:
        mine = running_loop()
        thread = threading.Thread(target=lambda: in_thread.append(asyncio.run(ask())[0]))
        thread.start()

        def other_done() -> bool:  # and, meanwhile, this thread's loop is still this one
            assert running_loop() is mine
            return not thread.is_alive()

        await wait_for(other_done, interval=0.001, what="the other thread's loop ran")
        thread.join()
        assert in_thread and in_thread[0] is not mine
        assert running_loop() is mine is asyncio.get_running_loop()

    asyncio.run(main())

    # a forked child forgets the loop its parent found (its copy is not running there)
    async def fork() -> int:
        running_loop()
        assert _tasks._found is not None
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os._exit(0 if _tasks._found is None else 1)
        _, status = os.waitpid(pid, 0)
        return status

    assert asyncio.run(fork()) == 0
