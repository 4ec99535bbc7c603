"""Each embedding example of the README and the docs pages runs in a fresh virtual
environment with only the install the page gives for it, as a new user would run it.

An embedding example says what it needs on its first line, ``# pip install
'.[starlette]' httpx`` (at the checkout's root: the package is not on PyPI): this test
builds a wheel of this checkout (the pure-Python one: the dependencies, not the
extension, are what is checked here), makes a venv without this environment's
packages, installs the wheel with that extra and the packages named, runs the block
there, and checks that PyJWT (the edge's dependency) was neither installed nor
needed. The install line itself, as written, is run by ``test_install_lines.py``. Real
processes: pip in fresh venvs and the examples as their readers run them."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import sse_fast

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
INSTALL = re.compile(r"^```python\n# pip install ([^\n]+)\n(.*?)^```", re.S | re.M)


def _examples() -> list[tuple[str, list[str], str]]:
    """(where, what it installs, the code) of each distinct example (the README's
    is also on its page: run once)."""
    seen: dict[str, tuple[str, list[str], str]] = {}
    for page in PAGES:
        text = page.read_text()
        for m in INSTALL.finditer(text):
            where = f"{page.relative_to(ROOT)}:{text[: m.start()].count(chr(10)) + 1}"
            code = m.group(0)[10:-3]
            seen.setdefault(code, (where, shlex.split(m.group(1)), code))
    return list(seen.values())


EXAMPLES = _examples()

#: one worker builds the wheel once and makes the venvs one after the other
pytestmark = [
    pytest.mark.processes("each embedding example installed in a fresh venv and run"),
    pytest.mark.xdist_group("venvs"),
    pytest.mark.mode_independent,
]


def test_the_embedding_examples_say_what_they_need() -> None:
    named = {extra for _, install, _ in EXAMPLES for extra in install if extra.startswith(".[")}
    assert named == {".[starlette]", ".[aiohttp]", ".[django]"}


def test_an_example_run_under_a_server_installs_it() -> None:
    """An example that says how to serve it (``# run: uvicorn module:app``) installs
    that server too: the copied install line is enough to follow the comment."""
    for where, install, code in EXAMPLES:
        for server in ("uvicorn", "hypercorn", "granian"):
            if f"{server} module:app" in code:
                assert server in install, f"{where}: runs {server}, installs {install}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (ROOT / "pyproject.toml").is_file() or "site-packages" in sse_fast.__file__:
        pytest.skip("needs the source checkout to build a wheel from")
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        env={**os.environ, "SSE_FAST_NO_EXTENSIONS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (built,) = out.glob("sse_fast-*.whl")
    return built


#: with the install lines (fresh venvs from PyPI: a minute of the default run's CPU), left
#: out of the default run; .ci/run runs them (``pytest -m install_lines``). Each example
#: also runs as written in the suite's own environment (``test_docs.py``).
@pytest.mark.install_lines
@pytest.mark.parametrize(
    ("where", "install", "code"), EXAMPLES, ids=[where for where, _, _ in EXAMPLES]
)
def test_an_embedding_example_runs_with_only_its_install(
    where: str, install: list[str], code: str, wheel: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    # without pip of its own (ensurepip takes 3.5 s of CPU): this pip installs into it
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    python = venv / "bin" / "python"
    requirements = [
        f"{wheel}{name.removeprefix('.')}" if name.startswith(".[") else name for name in install
    ]
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", *requirements],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"{where}: {done.stderr}"
    script = tmp_path / "example.py"
    script.write_text(code)
    ran = subprocess.run(
        [str(python), "-X", "dev", str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "SSE_FAST"))},
        check=False,
    )
    assert ran.returncode == 0, f"{where}:\n{ran.stdout}\n{ran.stderr}"
    assert "data: update" in ran.stdout
    found = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print(u.find_spec('jwt') is None)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.strip() == "True", f"{where}: PyJWT was installed"
