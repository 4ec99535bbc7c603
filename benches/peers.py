"""Servers under test for the SSE load benchmark: sse_fast and its peers.

Each :class:`Target` starts one server on loopback, waits until it answers, says
how to subscribe and publish, which processes hold its connections (for memory),
and stops it, always leaving nothing running. ``benches/loadgen_target.py`` imports
:func:`available_targets`; this module does not generate load itself.

Targets (all on 127.0.0.1, the same heartbeat interval, limits raised for
20,000 connections per process):

``sse_fast-1w`` / ``sse_fast-2w``
    ``python -m sse_fast serve --host H --port P --workers N --heartbeat-interval S``
    (Granian + uvloop; backlog 4096 and backpressure = file limit - 64 are the
    server's defaults). Publish: ``POST /publish`` JSON ``{"topic", "data"}``.
``nchan``
    nginx + the nchan module from Debian, config from ``benches/peers/nchan.conf.template``
    in a temporary prefix directory: ``worker_processes`` = ``workers``,
    ``worker_rlimit_nofile``/``worker_connections`` 20000, ``nchan_subscriber
    eventsource``, ``nchan_subscriber_first_message newest``, a comment-only ping
    every ``round(heartbeat)`` s, 1024 buffered messages per channel for 1 h.
    Publish: ``POST /publish?topic=T`` with the data as the raw body.
``sse-starlette``
    ``benches/peers/starlette_app.py`` under uvicorn (uvloop, httptools, backlog
    4096, no access log, no concurrency limit), one process: its per-subscriber
    ``asyncio.Queue`` pattern cannot span workers.
``velithon``
    ``benches/peers/velithon_app.py`` (Velithon ``SSEResponse``) under
    ``granian --interface rsgi`` with the same Granian knobs as sse_fast (backlog
    4096, backpressure = file limit - 64, HTTP/1 buffer 8 KiB), one worker for
    the same reason as sse-starlette.

Subscribe everywhere with ``GET /events?topic=T`` and ``Accept: text/event-stream``
(nchan's eventsource subscriber needs that header).

Self-test (starts every available target, subscribes, publishes, checks the
event, the heartbeat and that stop() leaves nothing running)::

    python -m benches.peers --check             # installs missing peers first
    python -m benches.peers --check --no-install --only nchan
    python -m benches.peers --list              # targets, skipped peers, versions
    python -m benches.peers --serve nchan --seconds 60   # for curl -N by hand
"""

from __future__ import annotations

import argparse
import atexit
import codecs
import contextlib
import http.client
import importlib.metadata
import importlib.util
import json
import os
import platform
import random
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benches import system

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = Path(__file__).resolve().parent / "peers"
NCHAN_TEMPLATE = PEERS_DIR / "nchan.conf.template"
NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")

# Connection limits, the same for every server.
CONNECTIONS_PER_PROCESS = 20_000  # `ulimit -n` (hard) here
BACKLOG = 4096  # Linux caps it at net.core.somaxconn (4096 here)
RESERVED_FDS = 64  # what sse_fast keeps aside from its file limit (sse_fast.cli)
ALLOCATOR_VARIABLE = "_RJEM_MALLOC_CONF"  # Granian's jemalloc options (sse_fast.cli)
HTTP1_BUFFER_SIZE = 8_192  # sse_fast's Granian --http1-buffer-size default, also given to Velithon
NCHAN_BUFFER_LENGTH = 1024  # messages kept per channel (sse_fast: ring_max_frames 1024)
NCHAN_SHM = "128m"  # nchan_shared_memory_size (alias nchan_max_reserved_memory)

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0  # SIGTERM, then SIGKILL after this many seconds
KILL_WAIT = 5.0

PIP_PEERS = {
    # target name -> (distributions it needs, modules to find)
    "sse-starlette": (
        ["sse-starlette", "starlette", "uvicorn", "uvloop", "httptools"],
        ["sse_starlette", "starlette", "uvicorn", "uvloop", "httptools"],
    ),
    "velithon": (["velithon", "granian", "uvloop"], ["velithon", "granian", "uvloop"]),
}
APT_PACKAGES = ["nginx", "libnginx-mod-nchan"]

_RUNNING: set[Target] = set()


# --------------------------------------------------------------------------- processes


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None when it is gone."""
    try:
        text = system.process_stat(pid)
    except OSError:
        return None
    rest = text[text.rfind(")") + 2 :].split()
    return rest[0], int(rest[1])


def session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` (each server runs in a session of its own)."""
    found = []
    for pid in system.pids():
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = system.process_stat(pid)
            rest = text[text.rfind(")") + 2 :].split()
            if rest[0] not in ("Z", "X") and int(rest[3]) == sid:
                found.append(pid)
    return sorted(found)


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def cmdline(pid: int) -> str:
    try:
        raw = system.cmdline(pid)
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for pid in system.pids():
        stat = _proc_stat(pid)
        if stat is not None and stat[0] not in ("Z", "X"):
            kids.setdefault(stat[1], []).append(pid)
    return kids


def descendants(pid: int) -> list[int]:
    """Live descendants of ``pid`` (recursively), from /proc."""
    kids = children_map()
    found: list[int] = []
    stack = list(kids.get(pid, ()))
    while stack:
        child = stack.pop()
        found.append(child)
        stack.extend(kids.get(child, ()))
    return sorted(found)


def rss_kb(pids: Iterable[int]) -> int:
    """The resident memory of these processes together (KiB; a process gone counts 0)."""
    return system.rss_kb(list(pids))


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _ephemeral_range() -> tuple[int, int]:
    with contextlib.suppress(OSError, ValueError):
        low, high = system.sysctl("net.ipv4.ip_local_port_range").split()
        return int(low), int(high)
    return 32768, 60999


