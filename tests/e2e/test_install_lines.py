"""Every install line of the README and the docs runs as written, at the root of a
fresh clone, in a fresh virtual environment, and installs what it is for.

sse_fast is not on PyPI, so a line that fetches it by name (``pip install
'sse_fast[server]'``) cannot work: each line installs the checkout (``'.[server]'``, at
its root) or a wheel built from it (``"$(ls dist/sse_fast-*.whl)[server]"``), with
extras that pyproject.toml has, beside packages from PyPI (``httpx uvicorn``).

A line is every ``pip install`` or ``pip wheel`` command of a page: in a code block,
on the first line of an example (``# pip install '.[starlette]' httpx``), or in a
sentence's code span. Commands joined by ``&&`` on one line are one line (a wheel built,
then installed); what follows them (``sse-fast serve``, ``mkdocs serve``) is not the
install's (``test_docs.py`` runs that).

The default run checks the lines as text, in a second: extras that exist, nothing
fetched by the package's name. The matrix (marker ``install_lines``, left out of the
default run; ``.ci/run`` runs it) runs each distinct line in a fresh venv made at the
root of a copy of the checkout (``tests/support/clone.py``), with bash, as written
after ``. venv/bin/activate``, then checks what its extras are for: the modules import
(``import sse_fast.aiohttp``) and the commands run (``sse-fast serve --help``).

The compile: building the Cython core takes about a minute per venv on two cores, so
most lines run with ``SSE_FAST_NO_EXTENSIONS=1`` in the environment (the documented
switch: the same line, the pure-Python build; the dependencies are what is checked).
The lines of the two ways in, the checkout's server line and the wheel's
(``COMPILED``), run without it and check that the compiled core loads; a line that sets
the switch itself is run as it is and checks that the twins load.
Real processes: pip in fresh venvs, each line as written.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ..support.clone import fresh_clone as _fresh_clone

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
#: a pip command, to the end of its line, a code span's end or a shell comment
COMMAND = re.compile(
    r"(?:SSE_FAST_NO_EXTENSIONS=1 )?(?:python -m )?pip (?:install|wheel)\b[^`\n#&;|]*"
)
#: the package by its name: what PyPI does not have
BY_NAME = re.compile(r"^sse[-_]fast(\[[^\]]*\])?$", re.I)
#: lines run with the compile (the checkout's server line, the wheel's)
COMPILED = {"python -m pip install -e '.[server]'"}
#: what each extra is for: the modules that must import, the commands that must run
CHECKS: dict[str, tuple[list[str], list[str]]] = {
    "server": (["granian", "uvloop", "jwt"], ["sse-fast serve --help"]),
    "starlette": (["sse_fast.starlette"], []),
    "aiohttp": (["sse_fast.aiohttp"], []),
    "django": (["sse_fast.django"], []),
    "client": (["sse_fast.client"], []),
    "schemas": (["msgspec", "sse_fast.schemas"], []),
    "redis": (["redis", "sse_fast.brokers.redis"], []),
    "loadgen": (["httptools"], ["sse-fast loadgen --help"]),
    "locust": (["sse_fast.locust"], []),
    # the strict build of the clone's site: the docs extra is all the build needs
    "docs": (
        ["mkdocs", "material", "mkdocstrings_handlers.python"],
        ["mkdocs build --strict --config-file {clone}/mkdocs.yml --site-dir {elsewhere}/site"],
    ),
    "test": (["pytest", "xdist", "hypothesis", "uvicorn", "playwright"], []),
    "bench": (["pytest_benchmark", "matplotlib", "lmdb"], []),
}
#: a package installed beside sse_fast -> the module it gives
MODULE_OF = {"pyjwt": "jwt"}


pytestmark = pytest.mark.processes("every install line run in a fresh venv")


def _lines() -> dict[str, list[str]]:
    """Each distinct install line -> where it is written (``page:line``)."""
    found: dict[str, list[str]] = {}
    for page in PAGES:
        for number, text in enumerate(page.read_text().splitlines(), 1):
            groups: list[list[str]] = []
            end = None
            for m in COMMAND.finditer(text):
                command = m.group().strip()
                if not re.search(r"pip (?:install|wheel) \S", command):
                    continue  # prose: "without them `pip install` fails"
                if end is not None and text[end : m.start()].strip() == "&&":
                    groups[-1].append(command)  # the wheel built, then installed
                else:
                    groups.append([command])
                end = m.end()
            for group in groups:
                where = f"{page.relative_to(ROOT).as_posix()}:{number}"
                found.setdefault(" && ".join(group), []).append(where)
    return found


LINES = _lines()


def _installs(line: str) -> list[tuple[str, str, list[str]]]:
    """What ``line`` installs: (kind, name, extras) per requirement, kind ``checkout``,
    ``wheel``, ``by name`` (sse_fast from an index) or ``other`` (a package from PyPI)."""
    out = []
    for command in line.split("&&"):
        words = shlex.split(command.replace("SSE_FAST_NO_EXTENSIONS=1 ", ""))
        if "install" not in words:
            continue
        for word in words[words.index("install") + 1 :]:
            if word.startswith("-"):
                continue
            name, _, extras = word.partition("[")
            wanted = [e for e in extras.rstrip("]").split(",") if e]
            if name == ".":
                out.append(("checkout", name, wanted))
            elif ".whl" in name:
                out.append(("wheel", name, wanted))
            elif BY_NAME.match(word):
                out.append(("by name", name, wanted))
            else:
                out.append(("other", name, wanted))
    return out


def test_the_install_lines_are_found() -> None:
    """The finder sees the lines of every kind: the checkout's, the wheel's, the
    examples' first lines, the sentences' code spans."""
    assert "python -m pip install -e '.[server]'" in LINES
    assert any("pip wheel" in line and "pip install" in line for line in LINES), LINES
    assert "pip install '.[starlette]' httpx uvicorn" in LINES
    assert "pip install '.[client]'" in LINES, LINES
    assert len(LINES) >= 10, LINES


def test_every_install_line_installs_the_checkout_or_its_wheel() -> None:
    """sse_fast is not on PyPI: no line fetches it by name, each installs the checkout
    or a wheel built from it, and every extra it names is in pyproject.toml."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for line, where in LINES.items():
        installed = _installs(line)
        assert installed, f"{where}: {line!r} installs nothing"
        for kind, name, wanted in installed:
            assert kind != "by name", (
                f"{where}: {line!r} fetches {name} from PyPI, which does not have it: "
                "install the checkout (pip install '.[extra]' at its root) or a wheel "
                "built from it (see docs/getting-started.md#from-a-wheel)"
            )
            for extra in wanted:
                assert extra in extras, f"{where}: no extra {extra!r} in pyproject.toml"
                assert extra in CHECKS, f"{where}: say what {extra!r} is for in CHECKS"


