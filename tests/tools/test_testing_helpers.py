"""``sse_fast.testing.ServerProcess`` leaves no server behind when its start fails
in any way (a leftover from a failed start outlived a test session once)."""

from __future__ import annotations

import pytest

from sse_fast.testing import ServerProcess


def test_a_failing_probe_stops_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    server = ServerProcess()

    def broken(path: str) -> tuple[int, bytes]:
        raise ValueError("a probe's own bug")

    monkeypatch.setattr(server, "_probe", broken)
    with pytest.raises(ValueError, match="a probe's own bug"), server:
        pass
    assert server.proc is not None and server.proc.poll() is not None
    assert server._group() == []
