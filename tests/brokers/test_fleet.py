"""A server that survives its own processes' faults, against real processes:
``sse-fast serve --workers 2``, its relay killed, stopped and a worker killed;
and one scrape that answers for the whole server (``brokers/_relay/``,
``app/_operations.py``). Real processes: the relay process and the workers of a real server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from sse_fast.brokers.durable import read
from sse_fast.publisher import Publisher
from sse_fast.testing import ServerProcess, collect, wait_for

from ..support.waiting import until

pytestmark = pytest.mark.processes("the relay process and the workers of a real server")


async def _stats(server: ServerProcess) -> dict[str, Any]:
    status, _, body = await server.get("/stats")
    assert status == 200, body
    return dict(json.loads(body))


async def _relay_pids(server: ServerProcess) -> set[int]:
    """The relay's pid as each worker names it."""
    return {int(w["relay"]["pid"]) for w in (await _stats(server))["workers"]}


async def _relay_pid(server: ServerProcess) -> int:
    pids = await _relay_pids(server)
    assert len(pids) == 1, pids
    return pids.pop()


async def _all_joined(server: ServerProcess, old_relay: int, timeout: float = 10) -> None:
    """Wait until one ``/stats`` answer lists every worker, each connected to a relay
    that is not ``old_relay``. A worker that has not joined the new relay yet is not
    gathered by it, and answers a request it takes for itself alone, naming the old
    relay: one answer without the old pid proves nothing of the other worker."""
    links: list[dict[str, Any]] = []

    async def joined() -> bool:
        nonlocal links
        stats = await _stats(server)
        links = [w["relay"] for w in stats["workers"]]
        return len(links) == stats["workers_expected"] and all(
            link["connected"] and int(link["pid"]) != old_relay for link in links
        )

    try:
        await wait_for(joined, timeout, what="the workers all joined the new relay")
    except TimeoutError as exc:
        raise AssertionError(f"the workers have not all joined: {links}") from exc


async def _logged(server: ServerProcess, words: str, times: int) -> bool:
    """Whether the server's log holds ``words`` ``times`` times (once per worker)."""
    return server.output().count(words) >= times


def _publish_body(topic: str, data: object, **extra: object) -> bytes:
    return json.dumps({"topic": topic, "data": data, **extra}).encode()


def test_a_killed_relay_is_restarted_and_open_streams_are_told() -> None:
    """kill -9 of the relay without persistence: publishes are refused with 503
    and Retry-After while it is away, the main process starts it again, the
    workers reconnect, and an open stream stays open and is sent
    ``sse-fast-missed`` (relay-restarted) before the next events; /healthz stays
    200 throughout."""
    with ServerProcess("--workers", "2", "--persistence", "off") as server:

        async def main() -> None:
            client = server.client("fleet")
            await client.connect()
            status, _, body = await server.publish(_publish_body("fleet", "before"))
            assert status == 200, body
            assert [e.data for e in await collect(client, 1)] == ["before"]
            old_relay = await _relay_pid(server)
            os.kill(old_relay, signal.SIGKILL)
            refused = []

            async def published() -> bool:
                status, headers, body = await server.publish(_publish_body("fleet", "after"))
                if status == 200:
                    return True
                assert status == 503, body
                assert headers.get("retry-after") == "1", headers
                refused.append(body)
                assert (await server.get("/healthz"))[0] == 200
                return False

            await wait_for(published, 20, what="the relay back: a publish taken")
            assert refused, "the outage was not seen (killed relay answered?)"
            missed, after = await collect(client, 2)
            assert missed.event == "sse-fast-missed"
            assert json.loads(missed.data)["reason"] == "relay-restarted"
            assert after.data == "after" and int(after.id) > int(missed.id)
            await _all_joined(server, old_relay)  # one may serve before the other joins
            assert (await server.get("/readyz"))[0] == 200
            # resuming from the marker is a resume; from before it, honestly evicted
            resumed = server.client("fleet", last_event_id=missed.id)
            await resumed.connect()
            assert resumed.response_headers["sse-fast-resume"] == "resumed"
            assert [e.data for e in await collect(resumed, 1)] == ["after"]
            resumed.close()
            client.close()

        asyncio.run(main())
        assert "the relay (pid" in server.output() and "signal SIGKILL" in server.output()


