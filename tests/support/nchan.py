"""A real Nchan (nginx's pub/sub module) on a free loopback port, for testing the load
tools against a server that is not ours.

``nchan_server()`` yields ``(base URL, nginx worker pids)``: subscribe with
``GET /sub/<channel>`` (EventSource), publish with ``POST /pub/<channel>`` (the body
is the message; 201 or 202). It skips the test when nginx or the Nchan module is
missing (``scripts/test`` installs both: nginx, libnginx-mod-nchan).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .waiting import until

__all__ = ["NCHAN_MODULE", "nchan_server"]

#: where Debian's libnginx-mod-nchan puts the module
NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")

CONFIG = """
load_module {module};
{user}
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    nchan_shared_memory_size 64M;
    server {{
        listen 127.0.0.1:{port};
        location ~ ^/sub/([A-Za-z0-9_-]+)$ {{
            nchan_subscriber eventsource;
            nchan_channel_id $1;
            nchan_eventsource_ping_interval 5;
        }}
        location ~ ^/pub/([A-Za-z0-9_-]+)$ {{
            nchan_publisher;
            nchan_channel_id $1;
            nchan_message_buffer_length 1000;
            nchan_message_timeout 10m;
        }}
        location = /healthz {{ return 200 "ok"; }}
    }}
}}
"""


def _nginx() -> str | None:
    found = shutil.which("nginx")
    return found or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _workers(master: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                found.append(int(entry.name))
    return found


@contextlib.contextmanager
def nchan_server() -> Iterator[tuple[str, list[int]]]:
    """Start nginx with Nchan on a free port; yield ``(base URL, worker pids)``; stop it."""
    nginx = _nginx()
    if nginx is None or not NCHAN_MODULE.exists():
        pytest.skip("Nchan is not installed (apt-get install nginx libnginx-mod-nchan)")
    prefix = Path(tempfile.mkdtemp(prefix="nchan-"))
    port = _free_port()
    user = "user root;" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(CONFIG.format(module=NCHAN_MODULE, user=user, prefix=prefix, port=port))
    proc = subprocess.Popen(
        [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def serving() -> bool:
            if proc.poll() is not None:
                log = (prefix / "error.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"nginx with Nchan ended at start: {log}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return bool(_workers(proc.pid))
            return False

        until(serving, 20, f"nginx with Nchan listens on {port} with its workers")
        yield f"http://127.0.0.1:{port}", _workers(proc.pid)
    finally:
        proc.send_signal(signal.SIGQUIT)  # graceful: the workers end with the master
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(prefix, ignore_errors=True)
