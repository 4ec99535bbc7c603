"""Reading a data directory back: what it holds, and (for its writer) whether it
can be trusted.

Readers (``read``) may run while the writer appends: a record not finished yet
ends their reading like a torn one, and they never change a file. The writer's
start, and a supervisor before it, also check the directory (``integrity``):
what it finds lost stops the server, or with ``recover`` is cut and recorded.
A file that is not ours, or segments of two stores, are refused by name.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

from ..._collector import free_gradually
from ..._core import Tally
from . import _records as records
from ._checkpoint import CHECKPOINT, Checkpoint, load_checkpoint
from ._integrity import DAMAGED, Found, Problem, Verdict, refusal, verify
from ._integrity import recover as recover_files
from ._records import HEADER, MAGIC, Event, ReadStopped, StoreError, read_header, scan

__all__ = ["ALLOWED", "Loaded", "Segment", "read", "writes_may_be_lost"]

log = logging.getLogger("sse_fast.storage")

#: what a data directory may hold besides its segments
ALLOWED = ("lock", "lost+found", CHECKPOINT, CHECKPOINT + ".new", DAMAGED)


@dataclass
class Segment:
    """One segment file and what the writer knows of it."""

    path: str
    first: int  # the position the segment starts at
    size: int = HEADER
    last: int = 0  # its newest event's position (0: none yet)
    #: each topic with an event here, and the ordinal of its newest one here
    #: (filled when the segment is sealed: a later one is written)
    topics: dict[str, int] = field(default_factory=dict)
    #: while it is the one written: its topics' tallies (``tally_topics``)
    live: dict[str, Tally] = field(default_factory=dict)

    def seal(self) -> None:
        """No more events here: its topics' ordinals are their counts now."""
        self.topics.update((name, tally.count) for name, tally in self.live.items())
        self.live = {}


@dataclass
class Loaded:
    """What a data directory holds."""

    #: the store's sequence (its first position ever); None for an empty directory
    sequence: int | None = None
    events: list[Event] = field(default_factory=list)
    #: how many events (also when only checked)
    count: int = 0
    #: ranges of positions a machine crash may have lost (see ``records.LOST``)
    lost: list[tuple[int, int]] = field(default_factory=list)
    #: whether the last writer stopped cleanly
    clean: bool = True
    #: the last writer's machine boot and fsync policy (``records.BOOT``)
    boot: tuple[str, str] | None = None
    #: the newest position given out as far as the directory knows (0 if none)
    last_position: int = 0
    #: the oldest position every later event is held from (0 if none)
    first_position: int = 0
    segments: list[Segment] = field(default_factory=list)
    #: (file, bytes) of unfinished writes dropped from the end
    torn: list[tuple[str, int]] = field(default_factory=list)
    #: ranges of positions lost between segments, found by a recovering writer
    #: (``integrity.Verdict.gaps``: the stream is told at ``last + 1``)
    recovered: list[tuple[int, int]] = field(default_factory=list)
    #: a recovering writer found events lost after the newest one kept
    trailing_loss: bool = False
    #: the checkpoint could not be read: new positions start past the wall clock
    untrusted: bool = False
    #: the newest position the last run had given, as its checkpoint says (0: unknown)
    given_up_to: int = 0
    #: a check (``read(checks=True)``) found what the writer's start will cut or record
    repairs: bool = False
    #: the newest file, shorter than a header, where the checkpoint vouches for more
    stub: tuple[str, int] | None = None

    def unsettled(self, boot: str) -> bool:
        """Whether the writer's start will write what the readers must see (a cut, a
        lost range, a jump of the positions): then ``settle`` before any reader
        reads (a relay's workers read the directory beside the relay)."""
        return self.repairs or self.untrusted or writes_may_be_lost(self, boot)


def _list(path: str) -> list[str]:
    """The segment files of ``path`` in order; ``StoreError`` for anything else there."""
    names = []
    for name in os.listdir(path):
        if name in ALLOWED:
            continue
        stem, dot, suffix = name.partition(".")
        if not (suffix == "log" and dot and len(stem) == 20 and stem.isdigit()):
            raise StoreError(
                f"{os.path.join(path, name)} is not an sse_fast data file; the data directory "
                "must hold only sse_fast's own files (NNNN.log segments, lock, checkpoint, "
                "damaged/): move it "
                "away, or give this server a directory of its own with --data-dir"
            )
        names.append(name)
    return sorted(names)


