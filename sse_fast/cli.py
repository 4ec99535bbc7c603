"""``sse-fast serve``: the notification edge under Granian with uvloop."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

# the server is put together in _compose.py; what the examples use of it is public here
from ._compose import StartError, check_listen_address, serve, tls
from ._flags import RELAY_RENAMED, build_parser
from .settings import Settings, SettingsError
from .settings._settings import unknown_variables

__all__ = ["StartError", "check_listen_address", "main", "tls"]

log = logging.getLogger("sse_fast")


def main(argv: Sequence[str] | None = None) -> int:
    """``sse-fast``: run a command (``loadgen`` and ``codegen`` take their own flags); return the
    exit status (2 for bad settings or a failed start, said on stderr)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["loadgen"]:
        try:
            from . import loadgen  # its flags are its own
        except ImportError as exc:
            print(f"sse-fast: {exc}", file=sys.stderr)
            return 2
        return loadgen.main(arguments[1:], prog="sse-fast loadgen")
    if arguments[:1] == ["codegen"]:
        from .codegen import main as codegen

        return codegen(arguments[1:])
    parser = build_parser()
    args = parser.parse_args(arguments)
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if k != "command"}
    if overrides.get("redis_url") is not None:  # --redis-url once per shard
        overrides["redis_url"] = " ".join(overrides["redis_url"])
    try:
        settings = Settings.from_env(**overrides)
    except SettingsError as exc:
        print(f"sse-fast: {exc}", file=sys.stderr)
        return 2
    if args.command == "relay":
        print(f"sse-fast relay: deprecated, {RELAY_RENAMED}", file=sys.stderr)
    if args.command in ("mirror", "relay") and not settings.upstream:
        print(
            f"sse-fast {args.command}: say which stream to mirror with --upstream URL "
            "(or SSE_FAST_UPSTREAM), e.g. --upstream http://origin:8000/events?topic=news",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s",
    )
    for name in unknown_variables():
        log.warning("ignoring unknown environment variable %s", name)
    try:
        return serve(settings)
    except StartError as exc:
        print(f"sse-fast: {exc}", file=sys.stderr)
        return 2