def test_a_killed_relay_with_its_data_directory_loses_and_repeats_nothing() -> None:
    """kill -9 of the relay with persistence (the default): the restarted relay
    is the same sequence with the same log and retry memory, so the workers go on
    without a break (no ``sse-fast-missed``), and a publisher's retry of an id
    published just before the kill is not delivered a second time."""
    with ServerProcess("--workers", "2") as server:

        async def main() -> None:
            client = server.client("fleet")
            await client.connect()
            status, _, body = await server.publish(_publish_body("fleet", "before", id="b-1"))
            assert status == 200, body
            assert [e.data for e in await collect(client, 1)] == ["before"]
            old_relay = await _relay_pid(server)
            os.kill(old_relay, signal.SIGKILL)
            # the retry of b-1, as a publisher that heard no answer sends it; then a-1, which
            # the worker that takes it may refuse (503) until it has joined the new relay.
            # The Publisher retries a 503 of events with ids, after its Retry-After (1 s),
            # and raises on any other refusal
            async with Publisher(server.url, retries=20, coalesce=False) as publisher:
                assert await publisher.publish("fleet", "before", id="b-1") == "b-1"
                assert await publisher.publish("fleet", "after", id="a-1") == "a-1"
            received = await collect(client, 1)
            assert [(e.event, e.data, e.id) for e in received] == [("message", "after", "a-1")]
            await _all_joined(server, old_relay)  # one may serve before the other joins
            stats = await _stats(server)
            assert all(w["relay"]["history_breaks"] == 0 for w in stats["workers"]), stats
            client.close()

        asyncio.run(main())


def test_a_relay_that_hangs_fails_healthz_past_the_limit_then_heals() -> None:
    """A stopped relay keeps its socket open: workers find it by their pings, are
    unavailable (readyz 503, publish 503), and /healthz fails once the outage is
    longer than --broker-down-limit; when it runs again they reconnect and,
    being the same relay, lose nothing."""
    with ServerProcess("--workers", "2", "--broker-down-limit", "1") as server:

        async def main() -> None:
            client = server.client("hang")
            await client.connect()
            relay = await _relay_pid(server)
            os.kill(relay, signal.SIGSTOP)
            try:
                answers: list[bytes] = []

                async def unhealthy() -> bool:  # the worker that answers decides
                    status, _, body = await server.get("/healthz")
                    answers.append(body)
                    return status == 503

                # each worker finds the hang by its own pings, timed from its own join:
                # up to 2 s apart, longer than the down limit
                await wait_for(lambda: _logged(server, "answered no ping", 2), timeout=20)
                await wait_for(unhealthy, timeout=20)
                assert b"broker_down_limit" in answers[-1]
                assert (await server.get("/readyz"))[0] == 503
                status, headers, _ = await server.publish(_publish_body("hang", "x"))
                assert status == 503 and headers["retry-after"] == "1"
            finally:
                os.kill(relay, signal.SIGCONT)

            async def healthy() -> bool:
                return all([(await server.get(p))[0] == 200 for p in ("/healthz", "/readyz")])

            # both workers back on the relay (a success of one proves nothing of the other)
            await wait_for(lambda: _logged(server, "reconnected to the relay", 2), timeout=20)
            for _ in range(6):  # whichever worker takes the request
                await wait_for(healthy, timeout=20)
            status, _, _ = await server.publish(_publish_body("hang", "healed"))
            assert status == 200
            events = await collect(client, 1)
            assert [e.data for e in events] == ["healed"]  # the same relay: nothing missed
            assert await _relay_pid(server) == relay
            client.close()

        asyncio.run(main())


