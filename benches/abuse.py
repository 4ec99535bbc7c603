"""Run the abuse suite (``tests/e2e/test_abuse.py``) and record its figures in
``benches/results/abuse.md`` and ``abuse.json``.

    python -m benches.abuse
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report_path = os.path.join(tmp, "abuse.json")
        env = dict(os.environ, SSE_FAST_ABUSE_REPORT=report_path)
        load = os.getloadavg()
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "tests/e2e/test_abuse.py"], env=env, check=False
        )
        if run.returncode != 0:
            print("the abuse suite failed; no results written", file=sys.stderr)
            return run.returncode
        report = json.loads(Path(report_path).read_text())
    report["conditions"] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "load_average_before": load,
        "server": "sse-fast serve, 1 worker, connect_rate_per_ip=500, "
        "max_connections_per_ip=2000, catch_up_timeout=3, ring_max_frames=64",
        "hostile": "20 never-reading clients (4 KB receive buffer) on the good topic and a "
        "60 KB-event topic, 20 slow-drip header clients, malformed/oversized "
        "requests in a loop, a 60 KB event publisher (10/s), a connection flood "
        "from 127.0.0.9 (100 at a time, up to 3,000)",
        "good": "1,000 subscribers from 127.0.0.2, 30 events at 30/s per phase",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "abuse.json").write_text(json.dumps(report, indent=2))
    lines = ["# Abuse suite (`python -m benches.abuse`, the same as `tests/e2e/test_abuse.py`)", ""]
    lines += [f"- {k}: {v}" for k, v in report.pop("conditions").items()]
    lines += ["", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report.items()]
    (RESULTS / "abuse.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