def free_ports(host: str, count: int) -> list[int]:
    """``count`` distinct free ports below the ephemeral range, so that a load
    generator's many client sockets (which use that range) never hold them and
    finding one still works when the range is exhausted."""
    low, _ = _ephemeral_range()
    first, last = (20000, low - 1) if low > 21000 else (10000, 19999)
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    ports: list[int] = []
    for _ in range(2000):
        port = rng.randint(first, last)
        if port not in ports and port_is_free(host, port):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise OSError(f"no free port in {first}-{last} on {host}")


#: what a worker logs at startup when its native core did not load (``app/_lifespan.py``)
NO_NATIVE_CORE = "the native core did not load"


def check_native_core(target: Target) -> None:
    """Refuse to measure an sse_fast that runs on its pure-Python twins by accident (a
    stale build of a checkout): its log says so at startup."""
    log = target.log_tail(1 << 20)
    if NO_NATIVE_CORE in log:
        line = next(x for x in log.splitlines() if NO_NATIVE_CORE in x)
        target.stop()
        raise RuntimeError(f"{target.name}: {line.strip()}")


def source_problem(pids: Iterable[int], source: Path) -> str | None:
    """Why processes ``pids`` do not run sse_fast from the checkout ``source`` (None when
    they do): every native module they loaded (``sse_fast/_core/*_ext*.so``, found where
    its package was imported from) must be under ``source``, and one at least."""
    core = source.resolve() / "sse_fast"
    loaded = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            loaded |= {
                path
                for path in system.mapped_files(pid)
                if "/sse_fast/_core/" in path and "_ext" in Path(path).name
            }
    foreign = sorted({str(Path(p).parent) for p in loaded if not Path(p).is_relative_to(core)})
    if foreign:
        return f"loaded sse_fast's native core from {', '.join(foreign)}, not from {core}"
    if not loaded:
        return f"loaded no native module of sse_fast (expected under {core / '_core'})"
    return None


def check_source(target: SseFastTarget) -> None:
    """Refuse to measure an sse_fast that runs another tree than its ``source`` (a
    compared checkout that imported this one, or an installed copy)."""
    problem = source_problem(target.server_pids(), target.source)
    if problem:
        target.stop()
        raise RuntimeError(
            f"{target.name}: {problem}; build that checkout's extensions in place and start "
            "it from its own directory (benches.peers.checkout_target)"
        )