def test_a_killed_worker_recovers_history_before_it_answers_resumes() -> None:
    """kill -9 of a worker while events are published: Granian starts a new one,
    which is replayed the relay's log; every resume, on whichever worker, is
    ``resumed`` with exactly the events after its id."""
    with ServerProcess("--workers", "2") as server:

        async def main() -> None:
            # (id, certain): a publish whose connection the kill reset may or may
            # not have been published, so each event carries its own id
            published: list[tuple[str, bool]] = []

            async def publish(count: int) -> None:
                for _ in range(count):
                    event_id = f"e{len(published)}"
                    body = _publish_body("hist", len(published), id=event_id)
                    try:
                        status, _, answer = await server.publish(body)
                    except (OSError, asyncio.IncompleteReadError, TimeoutError):
                        published.append((event_id, False))  # reset by the kill
                        continue
                    if status == 200:
                        published.append((event_id, True))
                    else:
                        assert status == 503, answer
                    await asyncio.sleep(0.005)  # pace: publishing goes on over the respawn

            await publish(50)
            workers = [w["pid"] for w in (await _stats(server))["workers"]]
            victim = workers[0]
            os.kill(victim, signal.SIGKILL)
            await publish(50)

            async def respawned() -> bool:
                stats = await _stats(server)
                pids = [w["pid"] for w in stats["workers"]]
                return len(pids) == 2 and victim not in pids

            await wait_for(respawned, timeout=20)
            await publish(20)
            certain = [i for i, (_, sure) in enumerate(published) if sure]
            assert len(certain) >= 100
            outcomes = []
            for start in certain[:-1:7]:
                client = server.client("hist", last_event_id=published[start][0])
                await client.connect()
                outcome = client.response_headers["sse-fast-resume"]
                outcomes.append(outcome)
                assert outcome == "resumed", (start, outcome)
                expected = published[start + 1 :]
                last_certain = [i for i, sure in expected if sure][-1]
                received: list[str | None] = []
                while last_certain not in received:
                    received += [e.id for e in await collect(client, 1)]
                # every certain event, in order; an uncertain one here or not at all
                got = iter(received)
                following = next(got, None)
                for event_id, sure in expected:
                    if following == event_id:
                        following = next(got, None)
                    else:
                        assert not sure, (start, event_id, received)
                assert following is None, received
                client.close()
            assert len(outcomes) > 10

        asyncio.run(main())


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, name
    return float(match.group(1))


def test_one_scrape_is_the_whole_server() -> None:
    """/metrics and /stats answer for both workers whichever takes the request;
    each publish is counted once."""
    with ServerProcess("--workers", "2") as server:

        async def main() -> None:
            clients = [server.client("scrape") for _ in range(8)]
            for client in clients:
                await client.connect()
            for n in range(10):
                status, _, _ = await server.publish(_publish_body("scrape", n))
                assert status == 200
            for client in clients:
                await collect(client, 10)
            per_worker = set()
            for _ in range(8):
                status, _, body = await server.get("/metrics")
                assert status == 200
                text = body.decode()
                assert _metric(text, "sse_fast_connections_open") == 8
                assert _metric(text, "sse_fast_published_total") == 10
                assert _metric(text, "sse_fast_delivered_total") == 80
                assert _metric(text, "sse_fast_workers_reporting") == 2
                assert _metric(text, "sse_fast_workers") == 2
                assert 'sse_fast_subscribers{topic="scrape"} 8' in text
                lines = re.findall(
                    r'^sse_fast_worker_connections_open\{worker="(\d)"\} (\d+)$', text, re.MULTILINE
                )
                assert sorted(w for w, _ in lines) == ["0", "1"]
                assert sum(int(n) for _, n in lines) == 8
                per_worker.add(tuple(lines))
                stats = await _stats(server)
                assert stats["connections"] == 8 and stats["workers_reporting"] == 2
                assert stats["topics"]["scrape"]["subscribers"] == 8
                assert stats["topics"]["scrape"]["published"] == 10
                assert sorted(w["worker"] for w in stats["workers"]) == [0, 1]
            assert len(per_worker) == 1  # the same figures whichever worker answered
            status, _, body = await server.get("/stats?connections=1")
            listing = json.loads(body)["connection_list"]
            assert len(listing) == 8 and {c["worker"] for c in listing} <= {0, 1}
            for client in clients:
                client.close()

        asyncio.run(main())


def test_sigterm_to_every_process_at_once_stops_cleanly() -> None:
    """systemd's default (KillMode=control-group) sends SIGTERM to every process
    of the service at once: the relay waits for the draining workers before it
    closes its data directory, so nothing logs an error, the streams are told
    ``draining``, and the next start finds a clean stop (no loss to report)."""
    with ServerProcess("--workers", "2") as server:

        async def main() -> None:
            client = server.client("fleet")
            await client.connect()
            status, _, body = await server.publish(_publish_body("fleet", "one"))
            assert status == 200, body
            # on the stream before the stop: a publish is answered once the relay stored
            # it, and the stream's worker may get it after a stop that came at once (the
            # client resumes it from the relay's history then, with its Last-Event-ID)
            (first,) = await collect(client, 1)
            assert first.event == "message"
            assert server.proc is not None
            os.killpg(server.proc.pid, signal.SIGTERM)
            (last,) = await collect(client, 1)
            assert last.event == "sse-fast-disconnect"
            assert json.loads(last.data)["reason"] == "draining"
            client.close()

        asyncio.run(main())
        assert server.proc is not None
        assert server.proc.wait(20) == 0
        output = server.output()
        for word in ("ERROR", "Traceback", "Exception in callback"):
            assert word not in output, output
        data_dir = server.env["SSE_FAST_DATA_DIR"]
        assert read(data_dir).clean


