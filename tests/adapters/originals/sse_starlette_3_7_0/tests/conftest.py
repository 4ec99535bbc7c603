# NOT FROM THE SDIST. sse-starlette 3.7.0's sdist ships its tests without their
# conftest.py. This one is rebuilt from the repository's tests/conftest.py as of v3.4.5
# (git d45e482, the newest available here), with two changes, both marked below:
#   1. httpx2 instead of httpx (3.7.0's tests and dev dependencies moved to httpx2),
#      and the httpx2/httpcore2 loggers quieted as upstream quiets httpx/httpcore;
#   2. the autouse reset touches the original's private `_thread_state` only when the
#      module has it (a drop-in has no reason to), so that a suite run against a
#      drop-in measures the drop-in's behaviour, not the presence of a private name.
import asyncio
import logging
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
