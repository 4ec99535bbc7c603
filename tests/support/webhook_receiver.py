"""A webhook receiver, a real process for tests/hub/test_webhooks.py:

    python -m tests.support.webhook_receiver PORT LOG SECRET [--fail N] [--slow S --slow-count N]

Checks each POST with ``sse_fast.webhooks.verify`` (401 if it fails), then
appends the batch to LOG (one JSON line each). ``--fail N``: the first N
requests get a 500 (and are not recorded); ``--slow S --slow-count N``: the
first N requests are recorded, then answered after S seconds (a sender that
gave up by then sends the batch again)."""

from __future__ import annotations

import argparse
import asyncio
import json

from aiohttp import web

from sse_fast.webhooks import WebhookError, verify


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("log")
    parser.add_argument("secret")
    parser.add_argument("--fail", type=int, default=0)
    parser.add_argument("--slow", type=float, default=0.0)
    parser.add_argument("--slow-count", type=int, default=0)
    args = parser.parse_args()
    seen = 0

    async def receive(request: web.Request) -> web.Response:
        nonlocal seen
        seen += 1
        number = seen
        body = await request.read()
        if number <= args.fail:
            return web.Response(status=500, text="failing on purpose")
        try:
            batch = verify(body, dict(request.headers), args.secret)
        except WebhookError as exc:
            return web.Response(status=401, text=str(exc))
        with open(args.log, "a") as log:
            log.write(json.dumps(batch) + "\n")
        if number <= args.slow_count:
            await asyncio.sleep(args.slow)  # pace: --slow, a receiver that answers late
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
