"""How ``sse-fast serve`` is put together: the hand-off to its workers declared
once (``settings.Handoff``), the broker chosen by one function of the settings,
settings frozen once built."""

from __future__ import annotations

import argparse
import ast
import dataclasses
from pathlib import Path
from typing import Any

import pytest

import sse_fast
from sse_fast._flags import add_settings_flags
from sse_fast.app import App
from sse_fast.app._worker import RELAY_JOIN_LIMIT, broker_for
from sse_fast.brokers import Broker
from sse_fast.brokers._relay import RelayBroker
from sse_fast.brokers.local import LocalBroker
from sse_fast.brokers.redis import RedisBroker
from sse_fast.hub import Hub
from sse_fast.settings import (
    AccessSettings,
    BrokerSettings,
    FeatureSettings,
    LimitSettings,
    ListeningSettings,
    RelayModeSettings,
    Settings,
    SettingsError,
    StorageSettings,
    StreamSettings,
)
from sse_fast.settings._handoff import Handoff
from sse_fast.settings._settings import unknown_variables

ROOT = Path(__file__).resolve().parent.parent.parent
#: the package's sources where they are imported from (the installed wheel in the sdist check)
PACKAGE = Path(sse_fast.__file__).resolve().parent


def _string_constants(path: Path) -> set[str]:
    return {
        node.value
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def _declared_in(path: Path) -> dict[str, list[str]]:
    """For each class of ``path``, the names of the fields it declares."""
    out: dict[str, list[str]] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef):
            out[node.name] = [
                item.target.id
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            ]
    return out


def test_the_hand_off_fields_are_declared_once() -> None:
    names = Handoff.names()
    assert names == {f.name for f in dataclasses.fields(Handoff)} and names
    declared: dict[str, list[str]] = {}
    for path in sorted((PACKAGE / "settings").glob("*.py")):  # the settings' modules
        declared |= _declared_in(path)
    assert {"Handoff", "Settings", "ListeningSettings"} <= declared.keys()
    assert [cls for cls, fields in declared.items() if names & set(fields)] == ["Handoff"]
    # a value of its own beside the settings: none of them is a setting
    assert not names & {f.name for f in dataclasses.fields(Settings)}
    for derived in (PACKAGE / "_flags.py", ROOT / "docs" / "hooks.py"):
        listed = names & _string_constants(derived)
        assert not listed, f"{derived.name} lists {sorted(listed)}: they are no settings"


def test_the_hand_off_fields_are_no_flags_and_every_other_setting_is() -> None:
    serve = argparse.ArgumentParser()
    add_settings_flags(serve)
    flags = {action.dest for action in serve._actions} - {"help"}
    settings = {f.name for f in dataclasses.fields(Settings)}
    assert flags == settings - Handoff.names()


def _kind(broker: Broker) -> tuple[str, str, str]:
    """The broker's class, where it reaches (socket, URL) and where it keeps history."""
    if isinstance(broker, RedisBroker):
        told = broker.options
        return "RedisBroker", told.url, f"node {told.node}, {told.workers} workers"
    if isinstance(broker, RelayBroker):
        return "RelayBroker", broker.path, f"{broker.store_dir} {broker.connect_timeout:g} s"
    assert isinstance(broker, LocalBroker)
    return "LocalBroker", "", broker.store.path if broker.store is not None else "memory"


# the settings a worker reads back from serve, by topology, and its broker
TOPOLOGIES: dict[str, tuple[dict[str, Any], tuple[str, str, str]]] = {
    "memory": ({"persistence": "off"}, ("LocalBroker", "", "memory")),
    "durable": ({"store_dir": "/data"}, ("LocalBroker", "", "/data")),
    "relay": (
        {"workers": 4, "relay_socket": "/r.sock", "store_dir": "/data", "start_failure_file": "f"},
        ("RelayBroker", "/r.sock", f"/data {RELAY_JOIN_LIMIT:g} s"),
    ),
    "relay embedded": (
        {"workers": 4, "relay_socket": "/r.sock", "persistence": "off"},
        ("RelayBroker", "/r.sock", " 10 s"),
    ),
    "redis": (
        {"redis_url": "redis://db:6379/0", "node_name": "n1", "workers": 2},
        ("RedisBroker", "redis://db:6379/0", "node n1, 2 workers"),
    ),
    "mirror": (
        {"upstream": "http://origin/events?topic=news", "store_dir": "/data"},
        ("LocalBroker", "", "/data"),
    ),
    "mirror with workers": (
        {"upstream": "http://o/e?topic=a", "upstream_lock": "/u.lock", "relay_socket": "/r.sock"},
        ("RelayBroker", "/r.sock", " 10 s"),
    ),
    "mirror on redis": (
        {"upstream": "http://o/e?topic=a", "redis_url": "redis://db/0", "node_name": "n2"},
        ("RedisBroker", "redis://db/0", "node n2, 1 workers"),
    ),
}


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_the_broker_is_one_function_of_the_settings(topology: str) -> None:
    values, expected = TOPOLOGIES[topology]
    handed = {name: value for name, value in values.items() if name in Handoff.names()}
    settings = Settings(**{name: v for name, v in values.items() if name not in handed})
    handoff = Handoff(**handed)
    assert _kind(broker_for(settings, handoff)) == expected
    assert _kind(App(settings, handoff=handoff).hub.broker) == expected  # it asks broker_for


