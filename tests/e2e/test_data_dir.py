"""The data directory as ops meet it: one server per directory, what is not
ours refused by name, a torn end dropped, a full disk refused with 503 (and
counted) and recovered from, with real ``sse-fast serve`` processes: a second one on a
directory in use, and small tmpfs mounts that really fill or turn read-only."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sse_fast.brokers._sequencing import Sequenced
from sse_fast.brokers.durable import EventLog, read
from sse_fast.brokers.durable._records import boot_record, segment_header, sequenced_records
from sse_fast.testing import ServerProcess, collect, free_port

#: the data-directory servers one after another on one worker, beside (not behind)
#: the restarts under load of test_restart.py and test_start.py
pytestmark = [
    pytest.mark.xdist_group("data-dir"),
    pytest.mark.processes("real servers on a directory in use, a full disk, a read-only mount"),
]


def run_serve(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """``sse-fast serve`` expected to stop by itself: its exit code and output. One
    that does not within 30 s is killed with its workers (its process group), and
    the test fails on its exit code, not on processes left running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sse_fast", "serve", "--port", str(free_port()), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SSE_FAST_ALLOW_ANONYMOUS_PUBLISH": "1", **(env or {})},
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    return proc.returncode, err + out


def one_line(output: str) -> str:
    assert "Traceback" not in output, output
    (line,) = [line for line in output.splitlines() if line.startswith("sse-fast: ")]
    return line


def _fill(path: Path, count: int) -> None:
    log = EventLog(str(path), fsync="never")
    log.open()
    first = log.next_position
    log.append(
        [
            Sequenced(first + n, f"e{n}", ("t",), f"id: e{n}\ndata: {n}\n\n".encode(), 0.0)
            for n in range(count)
        ]
    )
    log.close()


def test_a_second_server_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    with ServerProcess(data_dir=str(tmp_path)) as first:
        code, output = run_serve("--data-dir", str(tmp_path))
        assert code == 2
        line = one_line(output)
        assert str(tmp_path) in line and "in use by another sse-fast server" in line
        assert f"pid {first.proc.pid}" in line if first.proc else False
        assert "--data-dir" in line


def test_a_foreign_file_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    code, output = run_serve("--data-dir", str(tmp_path))
    assert code == 2
    line = one_line(output)
    assert str(tmp_path / "notes.txt") in line and "not an sse_fast data file" in line


def test_a_damaged_older_file_is_refused_by_name(tmp_path: Path) -> None:
    _fill(tmp_path, 50)
    _fill(tmp_path, 50)  # a second run: the first segment is no longer the newest
    oldest = sorted(tmp_path.glob("*.log"))[0]
    data = bytearray(oldest.read_bytes())
    data[200] ^= 0xFF
    oldest.write_bytes(bytes(data))
    code, output = run_serve("--data-dir", str(tmp_path))
    assert code == 2
    line = one_line(output)
    assert str(oldest) in line and "damaged" in line and "--data-recover" in line


def test_an_unwritable_directory_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, output = run_serve("--data-dir", str(blocker / "data"))
    assert code == 2
    line = one_line(output)
    assert "cannot create the data directory" in line and "--data-dir" in line


def test_a_torn_end_is_dropped_and_never_delivered(tmp_path: Path) -> None:
    _fill(tmp_path, 20)
    newest = sorted(tmp_path.glob("*.log"))[-1]
    with open(newest, "ab") as f:  # half a record: a write a crash cut short
        f.write(b"\x40\x00\x00\x00\x12\x34\x56\x78\x01garbage")
    with ServerProcess(data_dir=str(tmp_path)) as server:

        async def main() -> None:
            client = server.client("t", last_event_id="e17")
            await client.connect()
            assert client.response_headers["sse-fast-resume"] == "resumed"
            events = await collect(client, 2)
            assert [e.id for e in events] == ["e18", "e19"]
            client.close()

        asyncio.run(main())
        assert "dropped 16 bytes at the end of" in server.output()


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"a small file system is needed to fill the disk: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_is_refused_with_503_counted_and_recovered_from(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "1m") as data, ServerProcess(data_dir=str(data)) as server:

        async def main() -> None:
            client = server.client("t")
            await client.connect()
            big = "x" * 4000
            with open(data / "filler", "wb") as filler:  # takes what is left, less a little
                free = os.statvfs(data).f_bavail * os.statvfs(data).f_frsize
                filler.write(b"\0" * max(0, free - 40_000))
            acked: list[str] = []
            refused = None
            for n in range(100):
                body = json.dumps({"topic": "t", "data": big, "id": f"f{n}"}).encode()
                status, headers, reply = await server.publish(body)
                if status == 200:
                    acked.append(f"f{n}")
                    continue
                refused = (n, status, headers, reply)
                break
            assert refused is not None, "the disk never filled"
            n, status, headers, reply = refused
            assert status == 503, reply
            message = json.loads(reply)["error"]
            assert "No space left on device" in message and str(data) in message
            assert "not stored and not delivered" in message
            assert headers.get("retry-after") == "1"
            _, _, metrics = await server.get("/metrics")
            text = metrics.decode()
            assert 'sse_fast_refused_total{reason="storage"} 1' in text
            (used,) = re.findall(r"^sse_fast_data_bytes (\d+)$", text, re.M)
            assert int(used) == sum(f.stat().st_size for f in data.iterdir())  # filler too
            assert "sse_fast_data_max_bytes 1073741824" in text
            os.unlink(data / "filler")  # space again: the same publish goes through
            status, _, reply = await server.publish(
                json.dumps({"topic": "t", "data": big, "id": f"f{n}"}).encode()
            )
            assert status == 200, reply
            acked.append(f"f{n}")
            received = await collect(client, len(acked))
            assert [e.id for e in received] == acked  # the refused one came once, later
            client.close()

        asyncio.run(main())