def test_the_readme_and_getting_started_say_where_the_package_comes_from() -> None:
    for page in ("README.md", "docs/getting-started.md"):
        text = " ".join((ROOT / page).read_text().split())
        assert "not on PyPI" in text, f"{page}: say where the package comes from"
        assert "wheel" in text and "checkout" in text, page


@pytest.mark.install_lines
@pytest.mark.mode_independent
@pytest.mark.timeout(900)  # a compile of the core, a pip install of the test extra
@pytest.mark.parametrize("line", sorted(LINES), ids=sorted(LINES))
def test_an_install_line_runs_as_written_in_a_fresh_venv(line: str, tmp_path: Path) -> None:
    where = LINES[line]
    clone = _fresh_clone(tmp_path / "sse_fast")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "SSE_FAST"))}
    env.pop("VIRTUAL_ENV", None)
    compiled = line in COMPILED or "pip wheel" in line
    twins = "SSE_FAST_NO_EXTENSIONS=1" in line or not compiled
    if not compiled:
        env["SSE_FAST_NO_EXTENSIONS"] = "1"
    installed = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", f". {shlex.quote(str(venv))}/bin/activate\n{line}"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, f"{where}: {line}\n{installed.stdout}\n{installed.stderr}"
    _check_what_it_is_for(line, venv, env, compiled=not twins)


def _check_what_it_is_for(line: str, venv: Path, env: dict[str, str], compiled: bool) -> None:
    """The modules of the line's extras and packages import (sse_fast with its compiled
    core, or its twins), the extras' commands run (``{clone}``: the clone's directory,
    ``{elsewhere}``: theirs); outside the clone, whose sources must not shadow what was
    installed."""
    where = LINES[line]
    ours = any(kind in ("checkout", "wheel") for kind, _, _ in _installs(line))
    modules = ["sse_fast"] if ours else []
    commands = []
    for kind, name, wanted in _installs(line):
        if kind == "other":
            modules.append(MODULE_OF.get(name.lower(), name.replace("-", "_")))
        for extra in wanted:
            modules += CHECKS[extra][0]
            commands += CHECKS[extra][1]
    loaded = f"import {', '.join(modules)}\n"
    if ours:
        loaded += f"assert sse_fast.HAS_EXTENSIONS is {compiled}, sse_fast.EXTENSION_IMPORT_ERROR"
    elsewhere = venv.parent / "elsewhere"  # not beside the clone, named sse_fast itself
    elsewhere.mkdir()
    places = {"clone": shlex.quote(str(venv.parent / "sse_fast")), "elsewhere": str(elsewhere)}
    commands = [command.format(**places) for command in commands]
    env = {**env, "NO_MKDOCS_2_WARNING": "1"}  # MkDocs 2's notice, not the site's
    for program, *args in [["python", "-c", loaded], *map(shlex.split, commands)]:
        ran = subprocess.run(
            [str(venv / "bin" / program), *args], cwd=elsewhere, env=env,
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert ran.returncode == 0, f"{where}: {line}: {program} {args}: {ran.stderr}"
