"""The Redis broker: several nodes (machines, and the workers on each) as one server.

Redis is the one sequencer and the history store; its pub/sub only carries
each event to the nodes that hold its topic. No home-made cluster protocol:
with ``--redis-url`` every worker of every node is a member of the same
sequence, and a client resumes with ``Last-Event-ID`` on any node.

Keys (``prefix`` ``sse:`` by default; one Redis, or a Sentinel-managed
primary; a Redis Cluster is partitioned, below):

* ``sse:position``: the newest position handed out. A publish gives each event
  ``max(previous + 1, Redis TIME in microseconds)``, so positions grow across
  Redis restarts (even without persistence) and are close to the time the
  event was published, which bounds history by age (``history_age``).
* ``sse:epoch``: a random value set once per Redis dataset. A node that finds
  another one after reconnecting knows that Redis lost its data (a restart
  without persistence, a flush, a failover to an empty replica).
* ``sse:floor``: the position this dataset's history starts after. Whichever
  script finds no epoch (a first start, or Redis lost its data) sets the epoch,
  and the floor and ``sse:position`` to Redis time: every event of the dataset
  is above it. A node that finds Redis lacking events it holds raises the floor
  above the newest position it holds or saw (``_scripts.ADVANCE_SCRIPT``). Every history
  read returns it, and a topic's claims start there (its floor, ``Member.load``):
  a ``Last-Event-ID`` at or below it is ``evicted`` (or ``unknown``) on every
  node, nodes started after the loss included, and no id given out before the
  loss resolves to an event of the new dataset. Each loss starts a dataset of
  its own, so this holds however often Redis loses its data. What the floor
  cannot know: positions handed out
  before the loss above Redis's time when it came back (its clock stepped back;
  positions run ahead of the clock only by bursts of more than one event a
  microsecond) are known only to nodes that held them; if none was running
  through the loss, such ids may resolve among the new dataset's events.
* ``sse:t:<topic>``: a Stream per topic, entry id ``<position>-0``, fields
  ``f`` (the frame, ``id:`` line first), ``i`` (the SSE id) and ``w`` (wall
  clock milliseconds at publish). Trimmed to about ``history_frames`` entries
  and ``history_age`` seconds on each publish; the key expires after
  ``history_age`` seconds without one. ``XINFO STREAM`` says whether entries
  were ever trimmed (``entries-added`` above the length) and which is the
  first one left: that is how a resume older than the history is recognised.
* ``sse:c:<topic>``: the pub/sub channel of a topic; a message is
  ``b"<position> <wall ms> <id>\\n" + frame``.
* ``sse:names``, ``sse:births``, ``sse:born``: the directory of topics for pattern
  streams (``_new_topics.py``): every topic published to (a sorted set read by prefix),
  each topic by the position of its birth (its first event since its stream was
  created; forgotten after ``history_age``, with the names of expired streams), and
  the channel each birth is told on, ``<position> <topic>``, before the event. With
  partitions each partition has its own (``P{T}:names``, ``P{T}:births``,
  ``P{T}:born``), and ``sse:directory`` marks that the streams of an earlier version
  entered them (``_layout.py``).
* ``sse:n:<node>``: a node's own channel (probes; figures for ``/metrics``).
* ``sse:p:<topic>``: each worker's presence figures of a topic of
  ``presence_topics`` (``_presence_store.py``).

Promises (the broker contract, ``brokers/__init__.py``):

* Atomic publish. One Lua script (``PUBLISH_SCRIPT``) checks every event,
  assigns positions and ids, appends to the streams and publishes on the
  channels: all of a batch or none, and what is on a channel is in its stream.
* A node subscribes only to the topics its clients hold (``prepare``: SUBSCRIBE,
  then the topic's recent history read in one script, merged with what
  arrived meanwhile), and keeps them while they have history in its rings
  (``topic_ttl``): the rings are a cache, so hot resumes do not touch Redis.
* Reconnects repair. A lost or stale subscription (a probe published every
  ``probe_interval`` on the node's channel that does not come back within
  that long) is replaced; every held topic is then read from its stream since
  the newest position the node holds, with live messages held back meanwhile,
  so nothing is skipped and nothing is applied twice. Where the stream was
  trimmed past that position, the topic's streams get ``sse-fast-missed`` in
  place (``redis-history-trimmed``).
* Losses are said once, at the floor. Where Redis lost its data (another epoch;
  also found by a new topic's history read, for a flush under a live
  subscription) or is behind a position the member saw, the member raises the
  floor above what it holds (``_scripts.ADVANCE_SCRIPT``, only if the epoch is still the
  one it read), every open stream gets ``sse-fast-missed`` at the floor
  (``redis-restarted``, ``redis-lost-writes``; after a restart, usually the
  same id on every node that lived through it), and then what Redis has after
  the floor (up to ``load_frames`` a topic; older ones are said
  ``redis-history-trimmed``): the events published since it came back reach
  the open streams, before the live ones held back meanwhile. Live messages of
  a new subscription are not taken as "seen" before that check, so they
  cannot push the floor above themselves.
* A failover is a reconnect. With Sentinel (``redis-sentinel://``) the
  subscription and commands follow the new primary. Redis replicates
  asynchronously, so ``wait_replicas`` (``--redis-wait-replicas 1``) makes a
  publish wait for a replica (``WAIT``) before it is acknowledged, and says 503
  when none confirmed it. A member that finds Redis behind a position it saw
  (the new primary lacks events it delivered) treats it as lost data:
  ``sse-fast-missed`` (``redis-lost-writes``), and older ids resume as evicted.
* While Redis is unreachable publishes are refused with 503 and ``Retry-After``
  at once (no retries, two-second timeouts); a publish whose answer was lost
  says it may or may not have been published; open streams stay open with
  heartbeats; a stream needing a topic the node does not hold yet is refused
  with 503; ``/readyz`` answers 503 and ``/healthz`` fails after
  ``broker_down_limit``.

Publishing straight into Redis (no HTTP): ``publish(redis, "topic", data)``
(``connect(url)`` gives a client for a URL as ``--redis-url`` takes it,
``redis-sentinel://`` included; a ``RedisCluster`` for a Cluster), into the
layout recorded there, or, from any language, ``EVAL`` of ``PUBLISH_SCRIPT``
(one sequence; see the README). These and ``RedisBroker`` are the public
names here; the rest is the server's.

Partitions and shards (``--redis-partitions``, several ``--redis-url``): the
topics are split into ``N`` partitions (``fnv1a64(utf8(topic)) % N``), each a
sequence of its own (position, epoch, floor, retry memory), and partition ``p``
lives on shard ``p % S`` of the ``S`` URLs (one URL with ``N > 1``: one shard
holding them all). Its keys carry the partition's hash tag ``T``
(``_partitions.py``): ``sse:{T}:position``, ``sse:{T}:epoch``,
``sse:{T}:floor``, ``sse:{T}:t:<topic>``, ``sse:{T}:c:<topic>``,
``sse:{T}:r:...`` (retry memory), ``sse:{T}:p:<topic>`` (presence),
``sse:{T}:n:<member>`` (a connection's probes), the node's channel
``sse:{T0}:n:<node>`` on shard 0, and ``sse:layout`` on every shard. Every
promise above holds per partition: a batch is published per partition (all or
none there; the shards concurrently: with one shard down, the others' topics are
published and the answer is 503 naming which topics have it), each shard has its
own subscription, probes and resync, and a loss (another epoch, a position
behind) is said at that partition's floor to the streams of its topics only. The
member is ``available`` while at least one shard is; a new stream needing a
topic of a shard that is down is refused with 503.

A Redis Cluster (``redis-cluster://seed:port,...``) is partitioned the same
way: each partition's tag is one slot, so every script's keys are in one slot,
and the scripts publish with ``SPUBLISH``. Its masters are the shards: one
connection per master (``SSUBSCRIBE``), made from the slot map, and a
partition whose master changes (a failover, a slot moved) moves to the new
master's connection and is resynced there (``_rehoming.py``).

Where things are:

* ``_scripts.py``: the keys, the Lua scripts (``*.lua``), ``connect``;
  ``_direct.py``: ``publish`` straight into Redis, into the layout recorded there.
* ``_partitions.py``: partitions, hash tags, partitioned keys, the layout record;
  ``_layout.py``: the layout checked at start.
* ``_placement.py``: ``Placement``: which Redis holds which partition, and what its
  keys and channels are called (one sequence: today's names).
* ``_broker.py``: ``RedisBroker``, put together from the parts below (none holds
  it); which part owns which piece of a member's state. ``_member_options.py``:
  ``MemberOptions``, what the member was told, which its parts share with its
  ``Membership`` (``brokers/__init__.py``: whom it delivers to, whether it is leaving).
* ``_feed.py``: ``Feed``: the member's connections, started, closed and read
  together (availability, topics held, the pattern streams' directory).
* ``_publishing.py``: ``OneSequencePublisher`` (one script call on one sequence) and
  ``ShardedPublisher`` (a batch over partitions and shards).
* ``_connection.py``: ``Connection``: one Redis's client and pub/sub subscription
  (subscribe, hold back, read, replace when lost or stale); ``_channels.py``: its
  channels' confirmations and releases (SSUBSCRIBE per slot on a Cluster).
* ``_held_topics.py``: ``HeldTopics``, the topics held on one Redis: new ones loaded,
  old ones released; ``_new_topics.py``: ``NewTopics``, topics born there that
  pattern streams want, and the directory read.
* ``_state.py``: ``PartitionRead``, what was read of one partition; the reads' shapes.
* ``_history.py``: history reads, and the resync per partition after a reconnect.
* ``_availability.py``: ``Availability``: one Redis up or down, its one owner.
* ``_probes.py``: probes of each subscription; ``NodeGather``, figures across a node.
* ``_presence_store.py``: ``PresenceStore``, presence figures kept in Redis.
* ``_cluster.py``: a Redis Cluster's slot map and one client per master
  (``Topology``); ``_rehoming.py``: the member's connections following that map;
  ``_errors.py``: what each Redis or Cluster error means to a publisher.
"""

from __future__ import annotations

try:
    import redis.asyncio  # noqa: F401  (the extra: say what to install when it is missing)
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError(
        "--redis-url needs redis-py: python -m pip install 'sse_fast[redis]'"
    ) from exc

from ._broker import RedisBroker
from ._direct import publish
from ._scripts import PUBLISH_SCRIPT, connect

__all__ = ["PUBLISH_SCRIPT", "RedisBroker", "connect", "publish"]
