"""Every code block of README.md and of every page under docs/ runs as written.

A block is run according to the HTML comment on the line before it:

* none (the default): ```python blocks run as a program; ```sh blocks run with
  bash in a network namespace of their own (``unshare``), so 127.0.0.1:8000 is
  free whatever else runs on this machine; ```text blocks are output, not code;
  configuration files (```yaml, ```json, ```toml) are parsed; those of other
  programs (```nginx, ```haproxy, ```caddy, and ```ini: a systemd unit) are run by
  tests/e2e/test_deployment_configs.py (real nginx, HAProxy and Caddy in front of a
  real server, ``systemd-analyze verify``): every such block of every page must be one
  it covers (its ``COVERED``), so a new one fails here until it has a test there.
* ``<!-- docs-test: setup -->``: install-and-run commands. The test command
  must be the one ``.ci/run`` runs; the extras they install must exist; the
  server command must start a server (run to readiness, then stopped).
* ``<!-- docs-test: syntax -->``: long load runs. Checked with ``bash -n``,
  and every ``python -m benches.X --flag`` (or ``sse_fast.X``, ``sse-fast loadgen``) must
  name a module and flags it has. On a ```python block: compiled, not run (a
  fragment of a larger project).
Real processes: the docs' code blocks run as a reader runs them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from ..support.waiting import until
from .test_deployment_configs import COVERED

ROOT = Path(__file__).resolve().parents[2]
#: the README and every page of the docs site (the generated reference pages have no
#: code blocks of their own)
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"(?:<!-- docs-test: (\w+) -->\n)?```(\w*)\n(.*?)```", re.S)
#: configuration of other programs: run by test_deployment_configs.py, not here
TESTED_THERE = ("ini", "nginx", "haproxy", "caddy")
PARSED = {"yaml": yaml.safe_load, "json": json.loads, "toml": tomllib.loads}


def _blocks() -> list[tuple[str, int, str, str, str]]:
    out = []
    for page in PAGES:
        text = page.read_text()
        name = page.relative_to(ROOT).as_posix()
        for m in BLOCK.finditer(text):
            line = text[: m.start()].count("\n") + 1
            out.append((name, line, m.group(1) or "run", m.group(2), m.group(3)))
    return out


BLOCKS = _blocks()

#: one worker runs the blocks, one after another (the examples' vendored JavaScript is
#: fetched once, and the blocks that start servers do not compete for two cores); in the
#: extension mode only: a reader runs them as written, in the default mode (the twins'
#: behaviour is the rest of the suite's subject, in both modes), and the pure-Python
#: run of the pages cost 220 worker-seconds of its 270 s
pytestmark = [
    pytest.mark.processes("the docs' code blocks run as a reader runs them"),
    pytest.mark.xdist_group("docs"),
    pytest.mark.mode_independent,
]
#: but for the load-testing pages' blocks (a minute of load runs, none of the examples'
#: JavaScript): they are a second chain, on a worker of their own, so that the blocks
#: are not two minutes of one worker (the suite's longest chain)
LOAD_PAGES = ("docs/load-testing.md", "docs/load-test-your-server.md")


def _params() -> list[object]:
    return [
        pytest.param(
            *block,
            id=f"{page}:{line}-{language}-{how}",
            marks=[pytest.mark.xdist_group("docs-load")] if page in LOAD_PAGES else [],
        )
        for block in BLOCKS
        for page, line, how, language, _ in [block]
    ]


def test_every_block_is_classified() -> None:
    assert len({page for page, *_ in BLOCKS}) > 10, "the pages' blocks were not found"
    for page, line, how, language, _ in BLOCKS:
        known = ("python", "sh", "text", *TESTED_THERE, *PARSED)
        assert language in known, f"{page} line {line}: say ```{language}?"
        assert how in ("run", "setup", "syntax"), f"{page} line {line}: unknown {how!r}"
        if language in TESTED_THERE:
            assert (page, language) in COVERED, (
                f"{page} line {line}: no test runs this ```{language} block: add one to "
                "tests/e2e/test_deployment_configs.py (and to its COVERED)"
            )
    for page, language in COVERED:  # and each one covered is there, once
        found = [b for b in BLOCKS if b[0] == page and b[3] == language]
        assert len(found) == 1, f"{page}: {len(found)} ```{language} blocks, COVERED says one"


def _in_netns(
    script: str, timeout: float, cwd: Path, grace: float = 15.0
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with bash in a network namespace of its own; then check that
    nothing it started is still running there (a server its ``kill``/``wait`` did not
    stop): such a process is killed and the block fails, naming it."""
    namespace = Path(tempfile.mkdtemp()) / "netns"
    # whatever happens, no background job outlives the block
    wrapper = (
        f"readlink /proc/$$/ns/net > {shlex.quote(str(namespace))}\n"
        "trap 'jobs -p | xargs -r kill 2>/dev/null || true; wait || true' EXIT\n"
        f"ip link set lo up\n{script}"
    )
    # the commands of this Python's environment (`sse-fast` of the installed wheel)
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    # each block's servers keep their events in a directory of the block's own, removed after
    state = tempfile.mkdtemp(prefix="sse-fast-docs-state-")
    try:
        done = subprocess.run(
            ["unshare", "--net", "--", "bash", "-euo", "pipefail", "-c", wrapper],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            env={**os.environ, "PATH": path, "XDG_STATE_HOME": state},
            check=False,
        )
    except subprocess.TimeoutExpired as exc:  # say where it hung
        logs = {p.name: p.read_text()[-2000:] for p in cwd.glob("*.log")}
        _stop_leftovers(namespace)
        shutil.rmtree(state, ignore_errors=True)
        raise AssertionError(
            f"timed out after {timeout} s\nstdout: {exc.stdout!r}\nstderr: {exc.stderr!r}\n{logs}"
        ) from None
    leftover = _stop_leftovers(namespace, grace)
    shutil.rmtree(state, ignore_errors=True)  # once nothing of the block can write there
    assert not leftover, f"still running after the block ended: {leftover}"
    return done


