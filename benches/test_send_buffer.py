"""The parsing of ``benches/send_buffer.py``: ``ss`` output, ``/proc/net/sockstat``,
``schedstat`` (text copied from this machine's)."""

from __future__ import annotations

import pytest

from benches.send_buffer import parse_schedstat, parse_sockstat
from sse_fast.testing import parse_ss

ESTABLISHED = """\
0      98304      127.0.0.1:45893    127.0.0.1:39558
\t skmem:(r0,rb131072,t0,tb131072,f2432,w99968,o0,bl0,d0)
0      0      [::1]:8000    [::1]:40000
\t skmem:(r12,rb131072,t0,tb4194304,f1152,w3967872,o0,bl0,d0)
"""
LISTENING = """\
LISTEN 0      4096   127.0.0.1:45491 0.0.0.0:* users:(("python",pid=20037,fd=10))
\t skmem:(r0,rb131072,t0,tb131072,f0,w0,o0,bl0,d0)
"""
SOCKSTAT = """\
sockets: used 23
TCP: inuse 2 orphan 0 tw 2 alloc 3 mem 46
UDP: inuse 0 mem 0
"""


def test_ss_sockets_with_their_memory() -> None:
    first, second = parse_ss(ESTABLISHED)
    assert (first["local_port"], first["peer_port"]) == (45893, 39558)
    assert (first["tb"], first["w"], first["r"], first["bl"]) == (131072, 99968, 0, 0)
    assert (second["local_port"], second["peer_port"], second["r"]) == (8000, 40000, 12)
    assert second["w"] == 3967872


def test_ss_with_a_state_column() -> None:
    (listener,) = parse_ss(LISTENING)
    assert (listener["local_port"], listener["tb"]) == (45491, 131072)


def test_sockstat_tcp_pages() -> None:
    assert parse_sockstat(SOCKSTAT) == 46
    with pytest.raises(ValueError, match="no TCP line"):
        parse_sockstat("sockets: used 1\n")


def test_schedstat_nanoseconds() -> None:
    assert parse_schedstat("1234567 89 10\n") == 1234567
