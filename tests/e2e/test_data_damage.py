"""A data directory that lost events, as an outside probe damaged it, against real
``sse-fast serve`` processes: bytes changed inside the newest segment after a clean
stop, the newest segment cut mid-record, a segment deleted from the middle or the
end. Each is refused with one line naming the file and the way out (never taken for
a write the last run did not finish), and ``--data-recover`` starts on it with the
lost positions recorded: resumes into them get ``sse-fast-missed``, never
``resumed``, and no position is handed out twice (``durable/_integrity.py``). Real
processes: a real server's start on a damaged data directory."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest

from sse_fast.testing import ServerProcess, collect, free_port

from .test_data_dir import one_line, run_serve

#: the data-directory servers one after another on one worker, beside (not behind)
#: the restarts under load of test_restart.py and test_start.py
pytestmark = [
    pytest.mark.xdist_group("data-dir"),
    pytest.mark.processes("a real server's start on a damaged data directory"),
]


def publish_run(data: Path, prefix: str, count: int, *, kill: bool = False) -> list[str]:
    """One server run on ``data``: ``count`` events of topic ``t`` (ids given by the
    server when ``prefix`` is empty, else ``<prefix>-<n>``), published in batches of
    100, then a clean stop (SIGTERM) or a ``kill -9``. The ids, oldest first."""
    with ServerProcess(data_dir=str(data)) as server:

        async def publish() -> list[str]:
            ids: list[str] = []
            for start in range(0, count, 100):
                events = [
                    {"topic": "t", "data": n, **({"id": f"{prefix}-{n}"} if prefix else {})}
                    for n in range(start, min(count, start + 100))
                ]
                status, _, reply = await server.publish(json.dumps({"events": events}).encode())
                assert status == 200, reply
                ids.extend(json.loads(reply)["ids"])
            return ids

        ids = asyncio.run(publish())
        if kill:
            assert server.proc is not None
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait()
    return ids


def segments(data: Path) -> list[Path]:
    return sorted(data.glob("*.log"))


def refused(data: Path) -> str:
    """Start ``serve`` on ``data``: it must refuse with one line (exit 2); the line."""
    code, output = run_serve("--data-dir", str(data))
    assert code == 2, output
    line = one_line(output)
    assert "--data-recover" in line, line
    return line


async def resume(server: ServerProcess, last_event_id: str) -> tuple[str, list[str]]:
    """The resume outcome of a stream of ``t`` from ``last_event_id``, and its first
    event's name."""
    client = server.client("t", last_event_id=last_event_id)
    await client.connect()
    status = client.response_headers["sse-fast-resume"]
    first = await collect(client, 1)
    client.close()
    return status, [event.event for event in first]


def test_changed_bytes_inside_the_newest_segment_are_refused(tmp_path: Path) -> None:
    """The probe's case 1: 4 bytes flipped in the middle of the only segment after a
    clean SIGTERM were taken for a torn write: the events after them dropped, their
    positions handed out again."""
    ids = publish_run(tmp_path, "", 300)
    (segment,) = segments(tmp_path)
    data = bytearray(segment.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4] = bytes(b ^ 0xFF for b in data[middle : middle + 4])
    segment.write_bytes(bytes(data))
    line = refused(tmp_path)
    assert str(segment) in line and "damaged at byte" in line, line
    assert segment.read_bytes() == bytes(data)  # refusing changes nothing

    with ServerProcess("--data-recover", data_dir=str(tmp_path)) as server:

        async def main() -> None:
            # before the damage, inside it, the newest id: never "resumed" past the loss
            for last_seen in (ids[10], ids[200], ids[-1]):
                status, first = await resume(server, last_seen)
                assert status == "evicted", (last_seen, status)
                assert first == ["sse-fast-missed"]
            fresh = server.client("t")
            await fresh.connect()
            _, _, reply = await server.publish(json.dumps({"topic": "t", "data": "new"}).encode())
            (new_id,) = json.loads(reply)["ids"]
            assert int(new_id) > int(ids[-1])  # no position handed out twice
            assert [e.data for e in await collect(fresh, 1)] == ["new"]
            fresh.close()

        asyncio.run(main())
        output = server.output()
        assert "recovering (--data-recover)" in output
    assert (tmp_path / "damaged" / segment.name).read_bytes() == bytes(data)

    # the loss stays recorded: a plain restart starts and still says it
    with ServerProcess(data_dir=str(tmp_path)) as server:
        status, first = asyncio.run(resume(server, ids[200]))
        assert status == "evicted" and first == ["sse-fast-missed"]


