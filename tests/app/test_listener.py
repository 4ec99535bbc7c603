"""``sse_fast/_granian/_listener.py`` in process: which Granian server a send buffer gets, the
listening socket's options, and what is said when the bound cannot be applied. The
real servers are in ``tests/e2e/test_send_buffer.py``."""

from __future__ import annotations

import logging
import multiprocessing
import socket
from pathlib import Path

import pytest
from granian import Granian
from granian.server import MPServer

from sse_fast._granian._listener import granian_server, listener_socket
from sse_fast.testing import ServerProcess

WMEM_MAX = int(Path("/proc/sys/net/core/wmem_max").read_text())


def test_zero_keeps_granians_own_server() -> None:
    assert granian_server(0) is Granian


def test_a_size_gets_a_subclass_of_granians_process_server() -> None:
    server = granian_server(65536)
    assert server is not Granian and issubclass(server, MPServer)


def test_workers_not_forked_keep_the_kernels_autotuning_and_are_told(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda: "spawn")
    with caplog.at_level(logging.WARNING, logger="sse_fast"):
        assert granian_server(65536) is Granian
    (record,) = caplog.records
    assert "stream_send_buffer 65536 not applied" in record.getMessage()
    assert "'spawn', not by fork" in record.getMessage()


def test_the_listening_socket_has_granians_options_and_the_send_buffer() -> None:
    with listener_socket("127.0.0.1", 0, 65536) as sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 2 * 65536
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert sock.getsockname()[1] != 0  # bound, not yet listening
    with listener_socket("::1", 0, 65536) as sock:
        assert sock.family == socket.AF_INET6


def test_the_listening_socket_defers_accept_when_asked() -> None:
    # the kernel answers in whole SYN-ACK retransmission periods (5 s: 7)
    with listener_socket("127.0.0.1", 0, 65536, defer_accept=5) as sock:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) >= 5
    with listener_socket("127.0.0.1", 0, 65536) as sock:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) == 0


@pytest.mark.processes("sse-fast serve refusing a socket size the kernel cannot give")
def test_a_size_past_wmem_max_is_said_with_what_to_do() -> None:
    with ServerProcess(stream_send_buffer=2 * WMEM_MAX, persistence="off") as server:
        output = server.output()
    assert f"stream_send_buffer {2 * WMEM_MAX} capped by the kernel at {WMEM_MAX}" in output
    assert "raise net.core.wmem_max or lower stream_send_buffer" in output
