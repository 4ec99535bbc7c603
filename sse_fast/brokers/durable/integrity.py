"""What a restart checks before it trusts a data directory.

The writer's restart (``log.read(writer=True)``) reads every segment, then tells
apart what it may go on from and what it may not:

* **an unfinished write**: the newest segment ends in a record cut short (its
  length runs past the end of the file) beyond what the checkpoint vouched for.
  It was never acknowledged nor delivered (a write precedes both): it is
  dropped, and new positions start past it anyway (never given twice).
* **damage**: a record that is whole but wrong (checksum, lengths) inside what
  the checkpoint vouched for, in any segment but the newest, or at the end of
  the newest when the last run was on this same machine boot (its page cache
  kept every finished write: a process that dies leaves a record cut short,
  never a whole one with wrong bytes). After a machine crash the unsynced end
  of the newest segment may hold anything: dropped like an unfinished write.
* **a missing segment**: one the checkpoint lists after the oldest segment
  kept (deleting the oldest ones is how history is given up on purpose), or a
  hole between two segments' positions that no ``LOST`` record covers.
* **a cut segment**: fewer bytes than the checkpoint's acknowledged ones, or a
  newest position below what the checkpoint says was given.

Damage, missing and cut segments stop the server (``StoreError``: one line
naming the file and the way out) unless it starts with ``data_recover``. Then
what cannot be read is dropped (a copy of each file it cuts is kept in
``damaged/``), the positions it may have held are recorded as lost (``LOST``
records: a ``Last-Event-ID`` among them answers ``evicted``, and the streams get
``sse-fast-missed`` where they were), and new positions start past every one
ever given.
"""

from __future__ import annotations

import itertools
import os
import shutil
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from .checkpoint import Checkpoint
from .records import HEADER, Scan, StoreError

__all__ = ["DAMAGED", "Found", "Problem", "Verdict", "recover", "verify"]

#: the data directory's folder where ``recover`` keeps a copy of each file it cuts
DAMAGED = "damaged"
_PREFIX = struct.Struct("<II")
_MAX_RECORD = 1 << 30  # the codec's MAX_RECORD: no record we write is larger
RECOVER_HINT = (
    "start with --data-recover (SSE_FAST_DATA_RECOVER=1) to go on without them: their positions "
    "are recorded as lost and resuming clients are told (sse-fast-missed)"
)


@dataclass
class Found:
    """One segment file as read."""

    path: str
    first: int
    size: int  # the file's bytes
    scan: Scan
    newest: bool

    @property
    def end_position(self) -> int:
        """The newest position this segment accounts for (an event, a clean stop, or
        the marker after a lost range); ``first - 1`` when none."""
        end = max(self.first - 1, self.scan.last)
        if self.scan.closed is not None:
            end = max(end, self.scan.closed)
        for _, last in self.scan.lost:
            end = max(end, last + 1)
        return end


@dataclass
class Problem:
    """Something the data directory lost (see the module docstring)."""

    #: one sentence, naming the file
    message: str
    #: the file to cut at ``cut_at`` when recovering (None: nothing to cut)
    path: str | None = None
    cut_at: int | None = None


@dataclass
class Verdict:
    """What ``verify`` concluded."""

    problems: list[Problem] = field(default_factory=list)
    #: unfinished writes at the newest segment's end: (file, offset to cut at)
    unfinished: list[tuple[str, int]] = field(default_factory=list)
    #: ranges lost between segments: (first, last) positions; the stream is told at
    #: ``last + 1``, the position just before the next segment's first
    gaps: list[tuple[int, int]] = field(default_factory=list)
    #: events may be lost after the newest one kept (new positions jump past them)
    trailing: bool = False
    #: the newest position ever given, as far as anything says
    given_up_to: int = 0


def _unfinished(data: bytes, end: int) -> bool:
    """Whether the bytes from ``end`` on look like a write cut short: a length
    prefix cut short, or a plausible record length running past the file's end."""
    if len(data) - end < _PREFIX.size:
        return True
    length: int = _PREFIX.unpack_from(data, end)[0]
    return 0 < length <= _MAX_RECORD and end + _PREFIX.size + length > len(data)


def verify(
    found: Sequence[Found],
    contents: Sequence[bytes],
    checkpoint: Checkpoint | None,
    boot: str,
) -> Verdict:
    """Check the segments ``found`` (with their bytes, ``contents``) against each
    other and against ``checkpoint`` (None: none, or not binding on ``boot``)."""
    verdict = Verdict()
    acknowledged: dict[int, int] = {}
    if checkpoint is not None:
        acknowledged = dict(checkpoint.segments)
        verdict.given_up_to = checkpoint.next_position - 1
    for segment, data in zip(found, contents, strict=True):
        _check_segment(segment, data, acknowledged.get(segment.first, 0), boot, verdict)
    _check_holes(found, acknowledged, verdict)
    if checkpoint is not None:
        _check_end(found, checkpoint, verdict)
    return verdict