def _stop_leftovers(namespace_file: Path, grace: float = 15.0) -> list[str]:
    """The processes still in the block's network namespace once its bash has ended.
    A server's worker may end just after its main process (``wait`` returns with the
    main one), so each gets ``grace`` seconds on a loaded machine; what is still there
    then is killed and returned (pid and command line). Only this namespace is looked
    at: other tests' and other programs' servers are none of this check's business."""
    try:
        namespace = namespace_file.read_text().strip()
    except OSError:  # bash did not get as far as writing it: nothing was started
        return []
    finally:
        shutil.rmtree(namespace_file.parent, ignore_errors=True)
    found: list[str] = []

    def ended() -> bool:
        found[:] = _in_namespace(namespace)
        return not found

    with contextlib.suppress(AssertionError):  # what is still there is killed and returned
        until(ended, grace, "the block's processes end")
    for pid in found:
        with contextlib.suppress(OSError):  # gone meanwhile
            os.kill(int(pid.split()[0]), signal.SIGKILL)
    _wait_gone([int(pid.split()[0]) for pid in found])
    return found


def _wait_gone(pids: list[int], timeout: float = 10.0) -> None:
    """Until the killed processes have ended (gone, or a zombie waiting for its
    parent): a kill is delivered when the process next runs, which on a loaded
    machine is not at once."""

    def alive(pid: int) -> bool:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False  # gone
        return stat.rsplit(")", 1)[1].split()[0] != "Z"

    with contextlib.suppress(AssertionError):  # a wait only: the caller reports what it killed
        until(lambda: not any(alive(pid) for pid in pids), timeout, "the killed processes end")


def _in_namespace(namespace: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "net") == namespace:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                found.append(f"{entry.name} {command.strip()}")
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


@pytest.mark.parametrize(("page", "line", "how", "language", "code"), _params())
def test_block(page: str, line: int, how: str, language: str, code: str, tmp_path: Path) -> None:
    where = f"{page} line {line}"
    if language == "text":
        return
    if language in TESTED_THERE:  # the classification test says which test runs it
        assert (page, language) in COVERED, f"{where}: see test_every_block_is_classified"
        return
    if language in PARSED:
        PARSED[language](code)  # raises, naming the place, when it is not valid
        return
    if how == "syntax" and language == "python":
        compile(code, where, "exec")
    elif how == "syntax":
        _check_syntax(code, where)
    elif how == "setup":
        _check_setup(code, where)
    elif language == "python":
        script = tmp_path / "block.py"
        script.write_text(code)
        done = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            check=False,
        )
        assert done.returncode == 0, f"{where}:\n{done.stderr}"
        if "sse_fast.starlette" in code and '"Last-Event-ID": "4"' in code:
            _check_starlette_example(done.stdout, where)
    elif "python -m examples" in code:  # the examples live in the repository, not the package
        from examples.app import EXAMPLES
        from examples.vendor import ensure

        ensure(quiet=True)  # the block runs without network: fetch the pinned JavaScript first
        done = _in_netns(code, timeout=60, cwd=ROOT)
        assert done.returncode == 0, f"{where}:\n{done.stdout}\n{done.stderr}"
        assert done.stdout.split() == [f'href="{path}"' for path, _, _ in EXAMPLES], done.stdout
    else:
        done = _in_netns(code, timeout=60, cwd=tmp_path)
        assert done.returncode == 0, f"{where}:\n{done.stdout}\n{done.stderr}"
        if "/publish" in code and "/events" in code:
            assert '{"ids":["' in done.stdout, done.stdout
            published = re.search(r'"data":(\{[^}]*\})', code)  # what the block publishes
            assert published is not None, f"{where}: which data does it publish?"
            assert f"data: {published.group(1)}" in done.stdout, done.stdout


