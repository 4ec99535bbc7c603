# NOT FROM THE SDIST. sse-starlette 3.7.0's sdist ships its tests without their
# conftest.py. This one is rebuilt from the repository's tests/conftest.py as of v3.4.5
# (git d45e482, the newest available here), with three changes, each marked below:
#   1. httpx2 instead of httpx (3.7.0's tests and dev dependencies moved to httpx2),
#      and the httpx2/httpcore2 loggers quieted as upstream quiets httpx/httpcore;
#   2. the autouse reset touches the original's private `_thread_state` only when the
#      module has it (a drop-in has no reason to), so that a suite run against a
#      drop-in measures the drop-in's behaviour, not the presence of a private name;
#   3. the tests named in VIRTUAL_TIME run on an event loop whose clock moves only while
#      the loop waits (see _VirtualTimeLoop below).
import asyncio
import logging
import selectors
from contextlib import asynccontextmanager

import httpx2 as httpx  # change 1
import pytest
from asgi_lifespan import LifespanManager
from httpx2 import ASGITransport  # change 1
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

_log = logging.getLogger(__name__)
log_fmt = r"%(asctime)-15s %(levelname)s %(name)s %(funcName)s:%(lineno)d %(message)s"
datefmt = "%Y-%m-%d %H:%M:%S"
logging.basicConfig(format=log_fmt, level=logging.DEBUG, datefmt=datefmt)

logging.getLogger("httpx").setLevel(logging.INFO)
logging.getLogger("httpcore").setLevel(logging.INFO)
logging.getLogger("httpx2").setLevel(logging.INFO)  # change 1
logging.getLogger("httpcore2").setLevel(logging.INFO)  # change 1
logging.getLogger("urllib3").setLevel(logging.INFO)
logging.getLogger("docker").setLevel(logging.INFO)


def _reset(should_exit):
    import sse_starlette.sse as sse_module
    from sse_starlette.sse import AppStatus

    AppStatus.should_exit = should_exit
    if hasattr(AppStatus, "enable_automatic_graceful_drain"):  # change 2
        AppStatus.enable_automatic_graceful_drain = True
    thread_state = getattr(sse_module, "_thread_state", None)  # change 2
    if thread_state is not None and hasattr(thread_state, "shutdown_state"):
        del thread_state.shutdown_state


@pytest.fixture(autouse=True)
def reset_shutdown_state():
    """Reset shutdown state before/after each test.

    It ensures clean state for tests involving AppStatus and _shutdown_watcher.
    """
    # Setup: clean state
    _reset(False)

    yield

    # Teardown: signal shutdown to kill any running watchers, then clean up
    _reset(True)


# change 3: a clock for the tests that race a deadline against the `endless` publisher.
# test_sse.py's test_disconnect_whenClientDisconnects_thenHandlesGracefully gives the
# request one second (anyio.fail_after(1)) and asserts the fourth item was sent by then;
# the publisher sends one every 0.3 s, so the fourth is due at 0.9 s and everything else
# the request does (the client building it, routing, the response starting, each wake-up
# after a sleep) must fit in the 0.1 s left. On a loaded machine it does not: with the
# test's process at a small share of the CPU (nice 19 beside two CPU hogs on two cores,
# 2026-11-28) the first item went out up to 0.48 s after the start, and the test failed
# in 8 of 21 runs ("chunk: b'data: 4...'" not in the log); on this loop 21 of 21 pass. The
# test is about the disconnect reaching the generator, not about the machine's speed:
# on this loop time is the timers' alone (the CPU work between them takes none), so the
# items are due at 0, 0.3, 0.6 and 0.9 s and the deadline at 1 s whatever the load, as
# the test assumes. Only for tests whose work is all on the loop (no threads, no real
# sockets: a wait for either would let the clock jump past it).
VIRTUAL_TIME = {"test_disconnect_whenClientDisconnects_thenHandlesGracefully"}


class _AutojumpSelector(selectors.DefaultSelector):
    """Where the loop would sleep until its next timer with nothing ready, it moves its
    clock to that timer instead (a wait with no timer, or with I/O ready, is real)."""

    def __init__(self, advance):
        super().__init__()
        self._advance = advance

    def select(self, timeout=None):
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            return super().select(None)
        self._advance(timeout)
        return []


class _VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose time() starts at 0 and moves only by the selector's jumps."""

    #: how many were made (the check below: a test of VIRTUAL_TIME really ran on one)
    made = 0

    def __init__(self):
        self._virtual_now = 0.0
        super().__init__(_AutojumpSelector(self._advance))
        _VirtualTimeLoop.made += 1

    def _advance(self, seconds):
        self._virtual_now += seconds

    def time(self):
        return self._virtual_now


_made_before = {}


def pytest_runtest_setup(item):
    """change 3: how many virtual-time loops there were before this test."""
    _made_before[item.nodeid] = _VirtualTimeLoop.made


def pytest_runtest_teardown(item):
    """change 3: a test of VIRTUAL_TIME that ran on any other loop fails by name (should
    pytest-asyncio stop asking pytest_asyncio_loop_factories, it would race the wall
    clock again, unseen)."""
    if item.name in VIRTUAL_TIME and _VirtualTimeLoop.made == _made_before.pop(item.nodeid):
        raise AssertionError(
            f"{item.name} did not run on _VirtualTimeLoop: pytest-asyncio no longer takes "
            "the loop from pytest_asyncio_loop_factories (conftest change 3)"
        )


def pytest_asyncio_loop_factories(config, item):
    """change 3: the loop each async test runs on (pytest-asyncio runs them, the anyio
    marked ones too, in asyncio_mode = auto): _VirtualTimeLoop for VIRTUAL_TIME, the
    default loop for the others (one factory: the test ids do not change)."""
    if item.name in VIRTUAL_TIME:
        return {"virtual_time": _VirtualTimeLoop}
    return {"default": asyncio.new_event_loop}


@pytest.fixture
def anyio_backend():
    """Exclude trio from tests"""
    return "asyncio"


@pytest.fixture
async def app():
    @asynccontextmanager
    async def lifespan(app):
        # Startup
        _log.debug("Starting up")
        yield
        # Shutdown
        _log.debug("Shutting down")

    async def home():
        return PlainTextResponse("Hello, world!")

    async def endless(req: Request):
        async def event_publisher():
            i = 0
            try:
                while True:  # i <= 20:
                    # yield dict(id=..., event=..., data=...)
                    i += 1
                    print(f"Sending {i}")
                    yield dict(data=i)
                    await asyncio.sleep(0.3)
            except asyncio.CancelledError as e:
                _log.info(f"Disconnected from client (via refresh/close) {req.client}")
                # Do any other cleanup, if any
                raise e

        return EventSourceResponse(event_publisher())

    app = Starlette(
        routes=[Route("/", home), Route("/endless", endpoint=endless)],
        lifespan=lifespan,
    )

    async with LifespanManager(app):
        _log.info("We're in!")
        yield app
        _log.info("We're out!")


@pytest.fixture
async def httpx_client(app):
    transport = ASGITransport(app=app)

    async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8000") as client:
        _log.info("Yielding Client")
        yield client


@pytest.fixture
def client(app):
    with TestClient(app=app, base_url="http://localhost:8000") as client:
        print("Yielding Client")
        yield client