def _check_segment(segment: Found, data: bytes, vouched: int, boot: str, verdict: Verdict) -> None:
    """One segment's own bytes: damage, a cut, or an unfinished write at its end."""
    scan = segment.scan
    name = segment.path
    if scan.torn and not segment.newest:
        verdict.problems.append(
            Problem(
                f"{name} is damaged at byte {scan.end} ({scan.damage}) and is not the newest "
                "segment, so this is not a write the last run did not finish: the events "
                "after that byte are lost",
                name,
                scan.end,
            )
        )
    elif scan.end < vouched:
        what = (
            f"is damaged at byte {scan.end} ({scan.damage})"
            if scan.torn
            else f"holds {segment.size} bytes"
        )
        verdict.problems.append(
            Problem(
                f"{name} {what}, inside the {vouched} bytes the last run had acknowledged: "
                "events it had stored are lost",
                name,
                scan.end if scan.torn else None,
            )
        )
        verdict.trailing = verdict.trailing or segment.newest
    elif scan.torn:
        same_boot = bool(boot) and scan.boot is not None and scan.boot[0] == boot
        if same_boot and not _unfinished(data, scan.end):
            verdict.problems.append(
                Problem(
                    f"{name} is damaged at byte {scan.end} ({scan.damage}): a whole record "
                    "with wrong bytes, which a process that stopped in the middle of a write "
                    "does not leave: the events after that byte are lost",
                    name,
                    scan.end,
                )
            )
            verdict.trailing = True
        else:
            verdict.unfinished.append((name, scan.end))


def _check_holes(found: Sequence[Found], acknowledged: dict[int, int], verdict: Verdict) -> None:
    """Positions between two segments that no ``LOST`` record accounts for: a segment
    missing, or one cut short."""
    lost = [item for segment in found for item in segment.scan.lost]
    for before, after in itertools.pairwise(found):
        start, stop = before.end_position + 1, after.first - 1
        if start > stop or any(f <= start and last + 1 >= stop for f, last in lost):
            continue
        verdict.gaps.append((start, stop))
        if any(p.path == before.path and p.cut_at is not None for p in verdict.problems):
            continue  # said already: the damage that cut ``before`` short
        listed = [first for first in acknowledged if before.first < first < after.first]
        what = (
            f"the segment {_segment_name(listed[0])} is missing"
            if listed
            else "a segment is missing or cut short"
        )
        verdict.problems.append(
            Problem(
                f"{os.path.dirname(after.path)}: {what} (positions {start} to {stop}, between "
                f"{os.path.basename(before.path)} and {os.path.basename(after.path)}): its "
                "events are lost"
            )
        )


def _check_end(found: Sequence[Found], checkpoint: Checkpoint, verdict: Verdict) -> None:
    """What the checkpoint says the last run wrote after the newest segment kept."""
    if not found:
        if any(size >= HEADER for _, size in checkpoint.segments):
            verdict.problems.append(
                Problem(
                    "every segment the last run wrote is missing (its checkpoint lists "
                    f"{len(checkpoint.segments)}): its events are lost"
                )
            )
            verdict.trailing = True
        return
    newest = found[-1]
    later = [
        first for first, size in checkpoint.segments if first > newest.first and size >= HEADER
    ]
    if later:
        verdict.problems.append(
            Problem(
                f"{os.path.dirname(newest.path)}: the segment {_segment_name(later[0])} "
                "is missing (the newest the last run wrote): its events are lost"
            )
        )
        verdict.trailing = True
        return
    end = max(segment.end_position for segment in found)
    if verdict.given_up_to > end and not verdict.trailing:
        verdict.problems.append(
            Problem(
                f"{newest.path} ends at position {end}, but the last run had given "
                f"positions up to {verdict.given_up_to}: events it had stored are lost"
            )
        )
        verdict.trailing = True


def refusal(verdict: Verdict) -> StoreError:
    """The one-line error of a data directory with problems: the first one, how many
    more, and the ways out."""
    first = verdict.problems[0].message
    more = len(verdict.problems) - 1
    also = f" (and {more} more problem{'s' if more > 1 else ''}, logged)" if more else ""
    return StoreError(f"{first}{also}. Restore the data directory from a backup, or {RECOVER_HINT}")


def recover(verdict: Verdict, directory: str) -> None:
    """Act on ``verdict``'s problems (``data_recover``): copy each file to cut into
    ``damaged/`` (once), then cut it where it stops being readable."""
    kept = os.path.join(directory, DAMAGED)
    for problem in verdict.problems:
        if problem.path is None or problem.cut_at is None:
            continue
        os.makedirs(kept, mode=0o700, exist_ok=True)
        copy = os.path.join(kept, os.path.basename(problem.path))
        if not os.path.exists(copy):
            shutil.copyfile(problem.path, copy)
        with open(problem.path, "r+b") as f:
            f.truncate(problem.cut_at)
            os.fsync(f.fileno())


def _segment_name(first: int) -> str:
    return f"{first:020d}.log"