def read(
    path: str,
    *,
    writer: bool = False,
    events: bool = True,
    recover: bool = False,
    checks: bool = False,
    stop: threading.Event | None = None,
) -> Loaded:
    """Read every segment of ``path``. A reader takes what it finds (a torn end may
    be a write in progress). The writer first checks the directory
    (``integrity.verify``): it cuts a write the last run did not finish from the end
    of the newest segment (logged), and raises ``StoreError`` for damage, a missing
    segment or one cut short, unless ``recover``: then it drops what cannot be read
    and says which positions were lost (``Loaded.lost``, ``Loaded.recovered``).
    ``checks`` makes a reader refuse what the writer would, changing nothing (a
    supervisor, before its workers start). Without ``events`` the records are only
    checked (``Loaded.count``). A file that is not ours, or segments of different
    stores, raise ``StoreError`` naming the file. A reader in a thread may be told
    to give up (``stop`` set): ``ReadStopped`` within a slice of a segment
    (``records.scan``)."""
    loaded = Loaded()
    names = _list(path)
    checking = writer or checks
    checkpoint = _checkpoint_of(path, loaded, writer) if checking else None
    listed = dict(checkpoint.segments) if checkpoint is not None else {}
    found: list[Found] = []
    for index, name in enumerate(names):
        full = os.path.join(path, name)
        try:
            with open(full, "rb") as f:
                data = f.read()
        except FileNotFoundError:  # the writer deleted it meanwhile (a reader)
            continue
        newest = index == len(names) - 1
        if newest and len(data) < HEADER and MAGIC.startswith(data[: len(MAGIC)]):
            if listed.get(int(name[:20]), 0) >= HEADER:
                loaded.stub = (full, len(data))  # cut: the checkpoint vouches for more
            elif writer:
                # created, and the process or the machine stopped before its header was
                # written: an unfinished write like a torn record (no event can be in it)
                log.warning("removed %s: a segment the last run did not finish starting", full)
                os.unlink(full)
                loaded.torn.append((full, len(data)))
            continue
        sequence, first = read_header(data, full)
        if loaded.sequence is None:
            loaded.sequence = sequence
        elif sequence != loaded.sequence:
            raise StoreError(
                f"{full} belongs to another store (sequence {sequence}, not {loaded.sequence} "
                "as the files before it): the data directory holds files of two servers; "
                "move the foreign ones away"
            )
        try:
            result = scan(data, full, events, stop)
        except ReadStopped:
            for segment in found:  # what was read: not in one step that holds every thread
                free_gradually(segment.scan.events)
            raise
        if result.torn and not newest and not checking:
            raise StoreError(
                f"{full} is damaged at byte {result.end} ({result.damage}) and is not the "
                "newest file, so this is not an unfinished write: move it (and the files "
                "before it) away to start without the history it holds"
            )
        tail = data[result.end : result.end + 8] if result.torn else b""
        found.append(Found(full, first, len(data), result, newest, tail))
        del data
    if checking:
        _check(path, loaded, found, checkpoint, recover, events, act=writer)
    _gather(loaded, found)
    return loaded


def _gather(loaded: Loaded, found: list[Found]) -> None:
    """What the segments read (``found``, in order) hold, into ``loaded``."""
    for segment in found:
        result = segment.scan
        loaded.count += result.count
        kept = Segment(segment.path, segment.first, result.end)
        if not loaded.segments:
            loaded.first_position = segment.first
        kept.last = result.last
        loaded.segments.append(kept)
        loaded.events.extend(result.events)
        loaded.lost.extend(result.lost)
        loaded.last_position = max(loaded.last_position, segment.end_position)
        loaded.clean = result.closed is not None  # the newest segment's last record
        if result.boot is not None:
            loaded.boot = result.boot
    if loaded.events:
        loaded.first_position = min(loaded.first_position, loaded.events[0].position)


