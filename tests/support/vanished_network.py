"""A client whose network vanishes, for the framework adapters' tests.

Run inside a network namespace of its own (``unshare --net``, as root): a test
app (``starlette``: tests/support/starlette_app.py, ``django``: tests/support/django_app.py)
under a real server (uvicorn, hypercorn or granian); one client reads the first
event of ``/idle`` (pings every 0.2 s, ``send_timeout`` 1 s); then every packet
to the client's port is dropped (iptables), as when a phone leaves the network:
no FIN, no RST, nothing acknowledged. Prints JSON: the seconds until the app's
``/status`` says the stream ended (null if not within 30 s).

    unshare --net -- python -m tests.support.vanished_network starlette uvicorn
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

from sse_fast.testing import HOST, ServerProcess, wait_for

from . import asgi_servers
from .status_probe import read_status

APPS = {
    # generators whose ``finally`` ran: the stream ended, whether the server's
    # disconnect (the close handler) or the send timeout (no handler call) came first
    "starlette": ("tests.support.starlette_app:app", "finished"),
    "django": ("tests.support.django_app:application", "finished"),
}


async def vanish(port: int, counter: str) -> float | None:
    baseline = (await read_status(port))[counter]
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(f"GET /idle HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    seen = b""
    while b"data: hello" not in seen:
        seen += await asyncio.wait_for(reader.read(65536), 10)
    client_port = writer.get_extra_info("sockname")[1]
    subprocess.run(
        ["iptables", "-A", "OUTPUT", "-p", "tcp", "--dport", str(client_port), "-j", "DROP"],
        check=True,
    )
    gone = time.monotonic()

    async def ended() -> bool:
        return bool((await read_status(port))[counter] > baseline)

    try:
        await wait_for(ended, timeout=30, interval=0.05, what="the stream's end noticed")
        return time.monotonic() - gone
    except TimeoutError:
        return None
    finally:
        writer.transport.abort()


def vanished_network_seconds(app: str, server: str) -> float | None:
    """Run this module in a network namespace of its own; its answer."""
    done = subprocess.run(
        [
            "unshare",
            "--net",
            "--",
            sys.executable,
            "-m",
            "tests.support.vanished_network",
            app,
            server,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    log = answer["server"]
    assert answer["seconds"] is not None, f"not noticed in 30 s; the server's log:\n{log}"
    return answer["seconds"]  # type: ignore[no-any-return]


def main() -> None:
    app, counter = APPS[sys.argv[1]]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    with ServerProcess(command=asgi_servers.command(app, sys.argv[2])) as server:
        seconds = asyncio.run(vanish(server.port, counter))
        # not noticed: what the server said (a TCP_USER_TIMEOUT it could not set, ...)
        print(json.dumps({"seconds": seconds, "server": server.output()[-3000:]}))


if __name__ == "__main__":
    main()