def _fill_up(mount: Path) -> None:
    """Take every byte a file may still get on the file system at ``mount``."""
    fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


def _started_and_stopped(output: str) -> None:
    """The server said its one line and went: no worker was started again."""
    assert "respawn" not in output.lower() and "crash loop" not in output, output


@pytest.mark.parametrize("workers", [1, 2])
def test_a_full_disk_at_start_is_one_line_and_exit_2(tmp_path: Path, workers: int) -> None:
    with tmpfs(tmp_path / "small", "1m") as mount:
        data = mount / "data"
        data.mkdir()
        _fill(data, 20)  # a history to restore, on a disk that fills up afterwards
        (data / "lock").write_text("1\n")  # as the last run left it
        _fill_up(mount)
        code, output = run_serve("--data-dir", str(data), "--workers", str(workers))
    assert code == 2, output
    line = one_line(output)
    assert f"the data directory {data} is on a full file system" in line, line
    assert "free space there, or choose another with --data-dir" in line
    assert "publish" not in line  # nothing was published: a start is not a publish
    _started_and_stopped(output)


def test_a_disk_that_fills_after_the_check_is_said_as_full_by_the_worker(tmp_path: Path) -> None:
    """The main process proved room; a worker's ``EventLog.open`` then finds the
    disk full: its line for the start is the directory's, not the publish's
    "publish again"."""
    from sse_fast.app import App
    from sse_fast.brokers.durable import StoreWriteError
    from sse_fast.settings import Settings
    from sse_fast.settings._handoff import Handoff

    with tmpfs(tmp_path / "small", "1m") as mount:
        data = mount / "data"
        data.mkdir()
        (data / "lock").write_text("1\n")
        _fill_up(mount)
        app = App(Settings(), handoff=Handoff(store_dir=str(data)))
        store = EventLog(str(data))
        with pytest.raises(StoreWriteError) as raised:
            store.open()
        line = app.lifespan.failure_message(raised.value)
    assert "publish" in str(raised.value)  # the log's own words are a publish's
    assert line.startswith(f"the data directory {data} is on a full file system"), line
    assert "publish" not in line


def test_a_read_only_mount_is_said_as_such(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "1m") as mount:
        data = mount / "data"
        data.mkdir()
        _fill(data, 20)
        done = subprocess.run(
            ["mount", "-o", "remount,ro", str(mount)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            pytest.skip(f"cannot make the mount read-only: {done.stderr.strip()}")
        code, output = run_serve("--data-dir", str(data))
    assert code == 2, output
    line = one_line(output)
    assert f"the data directory {data} is on a read-only file system" in line, line
    assert "mount it read-write, or choose another with --data-dir" in line
    assert "permission" not in line
    _started_and_stopped(output)


def _as_after_a_power_cut(data: Path, keep: int) -> list[str]:
    """Rewrite the data directory as a machine crash under fsync=interval leaves
    it: the newest events never reached the disk, and the machine rebooted (the
    last run's boot id is another). The ids kept, oldest first."""
    (segment,) = sorted(data.glob("*.log"))
    loaded = read(str(data))
    assert loaded.sequence is not None
    kept = loaded.events[:keep]
    segment.write_bytes(
        segment_header(loaded.sequence, loaded.first_position)
        + boot_record("another-boot-of-this-machine", "interval")
        + sequenced_records(kept, 0.0)
    )
    return [e.id for e in kept]


def test_events_a_machine_crash_lost_are_said_never_resumed_past(tmp_path: Path) -> None:
    """After a power cut under fsync=interval, the events the disk never got are
    gone: a client resuming from one of them or from before them is answered
    ``evicted`` with ``sse-fast-missed`` (reason lost-writes at the marker), never
    ``resumed`` past them; new events go on after the marker."""
    port = free_port()
    with ServerProcess(port=port, data_dir=str(tmp_path)) as server:

        async def publish() -> list[str]:
            ids = []
            for n in range(20):
                _, _, reply = await server.publish(json.dumps({"topic": "t", "data": n}).encode())
                ids.extend(json.loads(reply)["ids"])
            return ids

        published = asyncio.run(publish())
        assert server.proc is not None
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
    kept = _as_after_a_power_cut(tmp_path, 15)
    assert kept == published[:15]
    with ServerProcess(port=port, data_dir=str(tmp_path)) as server:

        async def main() -> None:
            for last_seen in (published[-1], published[9], published[14]):
                client = server.client("t", last_event_id=last_seen)
                await client.connect()
                assert client.response_headers["sse-fast-resume"] == "evicted", last_seen
                (missed,) = await collect(client, 1)
                assert missed.event == "sse-fast-missed"
                client.close()
            fresh = server.client("t")
            await fresh.connect()
            _, _, reply = await server.publish(json.dumps({"topic": "t", "data": "new"}).encode())
            (new_id,) = json.loads(reply)["ids"]
            (event,) = await collect(fresh, 1)
            assert event.data == "new" and int(new_id) > int(published[-1])
            fresh.close()
            # from the marker on, a resume is a resume
            marker = server.client("t", last_event_id=str(int(new_id) - 1))
            await marker.connect()
            assert marker.response_headers["sse-fast-resume"] == "resumed"
            assert [e.data for e in await collect(marker, 1)] == ["new"]
            marker.close()
            # the marker is in the ring: a stream from the first kept event sees it
            status, _, body = await server.get("/stats")
            assert status == 200 and json.loads(body)["topics"]["t"]["retained"] == 17

        asyncio.run(main())
        assert "may be lost" in server.output()
