"""Durable history (issue "A restart loses nothing"): which storage, measured.

    python -m benches.storage_choice            # writes benches/results/storage_choice.{md,json}

What the sequencing step would do for each published event: append it (topic, id,
position, the encoded frame, ~220 bytes) to local storage before acknowledging, in
batches as publishes come (1 event per publish, or 100 per batch publish), under three
durability policies; then what a restart does: read everything back in order. Three
candidates:

* ``segment``: an append-only file of records ``[length, crc32, payload]`` written with
  ``os.write`` (one call per batch); ``fdatasync`` per batch (``always``), once a second
  (``interval``) or never (``never``: the page cache, which survives a process crash).
* ``sqlite``: SQLite in WAL mode, one transaction per batch; ``synchronous`` FULL
  (always), NORMAL (WAL: synced at checkpoints, survives a process crash), OFF.
* ``lmdb``: one write transaction per batch; ``sync=True`` / ``sync=False`` (+ a
  ``sync()`` once a second for ``interval``).

Reported: microseconds of the writing thread per event, events per second, bytes on
disk per event, and microseconds per event to read everything back. One process, the
disk of this machine (tmpfs is refused: it would measure nothing).

Experiment, kept as the record of a decision (``benches/README.md``):

Question: Which local storage for durable history: append-only segment files, SQLite or
    LMDB?
Result: segment files (what ``sse_fast.brokers.durable`` writes): 2.5-2.6 us per single
    event without a sync per batch (LMDB 6.9, SQLite 12.7-18), 0.7 us in batches of 100
    (LMDB the same), 221 bytes per event on disk.
Date: 2026-11-25 (benches/results/storage_choice.md)
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import struct
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

RESULTS = Path(__file__).resolve().parent / "results"
FRAME = b"id: 1795318415571303\r\nevent: order\r\ndata: " + b'{"order": 12345, "status": "x"}' * 5
RECORD = struct.Struct("<IIqq")  # length, crc32, position, id


class Store:
    name = ""

    def __init__(self, directory: Path, policy: str) -> None:
        self.directory, self.policy = directory, policy
        self.last_sync = time.monotonic()

    def append(self, batch: list[tuple[int, int, bytes]]) -> None:
        raise NotImplementedError

    def due(self) -> bool:
        """``interval``: a second since the last sync."""
        now = time.monotonic()
        if self.policy == "interval" and now - self.last_sync >= 1.0:
            self.last_sync = now
            return True
        return False

    def read_all(self) -> int:
        raise NotImplementedError

    def close(self) -> None: ...

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.directory.rglob("*") if p.is_file())


class Segment(Store):
    name = "segment"

    def __init__(self, directory: Path, policy: str) -> None:
        super().__init__(directory, policy)
        self.path = directory / "00000001.log"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def append(self, batch: list[tuple[int, int, bytes]]) -> None:
        out = bytearray()
        for position, event_id, frame in batch:
            head = struct.pack("<qq", position, event_id)
            out += RECORD.pack(len(frame), zlib.crc32(frame, zlib.crc32(head)), position, event_id)
            out += frame
        os.write(self.fd, out)
        if self.policy == "always" or self.due():
            os.fdatasync(self.fd)

    def read_all(self) -> int:
        data = self.path.read_bytes()
        offset = count = 0
        while offset + RECORD.size <= len(data):
            length, crc, position, event_id = RECORD.unpack_from(data, offset)
            frame = data[offset + RECORD.size : offset + RECORD.size + length]
            head = struct.pack("<qq", position, event_id)
            if len(frame) < length or zlib.crc32(frame, zlib.crc32(head)) != crc:
                break  # a torn last record
            offset += RECORD.size + length
            count += 1
        return count

    def close(self) -> None:
        os.close(self.fd)


class SQLite(Store):
    name = "sqlite"
    SYNCHRONOUS: ClassVar[dict[str, str]] = {"always": "FULL", "interval": "NORMAL", "never": "OFF"}

    def __init__(self, directory: Path, policy: str) -> None:
        super().__init__(directory, policy)
        self.db = sqlite3.connect(directory / "history.db", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={self.SYNCHRONOUS[policy]}")
        self.db.execute(
            "CREATE TABLE events (position INTEGER PRIMARY KEY, id INTEGER, frame BLOB)"
        )

    def append(self, batch: list[tuple[int, int, bytes]]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO events VALUES (?, ?, ?)", batch)
        self.db.execute("COMMIT")

    def read_all(self) -> int:
        return sum(1 for _ in self.db.execute("SELECT * FROM events ORDER BY position"))

    def close(self) -> None:
        self.db.close()


class LMDB(Store):
    name = "lmdb"

    def __init__(self, directory: Path, policy: str) -> None:
        import lmdb

        super().__init__(directory, policy)
        self.env = lmdb.open(str(directory), map_size=1 << 32, sync=policy == "always")

    def append(self, batch: list[tuple[int, int, bytes]]) -> None:
        with self.env.begin(write=True) as txn:
            for position, event_id, frame in batch:
                txn.put(position.to_bytes(8, "big"), event_id.to_bytes(8, "big") + frame)
        if self.due():
            self.env.sync(True)

    def read_all(self) -> int:
        with self.env.begin() as txn:
            return sum(1 for _ in txn.cursor())

    def close(self) -> None:
        self.env.close()


STORES: dict[str, Callable[[Path, str], Store]] = {
    "segment": Segment,
    "sqlite": SQLite,
    "lmdb": LMDB,
}


def measure(store_name: str, policy: str, batch: int, events: int, where: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        store = STORES[store_name](Path(tmp), policy)
        position = 1_000_000
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(events // batch):
            store.append([(position + i, position + i, FRAME) for i in range(batch)])
            position += batch
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        size = store.size()
        store.close()
        reopened = STORES[store_name](Path(tmp), "never") if store_name != "sqlite" else None
        reader = reopened or _sqlite_reader(Path(tmp))
        started = time.perf_counter()
        read = reader.read_all()
        read_us = (time.perf_counter() - started) / max(read, 1) * 1e6
        reader.close()
        assert read == events, (store_name, policy, read, events)
    return {
        "store": store_name,
        "policy": policy,
        "batch": batch,
        "events": events,
        "us_per_event": wall / events * 1e6,
        "cpu_us_per_event": cpu / events * 1e6,
        "events_per_s": events / wall,
        "bytes_per_event": size / events,
        "read_us_per_event": read_us,
    }


def _sqlite_reader(directory: Path) -> Store:
    reader = SQLite.__new__(SQLite)
    reader.db = sqlite3.connect(directory / "history.db")
    return reader


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benches.storage_choice")
    parser.add_argument("--dir", default=str(RESULTS.parent.parent), help="a directory on disk")
    parser.add_argument("--out", default=str(RESULTS / "storage_choice"), help="path prefix")
    args = parser.parse_args(argv)
    where = Path(args.dir)
    rows = []
    for store in STORES:
        for policy in ("always", "interval", "never"):
            for batch in (1, 100):
                events = 2_000 if (policy == "always" and batch == 1) else 100_000
                row = measure(store, policy, batch, events, where)
                rows.append(row)
                print(
                    f"{store:8s} {policy:8s} batch {batch:3d}: {row['us_per_event']:7.1f} us/event"
                    f" ({row['events_per_s']:>9,.0f}/s) cpu {row['cpu_us_per_event']:6.1f} us"
                    f" disk {row['bytes_per_event']:6.0f} B read {row['read_us_per_event']:5.2f} us",
                    flush=True,
                )
    fs = os.statvfs(where)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "dir": str(where),
        "filesystem_block": fs.f_bsize,
        "frame_bytes": len(FRAME),
        "sqlite": sqlite3.sqlite_version,
        "rows": rows,
    }
    try:
        import lmdb

        report["lmdb"] = lmdb.__version__
    except ImportError:  # pragma: no cover
        pass
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [
        "# Durable history: which storage (`python -m benches.storage_choice`)",
        "",
        f"{report['date']}, this machine's disk ({where}), one process; each event a "
        f"{len(FRAME)}-byte frame with its position and id; SQLite {report['sqlite']}, "
        f"lmdb {report.get('lmdb', '?')}. `always`: synced per batch; `interval`: once a "
        "second; `never`: left to the page cache (survives a process crash, not a power cut).",
        "",
        "| store | policy | events per batch | us per event (wall) | CPU us per event | "
        "events/s | disk bytes per event | read back, us per event |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['store']} | {r['policy']} | {r['batch']} | {r['us_per_event']:.1f} | "
            f"{r['cpu_us_per_event']:.1f} | {r['events_per_s']:,.0f} | "
            f"{r['bytes_per_event']:.0f} | {r['read_us_per_event']:.2f} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
