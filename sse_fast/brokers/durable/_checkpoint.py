"""The checkpoint: what the writer last vouched the segments hold.

The segments alone cannot tell every loss from an unfinished write: a file cut
on a record's boundary, a segment deleted from the end, or a record changed
after it was written (at the end of the newest segment) all read like the end
of a run. So the writer keeps, in ``checkpoint`` beside the segments, what it
has made safe:

* each segment's first position and its *acknowledged* bytes: synced under
  ``always`` and ``interval`` (a machine crash keeps them), written under
  ``never`` (only a restart on the same machine boot, whose page cache kept
  them, may hold the files to that); 0 for a segment whose bytes are not
  vouched for yet (it must not be required to exist);
* the next position it would give (every position before it may be in a
  client's hands);
* whether it stopped cleanly (``close``), the boot it ran on and its policy.

It is replaced whole (``checkpoint.new`` written, synced, renamed over it, the
directory synced): at ``open``, at each new segment, at each ``tick`` that
changed something (after the sync it vouches for) and at ``close``; so it is at
most a tick behind the segments, and everything it says stays true until the
writer deletes the oldest segments (which a restart allows: segments before
the oldest one kept are history given up on purpose). Each record is one line
of JSON followed by its CRC-32 in hex: a damaged checkpoint is noticed, never
believed.

What a restart checks against it: ``log.read``'s ``verify`` step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import zlib
from dataclasses import dataclass

from ._records import StoreError, fsync_path

__all__ = ["CHECKPOINT", "Checkpoint", "CheckpointFile", "load_checkpoint"]

#: the file's name in the data directory (and ``.new`` while it is replaced)
CHECKPOINT = "checkpoint"
_FORMAT = 1


@dataclass(frozen=True)
class Checkpoint:
    """What the writer vouched for at one moment (see the module docstring)."""

    sequence: int
    #: (first position, acknowledged bytes) of each segment, oldest first
    segments: tuple[tuple[int, int], ...]
    #: the next position the writer would have given
    next_position: int
    #: the writer stopped cleanly after writing this
    clean: bool
    #: the machine boot it ran on ("" where unknown) and its fsync policy
    boot: str
    fsync: str

    def binding(self, boot: str) -> bool:
        """Whether a restart on ``boot`` may hold the files to it: what was synced
        survives a machine crash; what was only written survives a process's."""
        return self.fsync != "never" or (bool(boot) and boot == self.boot)

    def encode(self) -> bytes:
        """One line of JSON and its CRC-32 (the file's whole content)."""
        body = json.dumps(
            {
                "format": _FORMAT,
                "sequence": self.sequence,
                "segments": [list(item) for item in self.segments],
                "next": self.next_position,
                "clean": self.clean,
                "boot": self.boot,
                "fsync": self.fsync,
            },
            separators=(",", ":"),
        ).encode()
        return body + b"\n" + f"{zlib.crc32(body):08x}\n".encode()


def _decode(data: bytes, name: str) -> Checkpoint:
    body, _, rest = data.partition(b"\n")
    try:
        crc = int(rest.strip() or b"x", 16)
    except ValueError:
        crc = -1
    if zlib.crc32(body) != crc:
        raise StoreError(f"{name} is damaged (its checksum does not match)")
    try:
        raw = json.loads(body)
        if raw["format"] != _FORMAT:
            raise StoreError(
                f"{name} was written by another sse_fast version (format {raw['format']}); "
                "start the version that wrote it, or move the file away"
            )
        return Checkpoint(
            sequence=int(raw["sequence"]),
            segments=tuple((int(first), int(size)) for first, size in raw["segments"]),
            next_position=int(raw["next"]),
            clean=bool(raw["clean"]),
            boot=str(raw["boot"]),
            fsync=str(raw["fsync"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{name} cannot be read ({exc})") from None


def load_checkpoint(path: str) -> Checkpoint | None:
    """The checkpoint of the data directory ``path``; None when there is none (a new
    directory, or one written by a version before checkpoints); ``StoreError`` when
    it is damaged."""
    name = os.path.join(path, CHECKPOINT)
    try:
        with open(name, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    return _decode(data, name)


class CheckpointFile:
    """The writer's side: takes checkpoints (``take``) and replaces the file whole,
    from any thread, never with an older one than it last wrote (``write``'s
    ``generation``)."""

    def __init__(self, path: str, fsync: str) -> None:
        self.path = path
        self.fsync = fsync
        self.sync = fsync != "never"
        #: the newest segment's bytes a sync made safe (``always``, ``interval``), and
        #: the next position once they were written (``acknowledge``)
        self.acknowledged = 0
        self.acknowledged_next = 0
        self.written: Checkpoint | None = None
        self._lock = threading.Lock()
        self._generation = 0
        self._taken = 0

    def take(
        self,
        sequence: int,
        sizes: list[tuple[int, int]],
        next_position: int,
        clean: bool,
        boot: str,
    ) -> tuple[Checkpoint, int]:
        """A checkpoint of segments of ``sizes`` ((first position, bytes written),
        oldest first), vouching for the newest one's bytes, and the positions given
        in them, as far as a sync made them safe (``acknowledge``); and its
        generation."""
        vouched = list(sizes)
        if vouched and self.sync and vouched[-1][1] > self.acknowledged:
            vouched[-1] = (vouched[-1][0], self.acknowledged)
            next_position = min(next_position, self.acknowledged_next)
        self._taken += 1
        checkpoint = Checkpoint(sequence, tuple(vouched), next_position, clean, boot, self.fsync)
        return checkpoint, self._taken

    def acknowledge(self, size: int, next_position: int) -> None:
        """A sync made the newest segment's first ``size`` bytes safe, which hold the
        positions before ``next_position``."""
        self.acknowledged = size
        self.acknowledged_next = next_position

    async def write_if_changed(self, checkpoint: Checkpoint, generation: int) -> None:
        """``write`` in a thread, unless the file says the same already; the rename is
        not synced (lost in a crash, it leaves the one before: still true)."""
        if checkpoint != self.written:
            await asyncio.get_running_loop().run_in_executor(
                None, self.write, checkpoint, generation, False
            )

    def write(self, checkpoint: Checkpoint, generation: int, durable: bool = True) -> None:
        """Replace the checkpoint with ``checkpoint`` (taken at ``generation``, which
        grows with every snapshot) unless a later one is there already; ``durable``:
        the rename synced too. ``OSError`` when it cannot be written (the old one
        stays: it is still true)."""
        with self._lock:
            if generation < self._generation:
                return
            final = os.path.join(self.path, CHECKPOINT)
            new = final + ".new"
            fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, checkpoint.encode())
                if self.sync:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
            os.replace(new, final)
            if self.sync and durable:
                fsync_path(self.path)
            self._generation = generation
            self.written = checkpoint

    def remove_leftover(self) -> None:
        """Remove a ``checkpoint.new`` a stopped writer left (it was never renamed)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.path, CHECKPOINT + ".new"))