def test_the_newest_segment_cut_mid_record_is_refused(tmp_path: Path) -> None:
    """The probe's cut case: the newest segment cut mid-record after a clean stop read
    like an unfinished write (1,485 events dropped, their positions reused)."""
    publish_run(tmp_path, "", 300)
    (segment,) = segments(tmp_path)
    size = segment.stat().st_size
    with open(segment, "r+b") as f:
        f.truncate(size * 2 // 3 + 3)
    line = refused(tmp_path)
    assert str(segment) in line and "acknowledged" in line, line


@pytest.mark.parametrize("workers", [1, 2])
def test_a_missing_middle_segment_is_refused_and_recovered_with_a_marker(
    tmp_path: Path, workers: int
) -> None:
    """The probe's case 2: three runs, the middle segment deleted: the server started
    without a word and a resume from ``a-100`` went from ``a-299`` to ``c-0``."""
    a = publish_run(tmp_path, "a", 300)
    publish_run(tmp_path, "b", 300)
    c = publish_run(tmp_path, "c", 300)
    _, middle, _ = segments(tmp_path)
    middle.unlink()
    line = refused(tmp_path)
    assert f"the segment {middle.name} is missing" in line, line

    with ServerProcess(
        "--data-recover", "--workers", str(workers), data_dir=str(tmp_path)
    ) as server:

        async def main() -> None:
            status, first_event = await resume(server, a[100])
            assert status == "evicted" and first_event == ["sse-fast-missed"]
            # after the loss, a resume is a resume
            client = server.client("t", last_event_id=c[10])
            await client.connect()
            assert client.response_headers["sse-fast-resume"] == "resumed"
            assert [e.id for e in await collect(client, 3)][:3] == c[11:14]
            client.close()

        asyncio.run(main())


def test_a_missing_newest_segment_is_refused(tmp_path: Path) -> None:
    """Deleting the newest segment started silently and reused its positions."""
    publish_run(tmp_path, "a", 200)
    publish_run(tmp_path, "b", 200)
    newest = segments(tmp_path)[-1]
    newest.unlink()
    line = refused(tmp_path)
    assert f"the segment {newest.name} is missing" in line, line


def test_a_kill_9_still_restarts_without_a_word(tmp_path: Path) -> None:
    """What the checks must not refuse: a process killed while it wrote (the page
    cache kept every finished write) restarts, and resumes are resumed."""
    ids = publish_run(tmp_path, "", 300, kill=True)
    port = free_port()
    with ServerProcess(port=port, data_dir=str(tmp_path)) as server:

        async def main() -> None:
            client = server.client("t", last_event_id=ids[-3])
            await client.connect()
            assert client.response_headers["sse-fast-resume"] == "resumed"
            assert [e.id for e in await collect(client, 2)] == ids[-2:]
            client.close()

        asyncio.run(main())
        assert "lost" not in server.output()


def test_damage_in_a_middle_segment_is_recovered_through_the_cli(tmp_path: Path) -> None:
    """The review's B4: the supervisor's check refused damage in an older segment with
    the message of before, --data-recover or not."""
    a = publish_run(tmp_path, "a", 200)
    b = publish_run(tmp_path, "b", 200)
    publish_run(tmp_path, "c", 200)
    middle = segments(tmp_path)[1]
    data = bytearray(middle.read_bytes())
    data[len(data) // 2] ^= 0xFF
    middle.write_bytes(bytes(data))
    line = refused(tmp_path)
    assert str(middle) in line and "damaged at byte" in line, line
    with ServerProcess("--data-recover", data_dir=str(tmp_path)) as server:

        async def main() -> None:
            for last_seen in (a[50], b[20], b[150]):
                status, first = await resume(server, last_seen)
                assert status in ("evicted", "unknown"), (last_seen, status)
                assert first == ["sse-fast-missed"]

        asyncio.run(main())
    assert (tmp_path / "damaged" / middle.name).read_bytes() == bytes(data)
