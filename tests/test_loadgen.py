"""The load generator says when a run did not work, and why, and exits non-zero:
the README's load-testing commands against a server with its default limits."""

from __future__ import annotations

import os
import subprocess
import sys

from sse_fast.testing import ServerProcess

LOADGEN = [sys.executable, "-m", "sse_fast.loadgen", "--processes", "1", "--sources", "1"]
SHORT = ["--rate", "5", "--duration", "2", "--warmup", "0.5"]


def run_loadgen(port: int, *args: str, token: str | None = None) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "SSE_FAST_PUBLISH_TOKEN"}
    if token is not None:
        env["SSE_FAST_PUBLISH_TOKEN"] = token
    done = subprocess.run(
        [*LOADGEN, "--port", str(port), *SHORT, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def test_refused_connections_and_publishes_fail_the_run_with_the_reason() -> None:
    defaults = {  # what a fresh `sse-fast serve` does (the test servers relax these)
        "max_connections_per_ip": 1000,
        "connect_rate_per_ip": 100,
        "allow_anonymous_publish": 0,
        "publish_token": "secret",
    }
    with ServerProcess(**defaults) as server:
        code, output = run_loadgen(server.port, "--connections", "600")
    assert code == 1, output
    assert "connections failed" in output and "HTTP 429" in output
    assert "SSE_FAST_CONNECT_RATE_PER_IP=0" in output
    assert "publish(es) failed" in output and "HTTP 401" in output
    assert "--token" in output


def test_a_run_that_works_exits_0_and_the_token_is_sent() -> None:
    with ServerProcess(allow_anonymous_publish=0, publish_token="secret") as server:
        code, output = run_loadgen(server.port, "--connections", "200", token="secret")
        assert code == 0, output
        assert "loadgen:" not in output
        code, output = run_loadgen(server.port, "--connections", "50", "--token", "wrong")
        assert code == 1 and "HTTP 401" in output


def test_nothing_listening_is_named() -> None:
    with ServerProcess() as server:
        port = server.port
    code, output = run_loadgen(port, "--connections", "10")
    assert code == 1 and "refused" in output and "is the server running" in output


def test_lost_or_missing_events_fail_the_run() -> None:
    """The checks a server alone cannot provoke on demand: loss and shortfall."""
    import dataclasses

    from sse_fast.loadgen import Result

    numbers = {
        f.name: 0
        for f in dataclasses.fields(Result)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    clean = Result(
        **{
            **numbers,
            "target": "t",
            "connections": 10,
            "connected": 10,
            "published": 5,
            "expected": 50,
            "delivered": 50,
        }
    )
    assert clean.problems() == []
    lossy = dataclasses.replace(clean, lost=3, delivered=47)
    assert lossy.problems() == [
        "3 event(s) lost and 0 duplicated",
        "delivered 47 of 50 expected events",
    ]
