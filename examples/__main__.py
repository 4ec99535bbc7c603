"""``python -m examples``: serve every example (see ``examples/__init__.py``).

    python -m examples [--host 127.0.0.1] [--port 8000]
                       [--ssl-certfile cert.pem --ssl-keyfile key.pem] [--http auto]

Fetches the pinned JavaScript first if it is missing (``examples.vendor``),
then runs ``examples.app:create_app`` under Granian with uvloop, one worker.
With a certificate, browsers get HTTP/2: every tab's streams share one
connection (over HTTP/1.1 a browser opens at most six per origin).
"""

from __future__ import annotations

import argparse
import sys

from sse_fast import cli
from sse_fast.cli import StartError, check_listen_address
from sse_fast.settings import Settings, SettingsError

from .vendor import VendorError, ensure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--ssl-certfile", help="certificate (PEM); with --ssl-keyfile: HTTPS")
    parser.add_argument("--ssl-keyfile", help="the certificate's private key (PEM)")
    parser.add_argument("--http", choices=("1", "2", "auto"), default="auto")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    try:  # the edge's own checks: both or neither, readable
        tls = cli.tls(Settings(ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile))
    except SettingsError as exc:
        parser.error(str(exc))
    try:
        ensure()
        check_listen_address(args.host, args.port, False)
    except (VendorError, StartError) as exc:
        print(f"python -m examples: {exc}", file=sys.stderr)
        return 1

    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops

    scheme = "https" if tls else "http"
    print(f"examples at {scheme}://{args.host}:{args.port}/", file=sys.stderr, flush=True)
    Granian(
        "examples.app:create_app",
        factory=True,
        address=args.host,
        port=args.port,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        http=HTTPModes(args.http),
        workers=1,
        log_level=args.log_level,
        **tls,
    ).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
