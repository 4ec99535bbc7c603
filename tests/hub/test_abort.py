"""``sse_fast._abort``: the right connection is reset, nothing else is touched."""

from __future__ import annotations

import os
import socket

import pytest

from sse_fast._abort import abort_connections, connection_key


def _pair(listener: socket.socket) -> tuple[socket.socket, socket.socket]:
    client = socket.create_connection(listener.getsockname())
    server_side, _ = listener.accept()
    return client, server_side


def _key(server_side: socket.socket) -> tuple[tuple[str, int], tuple[str, int]]:
    host, port = server_side.getsockname()[:2]
    peer_host, peer_port = server_side.getpeername()[:2]
    return (host, port), (peer_host, peer_port)


def test_only_the_named_connection_is_reset_and_its_descriptor_stays_ours() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        (a, a_server), (b, b_server) = _pair(listener), _pair(listener)
        try:
            found = abort_connections([_key(a_server), (("127.0.0.1", 1), ("127.0.0.1", 2))])
            assert found == {_key(a_server)}
            assert a.recv(1) == b""  # hung up at once
            os.fstat(a_server.fileno())  # but the owner's descriptor is still open...
            with pytest.raises(BrokenPipeError):
                a_server.send(b"x")  # ...its next write fails, so it closes it...
            a_server.close()
            with pytest.raises(OSError):  # ...and linger 0 made that a reset: no half-open
                a.getpeername()  # connection is left behind (a FIN alone leaves CLOSE_WAIT)
            b_server.sendall(b"still here")
            assert b.recv(100) == b"still here"
        finally:
            for s in (a, a_server, b, b_server):
                s.close()


def test_connection_key_from_the_scope() -> None:
    scope = {"http_version": "1.1", "server": ("127.0.0.1", "8000"), "client": ("::1", 5)}
    assert connection_key(scope) == (("127.0.0.1", 8000), ("::1", 5))
    mapped = {**scope, "client": ("::ffff:10.0.0.1", 7)}
    assert connection_key(mapped) == (("127.0.0.1", 8000), ("10.0.0.1", 7))
    assert connection_key({**scope, "http_version": "2"}) is None  # shared by other streams
    assert connection_key({**scope, "client": None}) is None  # e.g. a Unix socket
    assert connection_key({**scope, "server": ("/run/sse.sock", None)}) is None


def test_without_sock_diag_every_socket_is_asked_its_addresses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fallback where the kernel cannot be asked: same connection, same result."""
    import sse_fast._abort as abort

    monkeypatch.setattr(abort, "_socket_inodes", lambda wanted: None)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        (a, a_server), (b, b_server) = _pair(listener), _pair(listener)
        with a, a_server, b, b_server:
            assert abort.abort_connections([_key(a_server)]) == {_key(a_server)}
            assert a.recv(1) == b""
            b_server.sendall(b"still here")
            assert b.recv(100) == b"still here"


def test_user_timeout_goes_on_the_servers_sockets_only() -> None:
    """``set_user_timeout``: the listener (inherited by what it accepts later)
    and the connections with the server's address; not the client's sockets."""
    import socket as socket_module

    from sse_fast._abort import set_user_timeout

    option = socket_module.TCP_USER_TIMEOUT
    with socket_module.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        server = listener.getsockname()
        early_client = socket_module.create_connection(server)
        early, _ = listener.accept()
        assert set_user_timeout(server, 1234) == 2  # the listener, the accepted one
        late_client = socket_module.create_connection(server)
        late, _ = listener.accept()
        with early_client, early, late_client, late:
            assert listener.getsockopt(socket_module.IPPROTO_TCP, option) == 1234
            assert early.getsockopt(socket_module.IPPROTO_TCP, option) == 1234
            assert late.getsockopt(socket_module.IPPROTO_TCP, option) == 1234  # inherited
            assert early_client.getsockopt(socket_module.IPPROTO_TCP, option) == 0
            assert late_client.getsockopt(socket_module.IPPROTO_TCP, option) == 0
