"""What an embedder installs and loads: the core install needs orjson alone, and
importing the encoder or a framework adapter loads none of the edge (hub,
brokers, app, settings, auth, schemas) and no PyJWT.

The import sets are checked in a fresh interpreter in which PyJWT cannot be
imported at all (``sys.modules["jwt"] = None``), as in a venv with only
``sse_fast[starlette]``; each set is pinned, so a new import into an adapter's
path shows up here. ``_ext`` and ``_py`` modules are named ``<name>_*`` so the
sets hold in both modes. Real processes: a fresh interpreter, whose modules are only
what the import loaded."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys

import pytest

CORE = {
    "sse_fast",
    "sse_fast._core",
    "sse_fast._core.encoder_*",
    "sse_fast._core.errors",
    "sse_fast._core.native",
    "sse_fast._core.parser_*",
    "sse_fast._core.publish_*",
    "sse_fast._core.records_*",
    "sse_fast._core.request",
    "sse_fast._core.ring_*",
    "sse_fast._core.topic_*",
    "sse_fast.frames",
}
ADAPTER = CORE | {"sse_fast._shutdown", "sse_fast._tasks"}
LOADS = {
    "sse_fast": CORE,
    "sse_fast.starlette": ADAPTER
    | {
        "sse_fast.starlette",
        "sse_fast.starlette._coalesce",
        "sse_fast.starlette._control",
        "sse_fast.starlette._stream",
        "sse_fast.starlette.event",
        "sse_fast.starlette.sse",
        "sse_fast._adapters",
        "sse_fast._adapters.items",
        "sse_fast._adapters.pacing",
        "sse_fast._abort",
        "sse_fast._asgi",
        # the name of Granian's eager send's type, from the door to Granian's private
        # parts (its __init__ alone: neither Granian nor the server's overrides)
        "sse_fast._granian",
    },
    # its time limits are asyncio.timeout's: nothing of _tasks
    "sse_fast.aiohttp": CORE | {"sse_fast._shutdown", "sse_fast.aiohttp"},
    "sse_fast.django": ADAPTER
    | {"sse_fast.django", "sse_fast._adapters", "sse_fast._adapters.items", "sse_fast._abort"},
}
EDGE = ("hub", "brokers", "app", "settings", "auth", "schemas", "webhooks", "cli", "publisher")


pytestmark = pytest.mark.processes("a fresh interpreter without PyJWT: what an import loads")


def _loaded_by(module: str) -> set[str]:
    code = (
        "import json, sys\n"
        "sys.modules['jwt'] = None  # as if PyJWT were not installed\n"
        f"import {module}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'sse_fast')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return {re.sub(r"_(ext|py)$", "_*", name) for name in json.loads(done.stdout)}


@pytest.mark.parametrize("module", sorted(LOADS))
def test_an_import_loads_its_layer_and_nothing_of_the_edge(module: str) -> None:
    loaded = _loaded_by(module)
    edge = sorted(m for m in loaded if m.split(".")[1:2] and m.split(".")[1] in EDGE)
    assert edge == [], f"import {module} loads the edge: {edge}"
    assert loaded == LOADS[module]


def test_the_publisher_is_loaded_when_named() -> None:
    code = (
        "import sys\nsys.modules['jwt'] = None\n"
        "import sse_fast\nassert 'sse_fast.publisher' not in sys.modules\n"
        "from sse_fast import Publisher, PublishFailed\n"
        "import sse_fast.publisher as p\n"
        "assert Publisher is p.Publisher and PublishFailed is p.PublishFailed\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def _requirements() -> dict[str, set[str]]:
    """The installed distribution's requirements by extra ("" for the core)."""
    out: dict[str, set[str]] = {}
    for line in importlib.metadata.requires("sse_fast") or []:
        requirement, _, marker = line.partition(";")
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
        name = re.split(r"[<>=!~\[ ]", requirement.strip(), maxsplit=1)[0].lower()
        out.setdefault(extra.group(1) if extra else "", set()).add(name)
    return out


def test_the_core_install_needs_orjson_alone_and_the_server_brings_pyjwt() -> None:
    requirements = _requirements()
    assert requirements[""] == {"orjson"}
    assert requirements["starlette"] == {"starlette"}
    assert requirements["aiohttp"] == {"aiohttp"}
    assert requirements["django"] == {"django"}
    assert "pyjwt" in requirements["server"]
    assert "zstandard" in requirements["server"] and requirements["zstd"] == {"zstandard"}


def test_jwt_settings_without_pyjwt_are_refused_with_the_install_to_run() -> None:
    code = (
        "import sys\nsys.modules['jwt'] = None\n"
        "from sse_fast.app import App\nfrom sse_fast.settings import Settings\n"
        "App(Settings())  # no JWT configured: no PyJWT needed\n"
        "try:\n    Settings(jwt_secret='s' * 32)  # refused when the settings are read\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
        "settings = Settings()  # and by an App given them (forced past the frozen settings)\n"
        "object.__setattr__(settings, 'jwt_secret', 's' * 32)\n"
        "try:\n    App(settings)\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    sentence = (
        "SettingsError JWT authentication needs PyJWT, which is not installed: "
        "pip install 'sse_fast[server]' (or 'pyjwt[crypto]')"
    )
    assert done.stdout.splitlines() == [sentence, sentence]
