"""Durable history: the sequencer's events on local disk, so a restart loses nothing.

With ``sse-fast serve`` and no Redis, the process that sequences (the local
broker with one worker, the relay with several) appends every sequenced batch
to a log in the data directory before delivering it (``_log.py``), in the format
of ``_records.py``, in a directory only one server uses (``_directory.py``). A
restart reads it back (``_reading.py``), held to what the writer vouched for in
its checkpoint (``_checkpoint.py``) by ``_integrity.py``; ``_retention.py`` says
which segments may go.

What a restart brings back, from the log:

* the id sequence: positions go on after the newest stored one, so ids keep
  growing and a client's ``Last-Event-ID`` still means the same event;
* every topic's ring: the events are applied again in their order, and each
  ring keeps its newest frames as it did (claims start at the log's oldest
  position, so an older id is answered ``evicted``, never ``resumed``);
* the retry memory: the ids publishers gave within ``RETRY_WINDOW``, so a retry
  that lands after the restart is recognised and not published twice;
* with several workers, a restarted relay is the same sequence with the same
  log: workers that kept running go on with nothing missed.

What an acknowledged publish survives: a crash of any process (``kill -9``),
always (it was written before it was acknowledged or delivered); a crash of the
machine, under ``fsync=always``; under ``interval`` it may lose the last
``fsync_interval`` seconds and under ``never`` what the kernel had not written
yet. After such a loss the positions that may have been given out are recorded
as lost: a ``Last-Event-ID`` among them is answered ``evicted`` with an
``sse-fast-missed`` event, never resumed past events nobody can replay.

A record cut short at the end of the newest file is an unfinished write and is
dropped (never delivered); damage, a segment cut or missing, or a file that is
not ours stops the server at start with a sentence naming the file, unless
``data_recover`` (``_integrity.py``).

What is public here is what a broker of your own may keep its history with: the
log (``EventLog``, its ``FSYNC_POLICIES`` and errors) and reading it back
(``read``, ``Loaded``, ``Event``); the rest is the server's.
"""

from __future__ import annotations

from ._log import FSYNC_POLICIES, EventLog, StoreWriteError
from ._reading import Loaded, read
from ._records import Event, StoreError

__all__ = [
    "FSYNC_POLICIES",
    "Event",
    "EventLog",
    "Loaded",
    "StoreError",
    "StoreWriteError",
    "read",
]
