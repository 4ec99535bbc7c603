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

from ..._core.records_py import MAX_RECORD  # the same in the extension (stubtest)
from ._checkpoint import Checkpoint
from ._records import HEADER, Scan, StoreError, fsync_path, segment_name

__all__ = [
    "DAMAGED",
    "RECOVER_HINT",
    "Found",
    "Problem",
    "Verdict",
    "recover",
    "refusal",
    "verify",
]

#: the data directory's folder where ``recover`` keeps a copy of each file it cuts
DAMAGED = "damaged"
_PREFIX = struct.Struct("<II")  # a record's length and checksum (``records``)
#: the way out a refusal names (``refusal``)
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
    #: the bytes where the readable records end, up to a record's length prefix
    #: (``_unfinished`` reads them; the rest of the file is not kept)
    tail: bytes = b""

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
    #: the file to cut at ``cut_at`` when recovering (None: nothing to cut; 0: the
    #: whole file is moved into ``damaged/``)
    path: str | None = None
    cut_at: int | None = None
    #: a loss a machine crash explains (the last run did not sync, ``never``): said
    #: and recorded at every start, never refused
    crash: bool = False


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


def _unfinished(segment: Found) -> bool:
    """Whether the bytes from where ``segment``'s records stop being readable look
    like a write cut short: a length prefix cut short, or a plausible record length
    running past the file's end."""
    end = segment.scan.end
    if segment.size - end < _PREFIX.size:
        return True
    length: int = _PREFIX.unpack_from(segment.tail)[0]
    return 0 < length <= MAX_RECORD and end + _PREFIX.size + length > segment.size


def verify(
    found: Sequence[Found],
    checkpoint: Checkpoint | None,
    boot: str,
    crashed: bool = False,
    stub: int | None = None,
) -> Verdict:
    """Check the segments ``found`` against each other and against ``checkpoint``
    (None: none, or not binding on ``boot``). ``crashed``: the machine crashed
    since a last run that did not sync (``never``): its segments' ends may be lost
    in any order, which is said, never refused. ``stub``: the first position of a
    newest file too short for its header (said by the caller, not missing)."""
    verdict = Verdict()
    acknowledged: dict[int, int] = {}
    if checkpoint is not None:
        acknowledged = dict(checkpoint.segments)
        verdict.given_up_to = checkpoint.next_position - 1
    for segment in found:
        _check_segment(segment, acknowledged.get(segment.first, 0), boot, crashed, verdict)
    _check_holes(found, acknowledged, crashed, verdict)
    if checkpoint is not None:
        _check_end(found, checkpoint, verdict, stub)
    return verdict


def _check_segment(
    segment: Found, vouched: int, boot: str, crashed: bool, verdict: Verdict
) -> None:
    """One segment's own bytes: damage, a cut, or an unfinished write at its end."""
    scan = segment.scan
    name = segment.path
    if scan.torn and not segment.newest:
        why = (
            "written by a run whose writes a machine crash may have lost (fsync=never)"
            if crashed
            else "not the newest segment, so this is not a write the last run did not finish"
        )
        verdict.problems.append(
            Problem(
                f"{name} is damaged at byte {scan.end} ({scan.damage}) and is {why}: the "
                "events after that byte are lost",
                name,
                scan.end,
                crash=crashed,
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
        if same_boot and not _unfinished(segment):
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


def _check_holes(
    found: Sequence[Found], acknowledged: dict[int, int], crashed: bool, verdict: Verdict
) -> None:
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
            f"the segment {segment_name(listed[0])} is missing"
            if listed
            else "a segment is missing or cut short"
        )
        verdict.problems.append(
            Problem(
                f"{os.path.dirname(after.path)}: {what} (positions {start} to {stop}, between "
                f"{os.path.basename(before.path)} and {os.path.basename(after.path)}): its "
                "events are lost",
                crash=crashed,
            )
        )


def _check_end(
    found: Sequence[Found], checkpoint: Checkpoint, verdict: Verdict, stub: int | None
) -> None:
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
        first
        for first, size in checkpoint.segments
        if first > newest.first and size >= HEADER and first != stub
    ]
    if later:
        verdict.problems.append(
            Problem(
                f"{os.path.dirname(newest.path)}: the segment {segment_name(later[0])} "
                "is missing (the newest the last run wrote): its events are lost"
            )
        )
        verdict.trailing = True
        return
    end = max(segment.end_position for segment in found)
    if verdict.given_up_to > end and not verdict.trailing and stub is None:
        verdict.problems.append(
            Problem(
                f"{newest.path} ends at position {end}, but the last run had given "
                f"positions up to {verdict.given_up_to}: events it had stored are lost"
            )
        )
        verdict.trailing = True


def refusal(problems: Sequence[Problem]) -> StoreError:
    """The one-line error of a data directory with ``problems``: the first one, how
    many more, and the ways out."""
    first = problems[0].message
    more = len(problems) - 1
    also = f" (and {more} more problem{'s' if more > 1 else ''}, logged)" if more else ""
    return StoreError(f"{first}{also}. Restore the data directory from a backup, or {RECOVER_HINT}")


def recover(problems: Sequence[Problem], directory: str) -> None:
    """Act on ``problems`` (``data_recover``, or a crash's): keep each file to cut in
    ``damaged/`` (a synced copy, once), then cut it where it stops being readable
    (a file cut to nothing is moved there whole)."""
    kept = os.path.join(directory, DAMAGED)
    for problem in problems:
        if problem.path is None or problem.cut_at is None:
            continue
        os.makedirs(kept, mode=0o700, exist_ok=True)
        copy = os.path.join(kept, os.path.basename(problem.path))
        if problem.cut_at == 0:
            os.replace(problem.path, copy)
            fsync_path(kept)
            continue
        if not os.path.exists(copy):
            shutil.copyfile(problem.path, copy)
            fsync_path(copy)
            fsync_path(kept)
        with open(problem.path, "r+b") as f:
            f.truncate(problem.cut_at)
            os.fsync(f.fileno())
