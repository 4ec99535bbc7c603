"""``sse-fast serve``: the notification edge under Granian with uvloop."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import multiprocessing
import os
import resource
import secrets
import shutil
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from .settings import Settings, SettingsError

log = logging.getLogger("sse_fast")

# Sockets a worker keeps for itself (listener, relay, logs, ...) besides client streams.
RESERVED_FDS = 64


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sse-fast", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the SSE edge",
        description="Run the SSE edge. Every option can also be set with an SSE_FAST_* "
        "environment variable (flags win), e.g. SSE_FAST_HEARTBEAT_INTERVAL=30.",
    )
    for field in dataclasses.fields(Settings):
        if field.name in ("relay_socket", "install_signal_handlers"):
            continue
        flag = "--" + field.name.replace("_", "-")
        help_text = (
            f"{field.metadata['doc']} (env SSE_FAST_{field.name.upper()}; "
            f"default {field.default!r})"
        )
        if str(field.type) == "bool":
            serve.add_argument(flag, action="store_true", default=None, help=help_text)
            continue
        kind = {"int": int, "float": float, "str": str}.get(str(field.type), str)
        serve.add_argument(flag, type=kind, default=None, help=help_text)
    return parser


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


def serve(settings: Settings) -> int:
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings

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
    if soft < 4096:
        log.warning("file limit %d is low for an SSE edge; raise `ulimit -n`", soft)

    if settings.allow_anonymous_publish:
        log.warning("--allow-anonymous-publish: ANYONE who can reach this server can publish")
    elif not (
        settings.publish_token
        or settings.jwt_secret
        or settings.jwt_public_key_file
        or settings.jwt_jwks_file
    ):
        settings.publish_token = secrets.token_urlsafe(24)
        log.warning(
            "no publish credential configured; publishing needs one. For this run: "
            "Authorization: Bearer %s (set SSE_FAST_PUBLISH_TOKEN or JWT keys to "
            "choose your own)",
            settings.publish_token,
        )
    relay = None
    settings.install_signal_handlers = True
    if settings.workers > 1:
        from .relay import run_relay

        settings.relay_socket = os.path.join(tempfile.mkdtemp(prefix="sse-fast-"), "relay.sock")
        context = multiprocessing.get_context("spawn")
        ready = context.Event()
        relay = context.Process(
            target=run_relay,
            args=(settings.relay_socket, ready),
            name="sse-fast-relay",
            daemon=True,
        )
        relay.start()
        if not ready.wait(10):
            log.error("the relay did not start")
            return 1
        log.info("relay for %d workers at %s", settings.workers, settings.relay_socket)
    os.environ.update(settings.to_env())
    server = Granian(
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
        http1_settings=HTTP1Settings(max_buffer_size=settings.http1_buffer_size),
        log_level=settings.log_level,  # type: ignore[arg-type]
        respawn_failed_workers=True,
    )
    try:
        server.serve()
    finally:
        if relay is not None:
            relay.terminate()
            relay.join(5)
            shutil.rmtree(os.path.dirname(settings.relay_socket), ignore_errors=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if k != "command"}
    try:
        settings = Settings.from_env(**overrides)
    except SettingsError as exc:
        print(f"sse-fast: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s",
    )
    return serve(settings)
