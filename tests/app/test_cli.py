"""``sse-fast``: one clear line and a non-zero exit where a traceback used to be;
a busy port is refused unless sharing it is asked for; --version; misspelt
``SSE_FAST_*`` variables are named. Real processes: the sse-fast command as a user types it."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys

import orjson
import pytest

import sse_fast
from sse_fast.settings._settings import unknown_variables
from sse_fast.testing import HOST, ServerProcess, free_port, wait_for

pytestmark = pytest.mark.processes("the sse-fast command as a user types it")


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, str]:
    """``sse-fast ARGS`` as a user runs it; (exit code, stderr + stdout)."""
    done = subprocess.run(
        [sys.executable, "-m", "sse_fast", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    return done.returncode, done.stderr + done.stdout


def assert_one_clear_line(output: str, *fragments: str) -> None:
    assert "Traceback" not in output and "panicked" not in output, output
    (line,) = [line for line in output.splitlines() if line.startswith("sse-fast: ")]
    for fragment in fragments:
        assert fragment in line, (fragment, line)


def test_version() -> None:
    code, output = run_cli("--version")
    assert code == 0 and output.strip() == f"sse-fast {sse_fast.__version__}"


def test_a_port_held_by_another_program_is_one_line() -> None:
    with socket.create_server((HOST, 0)) as other:
        port = other.getsockname()[1]
        code, output = run_cli("serve", "--port", str(port))
    assert code == 2
    assert_one_clear_line(output, f"port {port}", "already in use", "--port", "--reuse-port")


def test_a_second_server_on_a_busy_port_refuses_to_start() -> None:
    with ServerProcess(publish_token="first", allow_anonymous_publish="0") as first:
        code, output = run_cli(
            "serve", "--port", str(first.port), env={"SSE_FAST_PUBLISH_TOKEN": "second"}
        )
        assert code == 2
        assert_one_clear_line(output, "already in use")

        async def every_publish_reaches_the_first() -> None:
            for i in range(20):
                status, _, _ = await first.publish(
                    orjson.dumps({"topic": "t", "data": i}), {"Authorization": "Bearer first"}
                )
                assert status == 200

        asyncio.run(every_publish_reaches_the_first())


def test_sharing_a_port_on_purpose_works() -> None:
    port = free_port()
    with (
        ServerProcess("--reuse-port", port=port) as first,
        ServerProcess("--reuse-port", port=port) as second,
    ):
        pids = set()

        async def answered_by_both() -> bool:
            # the second may still be starting (its readiness check reached the first)
            status, _, body = await first.get("/stats")
            if status == 503 and b"starting" in body:  # the second one, not ready yet
                return False
            assert status == 200, body
            pids.add(json.loads(body)["worker_pid"])
            return len(pids) >= 2

        asyncio.run(wait_for(answered_by_both, timeout=15, what="both servers answer /stats"))
        assert len(pids) == 2  # the kernel spreads connections over both
        assert second.proc is not None and second.proc.poll() is None


def test_an_invalid_host_is_one_line() -> None:
    code, output = run_cli("serve", "--host", "256.1.1.1", "--port", str(free_port()))
    assert code == 2
    assert_one_clear_line(output, "256.1.1.1", "--host 127.0.0.1")


def test_an_address_of_another_machine_is_one_line() -> None:
    code, output = run_cli("serve", "--host", "192.0.2.1", "--port", str(free_port()))
    assert code == 2
    assert_one_clear_line(output, "192.0.2.1 is not an address of this machine")


def test_without_the_server_extra_the_install_command_is_given() -> None:
    script = (
        "import sys; sys.modules['granian'] = None; "  # as if Granian were not installed
        "from sse_fast.cli import main; sys.exit(main(['serve']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 2
    assert_one_clear_line(done.stderr, "pip install 'sse_fast[server]'")


def test_misspelt_variables_are_named() -> None:
    environ = {
        "SSE_FAST_HEARTBEAT_INTERVALL": "5",
        "SSE_FAST_PORT": "1",
        "SSE_FAST_NO_EXTENSIONS": "1",
        "SSE_FAST_WHATEVER": "x",
    }
    assert unknown_variables(environ) == [
        "SSE_FAST_HEARTBEAT_INTERVALL (did you mean SSE_FAST_HEARTBEAT_INTERVAL?)",
        "SSE_FAST_WHATEVER",
    ]
    code, output = run_cli(
        "serve", "--host", "256.1.1.1", env={"SSE_FAST_HEARTBEAT_INTERVALL": "5"}
    )
    assert code == 2
    assert "ignoring unknown environment variable SSE_FAST_HEARTBEAT_INTERVALL" in output
    assert "did you mean SSE_FAST_HEARTBEAT_INTERVAL?" in output


def _granian_has_jemalloc() -> bool:
    """Granian's extension carries jemalloc (its Linux wheels do), which reads
    ``_RJEM_MALLOC_CONF``."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("granian._granian")
    return bool(spec and spec.origin and b"_RJEM_MALLOC_CONF" in Path(spec.origin).read_bytes())


