"""What one cut costs (``sse_fast._abort``): the pass over this process's
descriptors, with N client connections open in the same process.

    python -m benches.cut_cost [--out benches/results/cut_cost.md]

Loopback only; opens at most 2 x 9,000 sockets (the file limit here is 20,000)
and closes them.

Experiment, kept as the record of a decision (``benches/README.md``):

Question: What does one cut (``abort_connections``: one pass over this process's
    descriptors) cost as open connections grow?
Result: linear in the open descriptors, about 11 us per connection (1.2 ms at 100, 100
    ms at 9,000), the same for 1 or 20 cut: cheap enough to run off the event loop for
    every cut.
Date: 2026-11-22 (benches/results/cut_cost.md)
"""

from __future__ import annotations

import argparse
import platform
import resource
import socket
import time

from sse_fast._abort import abort_connections


def measure(connections: int, cuts: int) -> float:
    """Seconds for one ``abort_connections`` call cutting ``cuts`` of ``connections``."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    pairs = []
    try:
        for _ in range(connections):
            client = socket.create_connection(listener.getsockname())
            server_side, _ = listener.accept()
            pairs.append((client, server_side))
        # the last ones opened: the pass has to go through (nearly) every descriptor
        keys = [(s.getsockname()[:2], s.getpeername()[:2]) for _, s in pairs[-cuts:]]
        start = time.perf_counter()
        found = abort_connections(keys)
        elapsed = time.perf_counter() - start
        assert len(found) == cuts
        return elapsed
    finally:
        for client, server_side in pairs:
            client.close()
            server_side.close()
        listener.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rows = []
    for connections in (100, 1000, 5000, 9000):
        for cuts in (1, 20):
            best = min(measure(connections, cuts) for _ in range(3))
            rows.append(f"| {connections:,} | {cuts} | {best * 1000:.1f} ms |")
    text = "\n".join(
        [
            "# Cost of cutting connections",
            "",
            f"`python -m benches.cut_cost`; Python {platform.python_version()}, "
            f"{platform.machine()}, {platform.system()} {platform.release()}. One call of "
            "`abort_connections` (one pass over `/proc/self/fd`, run off the event loop by "
            "the server), best of 3. Each connection is two descriptors in this process.",
            "",
            "| open connections | cut in one pass | time |",
            "|---:|---:|---:|",
            *rows,
            "",
        ]
    )
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