def test_mirror_modes_reader_reports_into_the_hub_made_with_it() -> None:
    """The reader's state is made first and given to the hub (``app/_worker.py``):
    this worker's ``/metrics`` figures carry it, and the operations endpoints and the
    lifespan watch the reader made with them."""
    app = App(Settings(upstream="http://o/e?topic=a"))
    upstream = app.operations.upstream
    assert upstream is not None and app.lifespan.upstream is upstream
    figures = app.hub.report({"what": "metrics"})
    assert (figures["upstream_reading"], figures["upstream_up"]) == (True, False)
    upstream.reader.moved("connected")
    assert app.hub.report({"what": "metrics"})["upstream_up"] is True
    standby = App(Settings(upstream="http://o/e?topic=a"), handoff=Handoff(upstream_lock="/u"))
    assert standby.hub.report({"what": "metrics"})["upstream_reading"] is False


def test_mirror_mode_on_a_hub_of_the_callers_is_refused() -> None:
    with pytest.raises(ValueError, match="give no hub"):
        App(Settings(upstream="http://o/e?topic=a"), hub=Hub(Settings()))
    assert "upstream_reading" not in App(Settings()).hub.report({"what": "metrics"})


SECTIONS = {
    "listening": ListeningSettings,
    "streams": StreamSettings,
    "limits": LimitSettings,
    "access": AccessSettings,
    "features": FeatureSettings,
    "brokers": BrokerSettings,
    "storage": StorageSettings,
    "relay_mode": RelayModeSettings,
}


def test_each_section_is_a_value_of_its_own() -> None:
    """``settings.limits`` and the others: a value of that section's class alone (not
    the whole ``Settings``), with the same fields, made once; together the sections are
    every setting, each once."""
    settings = Settings(max_body_bytes=1234, retry_ms=77, redis_url="redis://a:1")
    named: list[str] = []
    for name, section in SECTIONS.items():
        value = getattr(settings, name)
        assert type(value) is section and getattr(settings, name) is value
        fields = [f.name for f in dataclasses.fields(section)]
        assert {f: getattr(value, f) for f in fields} == {f: getattr(settings, f) for f in fields}
        named += fields
    assert sorted(named) == sorted(f.name for f in dataclasses.fields(Settings))
    assert (settings.limits.max_body_bytes, settings.streams.retry_ms) == (1234, 77)
    assert settings.brokers.redis_urls == ("redis://a:1",)  # its derived values go with it
    assert settings == Settings(max_body_bytes=1234, retry_ms=77, redis_url="redis://a:1")
    assert dataclasses.replace(settings, retry_ms=5).streams.retry_ms == 5


def _holders_of_settings(root: Any, depth: int = 6, seen: set[str] | None = None) -> set[str]:
    """The classes of the objects reached from ``root`` (attributes, lists, tuples and
    dicts; sse_fast's objects only, ``depth`` steps) that hold the whole ``Settings``;
    ``seen`` gets the class of every object walked."""
    seen = set() if seen is None else seen
    holders: set[str] = set()
    walked: set[int] = set()
    todo: list[tuple[Any, int]] = [(root, 0)]
    while todo:
        value, level = todo.pop()
        if id(value) in walked or level > depth:
            continue
        walked.add(id(value))
        if isinstance(value, list | tuple | set | frozenset):
            todo += [(v, level + 1) for v in value]
        elif isinstance(value, dict):
            todo += [(v, level + 1) for v in value.values()]
        elif type(value).__module__.startswith("sse_fast.") and hasattr(value, "__dict__"):
            if isinstance(value, Settings):
                continue
            seen.add(type(value).__name__)
            for attribute in vars(value).values():
                if isinstance(attribute, Settings):
                    holders.add(type(value).__name__)
                todo.append((attribute, level + 1))
    return holders


