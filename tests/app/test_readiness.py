"""``/readyz`` of a node of several workers, in process: ready once every worker of
the node has started, not as soon as the one asked has (``app/_operations.py``). A
node ready while one of its workers still refused with 503 "starting" failed the
requests the kernel gave that worker (found by the docs' metrics block: ``/stats``
right after ``/readyz`` answered 200, from a worker still starting)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from sse_fast.app import App
from sse_fast.brokers.local import LocalBroker
from sse_fast.hub import Hub
from sse_fast.settings import Settings
from sse_fast.testing import wait_for
from tests.support.asgi_harness import request


class Node(LocalBroker):
    """This worker's broker; ``others`` stand for the node's other workers' answers
    to a gather (``starting`` as each says), ``asked`` counts the gathers; while
    ``held`` is clear a gather waits, as one over the relay or Redis does."""

    def __init__(self) -> None:
        super().__init__()
        self.others: list[dict[str, Any]] = []
        self.asked: list[dict[str, Any]] = []
        self.held = asyncio.Event()
        self.held.set()

    async def gather(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        self.asked.append(query)
        await self.held.wait()
        if query.get("what") == "ready":
            return [self.member.report(query), *self.others]
        return [self.member.report(query)]


def node_app(workers: int) -> tuple[App, Node]:
    settings = Settings(workers=workers)
    broker = Node()
    return App(settings, hub=Hub(settings, broker=broker)), broker


async def readyz(app: App) -> tuple[int, dict[str, Any]]:
    status, _, body = await request(app, "GET", "/readyz")
    return status, json.loads(body)


def starting(reason: str) -> dict[str, str]:
    return {"status": "starting", "reason": reason}


def test_a_node_is_ready_once_every_worker_has_started() -> None:
    async def main() -> None:
        app, node = node_app(3)
        await app.lifespan.startup()
        node.others = [{"starting": True}]  # one other answers, starting; one not yet
        assert await readyz(app) == (503, starting("1 of 3 workers started"))
        node.others = [{"starting": False}, {"starting": True}]
        assert await readyz(app) == (503, starting("2 of 3 workers started"))
        node.others = [{"starting": False}, {"starting": False}]
        assert await readyz(app) == (200, {"status": "ready"})
        asked = len(node.asked)
        node.others = []  # later, a worker Granian starts again says so itself
        assert await readyz(app) == (200, {"status": "ready"})
        assert len(node.asked) == asked  # not asked again
        await app.lifespan.shutdown()

    asyncio.run(main())


class SlowStart(Node):
    """A broker whose start waits for ``go`` (then fails when ``fail`` is set)."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()
        self.fail = False

    async def start(self) -> None:
        await self.go.wait()
        if self.fail:
            raise ConnectionError("refused")
        await super().start()


@pytest.mark.parametrize("fails", [False, True])
def test_a_worker_says_it_is_starting_when_asked(fails: bool) -> None:
    """What a gather gets of a worker whose hub is starting, then started; one whose
    start failed goes on saying it is starting (it never serves)."""

    async def main() -> None:
        settings = Settings(workers=2)
        node = SlowStart()
        hub = Hub(settings, broker=node)
        assert node.member.report({"what": "ready"})["starting"] is False  # not asked to
        starting = asyncio.get_running_loop().create_task(hub.start())
        await wait_for(lambda: hub.starting)
        assert node.member.report({"what": "ready"})["starting"] is True
        node.fail = fails
        node.go.set()
        if fails:
            with pytest.raises(ConnectionError):
                await starting
        else:
            await starting
        assert node.member.report({"what": "ready"})["starting"] is fails
        if not fails:
            await hub.stop()

    asyncio.run(main())


def test_one_worker_is_ready_without_asking_anyone() -> None:
    async def main() -> None:
        app, node = node_app(1)
        await app.lifespan.startup()
        assert await readyz(app) == (200, {"status": "ready"})
        assert node.asked == []
        await app.lifespan.shutdown()

    asyncio.run(main())


def test_requests_that_come_while_the_workers_are_asked_share_the_question() -> None:
    """``/readyz`` is open to everyone: a client asking it in a loop while the node
    starts must not make each worker gather the node's figures once per request."""

    async def main() -> None:
        app, node = node_app(2)
        await app.lifespan.startup()
        node.others = [{"starting": True}]
        node.held.clear()
        asking = [asyncio.create_task(readyz(app)) for _ in range(50)]
        await wait_for(_asked_once(node), timeout=5, interval=0.01)
        node.held.set()
        answers = await asyncio.gather(*asking)
        assert answers == [(503, starting("1 of 2 workers started"))] * 50
        assert len(node.asked) == 1
        assert await readyz(app) == (503, starting("1 of 2 workers started"))
        assert len(node.asked) == 2  # a later request asks again
        await app.lifespan.shutdown()

    asyncio.run(main())


def _asked_once(node: Node) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(node.asked) == 1

    return check


def test_a_worker_is_not_ready_from_its_drains_first_step() -> None:
    """``/readyz`` reads the hub's ``draining``, set as the drain starts (before any
    stream is closed): a load balancer stops sending here at once."""

    async def main() -> None:
        app, _ = node_app(1)
        await app.lifespan.startup()
        assert (await readyz(app))[0] == 200
        draining = asyncio.get_running_loop().create_task(app.lifespan.drain())
        await wait_for(lambda: app.hub.draining)
        status, body = await readyz(app)
        assert (status, body["status"]) == (503, "not ready")
        await draining
        assert (await readyz(app))[0] == 503
        await app.lifespan.shutdown()

    asyncio.run(main())
