"""The Redis broker: several nodes (machines, and the workers on each) as one server.

Redis is the one sequencer and the history store; its pub/sub only carries
each event to the nodes that hold its topic. No home-made cluster protocol:
with ``--redis-url`` every worker of every node is a member of the same
sequence, and a client resumes with ``Last-Event-ID`` on any node.

Keys (``prefix`` ``sse:`` by default; one Redis, or a Sentinel-managed
primary: not a Redis Cluster, whose slots would split the sequence):

* ``sse:position``: the newest position handed out. A publish gives each event
  ``max(previous + 1, Redis TIME in microseconds)``, so positions grow across
  Redis restarts (even without persistence) and are close to the time the
  event was published, which bounds history by age (``history_age``).
* ``sse:epoch``: a random value set once per Redis dataset. A node that finds
  another one after reconnecting knows that Redis lost its data (a restart
  without persistence, a flush, a failover to an empty replica).
* ``sse:t:<topic>``: a Stream per topic, entry id ``<position>-0``, fields
  ``f`` (the frame, ``id:`` line first), ``i`` (the SSE id) and ``w`` (wall
  clock milliseconds at publish). Trimmed to about ``history_frames`` entries
  and ``history_age`` seconds on each publish; the key expires after
  ``history_age`` seconds without one. ``XINFO STREAM`` says whether entries
  were ever trimmed (``entries-added`` above the length) and which is the
  first one left: that is how a resume older than the history is recognised.
* ``sse:c:<topic>``: the pub/sub channel of a topic; a message is
  ``b"<position> <wall ms> <id>\\n" + frame``.
* ``sse:n:<node>``: a node's own channel (probes; figures for ``/metrics``).
* ``sse:p:<topic>``: each worker's presence figures of a topic of
  ``presence_topics`` (``brokers/presence.py``).

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
  trimmed past that position, or Redis lost its data, the topic's streams get
  ``sse-fast-missed`` in place (``redis-history-trimmed``, ``redis-restarted``).
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
below, or, from any language, ``EVAL`` of ``PUBLISH_SCRIPT`` (see the README).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Sequence
from typing import Any

import orjson

from .._core import EncodeError, encode
from .._tasks import stop_task
from ..protocol import Reason
from ..publishing import PublishError, PublishRequest
from . import Broker
from .presence import RedisPresence
from .sequencing import RETRY_WINDOW, Sequenced

try:
    import redis.asyncio as aioredis
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError, ResponseError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError(
        "--redis-url needs redis-py: python -m pip install 'sse_fast[redis]'"
    ) from exc

__all__ = [
    "ADVANCE_SCRIPT",
    "COMMAND_TIMEOUT",
    "LOAD_CHUNK",
    "MAX_CONNECTIONS",
    "PUBLISH_SCRIPT",
    "READ_SCRIPT",
    "RETRY_AFTER",
    "WAIT_MS",
    "RedisBroker",
    "connect",
    "frame_without_id",
    "publish",
    "publish_args",
]

log = logging.getLogger("sse_fast.redis")

RETRY_AFTER = 1.0
COMMAND_TIMEOUT = 2.0  # seconds: a publish fails fast instead of waiting on a dead Redis
MAX_CONNECTIONS = 64  # per member (worker): commands in flight at once
LOAD_CHUNK = 256  # topics per history read when subscribing
WAIT_MS = 1000  # --redis-wait-replicas: how long a publish waits for its replicas

# KEYS: position, epoch. ARGV: prefix, epoch candidate, history frames, history
# age (microseconds), event count, then per event: id ('' = its position),
# frame without the id line, wall ms, topic count, topics.
PUBLISH_SCRIPT = r"""
local prefix, maxlen, age = ARGV[1], ARGV[3], tonumber(ARGV[4])
local count = tonumber(ARGV[5])
local events, i = {}, 6
for e = 1, count do
  local id, frame, wall, n = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  if not n or n < 1 then return redis.error_reply('sse_fast: event ' .. e .. ' has no topic') end
  if string.find(id, '[\r\n%z]') then
    return redis.error_reply('sse_fast: event ' .. e .. ': an id must not contain CR, LF or NUL')
  end
  if string.find(frame, '\r', 1, true) or string.sub(frame, -2) ~= '\n\n'
     or string.find(frame, '\n\n', 1, true) ~= #frame - 1 then
    return redis.error_reply('sse_fast: event ' .. e .. ': the frame must be SSE fields '
      .. '("data: ...\\n" lines, optional "event:"/"retry:") ending with one blank line')
  end
  local topics = {}
  for k = 1, n do
    local topic = ARGV[i + 3 + k]
    if topic == nil or topic == '' then
      return redis.error_reply('sse_fast: event ' .. e .. ' has an empty topic')
    end
    topics[k] = topic
  end
  events[e] = {id, frame, wall, topics}
  i = i + 4 + n
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], ARGV[2]) end
local position = tonumber(redis.call('GET', KEYS[1]) or '0')
local ttl = math.max(1, math.ceil(age / 1000000))
local minid = string.format('%d-0', math.max(0, now - age))
local ids = {}
for e = 1, count do
  local event = events[e]
  local given = event[1] ~= ''
  -- a publisher's id seen on these topics within the retry window: a retry, not again
  -- key: the id's length first, so that no other (id, topics) pair can spell it
  if given and not redis.call('SET', prefix .. 'r:' .. #event[1] .. ':' .. event[1] .. ':'
      .. table.concat(event[4], ' '), '1', 'NX', 'EX', RETRY_WINDOW) then
    ids[e] = event[1]
  else
    position = math.max(position + 1, now)
    local pos = string.format('%d', position)
    local id = event[1]
    if id == '' then id = pos end
    local frame = 'id: ' .. id .. '\n' .. event[2]
    local message = pos .. ' ' .. event[3] .. ' ' .. id .. '\n' .. frame
    for _, topic in ipairs(event[4]) do
      local stream = prefix .. 't:' .. topic
      redis.call('XADD', stream, 'MAXLEN', '~', maxlen, pos .. '-0', 'f', frame, 'i', id,
        'w', event[3])
      redis.call('XTRIM', stream, 'MINID', '~', minid)
      redis.call('EXPIRE', stream, ttl)
      redis.call('PUBLISH', prefix .. 'c:' .. topic, message)
    end
    ids[e] = id
  end
