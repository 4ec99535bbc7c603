"""The Django adapter against the view a Django user writes by hand: the same app.

    python -m benches.django_adapter            # steady 1,000 x 10/s, then a saturation ladder
    python -m benches.django_adapter --quick    # short steps

The app is ``benches/peers/django_app.py`` (one ``asyncio.Queue`` per subscriber in an
async view under Django's ASGI handler), run with ``PEER_SSE=django_plain`` (Django's
``StreamingHttpResponse`` over an async generator writing ``data:`` frames, a ``: ping``
after 15 idle seconds) or ``PEER_SSE=sse_fast`` (``sse_fast.django.EventSourceResponse``
over the same queue). The load, the servers (uvicorn, Granian; one process pinned to
core 1, the load generator on core 0) and the steps are those of
``benches/starlette_adapter.py``. Results: ``benches/results/django_adapter.{md,json}``.
Loopback only, bounded.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from .notifications import LOAD_CORE, pin
from .starlette_adapter import RESULTS, run, write_report

LIBRARIES = {"StreamingHttpResponse": "django_plain", "sse_fast.django": "sse_fast"}
APP = "django_app:application"
REPORT = {
    "title": "sse_fast.django vs a hand-rolled StreamingHttpResponse: the same Django app",
    "command": "python -m benches.django_adapter",
    "app": "`benches/peers/django_app.py` (one `asyncio.Queue` per subscriber in an async "
    "view, Django's ASGI handler), `PEER_SSE` choosing the response",
    "notes": "`StreamingHttpResponse`: Django's own, over an async generator of `data:` "
    "frames (the usual hand-rolled view); `sse_fast.django`: `EventSourceResponse` "
    "over the same queue.",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benches.django_adapter", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="5 s steps, two saturation rates")
    parser.add_argument("--out", default=str(RESULTS / "django_adapter"), help="path prefix")
    args = parser.parse_args(argv)
    pin([os.getpid()], LOAD_CORE)  # the load generator's processes inherit it
    report = run(args.quick, LIBRARIES, APP)
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    write_report(report, out.with_suffix(".md"), **REPORT)
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