def test_no_part_of_a_worker_holds_the_whole_settings() -> None:
    """Each part is given the sections it reads (``app/_worker.py``): walked from the
    app, only the composition roots hold the whole ``Settings``: the app, and the hub,
    which makes its own parts."""
    settings = Settings(
        webhook_urls="http://127.0.0.1:9/hook",
        webhook_secret="s" * 16,
        upstream="http://o/e?topic=a",
    )
    app = App(settings)
    assert app.operations.upstream is not None and app.hub.webhooks is not None
    seen: set[str] = set()
    assert _holders_of_settings(app, seen=seen) == {"App", "Hub"}
    parts = {"EventsEndpoint", "PublishEndpoint", "Operations", "Upstream", "Authenticator"}
    assert parts | {"FanOut", "Topics", "Opening", "Lifecycle", "Webhooks", "Closer"} <= seen


def test_the_walk_finds_a_part_that_holds_the_whole_settings() -> None:
    app = App(Settings())
    app.operations.planted = app.settings  # type: ignore[attr-defined]
    assert "Operations" in _holders_of_settings(app)


def test_settings_cannot_be_changed_once_built() -> None:
    settings = Settings(upstream="http://origin/events?topic=news")
    assert settings.upstream_topic == "news"  # resolved as they are built
    for f in dataclasses.fields(Settings):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(settings, f.name, getattr(settings, f.name))
    assert settings == Settings(upstream="http://origin/events?topic=news")


def test_the_hand_off_is_a_value_of_its_own_beside_the_settings() -> None:
    """What serve decides travels in variables of its fields' names, beside the
    settings' (``serve`` writes both; a worker reads both): the settings read none of
    them, and none of them is an unknown variable."""
    settings = Settings(workers=2)
    handoff = Handoff(relay_socket="/r.sock", install_signal_handlers=True, store_dir="/data")
    environ = {**settings.to_env(), **handoff.to_env()}
    assert Handoff.from_env(environ) == handoff  # what the workers read back
    assert Settings.from_env(environ) == settings
    assert unknown_variables(environ) == []
    assert Handoff.from_env({}) == Handoff()  # an app no serve started
    for name in Handoff.names():  # no setting of that name (CHANGELOG.md)
        with pytest.raises(TypeError, match=f"unexpected keyword argument '{name}'"):
            Settings(**{name: Handoff.__dataclass_fields__[name].default})
    with pytest.raises(SettingsError, match="SSE_FAST_MAIN_PID='x' is not a valid int"):
        Handoff.from_env({"SSE_FAST_MAIN_PID": "x"})
    assert Handoff().install_signal_handlers is False and not Handoff().store_dir
    with pytest.raises(dataclasses.FrozenInstanceError):
        handoff.store_dir = "/elsewhere"  # type: ignore[misc]


def test_the_data_directory_is_reported_where_serve_handed_one(tmp_path: Path) -> None:
    """Its size goes into this worker's ``/metrics`` report (``data_figures``, given
    to the hub as one of its reports)."""
    (tmp_path / "segment").write_bytes(b"x" * 5000)
    durable = App(Settings(data_max_bytes=1 << 20), handoff=Handoff(store_dir=str(tmp_path)))
    figures = durable.hub.report({"what": "metrics"})
    assert figures["data_bytes"] >= 5000 and figures["data_max_bytes"] == 1 << 20
    assert "data_bytes" not in App(Settings()).hub.report({"what": "metrics"})


def test_a_worker_gone_first_on_a_group_sigterm_is_a_clean_stop() -> None:
    """A SIGTERM to the whole process group reaches Granian's main process and the workers
    at once; a worker with nothing to drain may exit before the main process took its
    signal, which Granian calls an unexpected exit (status 1). That is a clean stop: the
    stop signal came and the worker exited with status 0. A worker that exited otherwise,
    or without a stop signal, is not."""
    from types import SimpleNamespace

    from sse_fast._granian._group_stop import remember_workers, stopped_cleanly

    def worker(idx: int, exitcode: int | None) -> SimpleNamespace:
        return SimpleNamespace(idx=idx, inner=SimpleNamespace(exitcode=exitcode))

    stopped: list[int] = []
    server = SimpleNamespace(
        wrks=[worker(0, 0), worker(1, 0)],
        interrupt_signal=True,
        interrupt_children=[1],
        _stop_workers=lambda: stopped.append(1),
    )
    workers = remember_workers(server)
    server._stop_workers()  # Granian stops them, then forgets them
    server.wrks = []
    assert stopped == [1] and len(workers) == 2
    assert stopped_cleanly(server, workers)
    workers[1].inner.exitcode = 1  # a worker that failed as the stop came
    assert not stopped_cleanly(server, workers)
    workers[1].inner.exitcode = 0
    server.interrupt_signal = False  # a worker that exited by itself, no stop asked
    assert not stopped_cleanly(server, workers)
    assert not stopped_cleanly(SimpleNamespace(), [])  # another Granian: as before
    assert remember_workers(SimpleNamespace()) == []


