"""Load-test a server from ``benches/peers.py``: start it, run sse_fast.loadgen, stop it.

Usage (from a checkout of the repository)::

    python -m benches.loadgen_target --target sse_fast-1w --connections 2000 --rate 20
    python -m benches.loadgen_target --target nchan --workers 2 --connections 10000

Takes every flag of ``sse-fast loadgen`` (``--host``/``--port``/``--token`` are
the target's own) plus ``--target NAME`` and ``--workers N``. The shipped
package never imports ``benches``: this wrapper is where the two meet.
"""

from __future__ import annotations

import os
import sys

from benches import peers
from sse_fast.loadgen._cli import build_parser, check_args, run_from_args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("python -m benches.loadgen_target")
    parser.description = __doc__
    parser.add_argument(
        "--target", required=True, help="the server to start, a name from benches/peers.py"
    )
    parser.add_argument("--workers", type=int, default=1, help="server workers of the target")
    args = parser.parse_args(argv)
    check_args(parser, args)
    targets, skipped = peers.available_targets(workers=args.workers)
    chosen = [t for t in targets if t.name == args.target]
    if not chosen:
        reason = skipped.get(args.target, "unknown name")
        print(f"target {args.target!r} unavailable: {reason}", file=sys.stderr)
        return 2
    target = chosen[0]
    target.start()
    try:
        return run_from_args(args, **target.load_arguments())
    finally:
        target.stop()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
