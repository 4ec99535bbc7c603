"""Server settings: one object, filled from defaults, ``SSE_FAST_*`` environment
variables and command-line flags (flags win over the environment).

Every field is documented where it is declared; ``sse-fast serve --help`` prints
the same text. The environment variable of a field is ``SSE_FAST_`` plus its
name in upper case (``heartbeat_interval`` -> ``SSE_FAST_HEARTBEAT_INTERVAL``).
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .._core.request import TOPIC_CHARACTERS, TOPIC_NAME
from .._patterns import PatternError, check_pattern

__all__ = [
    "ENV_PREFIX",
    "OTHER_VARIABLES",
    "Handoff",
    "Settings",
    "SettingsError",
    "available_memory",
    "history_budget",
    "split_list",
    "unknown_variables",
]

#: what the environment variable of a setting starts with (then its name in upper case)
ENV_PREFIX = "SSE_FAST_"


#: what a JWT setting without PyJWT installed is told (the core install has no PyJWT)
NO_PYJWT = (
    "JWT authentication needs PyJWT, which is not installed: "
    "pip install 'sse_fast[server]' (or 'pyjwt[crypto]')"
)


def _has_pyjwt() -> bool:
    try:
        import jwt  # noqa: F401
    except ImportError:
        return False
    return True


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names it."""


def _doc(text: str, **extra: Any) -> dict[str, Any]:
    return {"doc": text, **extra}