def _checkpoint_of(path: str, loaded: Loaded, writer: bool) -> Checkpoint | None:
    """The directory's checkpoint, or None (then ``loaded.untrusted``: new positions
    jump past any the last run may have given)."""
    try:
        checkpoint = load_checkpoint(path)
    except StoreError as exc:
        if writer:
            log.warning("%s; checking the segments by themselves", exc)
        loaded.untrusted = True
        return None
    # none: written by a version before checkpoints, or the checkpoint was deleted
    loaded.untrusted = checkpoint is None
    return checkpoint


def _check(
    path: str,
    loaded: Loaded,
    found: list[Found],
    checkpoint: Checkpoint | None,
    recover: bool,
    events: bool,
    act: bool,
) -> None:
    """The writer's checks (``integrity``): refuse, or (``act``) recover, or cut an
    unfinished write; what was lost goes into ``loaded``."""
    if checkpoint is not None and loaded.sequence not in (None, checkpoint.sequence):
        raise StoreError(
            f"{os.path.join(path, CHECKPOINT)} belongs to another store (sequence "
            f"{checkpoint.sequence}, not {loaded.sequence} as the segments): move it away"
        )
    boot = records.current_boot_id()
    binding = checkpoint if checkpoint is not None and checkpoint.binding(boot) else None
    last = (checkpoint.boot, checkpoint.fsync) if checkpoint else _newest_boot(found)
    crashed = binding is None and last is not None and last[1] == "never" and last[0] != boot
    stub = int(os.path.basename(loaded.stub[0])[:20]) if loaded.stub else None
    verdict = verify(found, binding, boot, crashed, stub)
    if loaded.stub is not None:
        full, size = loaded.stub
        verdict.problems.insert(
            0,
            Problem(
                f"{full} holds {size} bytes, fewer than its header, while the last run had "
                "acknowledged more: events it had stored are lost",
                full,
                0,
            ),
        )
        verdict.trailing = True
    refused = [problem for problem in verdict.problems if not problem.crash]
    if refused and not recover:
        for problem in refused[1:]:
            log.error("%s", problem.message)
        raise refusal(refused)
    if not act:
        loaded.repairs = bool(verdict.problems or verdict.unfinished)
        return
    if recover:
        log.warning(
            "--data-recover is set: damage found in %s at start is cut and recorded, not "
            "refused; remove the option once the directory is recovered",
            path,
        )
    if verdict.problems:
        for problem in verdict.problems:
            if problem.crash:
                log.warning("%s; recorded as lost in the machine crash", problem.message)
            else:
                log.error("%s; recovering (--data-recover)", problem.message)
        recover_files(verdict.problems, path)
        _rescan_cut(found, verdict, events)
        loaded.recovered = verdict.gaps
        loaded.trailing_loss = verdict.trailing
    for full, end in verdict.unfinished:
        segment = next(segment for segment in found if segment.path == full)
        log.warning(
            "dropped %d bytes at the end of %s: a write the last run did not finish "
            "(%s); it was neither acknowledged nor delivered",
            segment.size - end,
            full,
            segment.scan.damage,
        )
        with open(full, "r+b") as f:
            f.truncate(end)
            os.fsync(f.fileno())
        loaded.torn.append((full, segment.size - end))
        segment.scan.torn = 0
        segment.size = end
    loaded.given_up_to = verdict.given_up_to


def _newest_boot(found: list[Found]) -> tuple[str, str] | None:
    return next((s.scan.boot for s in reversed(found) if s.scan.boot is not None), None)


def _rescan_cut(found: list[Found], verdict: Verdict, events: bool) -> None:
    """Read again the segments recovery cut (``found`` in place)."""
    for index, segment in enumerate(found):
        cut = next(
            (p.cut_at for p in verdict.problems if p.path == segment.path and p.cut_at is not None),
            None,
        )
        if cut is not None:
            with open(segment.path, "rb") as f:
                data = f.read()
            rescan = scan(data, segment.path, events)
            found[index] = Found(segment.path, segment.first, len(data), rescan, segment.newest)


def writes_may_be_lost(loaded: Loaded, boot: str) -> bool:
    """After an unclean stop, whether acknowledged writes may be missing: not when
    only the process died (the same boot: the page cache kept every write), nor
    when every write was synced before it was acknowledged (``always``)."""
    if loaded.clean or loaded.sequence is None:
        return False
    if loaded.boot is None:
        return True  # not said: assume the worst
    last_boot, policy = loaded.boot
    return policy != "always" and (not boot or last_boot != boot)
