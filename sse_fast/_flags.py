"""``sse-fast``'s argument parser: its commands, and a flag per setting.

Internal: ``sse_fast.cli.main`` parses with it; the flags' help is each setting's
own documentation (what ``serve`` hands its workers, ``Handoff``, is no setting and
has no flag).
"""

from __future__ import annotations

import argparse
import dataclasses

from . import __version__
from .settings import Settings

__all__ = ["add_settings_flags", "build_parser"]

#: the command's description in ``--help``
DESCRIPTION = "``sse-fast serve``: the notification edge under Granian with uvloop."


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``sse-fast``'s commands (``serve``, ``mirror``, ``loadgen``) and of
    their flags, one per setting."""
    parser = argparse.ArgumentParser(prog="sse-fast", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"sse-fast {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the SSE edge",
        description="Run the SSE edge. Every option can also be set with an SSE_FAST_* "
        "environment variable (flags win), e.g. SSE_FAST_HEARTBEAT_INTERVAL=30.",
    )
    add_settings_flags(serve)
    mirror = commands.add_parser(
        "mirror",
        help="serve an upstream SSE stream to many: sse-fast mirror --upstream URL",
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


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """A flag per setting, its help the setting's own documentation."""
    for field in dataclasses.fields(Settings):
        flag = "--" + field.name.replace("_", "-")
        help_text = (
            f"{field.metadata['doc']} (env SSE_FAST_{field.name.upper()}; "
            f"default {field.default!r})"
        )
        if str(field.type) == "bool":
            parser.add_argument(flag, action="store_true", default=None, help=help_text)
            continue
        kind = {"int": int, "float": float, "str": str}.get(str(field.type), str)
        if field.name == "redis_url":  # given once per shard: joined with spaces (cli.py)
            parser.add_argument(flag, action="append", default=None, help=help_text)
            continue
        if field.name == "upstream_topic":  # sse-fast mirror also has --topic for it
            parser.add_argument(flag, dest=field.name, type=kind, help=help_text)
            continue
        parser.add_argument(flag, type=kind, default=None, help=help_text)
