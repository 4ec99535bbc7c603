"""``sse-fast serve``: the notification edge under Granian with uvloop."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

# the server is put together in _compose.py; what the examples use of it is public here
from ._compose import StartError, check_listen_address, mirror, serve, tls
from ._flags import build_parser
from .settings import Settings, SettingsError

__all__ = ["StartError", "check_listen_address", "main", "tls"]


def main(argv: Sequence[str] | None = None) -> int:
    """``sse-fast``: parse a command's flags and run it (``loadgen`` and ``codegen`` take
    their own flags); return the exit status (2 for bad settings or a failed start,
    said on stderr)."""
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
    args = build_parser().parse_args(arguments)
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if k != "command"}
    if overrides.get("redis_url") is not None:  # --redis-url once per shard
        overrides["redis_url"] = " ".join(overrides["redis_url"])
    try:
        settings = Settings.from_env(**overrides)
    except SettingsError as exc:
        print(f"sse-fast: {exc}", file=sys.stderr)
        return 2
    try:
        return (mirror if args.command == "mirror" else serve)(settings)
    except StartError as exc:
        print(f"sse-fast: {exc}", file=sys.stderr)
        return 2
