"""The settings' sections about what the server runs beside its streams: typed
streams, presence and webhooks; the brokers (several workers, several machines);
durable history on local disk; mirror mode.

Each field is documented where it is declared (``metadata=_doc(...)``): that
line is its entry in ``sse-fast serve --help`` and on the options page.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._serving import _doc

#: partitions a layout of several Redis has unless ``redis_partitions`` says otherwise
DEFAULT_SHARDED_PARTITIONS = 128
#: the most partitions a Redis layout may have (each then spans 16 Cluster slots)
MAX_REDIS_PARTITIONS = 1024
#: the URL schemes of a Redis Cluster (its seeds; TLS)
CLUSTER_SCHEMES = ("redis-cluster://", "rediss-cluster://")


@dataclass(frozen=True)
class FeatureSettings:
    """Typed streams, presence and webhooks."""

    schemas: str = field(
        default="",
        metadata=_doc(
            "module:attribute of the declared streams (a sse_fast.schemas.Stream, a list of "
            "them, or Schemas): publishes to their topics are checked against the declared "
            "event types, and GET /schema serves them as JSON Schema"
        ),
    )
    presence_topics: str = field(
        default="",
        metadata=_doc(
            "comma-separated topic names/globs whose joins and leaves are published to "
            "<topic>/presence (at most one event per topic and presence_interval) and, with "
            "Redis, whose presence is counted across nodes"
        ),
    )
    public_presence_topics: str = field(
        default="",
        metadata=_doc(
            "comma-separated topic names/globs whose <topic>/presence stays public even when "
            "the topic is private (serve warns); by default a private topic's presence is private"
        ),
    )
    presence_interval: float = field(
        default=1.0,
        metadata=_doc("seconds of joins and leaves gathered into one presence event"),
    )
    webhook_urls: str = field(
        default="",
        metadata=_doc(
            "comma-separated URLs that get a signed POST of the streams that connected and "
            "disconnected (batched per webhook_interval; see sse_fast/webhooks.py)"
        ),
    )
    webhook_secret: str = field(
        default="",
        metadata=_doc("the shared secret of the webhooks' HMAC-SHA256 signature (16+ chars)"),
    )
    webhook_topics: str = field(
        default="*",
        metadata=_doc("comma-separated topic names/globs whose streams are reported"),
    )
    webhook_interval: float = field(
        default=1.0, metadata=_doc("seconds between two batches to one URL")
    )
    webhook_timeout: float = field(
        default=5.0, metadata=_doc("seconds a webhook POST may take before it is retried")
    )
    webhook_max_delay: float = field(
        default=30.0, metadata=_doc("longest wait between two tries of a batch")
    )
    webhook_max_pending: int = field(
        default=10_000,
        metadata=_doc("events kept per URL while its receiver is down (then dropped, counted)"),
    )


@dataclass(frozen=True)
class BrokerSettings:
    """Several workers (the relay) and several machines (Redis)."""

    @property
    def redis_urls(self) -> tuple[str, ...]:
        """The Redis URLs given (``redis_url`` split on whitespace): one, or the shards in order."""
        return tuple(self.redis_url.split())

    @property
    def redis_partition_count(self) -> int:
        """The partitions in use: ``redis_partitions``, or its default for the URLs given (1 for
        one Redis, ``DEFAULT_SHARDED_PARTITIONS`` for shards or a Redis Cluster)."""
        if self.redis_partitions:
            return self.redis_partitions
        urls = self.redis_urls
        if len(urls) > 1 or (urls and urls[0].startswith(CLUSTER_SCHEMES)):
            return DEFAULT_SHARDED_PARTITIONS
        return 1

    relay_history_frames: int = field(
        default=100_000,
        metadata=_doc(
            "events the multi-worker relay keeps so a restarted worker recovers recent "
            "history before it answers resumes"
        ),
    )
    relay_history_bytes: int = field(
        default=64 * 1024 * 1024,
        metadata=_doc("bytes of frames the relay keeps at most for that recovery"),
    )
    redis_url: str = field(
        default="",
        metadata=_doc(
            "scale out on Redis: redis://[:password@]host:port/db, rediss:// (TLS), "
            "unix:///path, redis-sentinel://host:port[,host:port]/master-name, or a Redis "
            "Cluster: redis-cluster://host:port[,host:port] (rediss-cluster:// for TLS, "
            "?ssl_ca_certs=/path for a private CA); every "
            "node and worker with the same Redis and prefix behaves as one server; "
            "several URLs (given more than once, or separated by spaces) are shards that "
            "share the topics out, in the same order on every node "
            "(empty: no external service)"
        ),
    )
    redis_partitions: int = field(
        default=0,
        metadata=_doc(
            "sequences the topics are split into on Redis, each on one shard (a topic's is "
            "FNV-1a 64 of its name modulo this); the same on every node, recorded in Redis; "
            "0: 1 with one Redis URL (one sequence, the keys of earlier versions), 128 "
            "with shards or a Redis Cluster"
        ),
    )
    node_name: str = field(
        default="",
        metadata=_doc(
            "this server's name among the nodes sharing a Redis (/stats; default: "
            "host name and a random suffix)"
        ),
    )
    redis_prefix: str = field(
        default="sse:", metadata=_doc("prefix of every Redis key and channel sse_fast uses")
    )
    redis_history_frames: int = field(
        default=1000, metadata=_doc("events Redis keeps per topic for resumes (about)")
    )
    redis_history_age: float = field(
        default=86400.0,
        metadata=_doc("seconds Redis keeps an event for resumes; older ids resume as evicted"),
    )
    redis_probe_interval: float = field(
        default=5.0,
        metadata=_doc(
            "seconds between probes of the Redis subscription; one not back within "
            "that long means a stale connection, which is replaced"
        ),
    )
    redis_wait_replicas: int = field(
        default=0,
        metadata=_doc(
            "replicas a publish waits for (Redis WAIT, up to 1 s) before it is acknowledged, "
            "so a failover to a replica keeps every acknowledged event (1 with Sentinel; "
            "0: do not wait)"
        ),
    )
    broker_down_limit: float = field(
        default=30.0,
        metadata=_doc(
            "seconds the broker (the relay, or Redis) may stay unreachable before /healthz fails, "
            "so an orchestrator restarts the server (0 = never fail /healthz for it)"
        ),
    )


@dataclass(frozen=True)
class StorageSettings:
    """Durable history: the events kept on local disk across restarts (no Redis)."""

    persistence: str = field(
        default="interval",
        metadata=_doc(
            "keep the events on disk so a restart loses nothing: interval (fsync every "
            "fsync_interval s: a machine crash may lose that much), always (fsync before "
            "each publish is acknowledged), never (left to the kernel: a machine crash may "
            "lose about 30 s; a process crash loses nothing under any of these), or off "
            "(memory only: a restart loses the history); not used with redis_url"
        ),
    )
    data_dir: str = field(
        default="",
        metadata=_doc(
            "the directory of the kept events, one server's alone (empty: $STATE_DIRECTORY "
            "under systemd, else $XDG_STATE_HOME/sse-fast, i.e. ~/.local/state/sse-fast)"
        ),
    )
    data_max_bytes: int = field(
        default=1024 * 1024 * 1024,
        metadata=_doc(
            "bytes the data directory may hold; past it the oldest events are deleted "
            "(a restart then answers their ids evicted)"
        ),
    )
    fsync_interval: float = field(
        default=1.0, metadata=_doc("seconds between syncs to disk with persistence=interval")
    )
    data_recover: bool = field(
        default=False,
        metadata=_doc(
            "start on a data directory that lost events (a damaged or cut segment, a missing "
            "one), which otherwise stops the server: drop what cannot be read, keep a copy of "
            "each cut file in damaged/, and record the lost positions (resuming clients get "
            "sse-fast-missed)"
        ),
    )


@dataclass(frozen=True)
class RelayModeSettings:
    """Mirror mode: an upstream SSE stream republished into a topic."""

    upstream: str = field(
        default="",
        metadata=_doc(
            "mirror mode: the URL of an SSE stream (ours or any server's) whose events this "
            "server republishes, e.g. http://origin:8000/events?topic=news (empty: off)"
        ),
    )
    upstream_topic: str = field(
        default="",
        metadata=_doc(
            "the local topic upstream events are published to (default: the upstream "
            "URL's topic parameter, when it has exactly one)"
        ),
    )
    upstream_authorization: str = field(
        default="",
        metadata=_doc("the Authorization header sent upstream, e.g. 'Bearer <token>'"),
    )
    upstream_transform: str = field(
        default="",
        metadata=_doc(
            "module:callable given each upstream event (an sse_fast.client.ReceivedEvent); it "
            "returns the event to publish (maybe changed), a publish document (a dict, "
            "which may name other topics) or None to drop it; may be async"
        ),
    )
    upstream_read_timeout: float = field(
        default=60.0,
        metadata=_doc(
            "seconds without a byte from upstream before its connection counts as lost and "
            "is replaced (keep it above the upstream's heartbeat interval)"
        ),
    )
    upstream_max_delay: float = field(
        default=30.0, metadata=_doc("longest wait between reconnects to the upstream (seconds)")
    )
    upstream_ready_grace: float = field(
        default=10.0,
        metadata=_doc(
            "seconds the upstream may be away before /readyz says not ready (0: at once)"
        ),
    )
