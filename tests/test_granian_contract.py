"""What ``sse-fast serve`` relies on in Granian's private parts, checked by name.

``sse_fast/_granian/_listener.py`` makes each worker's listener (``SO_SNDBUF``,
``TCP_DEFER_ACCEPT``) by overriding Granian's process server; ``sse_fast/_granian/_group_stop.py``
reads and wraps its stop machinery and rewrites two of its log lines. Both fall back to
Granian's own behaviour where a name is missing, so a Granian release that renames one
would lose the feature without an error: each test here fails naming what changed
(pyproject.toml bounds Granian below its next minor release for the same reason)."""

from __future__ import annotations

import inspect
import re
import socket
import threading
from typing import Any

import granian.log
import pytest
from granian import Granian
from granian._granian import SocketHolder
from granian.server import MPServer
from granian.server import common as _common

from sse_fast._granian import _group_stop

pytestmark = pytest.mark.mode_independent  # Granian's Python, whatever our core


def _server() -> Any:
    """A process server as ``serve`` makes one (not started: nothing is bound)."""
    return Granian("tests.support.plain_sse_app:app", address="127.0.0.1", port=0)


def test_the_process_server_is_the_one_granian_runs() -> None:
    """``granian_server`` subclasses ``MPServer`` where ``Granian`` is it (not under
    free-threaded Python)."""
    assert Granian is MPServer


def test_a_workers_listener_is_made_where_our_override_makes_it() -> None:
    """``BoundedSendBufferServer`` overrides ``_init_shared_socket()`` and
    ``_spawn_worker(idx, target, callback_loader)``; the base's ``_spawn_worker`` hands
    the worker ``self._shd`` and ``self._sso``, which the override sets."""
    assert list(inspect.signature(MPServer._init_shared_socket).parameters) == ["self"]
    spawn = inspect.signature(MPServer._spawn_worker).parameters
    assert list(spawn) == ["self", "idx", "target", "callback_loader"], spawn
    source = inspect.getsource(MPServer._spawn_worker)
    for name in ("self._shd", "self._sso"):
        assert name in source, f"MPServer._spawn_worker no longer reads {name}"
    server = _server()
    for name in ("_ssp", "_shd", "_sfd", "backlog", "bind_addr", "bind_port"):
        assert hasattr(server, name), f"Granian's server has no {name}"


def test_a_socket_holder_takes_a_descriptor_made_here() -> None:
    """``SocketHolder(fd, is_uds, backlog)``, Linux's constructor (the stub lists none)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        holder = SocketHolder(sock.fileno(), False, 128)  # type: ignore[call-arg]
        assert holder.get_fd() == sock.fileno() and not holder.is_uds()


def test_the_stop_machinery_group_stop_reads_and_wraps() -> None:
    """``wake_for_signals`` replaces ``main_loop_interrupt`` (a ``threading.Event``);
    ``remember_workers`` wraps ``_stop_workers()`` and reads ``wrks``;
    ``stopped_cleanly`` reads ``interrupt_signal`` and ``interrupt_children``; the
    workers' ``idx``."""
    server = _server()
    assert type(server.main_loop_interrupt) is threading.Event
    assert server.interrupt_signal is False and server.interrupt_children == []
    assert server.wrks == []
    assert list(inspect.signature(server._stop_workers).parameters) == []
    assert "self.idx" in inspect.getsource(_common), "Granian's workers have no idx"
    _group_stop.wake_for_signals(server)
    assert type(server.main_loop_interrupt) is not threading.Event  # ours, it took
    assert _group_stop.remember_workers(server) == [] and server._stop_workers.__name__ == (
        "stopping"
    )


def test_the_log_lines_group_stop_rewrites_are_granians() -> None:
    """``GroupStopLog`` rewrites two lines of Granian's logger ``_granian``."""
    source = inspect.getsource(_common)
    assert granian.log.logger.name == _group_stop.GRANIAN_LOGGER == "_granian"
    lines = {
        "Unexpected exit from worker-N": r"Unexpected exit from worker-\{self\.idx \+ 1\}",
        "Killing worker-N after it refused to gracefully stop": (
            r"Killing worker-\{wrk\.idx \+ 1\} after it refused to gracefully stop"
        ),
    }
    for said, pattern in lines.items():
        assert re.search(pattern, source), f"Granian no longer logs {said!r}"
    # and what Granian writes is what our filter matches
    assert _group_stop._UNEXPECTED.search("Unexpected exit from worker-2")
    assert _group_stop._KILLING.search("Killing worker-3 after it refused to gracefully stop")
