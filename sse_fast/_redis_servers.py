"""Real ``redis-server`` and ``redis-sentinel`` processes for tests of several nodes on
Redis (``sse_fast.testing`` exports them: ``RedisServer``, ``RedisSentinel``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time

from ._loopback import HOST, free_port

__all__ = ["RedisSentinel", "RedisServer"]


class RedisServer:
    """A real ``redis-server`` on a free loopback port, without persistence (so a
    restart is a Redis that lost its data), for tests of ``--redis-url``.

        with RedisServer() as redis_server:
            with ServerProcess("--redis-url", redis_server.url) as node: ...

    ``kill()`` (SIGKILL), ``stop()``/``cont()`` (SIGSTOP/SIGCONT: a partition),
    ``restart()`` (on the same port) and ``cli(*command)`` (``redis-cli``) are
    for fault tests. Needs the ``redis-server`` binary (Debian: ``apt-get
    install redis-server``)."""

    def __init__(self, port: int = 0, *extra: str) -> None:
        self.port = port or free_port()
        self.url = f"redis://{HOST}:{self.port}/0"
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        #: its working directory, new at each start and removed as it is killed: a
        #: replica's full sync writes dump.rdb there, which a start would load (not in
        #: the caller's directory, where another test's Redis would find it)
        self.directory = ""

    def start(self) -> RedisServer:
        """Start ``redis-server`` and wait until it answers ``PING`` (``RuntimeError`` after 10 s);
        return this server."""
        binary = "redis-server"
        self.directory = tempfile.mkdtemp(prefix="sse-fast-redis-")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                HOST,
                "--dir",
                self.directory,
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.cli("PING").strip() == "PONG":
                    return self
            except (OSError, subprocess.SubprocessError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def cli(self, *command: str) -> str:
        """Run ``redis-cli`` ``command`` on this server; return its output (``CalledProcessError``
        when it fails)."""
        return _redis_cli(self.port, command)

    def kill(self) -> None:
        """SIGKILL the server (continued first if stopped) and wait for it to exit; its
        directory goes with it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = ""

    def stop(self) -> None:
        """Freeze the server (SIGSTOP): to its clients, a partition."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def cont(self) -> None:
        """Continue a stopped server (SIGCONT)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Kill the server and start a new one on the same port, without the data."""
        self.kill()
        self.start()


class RedisSentinel:
    """A real ``redis-sentinel`` watching ``primary`` as master ``name`` (quorum 1,
    down after ``down_after_ms``), for failover tests:

        with RedisServer() as primary, RedisServer(0, "--replicaof", HOST, str(primary.port)):
            with RedisSentinel(primary) as sentinel:
                ServerProcess("--redis-url", sentinel.url, ...)

    Needs the ``redis-sentinel`` binary (Debian: ``apt-get install redis-sentinel``)."""

    def __init__(
        self,
        primary: RedisServer,
        name: str = "mymaster",
        down_after_ms: int = 1000,
        replicas: int = 1,
    ):
        self.port = free_port()
        self.name = name
        self.url = f"redis-sentinel://{HOST}:{self.port}/{name}"
        self._dir = tempfile.TemporaryDirectory(prefix="sse-fast-sentinel-")
        self.config = os.path.join(self._dir.name, "sentinel.conf")
        with open(self.config, "w") as f:  # the sentinel rewrites it: a file of its own
            f.write(
                f"port {self.port}\nbind {HOST}\ndir {self._dir.name}\n"
                f"sentinel monitor {name} {HOST} {primary.port} 1\n"
                f"sentinel down-after-milliseconds {name} {down_after_ms}\n"
                f"sentinel failover-timeout {name} 5000\n"
            )
        self.replicas = replicas
        self.primary = primary
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RedisSentinel:
        self.proc = subprocess.Popen(
            ["redis-sentinel", self.config],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:  # up, knows the replicas (through the primary), and they are in sync
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                known = self.cli("SENTINEL", "REPLICAS", self.name).split()
                synced = self.primary.cli("INFO", "replication").count("state=online")
                if min(known.count("name"), synced) >= self.replicas:
                    return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"redis-sentinel did not start on port {self.port}")
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._dir.cleanup()

    def cli(self, *command: str) -> str:
        """Run ``redis-cli`` ``command`` on this sentinel; return its output
        (``CalledProcessError`` when it fails)."""
        return _redis_cli(self.port, command)

    def primary_port(self) -> int:
        """The port of the primary the sentinel names now."""
        return int(self.cli("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name).split()[1])


def _redis_cli(port: int, command: tuple[str, ...]) -> str:
    """``redis-cli`` ``command`` on ``port`` of loopback: its output (``CalledProcessError``
    when it fails, ``TimeoutExpired`` after 10 s)."""
    out = subprocess.run(
        ["redis-cli", "-h", HOST, "-p", str(port), *command],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return out.stdout