def test_granians_unexpected_exit_line_is_info_after_a_group_stop() -> None:
    """Granian's watcher logs "Unexpected exit from worker-N" as an ERROR when a worker
    exits before the main process asked it to: after a group stop signal that is a
    clean stop, said as INFO. It waits (in the watcher's thread) for the main process
    to take the signal; a worker that failed, or that stopped with no stop signal for
    the main process, keeps Granian's ERROR; other lines pass unchanged."""
    import logging
    import threading
    from types import SimpleNamespace

    from sse_fast._granian._group_stop import GroupStopLog

    def worker(idx: int, exitcode: int | None) -> SimpleNamespace:
        return SimpleNamespace(idx=idx, inner=SimpleNamespace(exitcode=exitcode))

    def line(message: str, level: int = logging.ERROR) -> logging.LogRecord:
        return logging.LogRecord("_granian", level, __file__, 1, message, None, None)

    def filtered(quiet: GroupStopLog, record: logging.LogRecord) -> tuple[bool, str, str]:
        # as Granian's watcher: a thread of its own
        out: list[bool] = []
        watcher = threading.Thread(target=lambda: out.append(quiet.filter(record)))
        watcher.start()
        watcher.join(10)
        return out[0], record.levelname, record.getMessage()

    logging.getLogger("_granian").setLevel(logging.INFO)
    server = SimpleNamespace(wrks=[worker(0, None), worker(1, 0)], interrupt_signal=False)
    quiet = GroupStopLog(server, wait=5.0)
    later = threading.Timer(0.1, lambda: setattr(server, "interrupt_signal", True))
    later.start()  # the main process takes its signal after the worker is gone
    assert filtered(quiet, line("Unexpected exit from worker-2")) == (
        True,
        "INFO",
        "worker-2 stopped on the stop signal before the main process took it",
    )
    later.join()
    server.wrks[1].inner.exitcode = 1  # a worker that failed
    assert filtered(quiet, line("Unexpected exit from worker-2"))[1:] == (
        "ERROR",
        "Unexpected exit from worker-2",
    )
    server.wrks[1].inner.exitcode = 0
    server.interrupt_signal = False  # no stop signal for the main process: an error
    assert filtered(GroupStopLog(server, wait=0.05), line("Unexpected exit from worker-2"))[1:] == (
        "ERROR",
        "Unexpected exit from worker-2",
    )
    server.interrupt_signal = True
    assert filtered(quiet, line("Unexpected exit from worker-1"))[1] == "ERROR"  # running
    assert filtered(quiet, line("Spawning worker-2", logging.INFO))[1:] == (
        "INFO",
        "Spawning worker-2",
    )
    assert filtered(quiet, line("Static path routes"))[1] == "ERROR"
    assert (
        filtered(GroupStopLog(SimpleNamespace()), line("Unexpected exit from worker-1"))[1]
        == "ERROR"
    )  # another Granian: as it said


@pytest.mark.processes("a real process reaped by another thread")
def test_granians_killing_line_is_debug_for_a_worker_that_had_exited() -> None:
    """Granian's main thread logs "Killing worker-N after it refused to gracefully
    stop" when its watcher thread reaped the worker first (seen in CI): a real
    process reaped elsewhere, whose exit status multiprocessing never learns, makes
    it a DEBUG line; a process still running keeps the warning."""
    import logging
    import multiprocessing
    import os
    import time
    from types import SimpleNamespace

    from sse_fast._granian._group_stop import GroupStopLog

    def line(number: int) -> logging.LogRecord:
        message = f"Killing worker-{number} after it refused to gracefully stop"
        return logging.LogRecord("_granian", logging.WARNING, __file__, 1, message, None, None)

    spawn = multiprocessing.get_context("spawn")
    done = spawn.Process(target=time.sleep, args=(0,))
    running = spawn.Process(target=time.sleep, args=(60,))
    done.start()
    running.start()
    try:
        os.waitpid(done.pid, 0)  # reaped as Granian's watcher thread does it
        assert done.exitcode is None  # what Granian's main thread then sees
        server = SimpleNamespace(
            wrks=[SimpleNamespace(idx=0, inner=done), SimpleNamespace(idx=1, inner=running)]
        )
        logging.getLogger("_granian").setLevel(logging.INFO)
        quiet = GroupStopLog(server)
        record = line(1)
        assert not quiet.filter(record)  # not shown at INFO
        assert record.levelname == "DEBUG"
        assert "worker-1 had exited" in record.getMessage()
        record = line(2)
        assert quiet.filter(record)
        assert (record.levelname, record.getMessage()) == (
            "WARNING",
            "Killing worker-2 after it refused to gracefully stop",
        )
        assert quiet.filter(line(3))  # a worker it does not know: as Granian said
    finally:
        running.kill()
        running.join()