def test_a_worker_stopped_before_the_main_process_took_the_signal_is_no_error() -> None:
    """The race behind the test above, made certain: a worker takes the SIGTERM and
    exits, and only then does the main process get its own (the signal a loaded
    machine's main process runs late). Granian calls that worker's exit unexpected;
    serve says it stopped on the stop signal (INFO, no ERROR in an operator's
    journal), respawns nothing and exits 0."""
    with ServerProcess("--workers", "2", "--log-level", "debug") as server:
        assert server.proc is not None
        spawned = re.findall(r"Spawning worker-2 with PID: (\d+)", server.output())
        assert len(spawned) == 1, server.output()
        worker = int(spawned[0])
        os.kill(worker, signal.SIGTERM)
        # Granian's watcher thread saw the exit and waits for the stop signal (its DEBUG
        # line): only then does the main process take it. Reaped is not enough: on a
        # loaded machine the watcher may return from its join after the main process
        # took the signal, and then nothing is unexpected.
        waiting = "worker-2 exited with status 0: waiting up to"
        until(lambda: waiting in server.output(), 15, "the watcher seeing the exit")
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(20) == 0, server.output()
        output = server.output()
        assert "worker-2 stopped on the stop signal before the main process took it" in output
        assert output.count("Spawning worker-2") == 1, output
        for word in ("ERROR", "Traceback", "Exception in callback"):
            assert word not in output, output


def _stopped_cleanly(server: ServerProcess) -> None:
    """The server exited 0 after a stop of its whole group, logged no error and did
    not start its relay again."""
    assert server.proc is not None
    assert server.proc.wait(20) == 0, server.output()
    output = server.output()
    for word in ("ERROR", "Traceback", "Exception in callback", "starting it again"):
        assert word not in output, output
    assert "the relay is running again" not in output, output


def test_three_stops_of_the_whole_group_in_a_row_are_clean(tmp_path: Path) -> None:
    """systemd's stop (KillMode=control-group), three times on the same data directory:
    SIGTERM to every process at once, in whatever order they take it. The relay that
    takes it before the main process waits for the workers and exits: no ERROR (it was
    logged as a relay that failed, in 2 of 3 stops of a 6-worker server), no restart."""
    for _ in range(3):
        with ServerProcess("--workers", "2", data_dir=str(tmp_path)) as server:
            assert server.proc is not None
            os.killpg(server.proc.pid, signal.SIGTERM)
            _stopped_cleanly(server)


def test_the_relay_stopped_before_the_main_process_took_the_signal_is_no_error() -> None:
    """The race behind the test above, made certain: the workers and the relay take the
    SIGTERM, the relay exits once they left and is reaped by its supervisor, and only
    then does the main process get its own. The supervisor says the relay stopped on the
    stop signal (INFO) and does not start it again."""
    with ServerProcess("--workers", "2") as server:
        assert server.proc is not None
        relay = asyncio.run(_relay_pid(server))
        spawned = re.findall(r"Spawning worker-\d with PID: (\d+)", server.output())
        workers = [int(pid) for pid in spawned]
        assert len(workers) == 2 and relay in server.worker_pids(), server.output()
        for pid in [*workers, relay]:
            os.kill(pid, signal.SIGTERM)
        # reaped: its supervisor saw it exit
        until(lambda: not os.path.exists(f"/proc/{relay}"), 15, "the relay stopping")
        server.proc.send_signal(signal.SIGTERM)
        _stopped_cleanly(server)
        stopped = f"the relay (pid {relay}) stopped on the stop signal before the main process"
        assert stopped in server.output(), server.output()


def test_a_relay_with_a_big_data_directory_is_given_time_to_read_it(tmp_path: Path) -> None:
    """The relay reads its whole data directory before it listens: the wait for
    it grows with the directory (a 4M-event, 1 GiB one took 10.6 to 21.8 s to
    read here, past the 10 s a relay without one gets)."""
    from sse_fast.brokers._relay.supervisor import RelaySupervisor

    plain = RelaySupervisor(str(tmp_path / "sock"))
    assert plain._start_wait() == plain.start_timeout == 10.0
    with open(tmp_path / f"{1:020d}.log", "wb") as f:
        f.truncate(2 * 2**30)  # sparse: 2 GiB by its size
    kept = RelaySupervisor(str(tmp_path / "sock"), store={"path": str(tmp_path)})
    assert kept._start_wait() == 10.0 + 120.0