def _check_starlette_example(stdout: str, where: str) -> None:
    """The Starlette example printed its stream: the events after the id it sent."""
    expected = "".join(f"id: {n}\nevent: update\ndata: update {n}\n\n" for n in (5, 6, 7))
    assert stdout.strip("\n") == expected.strip("\n"), f"{where}:\n{stdout}"


def _check_syntax(code: str, where: str) -> None:
    done = subprocess.run(["bash", "-n", "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{where}: {done.stderr}"
    commands = re.findall(r"python -m ((?:benches|sse_fast)\.\w+)([^\n#&|]*)", code)
    loadgen = re.findall(r"sse-fast loadgen([^\n#&|]*)", code)
    commands += [("sse_fast.loadgen", rest) for rest in loadgen]
    for module, rest in commands:
        helped = subprocess.run(
            [sys.executable, "-m", module, "--help"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
        assert helped.returncode == 0, f"{where}: python -m {module} --help: {helped.stderr}"
        for flag in re.findall(r"(--[a-z][a-z-]*)", rest):
            assert flag in helped.stdout, f"{where}: {module} has no {flag}"


def _check_setup(code: str, where: str) -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for wanted in re.findall(r"'\.\[([a-z,]+)\]'", code):
        for extra in wanted.split(","):
            assert extra in extras, f"{where}: no extra {extra!r} in pyproject.toml"
    command = code.strip()
    if "pytest" in command or command.startswith("scripts/test"):
        ci = (ROOT / ".ci" / "run").read_text().splitlines()
        assert command in ci, f"{where}: .ci/run must run exactly {command!r}"
        assert (ROOT / command.split()[0]).exists() or "pytest" in command, command
        return
    server = command.split("&&")[-1].strip()
    assert shlex.split(server)[:2] == ["sse-fast", "serve"]
    done = _in_netns(
        f"{server} &\n"
        "for _ in $(seq 200); do curl -sf http://127.0.0.1:8000/readyz && break; sleep 0.1; done\n"
        "kill %1; wait %1\n",
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0 and '"ready"' in done.stdout, f"{where}:\n{done.stderr}"


def test_a_process_left_behind_fails_the_block() -> None:
    """The leftover check can fail: a process the block's job control does not know
    (started in a subshell, its output elsewhere: one that kept the block's output
    would hold the block until its timeout) is found in the block's namespace, killed
    and named."""
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"still running after the block ended.*sleep 37"):
        _in_netns("(sleep 37 > /dev/null 2>&1 &)\n", 30, Path(tempfile.gettempdir()), grace=1)
    assert time.monotonic() - started < 10  # killed after the grace, not left to end
    gone = subprocess.run(["pgrep", "-f", "^sleep 37$"], capture_output=True, check=False)
    assert gone.returncode == 1, gone.stdout


def test_readme_links_lead_somewhere() -> None:
    """The README's links (it is read outside the site too): each file exists in the
    repository, or is a page the docs build generates; each anchor is a heading."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    assert spec is not None and spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    generated = {f"docs/{path}" for path in hooks.generated_pages()}
    text = (ROOT / "README.md").read_text()
    headings = {
        re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        for title in re.findall(r"^#+ (.*)$", text, re.M)
    }
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if link.startswith(("http://", "https://")):
            continue
        path, _, anchor = link.partition("#")
        if not path:
            assert anchor in headings, f"README.md: no heading for #{anchor}"
        else:
            assert (ROOT / path).exists() or path in generated, f"README.md: {link} leads nowhere"
