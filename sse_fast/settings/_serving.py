"""The settings' sections about serving clients: where and how the server
listens, its streams and their history, what one client or request may do, and
who may publish, subscribe and read the operations endpoints.

Each field is documented where it is declared (``metadata=_doc(...)``): that
line is its entry in ``sse-fast serve --help`` and on the options page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def _doc(text: str, **extra: Any) -> dict[str, Any]:
    return {"doc": text, **extra}


@dataclass(frozen=True)
class ListeningSettings:
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
    scheduling: str = field(
        default="batch",
        metadata=_doc(
            "Linux scheduling policy of the server's processes and threads: batch "
            "(SCHED_BATCH, unless started under another policy than the default: a woken "
            "thread does not preempt, so the event loop hands a flush's writes to Granian's "
            "I/O thread without a context switch per write; single POSTs/s 1.3-1.5x on a busy "
            "core, but other processes on the server's cores now win it on waking) or normal "
            "(the policy it was started with)"
        ),
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
class StreamSettings:
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
    compression: str = field(
        default="topics",
        metadata=_doc(
            "compress event streams whose request asks for it (Accept-Encoding): 'topics' "
            "= streams of one topic, each topic's bytes compressed once for all its "
            "subscribers; 'all' = streams of several topics and patterns too, each with a "
            "compressor of its own (never one that mixes a private topic with others); "
            "'off'"
        ),
    )
    compression_context: str = field(
        default="topic",
        metadata=_doc(
            "what a stream of one topic is compressed with: 'topic' = its topic's shared "
            "compressor from 8 subscribers on (independent writes below); 'event' = each "
            "write alone (no compressor kept, the lowest ratio); 'stream' = a compressor "
            "of its own (the best ratio for a topic of one subscriber; about 23 KB of "
            "memory per stream with gzip, 60 KB with zstd)"
        ),
    )
    compression_codings: str = field(
        default="zstd,gzip,deflate",
        metadata=_doc(
            "content codings offered, preferred first (zstd needs the zstandard package: "
            "left out without it)"
        ),
    )


@dataclass(frozen=True)
class LimitSettings:
    """What one client or request may do: sizes, timeouts, connections, rates."""

    max_topics_per_connection: int = field(
        default=16, metadata=_doc("topics one subscription may name")
    )
    max_topic_length: int = field(default=200, metadata=_doc("characters in a topic name"))
    max_stream_patterns: int = field(
        default=8,
        metadata=_doc(
            "topic patterns (with * or ?) one subscription may name, among its topics; "
            "0 refuses pattern subscriptions"
        ),
    )
    max_pattern_length: int = field(
        default=200, metadata=_doc("characters in a subscription's topic pattern")
    )
    max_pattern_wildcards: int = field(
        default=4, metadata=_doc("wildcards (* and ?) in a subscription's topic pattern")
    )
    pattern_literal_segments: int = field(
        default=1,
        metadata=_doc(
            "whole segments a subscription pattern must start with before its first "
            "wildcard ('user/*' has one); 0 allows '*' alone, every topic"
        ),
    )
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
class AccessSettings:
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