def http_get(host: str, port: int, path: str, timeout: float = 1.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def hard_nofile() -> int:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return CONNECTIONS_PER_PROCESS if hard == resource.RLIM_INFINITY else int(hard)


def nofile_wrapper(cmd: list[str]) -> list[str]:
    """Run ``cmd`` with its soft file limit raised to the hard one (exec keeps the pid)."""
    script = 'ulimit -S -n "$(ulimit -H -n)" 2>/dev/null; exec "$@"'
    return ["/bin/sh", "-c", script, "sh", *cmd]


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The current environment without SSE_FAST_* / PEER_* / GRANIAN_* / UVICORN_*
    settings nor Granian's allocator options (the command line alone configures each
    server)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SSE_FAST_", "PEER_", "GRANIAN_", "UVICORN_", ALLOCATOR_VARIABLE))
    }
    paths = [str(REPO_ROOT), str(PEERS_DIR)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def _stop_all_running() -> None:
    for target in list(_RUNNING):
        with contextlib.suppress(Exception):
            target.stop()


atexit.register(_stop_all_running)


# --------------------------------------------------------------------------- targets


@dataclass(eq=False)
class Target:
    """One server under test. Subclasses say how to run it; this class runs it."""

    name: str
    host: str
    port: int
    heartbeat: float = 15.0
    workers: int = 1
    start_timeout: float = START_TIMEOUT
    stop_timeout: float = STOP_TIMEOUT
    keep_logs: bool = False
    #: the Python that runs a Python server ("": this one, ``sys.executable``)
    python: str = ""
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _workdir: Path | None = field(default=None, init=False, repr=False)
    _log: Any = field(default=None, init=False, repr=False)
    _known: set[int] = field(default_factory=set, init=False, repr=False)
    _command: list[str] = field(default_factory=list, init=False, repr=False)
    _session: int = field(default=0, init=False, repr=False)

    # -- protocol -------------------------------------------------------------------

    def load_arguments(self) -> dict[str, Any]:
        """What sse_fast.loadgen's run_load needs to know of this server."""
        return {
            "host": self.host,
            "port": self.port,
            "name": self.name,
            "subscribe_path": self.subscribe_path,
            "publish_request": self.publish_request,
            "server_pids": self.server_pids,
        }

    def subscribe_path(self, topic: str) -> str:
        from urllib.parse import quote

        return "/events?topic=" + quote(topic, safe="")

    def publish_request(self, topic: str, data: str) -> tuple[str, str, dict[str, str], bytes]:
        """(method, path, headers, body) of one publish; the caller adds Host and
        Content-Length. Default: sse_fast's JSON API, shared by the Python peers."""
        body = json.dumps(
            {"topic": topic, "data": data}, ensure_ascii=False, separators=(",", ":")
        ).encode()
        return "POST", "/publish", {"Content-Type": "application/json"}, body

    # -- what subclasses provide ------------------------------------------------------

    def command(self, workdir: Path) -> tuple[list[str], Path, dict[str, str]]:
        """(argv, cwd, env) of the server's main process."""
        raise NotImplementedError

    def ready(self) -> bool:
        """The server answers (called repeatedly until true or start_timeout)."""
        status, _ = http_get(self.host, self.port, "/healthz")
        return status == 200

    def server_pids(self) -> list[int]:
        """Processes whose RSS counts as server memory (default: the main one's
        descendants, i.e. Granian workers)."""
        if self._proc is None or not pid_alive(self._proc.pid):
            return []
        return descendants(self._proc.pid)

    def versions(self) -> dict[str, str]:
        return {"python": python_version(self.python)}

    def notes(self) -> list[str]:
        """Configuration facts worth printing next to this target's results."""
        return []

    # -- life cycle ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def command_line(self) -> str:
        """The exact command of the last start()."""
        return shlex.join(self._command)

    @property
    def session(self) -> int:
        """Session id of the last start() (its processes are session_members(session))."""
        return self._session

    @property
    def workdir(self) -> Path | None:
        return self._workdir

    def log_tail(self, chars: int = 2000) -> str:
        if self._workdir is None:
            return ""
        with contextlib.suppress(OSError):
            return (self._workdir / "server.log").read_text(errors="replace")[-chars:]
        return ""

    def start(self) -> None:
        """Start the server and wait (at most start_timeout) until it answers."""
        if self.running:
            return
        if not port_is_free(self.host, self.port):
            self.port = free_ports(self.host, 1)[0]
        self._workdir = Path(tempfile.mkdtemp(prefix=f"peer-{self.name}-"))
        try:
            argv, cwd, env = self.command(self._workdir)
        except BaseException:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
            raise
        self._command = argv
        self._log = open(self._workdir / "server.log", "wb")  # noqa: SIM115
        self._known = set()
        self._proc = subprocess.Popen(
            nofile_wrapper(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._session = self._proc.pid  # start_new_session: session id = its pid
        _RUNNING.add(self)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                tail = self.log_tail()
                code = self._proc.returncode
                self.stop()
                raise RuntimeError(f"{self.name} exited with {code} while starting:\n{tail}")
            try:
                if self.ready():
                    break
            except (OSError, http.client.HTTPException, ValueError):
                pass
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise TimeoutError(
                    f"{self.name} did not answer within {self.start_timeout:.0f} s:\n{tail}"
                )
            time.sleep(0.1)
        self._remember()

    def _remember(self) -> None:
        if self._proc is not None and pid_alive(self._proc.pid):
            self._known.add(self._proc.pid)
            self._known.update(descendants(self._proc.pid))

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after stop_timeout; returns when every process of
        the server (main, workers, relay, ...) is gone."""
        proc = self._proc
        if proc is None:
            return
        self._remember()
        pids = set(self._known) | set(session_members(self._session))
        pids.add(proc.pid)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while time.monotonic() < deadline:
            proc.poll()
            if not any(pid_alive(p) for p in pids):
                break
            time.sleep(0.05)
        else:
            # the whole session started for this server, then anything left by pid
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            for pid in pids:
                if pid_alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + KILL_WAIT
            while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
                proc.poll()
                time.sleep(0.05)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(1)
        left = sorted({p for p in pids if pid_alive(p)} | set(session_members(self._session)))
        self._proc = None
        _RUNNING.discard(self)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._workdir is not None and not self.keep_logs:
            shutil.rmtree(self._workdir, ignore_errors=True)
        if left:
            raise RuntimeError(f"{self.name}: processes {left} survived SIGKILL")


@dataclass(eq=False)
class SseFastTarget(Target):
    #: a checkout of another commit (built in place) to run instead of this one
    source: Path = REPO_ROOT

    def command(self, workdir: Path) -> tuple[list[str], Path, dict[str, str]]:
        argv = [
            self.python or sys.executable,
            "-m",
            "sse_fast",
            "serve",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--heartbeat-interval",
            f"{self.heartbeat:g}",
            # the peers publish without credentials; limits that would refuse a
            # load generator's connection storm from a few addresses are lifted
            "--allow-anonymous-publish",
            "--max-connections-per-ip",
            "0",
            "--connect-rate-per-ip",
            "0",
            "--publish-rate",
            "0",
            # the default persistence, in a directory of this start's own: never the
            # history an earlier run left in ~/.local/state/sse-fast (restored, it
            # would add to the memory and the work measured)
            "--data-dir",
            str(workdir / "data"),
        ]
        return argv, self.source, clean_env()

    def ready(self) -> bool:
        status, _ = http_get(self.host, self.port, "/readyz")
        if status != 200:
            return False
        check_native_core(self)
        check_source(self)
        if self.workers > 1:
            # every Granian worker started (each checks its relay link in /readyz);
            # Granian logs "Started worker-N"; without such lines, count the workers
            log = self.log_tail(1 << 20)
            started = len(set(re.findall(r"Started worker-(\d+)\b", log)))
            if started:
                return started >= self.workers
            workers = [p for p in super().server_pids() if "sse_fast serve" in cmdline(p)]
            return len(workers) >= self.workers
        return True

    def server_pids(self) -> list[int]:
        # Granian workers + the relay (multi-worker); not the Granian supervisor nor
        # multiprocessing's resource tracker, which hold no connection.
        return [p for p in super().server_pids() if "resource_tracker" not in cmdline(p)]

    def versions(self) -> dict[str, str]:
        out = super().versions()
        out.update(
            sse_fast=dist_version("sse_fast"),
            granian=dist_version("granian"),
            uvloop=dist_version("uvloop"),
            orjson=dist_version("orjson"),
        )
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            rev = subprocess.run(
                ["git", "-C", str(self.source), "describe", "--always", "--dirty"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            if rev.returncode == 0:
                out["sse_fast_git"] = rev.stdout.strip()
        return out

    def notes(self) -> list[str]:
        return [
            f"{self.workers} Granian worker(s)"
            + (" + relay process" if self.workers > 1 else "")
            + "; backlog 4096, backpressure = file limit - 64, HTTP/1 buffer 8 KiB "
            "(server defaults)"
        ]


@dataclass(eq=False)
class NchanTarget(Target):
    #: ``nchan_shared_memory_size`` (the same setting as ``nchan_max_reserved_memory``):
    #: channels and messages live there; once it is full nchan answers 500
    shared_memory: str = NCHAN_SHM

    def subscribe_path(self, topic: str) -> str:
        from urllib.parse import quote

        # nginx's $arg_topic is the raw (still percent-encoded) value: publisher and
        # subscriber use the same encoding, so they name the same channel.
        return "/events?topic=" + quote(topic, safe="")

    def publish_request(self, topic: str, data: str) -> tuple[str, str, dict[str, str], bytes]:
        from urllib.parse import quote

        return (
            "POST",
            "/publish?topic=" + quote(topic, safe=""),
            {"Content-Type": "text/plain; charset=utf-8"},
            data.encode(),
        )

    @property
    def ping_seconds(self) -> int:
        """nchan's ping interval is whole seconds."""
        return max(1, round(self.heartbeat)) if self.heartbeat > 0 else 0

    def render_config(self, prefix: Path) -> str:
        ping = self.ping_seconds
        ping_lines = (
            f"nchan_eventsource_ping_interval {ping};\n"
            "            nchan_eventsource_ping_comment ping;\n"
            '            nchan_eventsource_ping_event "";'
            if ping
            else ""
        )
        values = {
            "NCHAN_MODULE": str(NCHAN_MODULE),
            "USER_LINE": "user root;" if os.geteuid() == 0 else "",
            "WORKERS": str(self.workers),
            "NOFILE": str(CONNECTIONS_PER_PROCESS),
            "WORKER_CONNECTIONS": str(CONNECTIONS_PER_PROCESS),
            "PREFIX": str(prefix),
            "SHM": self.shared_memory,
            "BUFFER_LENGTH": str(NCHAN_BUFFER_LENGTH),
            "HOST": self.host,
            "PORT": str(self.port),
            "BACKLOG": str(BACKLOG),
            "PING_LINES": ping_lines,
        }
        text = NCHAN_TEMPLATE.read_text()
        for key, value in values.items():
            text = text.replace(f"@{key}@", value)
        missing = re.findall(r"@[A-Z_]+@", text)
        if missing:
            raise ValueError(f"unfilled fields in {NCHAN_TEMPLATE}: {missing}")
        return text

    def command(self, workdir: Path) -> tuple[list[str], Path, dict[str, str]]:
        conf = workdir / "nginx.conf"
        conf.write_text(self.render_config(workdir))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        argv = [nginx, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")]
        return argv, workdir, clean_env()

    def ready(self) -> bool:
        if not super().ready():
            return False
        return len(self.server_pids()) >= self.workers

    def log_tail(self, chars: int = 2000) -> str:
        text = super().log_tail(chars)
        if self._workdir is not None:
            with contextlib.suppress(OSError):
                text += (self._workdir / "error.log").read_text(errors="replace")[-chars:]
        return text

    def server_pids(self) -> list[int]:
        # nginx workers (the master holds no connection)
        if self._proc is None or not pid_alive(self._proc.pid):
            return []
        return [p for p in descendants(self._proc.pid) if "worker process" in cmdline(p)]

    def versions(self) -> dict[str, str]:
        out = super().versions()
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            res = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=5)
            match = re.search(r"nginx/(\S+)", res.stderr + res.stdout)
            out["nginx"] = match.group(1) if match else "unknown"
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            res = subprocess.run(
                ["dpkg-query", "-W", "-f", "${Version}", "libnginx-mod-nchan"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            if res.returncode == 0:
                out["libnginx-mod-nchan"] = res.stdout.strip()
                match = re.match(r"(?:\d+:)?([\d.]+)", res.stdout.strip())
                if match:
                    out["nchan"] = match.group(1)
        return out

    def notes(self) -> list[str]:
        ping = (
            f"comment ping every {self.ping_seconds} s (whole seconds)"
            if self.ping_seconds
            else "no ping"
        )
        return [
            f"worker_processes {self.workers}, worker_connections/rlimit "
            f"{CONNECTIONS_PER_PROCESS}, backlog {BACKLOG}; {ping}; "
            f"shared memory {self.shared_memory}; "
            f"{NCHAN_BUFFER_LENGTH} messages/1 h per channel; first message newest; "
            "sends `: hi` on connect and an `id: <time>:<n>` line with every event"
        ]


@dataclass(eq=False)
class StarletteTarget(Target):
    def command(self, workdir: Path) -> tuple[list[str], Path, dict[str, str]]:
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--backlog",
            str(BACKLOG),
            "--no-access-log",
            "--timeout-keep-alive",
            "75",
            "--timeout-graceful-shutdown",
            "3",
            "--app-dir",
            str(PEERS_DIR),
            "starlette_app:app",
        ]
        # no --limit-concurrency: uvicorn's default is no limit
        return argv, PEERS_DIR, clean_env({"PEER_HEARTBEAT": f"{self.heartbeat:g}"})

    def server_pids(self) -> list[int]:
        # uvicorn without --workers serves in its main process
        if self._proc is None or not pid_alive(self._proc.pid):
            return []
        return [self._proc.pid, *descendants(self._proc.pid)]

    def versions(self) -> dict[str, str]:
        out = super().versions()
        for dist in ("sse-starlette", "starlette", "uvicorn", "uvloop", "httptools"):
            out[dist] = dist_version(dist)
        return out

    def notes(self) -> list[str]:
        return [
            "uvicorn, 1 process (queues are per process), uvloop + httptools, backlog "
            f"{BACKLOG}, no concurrency limit, no access log; one asyncio.Queue per "
            "subscriber; sse-starlette ping comment `: ping - <time>`"
        ]


def granian_argv(target: Target, python: str, interface: str, app: str) -> list[str]:
    """Granian running ``app`` from ``benches/peers`` with sse_fast's knobs: uvloop, one
    worker, its backlog, backpressure (the file limit less what it keeps aside) and
    HTTP/1 buffer, no access log."""
    return [
        python,
        "-m",
        "granian",
        "--interface",
        interface,
        "--loop",
        "uvloop",
        "--host",
        target.host,
        "--port",
        str(target.port),
        "--workers",
        "1",
        "--backlog",
        str(BACKLOG),
        "--backpressure",
        str(max(1, hard_nofile() - RESERVED_FDS)),
        "--http1-buffer-size",
        str(HTTP1_BUFFER_SIZE),
        "--no-access-log",
        "--working-dir",
        str(PEERS_DIR),
        app,
    ]


@dataclass(eq=False)
class VelithonTarget(Target):
    def command(self, workdir: Path) -> tuple[list[str], Path, dict[str, str]]:
        argv = granian_argv(self, sys.executable, "rsgi", "velithon_app:app")
        return argv, PEERS_DIR, clean_env({"PEER_HEARTBEAT": f"{self.heartbeat:g}"})

    def versions(self) -> dict[str, str]:
        out = super().versions()
        for dist in ("velithon", "granian", "uvloop"):
            out[dist] = dist_version(dist)
        return out

    def notes(self) -> list[str]:
        return [
            "Granian RSGI, 1 worker (queues are per process), same Granian knobs as "
            "sse_fast; Velithon log level WARNING (its request-logging middleware "
            "is always on); SSEResponse gets an empty `body` class attribute when "
            "Velithon's own class cannot be constructed (0.6.10: AttributeError 'body'); "
            "no line splitting of data; ping comment `: ping`"
        ]


@dataclass(eq=False)
class GranianFloorTarget(Target):
    """``benches/peers/floor_app.py`` under Granian as ``sse-fast serve`` runs it by
    default (ASGI, uvloop, HTTP/1, one worker, the same backlog, backpressure and HTTP/1
    buffer, Granian's allocator giving freed memory back at once, every thread under
    SCHED_BATCH): what per-user notifications cost with no app work beyond handing each
    frame to its streams. Not the same: the listening socket, which sse_fast makes itself
    (a 128 KiB send buffer per connection, TCP_DEFER_ACCEPT); here the kernel's
    defaults. Not among :func:`available_targets`; ``benches.notifications`` adds it by
    name (``granian-floor``)."""

    def command(self, workdir: Path) -> tuple[list[str], Path, dict[str, str]]:
        from sse_fast._compose import allocator_options

        chrt = shutil.which("chrt")
        argv = [
            *([chrt, "--batch", "0"] if chrt else []),
            *granian_argv(self, self.python or sys.executable, "asgi", "floor_app:app"),
        ]
        argv[-1:-1] = ["--http", "1"]  # (sse_fast serves HTTP/1 alone by default)
        # Granian's allocator as ``sse-fast serve`` sets it (--allocator-decay 0)
        return argv, PEERS_DIR, clean_env({ALLOCATOR_VARIABLE: allocator_options(0.0)})

    def versions(self) -> dict[str, str]:
        out = super().versions()
        for dist in ("granian", "uvloop", "orjson"):
            out[dist] = dist_version(dist)
        return out

    def notes(self) -> list[str]:
        batch = "SCHED_BATCH" if shutil.which("chrt") else "no SCHED_BATCH (no chrt here)"
        return [
            "granian-floor: benches/peers/floor_app.py, each frame handed to its streams"
            " and nothing else (no history, data directory, limits or checks); Granian as"
            f" sse_fast runs it (HTTP/1, allocator decay 0, {batch}); the kernel's default"
            " options on the listening socket"
        ]


# --------------------------------------------------------------------------- discovery


def _missing_modules(modules: Iterable[str]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _nchan_problem() -> str | None:
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        return "nginx is not installed (apt-get install nginx libnginx-mod-nchan)"
    if not NCHAN_MODULE.exists():
        return f"{NCHAN_MODULE} missing (apt-get install libnginx-mod-nchan)"
    if not NCHAN_TEMPLATE.exists():
        return f"{NCHAN_TEMPLATE} missing"
    return None


def thread_cpu(pids: list[int]) -> dict[str, float]:
    """CPU seconds so far of the threads of ``pids``, by role: ``loop`` (a process's
    main thread: the event loop, the app), ``io`` (Granian's tokio threads: sockets,
    HTTP, handing requests to Python) and ``other`` (Python threads Granian starts to
    call into Python, the data directory's sync thread, ...)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {"loop": 0.0, "io": 0.0, "other": 0.0}
    for pid in pids:
        with contextlib.suppress(OSError):
            for tid in system.threads(pid):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    text = system.thread_stat(pid, tid)
                    # after the ")" that ends the thread's name: field 3 on
                    fields = text.rsplit(")", 1)[1].split()
                    comm = text[text.index("(") + 1 : text.rindex(")")]
                    role = "loop" if tid == pid else "io" if comm.startswith("tokio") else "other"
                    out[role] += (int(fields[11]) + int(fields[12])) / tick
    return out


def python_version(python: str = "") -> str:
    """The version of ``python`` (an interpreter's path; "" for this one)."""
    return python_versions(python)["python"] if python else platform.python_version()


def python_versions(python: str) -> dict[str, str]:
    """The versions another Python runs the servers with: its own and its packages'."""
    code = (
        "import importlib.metadata as m, json, platform; print(json.dumps("
        "{'python': platform.python_version(), "
        "**{n: m.version(n) for n in ('granian', 'uvloop', 'orjson')}}))"
    )
    done = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    versions: dict[str, str] = json.loads(done.stdout)
    return versions


def python_target(base: Target, python: str) -> Target:
    """``base`` run by another Python (its packages installed there, this checkout's
    extensions built in place for it), named ``<base>@py<version>``: an A/B of the
    interpreter in the same run (``--compare-python``)."""
    return replace(
        base,
        name=f"{base.name}@py{python_version(python)}",
        port=free_ports(base.host, 1)[0],
        python=python,
    )


def checkout_target(base: SseFastTarget, checkout: str | Path) -> SseFastTarget:
    """``base`` run from another checkout (a git worktree with its extensions built in
    place), named ``<base>@<its commit>``: an A/B in the same run (``--compare-with``)."""
    source = Path(checkout).resolve()
    missing = unbuilt_extensions(source)
    if missing:
        # said before any target runs: found at the other checkout's start, it came after
        # this checkout's whole ladder
        raise ValueError(
            f"{source}: the native core is not built there ({', '.join(missing)} missing); "
            f"build it in place: cd {source} && python setup.py build_ext --inplace (with "
            "setuptools>=77 and cython, e.g. from a venv: python -m venv /tmp/build && "
            "/tmp/build/bin/pip install 'setuptools>=77' cython && /tmp/build/bin/python "
            "setup.py build_ext --inplace)"
        )
    ref = subprocess.run(
        ["git", "-C", str(source), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return replace(
        base,
        name=f"{base.name}@{ref}",
        port=free_ports(base.host, 1)[0],
        source=source,
    )


def unbuilt_extensions(source: Path) -> list[str]:
    """The native modules of the checkout ``source`` (one per ``src_ext/*.pyx``) with no
    built library beside its Python package (``sse_fast/_core/<name>*.so``)."""
    core = source / "sse_fast" / "_core"
    return [
        pyx.stem
        for pyx in sorted((source / "src_ext").glob("*.pyx"))
        if not any(core.glob(f"{pyx.stem}.*.so"))
    ]


def available_targets(
    heartbeat: float = 15.0, workers: int = 1
) -> tuple[list[Target], dict[str, str]]:
    """Targets that can run here, and {name: reason} for peers that cannot.

    ``workers`` sets nginx's ``worker_processes`` for nchan; sse_fast runs 1 and 2
    workers under its two names; sse-starlette and Velithon always run 1 process
    (their per-process queues cannot fan out across workers).
    """
    names = ["sse_fast-1w", "sse_fast-2w", "nchan", "sse-starlette", "velithon"]
    ports = dict(zip(names, free_ports(HOST, len(names)), strict=True))
    targets: list[Target] = []
    skipped: dict[str, str] = {}

    missing = _missing_modules(["sse_fast", "granian", "uvloop", "orjson"])
    for name, n in (("sse_fast-1w", 1), ("sse_fast-2w", 2)):
        if missing:
            skipped[name] = f"missing Python modules: {', '.join(missing)}"
        else:
            targets.append(SseFastTarget(name, HOST, ports[name], heartbeat=heartbeat, workers=n))

    problem = _nchan_problem()
    if problem:
        skipped["nchan"] = problem
    else:
        targets.append(
            NchanTarget("nchan", HOST, ports["nchan"], heartbeat=heartbeat, workers=max(1, workers))
        )

    for name, cls in (("sse-starlette", StarletteTarget), ("velithon", VelithonTarget)):
        missing = _missing_modules(PIP_PEERS[name][1])
        if missing:
            skipped[name] = (
                f"missing Python modules: {', '.join(missing)} "
                f"(pip install {' '.join(PIP_PEERS[name][0])})"
            )
        else:
            targets.append(cls(name, HOST, ports[name], heartbeat=heartbeat, workers=1))
    return targets, skipped


def _granian_pin() -> list[str]:
    """A pip constraint that keeps the installed Granian (sse_fast's server) as it is."""
    version = dist_version("granian")
    return [] if version == "not installed" else [f"granian=={version}"]


def ensure_peers_installed(timeout: float = 900.0) -> dict[str, str]:
    """Install the missing peers (Debian nginx + libnginx-mod-nchan; pip sse-starlette,
    uvicorn, httptools, velithon); return {target name: error} for failures.
    Idempotent, and quick (no network) when everything is there."""
    errors: dict[str, str] = {}
    if _nchan_problem() is not None:
        err = apt_install(APT_PACKAGES, timeout)
        if err is None:
            err = _nchan_problem()
        if err:
            errors["nchan"] = err
    for name, (dists, modules) in PIP_PEERS.items():
        if not _missing_modules(modules):
            continue
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as pins:
            pins.write("\n".join(_granian_pin()) + "\n")
        try:
            res = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "-c",
                    pins.name,
                    *dists,
                ],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            errors[name] = f"pip install {' '.join(dists)}: {exc}"
            continue
        finally:
            os.unlink(pins.name)
        importlib.invalidate_caches()
        still = _missing_modules(modules)
        if res.returncode != 0 or still:
            tail = [
                line
                for line in (res.stderr or res.stdout).strip().splitlines()
                if not line.startswith("WARNING: Running pip as")
            ][-3:]
            errors[name] = (
                f"pip install {' '.join(dists)} exited {res.returncode}"
                + (f", still missing {still}" if still else "")
                + (": " + " | ".join(tail) if tail else "")
            )
    return errors


def apt_install(packages: list[str], timeout: float) -> str | None:
    if shutil.which("apt-get") is None:
        return "apt-get not available"
    if os.geteuid() != 0:
        return f"not root: cannot apt-get install {' '.join(packages)}"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Keep Debian's maintainer scripts from starting an nginx service on port 80.
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = False
    if not policy.exists():
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        made_policy = True
    try:
        for step in (
            ["apt-get", "update"],
            ["apt-get", "install", "-y", "--no-install-recommends", *packages],
        ):
            try:
                res = subprocess.run(step, capture_output=True, text=True, env=env, timeout=timeout)
            except (OSError, subprocess.SubprocessError) as exc:
                return f"{' '.join(step)}: {exc}"
            if res.returncode != 0:
                tail = " | ".join((res.stderr or res.stdout).strip().splitlines()[-3:])
                return f"{' '.join(step)} exited {res.returncode}: {tail}"
    finally:
        if made_policy:
            policy.unlink(missing_ok=True)
    return None


# --------------------------------------------------------------------------- self-test


class SSEStream:
    """A minimal blocking SSE client on a raw socket (HTTP/1.1, chunked or not),
    parsing events per the WHATWG rules; for the self-test only."""

    def __init__(self, host: str, port: int, path: str, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        raw = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in raw:
            if time.monotonic() > deadline:
                raise TimeoutError("no response headers")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before headers: {raw[:200]!r}")
            raw += chunk
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
        }
        self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        self.raw = b""
        self.closed = False
        self.text = ""
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.data: list[str] = []
        self.saw_data = False
        self.event_type = ""
        self.last_id: str | None = None
        self.events: list[tuple[str, str, str | None]] = []  # (type, data, last id)
        self.comments: list[str] = []
        self.ids: list[str] = []
        self.transcript = b""
        self._feed(rest)

    def _feed(self, data: bytes) -> None:
        self.transcript += data
        if not self.chunked:
            self._parse(data)
            return
        self.raw += data
        while True:
            end = self.raw.find(b"\r\n")
            if end < 0:
                return
            size = int(self.raw[:end].split(b";")[0] or b"0", 16)
            if size == 0:
                self.closed = True
                return
            if len(self.raw) < end + 2 + size + 2:
                return
            self._parse(self.raw[end + 2 : end + 2 + size])
            self.raw = self.raw[end + 2 + size + 2 :]

    def _parse(self, data: bytes) -> None:
        self.text += self.decoder.decode(data)
        while True:
            match = re.search(r"\r\n|\r|\n", self.text)
            if match is None or (match.group() == "\r" and match.end() == len(self.text)):
                return  # a lone CR at the end may be half of CRLF
            line, self.text = self.text[: match.start()], self.text[match.end() :]
            self._line(line)

    def _line(self, line: str) -> None:
        if line == "":
            if self.saw_data:
                self.events.append(
                    (self.event_type or "message", "\n".join(self.data), self.last_id)
                )
            self.data, self.saw_data, self.event_type = [], False, ""
            return
        if line.startswith(":"):
            self.comments.append(line[1:])
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self.data.append(value)
            self.saw_data = True
        elif name == "event":
            self.event_type = value
        elif name == "id" and "\0" not in value:
            self.last_id = value
            self.ids.append(value)

    def read_for(
        self, seconds: float, until_events: int | None = None, until_comments: int | None = None
    ) -> None:
        deadline = time.monotonic() + seconds
        while not self.closed:
            if until_events is not None and len(self.events) >= until_events:
                return
            if until_comments is not None and len(self.comments) >= until_comments:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return
            except OSError:
                self.closed = True
                return
            if not chunk:
                self.closed = True
                return
            self._feed(chunk)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def publish(target: Target, topic: str, data: str, timeout: float = 5.0) -> tuple[int, bytes]:
    method, path, headers, body = target.publish_request(topic, data)
    conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


CHECK_PAYLOAD = '{"t":1.5,"s":3}'
CHECK_MULTILINE = "line one\nline two"


def check_target(target: Target, subscribers: int = 4) -> dict[str, Any]:
    """Start, subscribe ``subscribers`` times, publish CHECK_PAYLOAD once, expect it
    exactly once on every stream, expect a heartbeat comment, stop, look for leftovers."""
    result: dict[str, Any] = {"name": target.name, "ok": False, "problems": [], "info": []}
    streams: list[SSEStream] = []
    topic = f"peers-check-{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    try:
        target.start()
        result["start_s"] = round(time.monotonic() - t0, 2)
        result["pids"] = target.server_pids()
        result["rss_kb"] = rss_kb(result["pids"])
        result["command"] = target.command_line
        for _ in range(subscribers):
            stream = SSEStream(target.host, target.port, target.subscribe_path(topic))
            streams.append(stream)
            ctype = stream.headers.get("content-type", "")
            if stream.status != 200 or not ctype.startswith("text/event-stream"):
                result["problems"].append(f"subscribe: {stream.status} {ctype!r}")
        result["info"].append(
            "response headers: "
            + ", ".join(f"{k}: {v}" for k, v in streams[0].headers.items() if k != "date")
        )
        for stream in streams:
            stream.read_for(0.2)  # whatever a server sends on connect
        status, body = publish(target, topic, CHECK_PAYLOAD)
        if not 200 <= status < 300:
            result["problems"].append(f"publish: HTTP {status} {body[:200]!r}")
        for stream in streams:
            stream.read_for(3.0, until_events=1)
        for stream in streams:
            stream.read_for(0.3)  # a duplicate would arrive by now
        for i, stream in enumerate(streams):
            datas = [data for _, data, _ in stream.events]
            if datas != [CHECK_PAYLOAD]:
                result["problems"].append(
                    f"stream {i}: events {datas!r} (wanted exactly [{CHECK_PAYLOAD!r}])"
                )
        first = streams[0]
        result["info"].append(f"event ids: {first.ids[-2:]!r}" if first.ids else "no `id:`")
        # heartbeat: an idle stream gets a comment within heartbeat + 1.5 s
        wait = (target.heartbeat if target.heartbeat > 0 else 0) + 1.5
        if isinstance(target, NchanTarget):
            wait = target.ping_seconds + 1.5
        if target.heartbeat > 0:
            seen = len(first.comments)
            first.read_for(wait, until_comments=seen + 1)
            if len(first.comments) <= seen:
                result["problems"].append(f"no heartbeat comment within {wait:.1f} s")
            else:
                result["info"].append(f"heartbeat comment: {first.comments[-1]!r}")
        # informational: multi-line data
        events_before = len(first.events)
        publish(target, topic, CHECK_MULTILINE)
        first.read_for(2.0, until_events=events_before + 1)
        first.read_for(0.2)
        got = [d for _, d, _ in first.events[events_before:]]
        result["multiline"] = "ok" if got == [CHECK_MULTILINE] else f"BROKEN: {got!r}"
        result["transcript"] = first.transcript[:600].decode(errors="replace")
    except Exception as exc:  # the table reports it
        result["problems"].append(f"{type(exc).__name__}: {exc}")
    finally:
        # stop() with one stream still open: it must end it (or kill) within its bound
        for stream in streams[1:]:
            stream.close()
        t1 = time.monotonic()
        try:
            target.stop()
        except Exception as exc:
            result["problems"].append(f"stop: {exc}")
        result["stop_s"] = round(time.monotonic() - t1, 2)
        for stream in streams[:1]:
            stream.close()
    time.sleep(0.2)
    leftovers = {p: cmdline(p) for p in session_members(target.session)} if target.session else {}
    if leftovers:
        result["problems"].append(f"left running: {leftovers}")
    if not port_is_free(target.host, target.port):
        result["problems"].append(f"port {target.port} still bound")
    result["ok"] = not result["problems"]
    return result


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def run_check(
    names: list[str] | None, install: bool, heartbeat: float, workers: int, verbose: bool
) -> int:
    install_errors = ensure_peers_installed() if install else {}
    targets, skipped = available_targets(heartbeat=heartbeat, workers=workers)
    if names:
        targets = [t for t in targets if t.name in names]
        skipped = {k: v for k, v in skipped.items() if k in names}
    for name, err in install_errors.items():
        skipped.setdefault(name, err)
    rows: list[tuple[str, ...]] = [
        ("target", "result", "start s", "stop s", "multi-line data", "detail")
    ]
    failed = 0
    for target in targets:
        print(f"checking {target.name} ...", flush=True)
        res = check_target(target)
        failed += not res["ok"]
        detail = (
            "; ".join(res["problems"])
            if res["problems"]
            else f"pids {res.get('pids')} rss {res.get('rss_kb', 0) // 1024} MB"
        )
        rows.append(
            (
                target.name,
                "OK" if res["ok"] else "FAIL",
                str(res.get("start_s", "-")),
                str(res.get("stop_s", "-")),
                res.get("multiline", "-")[:40],
                detail,
            )
        )
        print(f"  command: {res.get('command', '')}")
        print(f"  versions: {target.versions()}")
        for line in res["info"] + target.notes():
            print(f"  {line}")
        if verbose and res.get("transcript"):
            print("  stream (first bytes):")
            for line in res["transcript"].splitlines():
                print(f"    | {line!r}")
    for name, reason in skipped.items():
        rows.append((name, "skipped", "-", "-", "-", reason))
    print()
    _print_table(rows)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="self-test every available target")
    mode.add_argument("--list", action="store_true", help="targets, skipped peers, versions")
    mode.add_argument("--install", action="store_true", help="install missing peers only")
    mode.add_argument("--serve", metavar="NAME", help="run one target for --seconds")
    parser.add_argument("--only", action="append", help="with --check: this target (repeatable)")
    parser.add_argument(
        "--no-install", action="store_true", help="with --check: do not install missing peers first"
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=1.0,
        help="heartbeat interval for --check/--serve (default 1 s)",
    )
    parser.add_argument("--workers", type=int, default=1, help="nchan worker_processes")
    parser.add_argument("--seconds", type=float, default=60.0, help="with --serve (max 600)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print stream bytes")
    args = parser.parse_args(argv)
    # SIGTERM -> SystemExit, so that finally blocks and atexit stop the servers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if args.install:
        errors = ensure_peers_installed()
        for name, err in errors.items():
            print(f"{name}: {err}")
        return 1 if errors else 0
    if args.check:
        return run_check(args.only, not args.no_install, args.heartbeat, args.workers, args.verbose)
    targets, skipped = available_targets(heartbeat=args.heartbeat, workers=args.workers)
    if args.list:
        for target in targets:
            print(f"{target.name}: {target.host}:{target.port} {target.versions()}")
            for note in target.notes():
                print(f"  {note}")
        for name, reason in skipped.items():
            print(f"{name}: skipped: {reason}")
        return 0
    chosen = [t for t in targets if t.name == args.serve]
    if not chosen:
        print(f"{args.serve}: {skipped.get(args.serve, 'unknown target')}", file=sys.stderr)
        return 2
    target = chosen[0]
    target.start()
    try:
        print(
            f"{target.name} on http://{target.host}:{target.port} "
            f"(pids {target.server_pids()}), for {min(args.seconds, 600):.0f} s"
        )
        print(f"  command: {target.command_line}")
        print(
            f"  subscribe: curl -N -H 'Accept: text/event-stream' "
            f"'http://{target.host}:{target.port}{target.subscribe_path('t')}'"
        )
        method, path, headers, body = target.publish_request("t", CHECK_PAYLOAD)
        hdrs = " ".join(f"-H {shlex.quote(f'{k}: {v}')}" for k, v in headers.items())
        print(
            f"  publish: curl -X {method} {hdrs} --data-binary {shlex.quote(body.decode())} "
            f"'http://{target.host}:{target.port}{path}'",
            flush=True,
        )
        time.sleep(min(args.seconds, 600))
    except KeyboardInterrupt:
        pass
    finally:
        target.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