def split_list(text: str) -> tuple[str, ...]:
    """A comma-separated setting's items, stripped, empty ones left out."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


#: settings that list topic names/globs (``*`` and ``?`` only: ``sse_fast/_patterns.py``)
PATTERN_SETTINGS = ("private_topics", "presence_topics", "public_presence_topics", "webhook_topics")

#: settings that must be above 0, and those that must not be below
POSITIVE = (
    "port",
    "workers",
    "retry_ms",
    "ring_max_frames",
    "ring_max_bytes",
    "max_topics",
    "max_topics_per_connection",
    "max_topic_length",
    "max_body_bytes",
    "body_timeout",
    "header_timeout",
    "max_events_per_batch",
    "presence_interval",
    "webhook_interval",
    "webhook_timeout",
    "webhook_max_delay",
    "webhook_max_pending",
    "max_last_event_id_length",
    "backlog",
    "http1_buffer_size",
    "runtime_threads",
    "relay_history_frames",
    "relay_history_bytes",
    "redis_history_frames",
    "redis_history_age",
    "redis_probe_interval",
    "upstream_read_timeout",
    "upstream_max_delay",
    "data_max_bytes",
    "fsync_interval",
)
NON_NEGATIVE = (
    "max_connections",
    "max_connections_per_ip",
    "publish_rate",
    "connect_rate_per_ip",
    "redis_wait_replicas",
    "heartbeat_interval",
    "topic_ttl",
    "drain_timeout",
    "drain_retry_jitter_ms",
    "catch_up_timeout",
    "backpressure",
    "stream_send_buffer",
    "max_history_bytes",
    "broker_down_limit",
    "upstream_ready_grace",
)


#: settings with a bound beyond their sign: (least, most, why), either bound None
RANGES: dict[str, tuple[float | None, float | None, str]] = {
    "port": (None, 65535, "a TCP port"),
    "http1_buffer_size": (8192, None, "Granian's HTTP/1 minimum"),
    "allocator_decay": (0, 3600, "seconds"),
    "header_timeout": (
        1,
        3600,
        "seconds; it is also how long an idle keep-alive connection is kept",
    ),
    "body_timeout": (None, 3600, "seconds"),
    "presence_interval": (
        None,
        10,
        "the figures of a worker that wrote none for 30 s count as a dead worker's",
    ),
}


@dataclass(frozen=True)
class _Listening:
    """Where and how the server listens: address, workers, Granian, TLS, logging."""

    host: str = field(default="127.0.0.1", metadata=_doc("address to listen on"))
    port: int = field(default=8000, metadata=_doc("TCP port to listen on"))
    workers: int = field(
        default=1, metadata=_doc("worker processes (each holds its own connections)")
    )
    backlog: int = field(default=4096, metadata=_doc("listen backlog (Linux caps it at somaxconn)"))
    backpressure: int = field(
        default=0,
        metadata=_doc(
            "connections per worker Granian accepts (0 = as many as the file limit allows)"
        ),
    )
    http1_buffer_size: int = field(
        default=8192,
        metadata=_doc("Granian HTTP/1 buffer per connection (bytes); memory per idle stream"),
    )
    runtime_threads: int = field(
        default=1, metadata=_doc("Granian I/O threads per worker (socket writes run there)")
    )
    stream_send_buffer: int = field(
        default=128 * 1024,
        metadata=_doc(
            "kernel send buffer per connection (SO_SNDBUF, bytes; Linux holds up to twice "
            "it): bounds the kernel memory a client that stops reading pins; a stream's "
            "throughput is at most twice it per round trip (0 = the kernel's autotuning, up "
            "to net.ipv4.tcp_wmem's maximum, 4 MiB by default)"
        ),
    )
    allocator_decay: float = field(
        default=0.0,
        metadata=_doc(
            "seconds Granian's allocator keeps memory it freed before giving it back; 0: at "
            "once, 1.6 KB less per idle stream and 2.3 KB during a broadcast, for 0.88-0.91x "
            "the single publishes/s; 10 is jemalloc's own. Set by sse-fast serve before "
            "Granian loads (not when embedded); options in _RJEM_MALLOC_CONF win"
        ),
    )
    http: str = field(
        default="1",
        metadata=_doc("HTTP versions served: 1, 2 or auto (HTTP/2 needs TLS in browsers)"),
    )
    ssl_certfile: str = field(
        default="",
        metadata=_doc(
            "PEM certificate (chain) to serve HTTPS with, with ssl_keyfile; with --http auto "
            "browsers then speak HTTP/2 and every tab's streams share one connection"
        ),
    )
    ssl_keyfile: str = field(default="", metadata=_doc("PEM private key of ssl_certfile"))
    ssl_keyfile_password: str = field(
        default="",
        metadata=_doc("password of ssl_keyfile, if it is encrypted (prefer the env var)"),
    )
    reuse_port: bool = field(
        default=False,
        metadata=_doc(
            "share the port with other processes already listening on it (SO_REUSEPORT); "
            "off: refuse to start on a busy port"
        ),
    )
    log_level: str = field(default="info", metadata=_doc("debug, info, warning or error"))


@dataclass(frozen=True)
class _Streams:
    """Streams and their history: heartbeats, retry, rings, the history budget, drain."""

    heartbeat_interval: float = field(
        default=15.0, metadata=_doc("seconds between keep-alive comments on idle streams (0 = off)")
    )
    retry_ms: int = field(
        default=3000, metadata=_doc("reconnection delay sent to clients in the first frame (ms)")
    )
    ring_max_frames: int = field(
        default=1024, metadata=_doc("events kept per topic for resume (Last-Event-ID)")
    )
    ring_max_bytes: int = field(
        default=4 * 1024 * 1024, metadata=_doc("bytes of encoded events kept per topic for resume")
    )
    max_history_bytes: int = field(
        default=0,
        metadata=_doc(
            "bytes of history all topics of one worker keep together; past it the history "
            "written to longest ago is evicted (0 = a quarter of the memory, the cgroup's "
            "limit or the machine's, divided among the workers)"
        ),
    )
    max_topics: int = field(default=100_000, metadata=_doc("topics one worker keeps at most"))
    topic_ttl: float = field(
        default=3600.0,
        metadata=_doc("seconds an idle topic (no subscriber, no publish) keeps its history"),
    )
    drain_timeout: float = field(
        default=5.0, metadata=_doc("seconds a graceful shutdown may take before streams are cut")
    )
    drain_retry_jitter_ms: int = field(
        default=2000,
        metadata=_doc(
            "reconnection delay spread (ms) sent when draining, so clients come back spread out"
        ),
    )
    catch_up_timeout: float = field(
        default=30.0,
        metadata=_doc("seconds a stalled client may block one write before it is disconnected"),
    )


@dataclass(frozen=True)
class _Limits:
    """What one client or request may do: sizes, timeouts, connections, rates."""

    max_topics_per_connection: int = field(
        default=16, metadata=_doc("topics one subscription may name")
    )
    max_topic_length: int = field(default=200, metadata=_doc("characters in a topic name"))
    max_body_bytes: int = field(
        default=1024 * 1024, metadata=_doc("largest publish request body (bytes)")
    )
    body_timeout: float = field(
        default=10.0,
        metadata=_doc(
            "seconds a publish request body may take to arrive whole (408 past it); "
            "also what a graceful shutdown waits for a body at most"
        ),
    )
    header_timeout: float = field(
        default=5.0,
        metadata=_doc(
            "seconds a client may take to send a request's head, and an idle keep-alive "
            "connection is kept (Granian closes it past that, as uvicorn does after 5 s; "
            "a half-sent head would otherwise hold a shutdown)"
        ),
    )
    max_events_per_batch: int = field(default=1000, metadata=_doc("events in one publish batch"))
    max_last_event_id_length: int = field(
        default=256, metadata=_doc("longest accepted Last-Event-ID")
    )
    max_connections: int = field(
        default=0, metadata=_doc("streams per worker (0 = as many as the file limit allows)")
    )
    max_connections_per_ip: int = field(
        default=1000, metadata=_doc("streams per client IP per worker (0 = unlimited)")
    )
    trusted_proxies: str = field(
        default="",
        metadata=_doc(
            "comma-separated proxy addresses or networks (10.0.0.0/8) whose forwarding header "
            "(forwarded_header) names the client"
        ),
    )
    forwarded_header: str = field(
        default="x-forwarded-for",
        metadata=_doc(
            "the header trusted_proxies write the client into: x-forwarded-for or forwarded "
            "(RFC 7239); the other is ignored"
        ),
    )
    publish_rate: float = field(
        default=200.0, metadata=_doc("publish requests per second per credential (0 = off)")
    )
    connect_rate_per_ip: float = field(
        default=100.0, metadata=_doc("new streams per second per client IP (0 = off)")
    )


@dataclass(frozen=True)
class _Access:
    """Who may publish, subscribe and read the operations endpoints."""

    publish_token: str = field(
        default="",
        metadata=_doc("static bearer token allowed to publish to every topic (prefer the env var)"),
    )
    jwt_secret: str = field(default="", metadata=_doc("shared secret for HS256/HS384/HS512 JWTs"))
    jwt_public_key_file: str = field(
        default="",
        metadata=_doc(
            "PEM public key file for RS256/RS384/RS512, ES256/ES384 or PS256 JWTs (read at "
            "start: a new key needs a restart)"
        ),
    )
    jwt_jwks_file: str = field(
        default="",
        metadata=_doc(
            "JWKS JSON file: each key with its own algorithm, picked by the token's kid "
            "(read at start: a new key needs a restart)"
        ),
    )
    jwt_audience: str = field(default="", metadata=_doc("required JWT audience (aud), if set"))
    jwt_issuer: str = field(default="", metadata=_doc("required JWT issuer (iss), if set"))
    jwt_require_exp: bool = field(default=False, metadata=_doc("refuse JWTs without exp"))
    allow_anonymous_publish: bool = field(
        default=False, metadata=_doc("let anyone publish without a credential (unsafe)")
    )
    private_topics: str = field(
        default="",
        metadata=_doc("comma-separated topic names/globs that need a subscribe claim"),
    )
    auth_cookie: str = field(
        default="sse_fast_token", metadata=_doc("cookie carrying a subscriber JWT (EventSource)")
    )
    allow_query_token: bool = field(
        default=False, metadata=_doc("accept ?token= on /events (tokens end up in logs)")
    )
    cors_origins: str = field(
        default="", metadata=_doc("comma-separated allowed origins for CORS (none by default)")
    )
    ops_networks: str = field(
        default="127.0.0.0/8,::1/128",
        metadata=_doc(
            "comma-separated networks that may read /stats, /metrics and /presence without a token "
            "(empty = token only)"
        ),
    )
    ops_token: str = field(
        default="",
        metadata=_doc("bearer token that may read /stats, /metrics and /presence from anywhere"),
    )


@dataclass(frozen=True)
class _Features:
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
class _Brokers:
    """Several workers (the relay) and several machines (Redis)."""

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
            "unix:///path, or redis-sentinel://host:port[,host:port]/master-name; every "
            "node and worker with the same Redis and prefix behaves as one server "
            "(empty: no external service)"
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
class _Storage:
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
class _RelayMode:
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


@dataclass(frozen=True)
class Handoff:
    """What ``sse-fast serve`` (the supervising process) decides for its workers:
    the one place its fields are declared. ``Settings`` has them as settings, read
    back through ``SSE_FAST_*`` variables; they are no flags (``cli.py`` and the
    options page leave out ``Handoff.names()``)."""

    relay_socket: str = field(
        default="", metadata=_doc("internal: Unix socket of the multi-worker relay (set by serve)")
    )
    upstream_lock: str = field(
        default="",
        metadata=_doc("internal: the lock that elects the worker reading upstream (set by serve)"),
    )
    install_signal_handlers: bool = field(
        default=False,
        metadata=_doc("internal: drain on SIGTERM inside each worker (set by serve)"),
    )
    store_dir: str = field(
        default="",
        metadata=_doc("internal: the data directory serve locked for this server (set by serve)"),
    )
    start_failure_file: str = field(
        default="",
        metadata=_doc(
            "internal: where a worker reports a failed start, which stops the server; with it a "
            "worker answers /livez from its first second and restores history meanwhile "
            "(set by serve)"
        ),
    )

    @classmethod
    def names(cls) -> frozenset[str]:
        """The names of the hand-off fields (settings that are no flags)."""
        return frozenset(f.name for f in fields(cls))


@dataclass(frozen=True)
class Settings(
    Handoff,
    _RelayMode,
    _Storage,
    _Brokers,
    _Features,
    _Access,
    _Limits,
    _Streams,
    _Listening,
):
    """Every setting of the server, by section (the bases, listed here in reverse:
    a dataclass takes the fields of its last base first); ``sse-fast serve --help``
    lists them in that order. Frozen once built: another value is another
    ``Settings`` (``dataclasses.replace``, ``handed``), checked again."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``SettingsError`` naming the first setting that cannot be used."""
        self._check_signs()
        self._check_limits()
        self._check_listening()
        self._check_proxies_and_patterns()
        self._check_services()

    def _check_signs(self) -> None:
        for name in POSITIVE:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in NON_NEGATIVE:
            if getattr(self, name) < 0:
                raise SettingsError(f"{name} must not be negative, got {getattr(self, name)!r}")

    def _check_limits(self) -> None:
        if 0 < self.max_history_bytes < self.ring_max_bytes:
            raise SettingsError(
                f"max_history_bytes ({self.max_history_bytes}) must be at least ring_max_bytes "
                f"({self.ring_max_bytes}), one topic's history; or 0 for the default"
            )
        for name, (least, most, why) in RANGES.items():
            value = getattr(self, name)
            if least is not None and value < least:
                raise SettingsError(f"{name} must be at least {least:g} ({why}), got {value!r}")
            if most is not None and value > most:
                raise SettingsError(f"{name} must be at most {most:g} ({why}), got {value!r}")

    def _check_listening(self) -> None:
        if self.http not in ("1", "2", "auto"):
            raise SettingsError(f"http must be 1, 2 or auto, got {self.http!r}")
        for network in split_list(self.ops_networks):
            if network:
                try:
                    ipaddress.ip_network(network, strict=False)
                except ValueError:
                    raise SettingsError(
                        f"ops_networks: {network.strip()!r} is not a network "
                        "(e.g. 10.0.0.0/8 or 127.0.0.1)"
                    ) from None

    def _check_proxies_and_patterns(self) -> None:
        for network in split_list(self.trusted_proxies):
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise SettingsError(
                    f"trusted_proxies: {network!r} is not an address or network "
                    "(e.g. 10.0.0.5 or 10.0.0.0/8)"
                ) from None
        if self.forwarded_header not in ("x-forwarded-for", "forwarded"):
            raise SettingsError(
                "forwarded_header must be x-forwarded-for or forwarded (the header your "
                f"proxies write), got {self.forwarded_header!r}"
            )
        for name in PATTERN_SETTINGS:
            for pattern in split_list(getattr(self, name)):
                try:
                    check_pattern(pattern)
                except PatternError as exc:
                    raise SettingsError(f"{name}: {exc}") from None

    def _check_services(self) -> None:
        """Redis, mirror mode, typed streams, presence, webhooks, TLS, logging."""
        if self.redis_url and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://", "redis-sentinel://")
        ):
            raise SettingsError(
                f"redis_url must start with redis://, rediss://, unix:// or "
                f"redis-sentinel://, got {self.redis_url!r}"
            )
        if self.persistence not in ("interval", "always", "never", "off"):
            raise SettingsError(
                f"persistence must be interval, always, never or off, got {self.persistence!r}"
            )
        if self.upstream:
            self._check_upstream()
        if self.schemas and (":" not in self.schemas or self.schemas.startswith(":")):
            raise SettingsError(
                f"schemas must be module:attribute (e.g. myapp.events:streams), got "
                f"{self.schemas!r}"
            )
        if (self.jwt_secret or self.jwt_public_key_file or self.jwt_jwks_file) and not _has_pyjwt():
            raise SettingsError(NO_PYJWT)
        if self.webhook_urls:
            for url in split_list(self.webhook_urls):
                if not url.startswith(("http://", "https://")):
                    raise SettingsError(f"webhook_urls: {url!r} is no http:// or https:// URL")
            if len(self.webhook_secret) < 16:
                raise SettingsError(
                    "webhooks are signed: give webhook_secret, at least 16 characters "
                    "(--webhook-secret or SSE_FAST_WEBHOOK_SECRET)"
                )
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise SettingsError(
                "HTTPS needs both ssl_certfile and ssl_keyfile (--ssl-certfile cert.pem "
                "--ssl-keyfile key.pem)"
            )
        for name in ("ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path and not os.access(path, os.R_OK):
                raise SettingsError(
                    f"{name}: cannot read {path!r} (no such file, or no permission)"
                )
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise SettingsError(
                f"log_level must be debug, info, warning or error, got {self.log_level!r}"
            )

    def _check_upstream(self) -> None:
        url = urllib.parse.urlsplit(self.upstream)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise SettingsError(
                f"upstream must be an http:// or https:// URL of an SSE stream, "
                f"got {self.upstream!r}"
            )
        if not self.upstream_topic:
            named = urllib.parse.parse_qs(url.query).get("topic", [])
            if len(named) != 1:
                raise SettingsError(
                    "mirror mode needs the local topic to publish upstream events to: "
                    "pass --upstream-topic (or --topic with sse-fast mirror); it can be left "
                    "out only when the upstream URL has exactly one topic= parameter"
                )
            # resolved once, as the settings are built (they are frozen then)
            object.__setattr__(self, "upstream_topic", named[0])
        if not TOPIC_NAME.fullmatch(self.upstream_topic) or (
            len(self.upstream_topic) > self.max_topic_length
        ):
            raise SettingsError(
                f"upstream_topic {self.upstream_topic!r} is not a valid topic name "
                f"(at most {self.max_topic_length} of the characters {TOPIC_CHARACTERS})"
            )
        if self.upstream_transform and ":" not in self.upstream_transform:
            raise SettingsError(
                f"upstream_transform must be module:callable, got {self.upstream_transform!r}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``SSE_FAST_*`` variables, then ``overrides`` (not None)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _convert(f, raw, source=ENV_PREFIX + f.name.upper())
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The settings as ``SSE_FAST_*`` variables (how ``serve`` hands them to workers)."""
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            env[ENV_PREFIX + f.name.upper()] = (
                ("1" if value else "0") if isinstance(value, bool) else str(value)
            )
        return env

    def handed(self, handoff: Handoff) -> Settings:
        """These settings with ``handoff``'s fields: what serve's workers read back."""
        return dataclasses.replace(self, **dataclasses.asdict(handoff))

    def as_dict(self) -> dict[str, Any]:
        """Every setting by name (``dataclasses.asdict``)."""
        return dataclasses.asdict(self)


#: Variables with the prefix that are not settings: read at build and import time.
OTHER_VARIABLES = frozenset({"SSE_FAST_NO_EXTENSIONS", "SSE_FAST_CYTHON_TRACE"})


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """``SSE_FAST_*`` variables that set nothing (a misspelt name is otherwise
    ignored silently), each with the closest real name when there is one."""
    environ = os.environ if environ is None else environ
    known = {ENV_PREFIX + f.name.upper() for f in fields(Settings)} | OTHER_VARIABLES
    suffixes = [k[len(ENV_PREFIX) :] for k in sorted(known)]
    out = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in known:
            close = difflib.get_close_matches(name[len(ENV_PREFIX) :], suffixes, n=1, cutoff=0.8)
            out.append(f"{name} (did you mean {ENV_PREFIX}{close[0]}?)" if close else name)
    return out


def _convert(f: dataclasses.Field[Any], raw: str, source: str) -> Any:
    kind = (
        f.type
        if isinstance(f.type, type)
        else {"int": int, "float": float, "str": str, "bool": bool}[f.type]
    )
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{source}={raw!r} is not a valid {kind.__name__}") from None


def available_memory() -> tuple[int, str]:
    """The memory this process may use: its cgroup's limit (a container's) when
    there is one below the machine's, else the machine's; and which it was."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < physical:
            return int(text), "the cgroup's memory limit"
    return physical, "the machine's memory"


def history_budget(settings: Settings) -> tuple[int, str]:
    """The bytes of history one worker keeps (``max_history_bytes``, or its
    default), and how that figure was chosen."""
    if settings.max_history_bytes:
        return settings.max_history_bytes, "max_history_bytes"
    memory, source = available_memory()
    budget = max(settings.ring_max_bytes, memory // 4 // max(1, settings.workers))
    return budget, (
        f"a quarter of {memory / 2**30:.1f} GiB ({source}) over {settings.workers} "
        "worker(s); set max_history_bytes to choose"
    )
