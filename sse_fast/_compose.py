"""The composition root of ``sse-fast serve``: where the server is put together.

Theory of operation
-------------------
The settings say what the server is (``settings.Settings``, frozen once built);
this module decides, from them alone, what runs.

* A worker is put together in ``app/_worker.py`` (``worker_parts``), its broker
  one function of the settings and serve's hand-off (``broker_for``): Redis when
  ``redis_url`` is set; else the multi-worker relay when serve handed the workers
  its socket (``relay_socket``); else the local broker, on the data directory serve
  locked (``store_dir``: durable history) or in memory. Mirror mode changes no
  broker: one worker reads upstream and publishes through it (the lock that elects
  it is ``upstream_lock``).
* The supervising process (``serve``), in order: preflight, what can be
  checked before any worker exists (the allocator's options, Granian there, the
  listen address, the file limit and so the streams per worker, credentials,
  schemas, a Redis that is no Cluster: ``_startup.py``); the data directory,
  locked and read (``DataDirectory``); the start report; then its decisions,
  handed to the workers as one frozen ``Handoff`` (``settings/_handoff.py``) beside
  the settings, which they read back from ``SSE_FAST_*`` variables;
  the relay supervisor when several workers share no Redis (started by
  Granian's startup hook, beside the workers); and Granian's configuration
  (``sse_fast.app:create_app`` as a factory, uvloop, the listeners of
  ``_granian/_listener.py``). Whatever it made is undone as Granian returns; a stop
  signal to the whole process group is a clean stop (``_granian/_group_stop.py``).
* ``cli.py`` parses the command line (``_flags.py``) into settings and calls ``serve``.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import math
import os
import resource
import secrets
import shutil
import socket
import tempfile
import threading
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from ._granian import extension_loaded
from ._granian._group_stop import (
    group_stop_log,
    remember_workers,
    stop_signal_taken,
    stopped_cleanly,
    wake_for_signals,
)
from ._logging import configure as configure_logging
from ._scheduling import apply_scheduling
from ._startup import StartReport, hold_sigterm_until_started, redis_refusal
from .app._auth import presence_warnings
from .brokers.durable import StoreError, read
from .brokers.durable._directory import DataDirectory, default_data_dir, directory_bytes
from .brokers.durable._log import log_options, settle
from .brokers.durable._records import current_boot_id
from .settings import Settings
from .settings._handoff import Handoff
from .settings._memory import history_budget
from .settings._settings import unknown_variables

if TYPE_CHECKING:
    from .brokers._relay.supervisor import RelaySupervisor
    from .schemas import Schemas

__all__ = [
    "ALLOCATOR_VARIABLE",
    "RESERVED_FDS",
    "StartError",
    "allocator_options",
    "check_listen_address",
    "check_schemas",
    "connection_capacity",
    "mirror",
    "raise_file_limit",
    "serve",
    "tls",
    "tune_granian_allocator",
]

log = logging.getLogger("sse_fast")

#: The environment variable of the allocator linked into Granian (jemalloc, with the
#: ``_rjem_`` prefix of the tikv-jemallocator build that Granian's wheels carry)
ALLOCATOR_VARIABLE = "_RJEM_MALLOC_CONF"
#: sockets a worker keeps for itself (listener, relay, logs, ...) besides client streams
RESERVED_FDS = 64


def raise_file_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft, hard


def connection_capacity(settings: Settings, file_limit: int) -> int:
    """Streams one worker accepts: the file limit less reserved descriptors,
    or ``backpressure`` when set lower."""
    by_files = max(1, file_limit - RESERVED_FDS)
    return min(by_files, settings.backpressure) if settings.backpressure else by_files


class StartError(Exception):
    """The server cannot start; the message says why and what to do."""


def check_listen_address(host: str, port: int, reuse_port: bool) -> None:
    """Fail with one clear sentence when ``host:port`` cannot be listened on,
    before Granian tries (it answers with a Rust backtrace, or, on a port
    another Granian holds, silently shares it: requests then land on either
    server at random)."""
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_NUMERICSERV
        )
    except socket.gaierror as exc:
        raise StartError(
            f"cannot listen on {host}:{port}: {host!r} is not a valid address or host name "
            f"({exc.strerror}); use e.g. --host 127.0.0.1 or --host 0.0.0.0"
        ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port and hasattr(socket, "SO_REUSEPORT"):
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartError(
                    f"port {port} on {host} is already in use (another sse-fast serve? "
                    f"`ss -ltnp 'sport = :{port}'` shows which program); choose another "
                    "--port, or pass --reuse-port to share it on purpose"
                ) from None
            if exc.errno == errno.EACCES:
                raise StartError(
                    f"cannot listen on {host}:{port}: permission denied "
                    "(ports below 1024 need privileges); choose a --port from 1024 up"
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise StartError(
                    f"cannot listen on {host}:{port}: {host} is not an address of this "
                    "machine; use one of its addresses, or 0.0.0.0 for all"
                ) from None
            raise StartError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def serve(settings: Settings) -> int:
    """``sse-fast serve``: check what can be checked before the workers start, say
    what the server will do, then run Granian (and the relay when several workers
    need one) until it stops. A start that fails later, in a worker or the relay,
    stops the server and is said here (``sse_fast/_startup.py``)."""
    configure_logging(settings.log_level)
    for name in unknown_variables():
        log.warning("ignoring unknown environment variable %s", name)
    tune_granian_allocator(os.environ, settings.allocator_decay)
    _require_granian()
    check_listen_address(settings.host, settings.port, settings.reuse_port)
    capacity = _announce_capacity(settings)
    settings = _check_credentials(settings)
    for warning in presence_warnings(settings.access, settings.features):
        log.warning("%s", warning)
    if settings.schemas:
        check_schemas(settings.schemas)
    if settings.redis_url:
        refusal = redis_refusal(
            settings.redis_urls,
            settings.redis_partition_count,
            settings.redis_prefix,
            settings.node_name or socket.gethostname(),  # who made a layout record
        )
        if refusal:
            raise StartError(refusal)
    # Granian's server, not started: made before anything that must be undone (it reads
    # no setting the hand-off below decides)
    server = _granian(settings, capacity)
    upstream_lock = _prepare_relay_mode(settings)
    upstream_dir = os.path.dirname(upstream_lock) if upstream_lock else ""
    relay = None
    try:
        data = _prepare_data_dir(settings)
    except StoreError as exc:
        if upstream_dir:
            shutil.rmtree(upstream_dir, ignore_errors=True)
        raise StartError(str(exc)) from None
    report = StartReport.create()
    settings, handoff = _hand_off(settings, data, report, upstream_lock)
    if handoff.relay_socket:
        from .brokers._relay.supervisor import RelaySupervisor

        # it reads the data directory while every worker restores it too, sharing the
        # cores; the bound is for a relay that hangs (one that dies is said at once), so
        # it is generous: 600 s per GiB per worker (a GiB of small events is 13 million;
        # the pure-Python twins read them several times slower), and the supervisor's own
        # 60 s per GiB
        stored = directory_bytes(handoff.store_dir) if handoff.store_dir else 0
        relay = RelaySupervisor(
            handoff.relay_socket,
            settings.relay_history_frames,
            settings.relay_history_bytes,
            log_options(settings.storage, settings.streams, handoff.store_dir)
            if handoff.store_dir
            else None,
            start_timeout=10.0 + 600.0 * settings.workers * stored / 2**30,
            # a group stop that reached the relay first is no failure (``_granian/_group_stop.py``)
            stop_signalled=lambda: stop_signal_taken(server),
        )
    os.environ.update(settings.to_env())
    os.environ.update(handoff.to_env())  # beside the settings, a value of its own
    # inherited by Granian's workers and their threads, forked from here on
    level, said = apply_scheduling(settings.scheduling)
    log.log(level, "%s", said)
    stopping = threading.Event()
    try:
        _run_granian(server, settings, relay, report, stopping)
    finally:
        stopping.set()
        if relay is not None:
            relay.stop()
            shutil.rmtree(os.path.dirname(handoff.relay_socket), ignore_errors=True)
        if data is not None:
            data.release()
        if upstream_dir:
            shutil.rmtree(upstream_dir, ignore_errors=True)
        failure = report.failure()
        report.remove()
    if failure:
        raise StartError(failure)
    return 0


def mirror(settings: Settings) -> int:
    """``sse-fast mirror``: ``serve`` in mirror mode, which needs the stream to mirror."""
    if not settings.upstream:
        raise StartError(
            "say which stream to mirror with --upstream URL (or SSE_FAST_UPSTREAM), "
            "e.g. --upstream http://origin:8000/events?topic=news"
        )
    return serve(settings)


def _run_granian(
    server: Any,
    settings: Settings,
    relay: RelaySupervisor | None,
    report: StartReport,
    stopping: threading.Event,
) -> None:
    """Run Granian's ``server`` until it stops; the relay (if any) starts with it. A
    stop signal to the whole process group is a clean stop, in the exit status and in
    the log (``_granian/_group_stop.py``)."""
    if relay is not None:
        # started once Granian handles SIGTERM (its startup hooks run then), beside
        # the workers: it restores the history while they do
        server.on_startup(lambda: _start_relay(relay, settings.workers, report, stopping))
    workers = remember_workers(server)
    hold_sigterm_until_started()  # a stop while a worker is forked is not lost
    wake_for_signals(server)  # a SIGTERM that one of its threads takes stops it too
    try:
        with group_stop_log(server):
            server.serve()
    except SystemExit:  # Granian's way to say a worker died: said by serve if reported
        if not report.failure() and not stopped_cleanly(server, workers):
            raise


def _hand_off(
    settings: Settings, data: DataDirectory | None, report: StartReport, upstream_lock: str
) -> tuple[Settings, Handoff]:
    """What serve's workers read back: the settings, on Redis with this node's name
    (made up when not given), and serve's decisions, the ``Handoff`` (the relay's
    socket when several workers share no Redis, the data directory it locked, ...)."""
    relay_socket = ""
    if settings.redis_url:
        if not settings.node_name:
            node_name = f"{socket.gethostname()}-{secrets.token_hex(3)}"
            settings = dataclasses.replace(settings, node_name=node_name)
        log.info("node %s on Redis %s", settings.node_name, _redacted(settings.redis_url))
    elif settings.workers > 1:
        relay_socket = os.path.join(tempfile.mkdtemp(prefix="sse-fast-"), "relay.sock")
    return settings, Handoff(
        relay_socket=relay_socket,
        upstream_lock=upstream_lock,
        install_signal_handlers=True,
        store_dir=data.path if data is not None else "",
        start_failure_file=report.path,
        main_pid=os.getpid(),
    )


def _start_relay(
    relay: RelaySupervisor, workers: int, report: StartReport, stopping: threading.Event
) -> None:
    """Start the relay in a thread of its own; if it does not start, stop the
    server with the reason (unless it is stopping anyway)."""

    def run() -> None:
        try:
            relay.start()
        except RuntimeError as exc:
            if not stopping.is_set():
                report.fail(
                    f"the relay, which sequences the events of the {workers} workers, "
                    f"could not start: {exc}; its log above says why"
                )
            return
        log.info("relay for %d workers at %s", workers, relay.path)

    threading.Thread(target=run, name="sse-fast-relay-start", daemon=True).start()


def _prepare_data_dir(settings: Settings) -> DataDirectory | None:
    """Durable history (no Redis, persistence not off): lock the data directory
    for this server and check what it holds before any worker starts, so a
    directory in use, unwritable, corrupt or foreign stops the server here with
    a sentence; hand it to the workers (``store_dir``)."""
    if settings.redis_url or settings.persistence == "off":
        log.info("persistence off: history is kept in memory only (a restart loses it)")
        return None
    data = DataDirectory(settings.data_dir or default_data_dir())
    data.acquire()
    try:
        # checked as the sequencer will (``durable/_integrity.py``), which loads them
        loaded = read(data.path, events=False, checks=True, recover=settings.data_recover)
        if loaded.unsettled(current_boot_id()):
            # what the writer's start writes (lost ranges, cuts) is there before the
            # relay and its workers read the directory side by side
            settle(**log_options(settings.storage, settings.streams, data.path))
    except BaseException:
        data.release()
        raise
    log.info(
        "data directory %s: %d events kept (persistence=%s)",
        data.path,
        loaded.count,
        settings.persistence,
    )
    return data


def _announce_capacity(settings: Settings) -> int:
    """Raise the file limit; log the streams per worker and the history budget;
    return the connections each worker accepts."""
    soft, hard = raise_file_limit()
    capacity = connection_capacity(settings, soft)
    log.info(
        "file limit %d (hard %d): up to %d streams per worker, %d in all with %d worker(s)",
        soft,
        hard,
        capacity,
        capacity * settings.workers,
        settings.workers,
    )
    budget, how = history_budget(settings.streams, settings.workers)
    log.info("history budget: %.1f MiB per worker (%s)", budget / 2**20, how)
    if soft < 4096:
        log.warning("file limit %d is low for an SSE edge; raise `ulimit -n`", soft)
    return capacity


def _check_credentials(settings: Settings) -> Settings:
    """Warn of anonymous publishing; with no credential at all, make a token for
    this run and say it. The settings with that token."""
    if settings.allow_anonymous_publish:
        log.warning("--allow-anonymous-publish: ANYONE who can reach this server can publish")
    elif not (
        settings.publish_token
        or settings.jwt_secret
        or settings.jwt_public_key_file
        or settings.jwt_jwks_file
    ):
        settings = dataclasses.replace(settings, publish_token=secrets.token_urlsafe(24))
        log.warning(
            "no publish credential configured; publishing needs one. For this run: "
            "Authorization: Bearer %s (set SSE_FAST_PUBLISH_TOKEN or JWT keys to "
            "choose your own)",
            settings.publish_token,
        )
    return settings


def _prepare_relay_mode(settings: Settings) -> str:
    """Mirror mode with several workers: the lock that chooses the one reading
    upstream, in a directory of its own (its path, returned; "" otherwise)."""
    if not settings.upstream:
        return ""
    log.info("mirror mode: upstream %s into topic %s", settings.upstream, settings.upstream_topic)
    if settings.workers <= 1:
        return ""
    return os.path.join(tempfile.mkdtemp(prefix="sse-fast-upstream-"), "upstream.lock")


def allocator_options(decay: float) -> str:
    """jemalloc's options for ``--allocator-decay`` (``decay`` seconds): how long pages
    Granian freed stay with its allocator (0: given back at once, measured in
    ``benches/results/stream_memory.md`` and ``single_publish.md``)."""
    return f"dirty_decay_ms:{round(decay * 1000)},muzzy_decay_ms:0"


def tune_granian_allocator(environ: MutableMapping[str, str], decay: float = 0.0) -> str:
    """Put ``allocator_options(decay)`` before whatever ``_RJEM_MALLOC_CONF`` holds
    (jemalloc reads its options left to right, so the user's win) and return them.
    Must run before Granian's extension is loaded: jemalloc reads the variable once,
    as the library loads (the workers fork from this process and keep what it read)."""
    ours = allocator_options(decay)
    mine = environ.get(ALLOCATOR_VARIABLE, "")
    conf = ours if not mine else f"{ours},{mine}"
    environ[ALLOCATOR_VARIABLE] = conf
    if extension_loaded():
        log.warning(
            "Granian was loaded before the server started: --allocator-decay is not applied "
            "(its allocator read its options as it loaded)"
        )
    else:
        log.debug("Granian's allocator: %s=%s", ALLOCATOR_VARIABLE, conf)
    return conf


def _require_granian() -> None:
    try:
        import granian  # noqa: F401
    except ImportError:
        raise StartError(
            "`sse-fast serve` needs Granian and uvloop, which come with the server extra: "
            "python -m pip install 'sse_fast[server]'"
        ) from None


def _granian(settings: Settings, capacity: int) -> Any:
    """The Granian server of ``settings`` (not started); its listeners give each
    connection a send buffer of ``stream_send_buffer`` bytes (``_granian``)."""
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings

    from ._granian._listener import granian_server

    return granian_server(settings.stream_send_buffer, math.ceil(settings.header_timeout))(
        "sse_fast.app:create_app",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        http=HTTPModes(settings.http),
        workers=settings.workers,
        backlog=settings.backlog,
        backpressure=capacity,
        runtime_threads=settings.runtime_threads,
        http1_settings=HTTP1Settings(
            max_buffer_size=settings.http1_buffer_size,
            header_read_timeout=max(1, round(settings.header_timeout * 1000)),
        ),
        log_level=settings.log_level,  # type: ignore[arg-type]
        respawn_failed_workers=True,
        # a worker not gone a second after its drain could end is killed: a stop is
        # bounded even where a worker's SIGTERM went astray (``_startup.py``)
        workers_kill_timeout=math.ceil(settings.drain_timeout) + 1,
        **tls(settings),
    )


def check_schemas(spec: str) -> Schemas:
    """Load the declared streams once here, so that a mistake stops the start with
    its reason (the workers load them again; ``_startup.load_at_start``)."""
    from ._startup import load_at_start
    from .schemas import SchemaError

    try:
        return load_at_start(spec)
    except SchemaError as exc:
        raise StartError(str(exc)) from None


def tls(settings: Settings) -> dict[str, Any]:
    """Granian's TLS arguments (none without a certificate)."""
    if not settings.ssl_certfile:
        return {}
    from pathlib import Path

    out: dict[str, Any] = {
        "ssl_cert": Path(settings.ssl_certfile),
        "ssl_key": Path(settings.ssl_keyfile),
    }
    if settings.ssl_keyfile_password:
        out["ssl_key_password"] = settings.ssl_keyfile_password
    return out


def _redacted(url: str) -> str:
    """``url`` without its password."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}{sep}***@{host}" if at and credentials else url