needs_jemalloc = pytest.mark.skipif(
    not _granian_has_jemalloc(), reason="this Granian build has no jemalloc to tune"
)
PRINT = "stats_print:true,stats_print_opts:mdablxe"  # jemalloc: its options, at exit


def _allocator_options(env: dict[str, str]) -> set[str]:
    """Start ``sse-fast serve`` (two workers) with jemalloc told to print its options at
    exit, stop it, and return the decay lines printed: the main process's (its workers
    fork from it once Granian is loaded, so they run on the options it read; they
    leave by ``os._exit``, which prints nothing)."""
    server = ServerProcess("--workers", "2")
    server.env.pop("_RJEM_MALLOC_CONF", None)
    server.env.update(env)
    with server:
        server.stop()
        output = server.output()
    lines = {line.strip() for line in output.splitlines() if "_decay_ms: " in line}
    assert lines, f"jemalloc printed no options:\n{output}"
    return lines


def _decays(dirty: int) -> set[str]:
    return {
        f"opt.dirty_decay_ms: {dirty} (arenas.dirty_decay_ms: {dirty})",
        "opt.muzzy_decay_ms: 0 (arenas.muzzy_decay_ms: 0)",
    }


@needs_jemalloc
def test_granians_allocator_gives_freed_pages_back_at_once() -> None:
    # the options a user adds come after the server's; here only jemalloc's printing
    assert _allocator_options({"_RJEM_MALLOC_CONF": PRINT}) == _decays(0)


@needs_jemalloc
def test_allocator_decay_sets_how_long_freed_pages_are_kept() -> None:
    env = {"_RJEM_MALLOC_CONF": PRINT, "SSE_FAST_ALLOCATOR_DECAY": "2.5"}
    assert _allocator_options(env) == _decays(2500)


@needs_jemalloc
def test_the_users_allocator_options_win() -> None:
    assert _allocator_options({"_RJEM_MALLOC_CONF": f"dirty_decay_ms:5000,{PRINT}"}) == _decays(
        5000
    )


def test_a_bad_allocator_decay_is_one_line() -> None:
    code, output = run_cli("serve", "--allocator-decay", "4000")
    assert code == 2
    assert_one_clear_line(output, "allocator_decay must be at most 3600")


def test_the_allocator_options_go_first(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from sse_fast._compose import tune_granian_allocator

    default = "dirty_decay_ms:0,muzzy_decay_ms:0"
    monkeypatch.delitem(sys.modules, "granian._granian", raising=False)
    environ: dict[str, str] = {}
    assert tune_granian_allocator(environ) == default == environ["_RJEM_MALLOC_CONF"]
    environ = {"_RJEM_MALLOC_CONF": "narenas:2"}
    assert tune_granian_allocator(environ) == f"{default},narenas:2"
    assert tune_granian_allocator({}, 10) == "dirty_decay_ms:10000,muzzy_decay_ms:0"
    assert not caplog.records
    # too late once Granian is loaded in this process: said, not silent
    monkeypatch.setitem(sys.modules, "granian._granian", sys)
    tune_granian_allocator({}, 0)
    (record,) = caplog.records
    assert record.levelname == "WARNING" and "--allocator-decay is not applied" in record.message


def test_every_option_has_help_that_prints() -> None:
    # argparse expands "%" in help texts: a bare one breaks `--help` for every option
    for command in ("serve", "mirror"):
        code, output = run_cli(command, "--help")
        assert code == 0 and "--allocator-decay" in output, output
