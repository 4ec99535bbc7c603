"""Does a restart of ``sse-fast serve`` fail a locust run? (benches/LOCUST.md)

Question: with the locust users' thresholds, a run during which the server restarts
should pass when nothing was lost (its failed publishes are resent), and fail when
the restart lost the history (``--persistence off``).

Runs locust (``benches/locustfile.py``: 1 publisher at ``--rate`` per second and
``--users`` - 1 subscribers) against a server on loopback for ``--duration`` seconds,
restarts the server (SIGTERM, then the same command on the same port and data
directory) ``--restart-at`` seconds in, and prints how long it was down, locust's exit
status, its summary line and its rows::

    python -m benches.locust_restart --persistence interval
    python -m benches.locust_restart --persistence off

Result (2026-11-26, 2 shared cores, one run each): see the table in LOCUST.md.

Experiment, kept as the record of a decision (``benches/README.md``):

Question: Does a restart of ``sse-fast serve`` fail a locust run?
Result: with ``--persistence interval`` the run passes (nothing lost, 3 of 81 publishes
    failed and were resent); with ``--persistence off`` it fails (60 events lost, exit
    1); an earlier run's 6.2 % failed publishes set the 10 % default.
Date: 2026-11-26 (benches/LOCUST.md, restarts)
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sse_fast.testing import ServerProcess, free_port

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    """Run the experiment the flags describe; return locust's exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--persistence", default="interval", help="the server's --persistence")
    parser.add_argument("--users", type=int, default=11)
    parser.add_argument("--rate", type=float, default=2.0, help="publishes per second")
    parser.add_argument("--duration", type=int, default=40, help="seconds")
    parser.add_argument("--restart-at", type=float, default=15.0)
    args = parser.parse_args(argv)
    if args.duration > 600:
        parser.error("--duration is bounded to 600 s")
    port, out = free_port(), Path(tempfile.mkdtemp(prefix="locust-restart-"))
    users = str(args.users)
    command = [sys.executable, "-m", "locust", "-f", str(ROOT / "benches" / "locustfile.py")]
    command += ["SSEUser", "PublisherUser", "--headless", "--only-summary", "-u", users]
    command += ["-r", users, "-t", f"{round(args.duration)}s", "--publish-rate", str(args.rate)]
    command += ["--host", f"http://127.0.0.1:{port}", "--csv", str(out / "run")]
    try:
        return _run(args, command, port, out)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _run(args: argparse.Namespace, command: list[str], port: int, out: Path) -> int:
    server_args = ("--persistence", args.persistence)
    data = str(out / "data")
    locust: subprocess.Popen[bytes] | None = None
    with open(out / "locust.log", "w") as log:
        try:
            with ServerProcess(*server_args, port=port, data_dir=data) as first:
                locust = subprocess.Popen(command, stderr=log, stdout=subprocess.DEVNULL)
                time.sleep(args.restart_at)  # the experiment's schedule, not a wait for a state
                down = time.monotonic()
                first.stop()
            with ServerProcess(*server_args, port=port, data_dir=data):
                print(f"down for {time.monotonic() - down:.2f} s")
                status = locust.wait(args.duration + 60)
        finally:
            if locust is not None and locust.poll() is None:
                locust.kill()
                locust.wait()
    print(f"locust exit status {status}")
    for line in (out / "locust.log").read_text().splitlines():
        if "SSE summary" in line or "SSE threshold" in line:
            print(line.split("sse_fast.locust: ", 1)[-1])
    with open(out / "run_stats.csv") as f:
        for row in csv.DictReader(f):
            print(f"{row['Type']:5} {row['Name']:22} {row['Request Count']:>6} requests "
                  f"{row['Failure Count']:>4} failed  p99 {row['99%']} ms")  # fmt: skip
    return status


if __name__ == "__main__":
    sys.exit(main())
