"""``sse-fast serve``: the notification edge under Granian with uvloop."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__

# the server is put together in _compose.py; its names stay importable from here
from ._compose import (
    ALLOCATOR_VARIABLE,
    RESERVED_FDS,
    StartError,
    allocator_options,
    check_listen_address,
    check_schemas,
    connection_capacity,
    raise_file_limit,
    serve,
    tls,
    tune_granian_allocator,
)
from .settings import Handoff, Settings, SettingsError, unknown_variables

__all__ = [
    "ALLOCATOR_VARIABLE",
    "RESERVED_FDS",
    "StartError",
    "add_settings_flags",
    "allocator_options",
    "build_parser",
    "check_listen_address",
    "check_schemas",
    "connection_capacity",
    "main",
    "raise_file_limit",
    "serve",
    "tls",
    "tune_granian_allocator",
]

log = logging.getLogger("sse_fast")

#: `sse-fast relay` was mirror mode's command; "relay" names the multi-worker sequencer
RELAY_RENAMED = (
    "use sse-fast mirror (the same options): relay now names only the process that "
    "sequences the events of several workers; the old name works until 1.0"
)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``sse-fast``'s commands (``serve``, ``mirror``, ``relay``, ``loadgen``) and of
    their flags, one per setting."""
    parser = argparse.ArgumentParser(prog="sse-fast", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sse-fast {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the SSE edge",
        description="Run the SSE edge. Every option can also be set with an SSE_FAST_* "
        "environment variable (flags win), e.g. SSE_FAST_HEARTBEAT_INTERVAL=30.",
    )
    add_settings_flags(serve)
    for name, summary in (
        ("mirror", "serve an upstream SSE stream to many: sse-fast mirror --upstream URL"),
        ("relay", f"the old name of mirror ({RELAY_RENAMED})"),
    ):
        mirror = commands.add_parser(
            name,
            help=summary,
            description="Run the SSE edge in mirror mode: subscribe to an upstream SSE "
            "stream (ours or any server's) and serve its events to many clients, resuming "
            "upstream with Last-Event-ID after failures. Same options as serve.",
        )
        mirror.add_argument(
            "--topic",
            dest="upstream_topic",
            default=None,
            help="the local topic the upstream's events go to (same as --upstream-topic)",
        )
        add_settings_flags(mirror)
    commands.add_parser(
        "loadgen",
        help="load-test a running SSE server (loopback only); see sse-fast loadgen --help",
        add_help=False,
    )
    return parser


#: the settings that are no flags: what serve hands its workers (``Handoff``)
INTERNAL_SETTINGS = Handoff.names()


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """A flag per setting, its help the setting's own documentation."""
    for field in dataclasses.fields(Settings):
        if field.name in INTERNAL_SETTINGS:
            continue
        flag = "--" + field.name.replace("_", "-")
        help_text = (
            f"{field.metadata['doc']} (env SSE_FAST_{field.name.upper()}; "
            f"default {field.default!r})"
        )
        if str(field.type) == "bool":
            parser.add_argument(flag, action="store_true", default=None, help=help_text)
            continue
        kind = {"int": int, "float": float, "str": str}.get(str(field.type), str)
        if field.name == "upstream_topic":  # sse-fast mirror also has --topic for it
            parser.add_argument(flag, dest=field.name, type=kind, help=help_text)
            continue
        parser.add_argument(flag, type=kind, default=None, help=help_text)


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