end
redis.call('SET', KEYS[1], string.format('%d', position))
return ids
""".replace("RETRY_WINDOW", str(int(RETRY_WINDOW)))

# KEYS: position, epoch. ARGV: prefix, count, epoch candidate, then pairs:
# topic, from ('' = the newest ``count`` entries; else those after position from).
# Returns: position, Redis time (us), epoch, then per topic: max deleted position,
# stream length, entries (newest first).
READ_SCRIPT = r"""
local prefix, count = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], ARGV[3]) end
local out = {redis.call('GET', KEYS[1]) or '0', now, redis.call('GET', KEYS[2])}
local i = 4
while ARGV[i] do
  local stream, from = prefix .. 't:' .. ARGV[i], ARGV[i + 1]
  local deleted, length, entries = '0', 0, {}
  if redis.call('EXISTS', stream) == 1 then
    local info = redis.call('XINFO', 'STREAM', stream)
    local added, first, removed = 0, nil, 0
    for j = 1, #info, 2 do
      local key = info[j]
      if key == 'max-deleted-entry-id' then
        removed = tonumber(string.match(info[j + 1], '^(%d+)'))
      elseif key == 'entries-added' then
        added = info[j + 1]
      elseif key == 'first-entry' and info[j + 1] then
        first = tonumber(string.match(info[j + 1][1], '^(%d+)'))
      end
    end
    length = redis.call('XLEN', stream)
    -- trimming (by count or age) removed entries older than the first one left
    if first and added > length then removed = math.max(removed, first - 1) end
    deleted = string.format('%d', removed)
    if from == '' then
      entries = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', count)
    else
      entries = redis.call('XREVRANGE', stream, '+', '(' .. from .. '-0', 'COUNT', count)
    end
  end
  out[#out + 1] = deleted
  out[#out + 1] = length
  out[#out + 1] = entries
  i = i + 2
end
return out
"""

# KEYS: position. ARGV: at least. Moves the sequence to at least ARGV[1] (after
# Redis lost its data, so new positions stay above what nodes hold).
ADVANCE_SCRIPT = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local position = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(ARGV[1]) + 1, now)
redis.call('SET', KEYS[1], string.format('%d', position))
return string.format('%d', position)
"""


class _Reconnect(Exception):
    """The subscription must be replaced (stale, or silently reconnected)."""


def connect(url: str) -> aioredis.Redis:
    """A client for ``url`` (``redis://``, ``rediss://``, ``unix://``, or
    ``redis-sentinel://host:port[,host:port]/master``) that fails fast."""
    options: dict[str, Any] = {
        "socket_timeout": COMMAND_TIMEOUT,
        "socket_connect_timeout": COMMAND_TIMEOUT,
        "retry_on_timeout": False,
    }
    if url.startswith("redis-sentinel://"):
        from redis.asyncio.sentinel import Sentinel

        rest = url[len("redis-sentinel://") :]
        hosts, _, master = rest.partition("/")
        if not master:
            raise ValueError(f"{url!r}: name the master, e.g. redis-sentinel://host:26379/mymaster")
        nodes = []
        for host in hosts.split(","):
            name, _, port = host.rpartition(":")
            nodes.append((name or host, int(port or 26379)))
        sentinel = Sentinel(nodes, **options)  # type: ignore[no-untyped-call]
        client: aioredis.Redis = sentinel.master_for(master, **options)
        return client
    # a burst of commands waits for a connection (up to the timeout) instead of failing
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=COMMAND_TIMEOUT, **options
    )
    return aioredis.Redis.from_pool(pool)  # closing the client closes the pool


def frame_without_id(request: PublishRequest) -> bytes:
    """The SSE frame of ``request`` without its ``id:`` line (the script adds it)."""
    return encode(request.data, event=request.event, retry=request.retry)


def publish_args(
    prefix: str,
    requests: Sequence[PublishRequest],
    history_frames: int,
    history_age: float,
) -> list[Any]:
    """The arguments of ``PUBLISH_SCRIPT``; raises ``PublishError`` (400) before
    anything is sent if an event cannot be encoded."""
    args: list[Any] = [
        prefix,
        os.urandom(8).hex(),
        history_frames,
        int(history_age * 1_000_000),
        len(requests),
    ]
    wall = str(int(time.time() * 1000))
    for request in requests:
        try:
            frame = frame_without_id(request)
        except EncodeError as exc:
            raise PublishError(str(exc)) from None
        args += ["" if request.id is None else request.id, frame, wall, len(request.topics)]
        args += request.topics
    return args


async def publish(
    client: aioredis.Redis,
    topic: str | Sequence[str],
    data: Any,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
    prefix: str = "sse:",
    history_frames: int = 1000,
    history_age: float = 86400.0,
) -> str:
    """Publish one event straight into Redis (every node delivers it); return its
    id. ``client`` is a ``redis.asyncio.Redis``; ``data`` is sent as text if a
    string, else as JSON. Raises ``PublishError`` for an event that cannot be
    published, with the reason."""
    from ..publishing import check_event_id, check_topic
    from ..settings import Settings

    topics = (topic,) if isinstance(topic, str) else tuple(topic)
    settings = Settings()
    for name in topics:
        check_topic(name, settings)
    if id is not None:
        check_event_id(id, settings)
    request = PublishRequest(topics, data, event, id, retry)
    args = publish_args(prefix, [request], history_frames, history_age)
    keys = [prefix + "position", prefix + "epoch"]
    try:
        (event_id,) = await client.eval(PUBLISH_SCRIPT, 2, *keys, *args)
    except ResponseError as exc:
        raise PublishError(str(exc)) from None
    return event_id.decode() if isinstance(event_id, bytes) else str(event_id)


def _position(stream_id: bytes | str) -> int:
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    return int(text.partition("-")[0])


class RedisBroker(Broker):
    """A member (one worker of one node) of a sequence kept in Redis."""

    stores_every_topic = False

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "sse:",
        history_frames: int = 1000,
        history_age: float = 86400.0,
        probe_interval: float = 5.0,
        load_frames: int = 1024,
        node: str | None = None,
        workers: int = 1,
        wait_replicas: int = 0,
    ) -> None:
        super().__init__()
        self.url = url
        self.prefix = prefix
        self.history_frames = history_frames
        self.history_age = history_age
        self.probe_interval = probe_interval
        self.load_frames = load_frames
        self.node = node or uuid.uuid4().hex[:12]
        self.workers = workers
        self.wait_replicas = wait_replicas
        #: the newest position this member has seen handed out (reads, messages)
        self._seen = 0
        self.member_id = uuid.uuid4().hex[:12]
        # Claims are per topic here (each loaded topic's floor): every position is ours.
        self.first_position = 1
        self.horizon = 0
        self.epoch: str | None = None
        #: topics this member is subscribed to (or subscribing)
        self.held: set[str] = set()
        self.reconnects = 0
        self.repairs = 0
        self.history_breaks = 0
        self.client: aioredis.Redis | None = None
        self._channel_prefix = (prefix + "c:").encode()
        self._node_channel = f"{prefix}n:{self.node}"
        self._pubsub: Any = None
        self._live = False
        self._commands_ok = True
        self._down_since: float | None = time.monotonic()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._prober: asyncio.Task[None] | None = None
        self._loading: dict[str, asyncio.Future[None]] = {}
        #: topics waiting to be loaded together, and the loads under way
        self._batch: tuple[asyncio.Future[None], list[str]] | None = None
        self._batches: set[asyncio.Task[None]] = set()
        #: live messages of topics being loaded, applied after their history
        self._loading_back: dict[str, list[Sequenced]] = {}
        self._held_back: dict[str, list[Sequenced]] | None = {}
        self._confirmed: set[bytes] = set()
        self._confirm_waiters: dict[bytes, asyncio.Future[None]] = {}
        self._release: set[str] = set()
        self._release_scheduled = False
        self._probes = itertools.count(1)
        self._probe_sent: dict[int, float] = {}
        self._probe_seen = time.monotonic()
        self._gathers: dict[str, list[dict[str, Any]]] = {}
        self._ready: asyncio.Event | None = None
        self._publish: Any = None
        self._read: Any = None
        self._advance: Any = None

    # ---------------------------------------------------------------- running

    def _keys(self) -> list[str]:
        return [self.prefix + "position", self.prefix + "epoch"]

    async def start(self) -> None:
        self.client = connect(self.url)
        self._publish = self.client.register_script(PUBLISH_SCRIPT)
        self._read = self.client.register_script(READ_SCRIPT)
        self._advance = self.client.register_script(ADVANCE_SCRIPT)
        self._ready = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._prober = asyncio.get_running_loop().create_task(self._probe_loop())
        try:
            await asyncio.wait_for(self._ready.wait(), 10)
        except asyncio.TimeoutError:
            await self.close()
            raise ConnectionError(
                f"cannot reach Redis at {self.url} (is redis-server running? check --redis-url)"
            ) from None

    async def close(self) -> None:
        self._closing = True
        for task in (self._task, self._prober, *self._batches):
            await stop_task(task)
        await self._drop_pubsub()
        if self.client is not None:
            await self.client.aclose()
        self._live = False

    @property
    def available(self) -> bool:
        return self._live and self._commands_ok

    @property
    def unavailable_for(self) -> float:
        if self.available:
            self._down_since = None
            return 0.0
        if self._down_since is None:
            self._down_since = time.monotonic()
        return time.monotonic() - self._down_since

    def _unavailable(self, why: str) -> PublishError:
        return PublishError(
            f"Redis unavailable ({why}); try again shortly", status=503, retry_after=RETRY_AFTER
        )

    # ---------------------------------------------------------------- subscription

    async def _run(self) -> None:
        delay = 0.05
        while not self._closing:
            try:
                await self._subscribe_all()
                await self._resync()
                delay = 0.05
                if self._ready is not None:
                    self._ready.set()
                await self._read_loop()
            except (RedisError, OSError, asyncio.TimeoutError, _Reconnect) as exc:
                if self._live:
                    log.error("Redis subscription lost (%s): repairing after reconnect", exc)
                self._live = False
            await self._drop_pubsub()
            if self._closing:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            self.reconnects += 1

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        self._confirmed = set()
        for waiter in self._confirm_waiters.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("the Redis subscription was lost"))
                waiter.exception()  # whoever waits gets it; nobody may be waiting
        self._confirm_waiters = {}
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pubsub.aclose(), COMMAND_TIMEOUT)

    def _channel(self, name: str) -> bytes:
        return self._channel_prefix + name.encode()

    async def _subscribe(self, channels: list[bytes]) -> None:
        """SUBSCRIBE and wait for every confirmation (the reader sets them)."""
        if self._pubsub is None:
            raise ConnectionError("no Redis subscription")
        loop = asyncio.get_running_loop()
        waiters = []
        for channel in channels:
            waiter = self._confirm_waiters.get(channel)
            if waiter is None or waiter.done():
                waiter = self._confirm_waiters[channel] = loop.create_future()
            waiters.append(waiter)
        for start in range(0, len(channels), 512):
            await self._pubsub.subscribe(*channels[start : start + 512])
        await asyncio.wait_for(asyncio.gather(*waiters), COMMAND_TIMEOUT * 2)

    async def _subscribe_all(self) -> None:
        assert self.client is not None
        self._held_back = {}  # everything waits until the repair is done
        self._pubsub = self.client.pubsub()
        self._reader_started = asyncio.get_running_loop().create_future()
        reader = asyncio.get_running_loop().create_task(self._confirm_loop())
        try:
            channels = [self._node_channel.encode(), *(self._channel(n) for n in self.held)]
            await self._subscribe(channels)
        finally:
            await stop_task(reader)

    async def _confirm_loop(self) -> None:
        """Read while subscribing at (re)connect: confirmations and held-back messages."""
        while not self._closing:
            if self._pubsub is None or not self._pubsub.subscribed:
                await asyncio.sleep(0.005)
                continue
            message = await self._pubsub.get_message(timeout=None)
            if message is not None:
                self._handle(message)

    async def _read_loop(self) -> None:
        pubsub = self._pubsub
        while not self._closing:
            message = await pubsub.get_message(timeout=self.probe_interval / 2)
            if message is not None:
                self._handle(message)
            self._check_probes()

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = message["channel"]
        if kind == "message":
            if channel.startswith(self._channel_prefix):
                self._message(channel[len(self._channel_prefix) :].decode(), message["data"])
            else:
                self._node_message(message["data"])
        elif kind == "subscribe":
            if channel in self._confirmed:
                # redis-py reconnected and subscribed again by itself: whatever was
                # published meanwhile is lost to this connection; start over cleanly
                raise _Reconnect("the subscription reconnected by itself")
            self._confirmed.add(channel)
            waiter = self._confirm_waiters.pop(channel, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif kind == "unsubscribe":
            self._confirmed.discard(channel)

    def _message(self, topic: str, data: bytes) -> None:
        head, _, frame = data.partition(b"\n")
        position, wall, event_id = head.split(b" ", 2)
        age = max(0.0, time.time() - int(wall) / 1000)
        item = Sequenced(int(position), event_id.decode(), (topic,), frame, time.monotonic() - age)
        if item.position > self._seen:
            self._seen = item.position
        held_back = self._held_back
        if held_back is not None:
            held_back.setdefault(topic, []).append(item)
        elif topic in self._loading:
            self._loading_back.setdefault(topic, []).append(item)
        elif topic in self.held:
            self.deliver([item])

    # ---------------------------------------------------------------- history

    async def _read_history(
        self, froms: dict[str, int | None]
    ) -> tuple[int, int, str, dict[str, tuple[int, int, list[Sequenced]]]]:
        """Position, Redis time (us), epoch, and per topic: the max deleted
        position, the stream length, and its entries after ``froms[topic]`` (or
        the newest ``load_frames``), oldest first."""
        args: list[Any] = [self.prefix, self.load_frames, os.urandom(8).hex()]
        names = list(froms)
        for name in names:
            start = froms[name]
            args += [name, "" if start is None else str(start)]
        reply = await self._read(keys=self._keys(), args=args)
        position, now, epoch = int(reply[0]), int(reply[1]), reply[2].decode()
        out = {}
        clock = time.monotonic()
        for k, name in enumerate(names):
            deleted, length, entries = reply[3 + 3 * k : 6 + 3 * k]
            items = []
            for stream_id, fields in reversed(entries):
                values = dict(zip(fields[::2], fields[1::2], strict=True))
                age = max(0.0, time.time() - int(values[b"w"]) / 1000)
                items.append(
                    Sequenced(
                        _position(stream_id),
                        values[b"i"].decode(),
                        (name,),
                        values[b"f"],
                        clock - age,
                    )
                )
            out[name] = (_position(deleted), int(length), items)
        return position, now, epoch, out

    async def _resync(self) -> None:
        """After (re)subscribing: check the epoch, repair every held topic from its
        stream, then let the held-back messages through."""
        member = self.member
        held = sorted(self.held)
        froms: dict[str, int | None] = {name: member.newest_position(name) for name in held}
        position, now, epoch, read = await self._read_history(froms)
        lost = None
        if self.epoch is not None and epoch != self.epoch:
            lost = Reason.REDIS_RESTARTED
            log.warning("Redis lost its data (epoch changed): open streams are told")
        elif position < self._seen and not self.wait_replicas:
            # a failover to a replica that had not received every event we saw
            lost = Reason.REDIS_LOST_WRITES
            log.warning(
                "Redis is behind events this node saw (position %d < %d: a failover to a "
                "replica that lagged; see --redis-wait-replicas): open streams are told",
                position,
                self._seen,
            )
        if lost is not None:
            # Nothing since the last position we hold can be vouched for. Move the
            # sequence above it (and above what we saw); open streams are told.
            self.history_breaks += 1
            above = max(member.last_position, self._seen)
            marker = int(await self._advance(keys=self._keys()[:1], args=[above]))
            self.first_position = marker + 1
            member.rejoined(marker + 1, lost)
            position = marker
        else:
            if self.epoch is not None:
                self.repairs += 1
            for name in held:
                self._apply_history(name, froms[name], read[name], now)
        self.epoch = epoch
        self._seen = max(self._seen, position)
        self.horizon = max(self.horizon, position)
        self._commands_ok = True
        held_back, self._held_back = self._held_back or {}, None
        for items in held_back.values():
            self.deliver(items)
        self._live = True
        self._down_since = None

    def _apply_history(
        self,
        name: str,
        since: int | None,
        history: tuple[int, int, list[Sequenced]],
        now: int,
    ) -> None:
        deleted, length, items = history
        horizon = now - int(self.history_age * 1_000_000)
        if since is None:  # a topic new to this member: its floor, then its history
            floor = max(deleted, horizon)
            if items and length > len(items):
                floor = max(floor, items[0].position - 1)
            self.member.load(name, floor, items)
            return
        # repairing: were events after ``since`` trimmed before we could read them?
        lost = deleted if deleted > since else 0
        if items and len(items) == self.load_frames and items[0].position - 1 > since:
            lost = max(lost, items[0].position - 1)
        if lost:
            self.member.missed([name], lost, Reason.REDIS_HISTORY_TRIMMED)
        if items:
            self.deliver(items)

    # ---------------------------------------------------------------- topics

    def prepare(self, names: Sequence[str]) -> Awaitable[None] | None:
        new = [name for name in names if name not in self.held]
        loading = [self._loading[name] for name in names if name in self._loading]
        if not new and not loading:
            return None
        return self._prepare(new, loading)

    async def _prepare(self, new: list[str], loading: list[asyncio.Future[None]]) -> None:
        if new:
            if not self._live:
                raise self._unavailable("cannot subscribe to new topics")
            # New topics of one loop iteration (a connection storm) are loaded together:
            # one SUBSCRIBE and one history read, not a Redis connection each.
            loop = asyncio.get_running_loop()
            if self._batch is None:
                self._batch = (loop.create_future(), [])
                loop.call_soon(self._start_batch)
            future, names = self._batch
            for name in new:
                self.held.add(name)
                self._loading[name] = future
                names.append(name)
            loading = [*loading, future]
        for waiting in loading:
            await asyncio.shield(waiting)

    def _start_batch(self) -> None:
        if self._batch is None:  # pragma: no cover - scheduled once per batch
            return
        future, names = self._batch
        self._batch = None
        task = asyncio.get_running_loop().create_task(self._run_batch(future, names))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _run_batch(self, future: asyncio.Future[None], names: list[str]) -> None:
        try:
            await self._load(names)
        except BaseException as exc:
            for name in names:
                if self._loading.get(name) is future:
                    self.held.discard(name)
                    self._loading.pop(name, None)
                    self._loading_back.pop(name, None)
            if not future.done():
                future.set_exception(self._unavailable(f"subscribing failed: {exc!r}"))
                future.exception()  # whoever waits gets it; nobody may be waiting
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        future.set_result(None)

    async def _load(self, names: list[str]) -> None:
        await self._subscribe([self._channel(name) for name in names])
        for start in range(0, len(names), LOAD_CHUNK):  # Redis is not blocked long
            chunk = names[start : start + LOAD_CHUNK]
            position, now, _, read = await self._read_history(dict.fromkeys(chunk))
            self._seen = max(self._seen, position)
            self.horizon = max(self.horizon, position)
            for name in chunk:
                self._apply_history(name, None, read[name], now)
                self._loading.pop(name, None)
                waiting = self._loading_back.pop(name, [])
                if waiting:
                    self.deliver(waiting)

    def release(self, name: str) -> None:
        if name not in self.held or name in self._loading:
            return
        self.held.discard(name)
        self._release.add(name)
        if not self._release_scheduled:
            self._release_scheduled = True
            asyncio.get_running_loop().call_soon(self._send_release)

    def _send_release(self) -> None:
        self._release_scheduled = False
        names = [name for name in self._release if name not in self.held]
        self._release.clear()
        if names and self._pubsub is not None and self._live:
            task = asyncio.get_running_loop().create_task(
                self._pubsub.unsubscribe(*(self._channel(name) for name in names))
            )
            task.add_done_callback(_ignore_result)

    # ---------------------------------------------------------------- probes

    async def _probe_loop(self) -> None:
        while not self._closing:
            # known down: probe often, so publishing comes back soon after Redis does
            await asyncio.sleep(self.probe_interval if self._commands_ok else 0.25)
            if self.client is None:
                continue
            number = next(self._probes)
            try:
                await self.client.publish(
                    self._node_channel, f"probe {self.member_id} {number}".encode()
                )
                self._commands_ok = True
                self._probe_sent[number] = time.monotonic()
            except (RedisError, OSError) as exc:
                if self._commands_ok:
                    log.error("Redis does not answer (%s): publishing is unavailable", exc)
                self._commands_ok = False

    def _check_probes(self) -> None:
        if not self._probe_sent:
            return
        oldest = min(self._probe_sent.values())
        if time.monotonic() - oldest > self.probe_interval * 2:
            self._probe_sent.clear()
            raise _Reconnect(
                f"no probe came back within {self.probe_interval * 2:g} s (a stale subscription)"
            )

    def _node_message(self, data: bytes) -> None:
        kind, _, rest = data.partition(b" ")
        if kind == b"probe":
            member, _, number = rest.partition(b" ")
            if member.decode() == self.member_id:
                self._probe_sent.pop(int(number), None)
        elif kind == b"gather":
            key, _, query = rest.partition(b" ")
            figures = self.member.report(orjson.loads(query))
            figures["worker"] = None
            figures["member"] = self.member_id
            task = asyncio.get_running_loop().create_task(self._answer(key.decode(), figures))
            task.add_done_callback(_ignore_result)

    async def _answer(self, key: str, figures: dict[str, Any]) -> None:
        assert self.client is not None
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.rpush(key, orjson.dumps(figures))
            pipe.expire(key, 10)
            await pipe.execute()

    def _presence(self) -> RedisPresence:
        if self.client is None or not self.available:
            raise RuntimeError("Redis is away")
        return RedisPresence(self.client, self.prefix, self.member_id)

    async def store_presence(self, figures: dict[str, dict[str, Any]]) -> None:
        await self._presence().store(figures)

    async def read_presence(self, topic: str) -> list[dict[str, Any]] | None:
        return await self._presence().read(topic)

    async def gather(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        """Every worker of this node, through the node's channel; this worker
        alone when Redis is away."""
        mine = {**self.member.report(query), "worker": None, "member": self.member_id}
        if self.workers <= 1 or self.client is None or not self.available:
            return [mine]
        key = f"{self.prefix}g:{uuid.uuid4().hex}"
        try:
            await self.client.publish(
                self._node_channel, b"gather %s %s" % (key.encode(), orjson.dumps(query))
            )
            figures: list[dict[str, Any]] = []
            deadline = time.monotonic() + 1.0
            while len(figures) < self.workers:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                reply = await self.client.blpop([key], timeout=max(0.01, remaining))
                if reply is None:
                    break
                figures.append(orjson.loads(reply[1]))
        except (RedisError, OSError):
            return [mine]
        if not any(f.get("member") == self.member_id for f in figures):
            figures.append(mine)
        for number, figure in enumerate(sorted(figures, key=lambda f: f.get("pid", 0))):
            figure["worker"] = number
        return figures

    # ---------------------------------------------------------------- publishing

    async def publish(self, requests: list[PublishRequest], accepted_at: float) -> list[str]:
        # Tried even while this member's subscription is being repaired: the
        # publish goes to Redis, and this member's streams get it with the repair.
        if self._publish is None:
            raise self._unavailable("not connected")
        if not self._commands_ok:  # known down: refused at once, not after a timeout
            raise self._unavailable("it does not answer")
        assert self.client is not None
        args = publish_args(self.prefix, requests, self.history_frames, self.history_age)
        try:
            if self.wait_replicas:
                async with self.client.pipeline(transaction=False) as pipe:  # one round trip
                    await self._publish(keys=self._keys(), args=args, client=pipe)
                    pipe.execute_command("WAIT", self.wait_replicas, WAIT_MS)
                    ids, replicas = await pipe.execute()
            else:
                ids = await self._publish(keys=self._keys(), args=args)
                replicas = 0
        except ResponseError as exc:
            if "sse_fast:" in str(exc):
                raise PublishError(str(exc)) from None
            raise self._unavailable(str(exc)) from None
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            self._commands_ok = False
            raise PublishError(
                f"Redis did not answer ({exc}): the publish may or may not have been "
                "published (give events ids to recognise them on retry)",
                status=503,
                retry_after=RETRY_AFTER,
            ) from None
        self._commands_ok = True
        if replicas < self.wait_replicas:
            raise PublishError(
                f"Redis published it, but {replicas} of {self.wait_replicas} replicas confirmed "
                f"it within {WAIT_MS} ms: it is lost if Redis fails over now (it was delivered; "
                "give events ids to recognise them if you retry)",
                status=503,
                retry_after=RETRY_AFTER,
            )
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    def stats(self) -> dict[str, Any]:
        return {
            "redis": {
                "connected": self.available,
                "node": self.node,
                "topics_subscribed": len(self.held),
                "reconnects": self.reconnects,
                "repairs": self.repairs,
                "history_breaks": self.history_breaks,
            }
        }


def _ignore_result(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("Redis background command failed: %s", task.exception())
