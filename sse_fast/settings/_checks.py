"""The settings' checks: what each setting accepts, as tables where they are
simple (``POSITIVE``, ``NON_NEGATIVE``, ``RANGES``, ``PATTERN_SETTINGS``; the
options page prints them) and as code where they are not (addresses, URLs,
mirror mode, TLS files). ``check`` runs them all as ``Settings`` is built and
raises ``SettingsError`` naming the first setting that cannot be used.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import urllib.parse
from typing import TYPE_CHECKING

from .._core.request import TOPIC_CHARACTERS, TOPIC_NAME
from .._patterns import PatternError, check_pattern
from .._scheduling import SCHEDULING
from ._cluster_url import parse_cluster_url
from ._services import CLUSTER_SCHEMES, MAX_REDIS_PARTITIONS

if TYPE_CHECKING:
    from types import ModuleType

    from ._serving import AccessSettings
    from ._settings import Settings

#: what a JWT setting without PyJWT installed is told (the core install has no PyJWT)
NO_PYJWT = (
    "JWT authentication needs PyJWT, which is not installed: "
    "pip install 'sse_fast[server]' (or 'pyjwt[crypto]')"
)


def jwt_configured(settings: AccessSettings) -> bool:
    """Whether ``settings`` give a JWT key (a secret, a public key or a JWKS)."""
    return bool(settings.jwt_secret or settings.jwt_public_key_file or settings.jwt_jwks_file)


def pyjwt() -> ModuleType:
    """PyJWT, imported on first need: it brings cryptography (45-57 ms of a server's
    start, ``python -X importtime -c 'import jwt'``), which a server that takes no JWT
    never needs. ``SettingsError`` naming the extra where it is not installed."""
    try:
        import jwt
    except ImportError:  # the core install: JWTs need the server extra
        raise SettingsError(NO_PYJWT) from None
    return jwt


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names it."""


SettingsError.__module__ = "sse_fast.settings"  # its public name, for pickle and logs


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
    "max_pattern_length",
    "max_pattern_wildcards",
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
    "max_stream_patterns",
    "pattern_literal_segments",
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


def check(settings: Settings) -> None:
    """Raise ``SettingsError`` naming the first setting of ``settings`` that cannot
    be used; resolve ``upstream_topic`` from the upstream URL when it is left out."""
    _check_signs(settings)
    _check_limits(settings)
    _check_listening(settings)
    _check_proxies_and_patterns(settings)
    _check_services(settings)


def _check_signs(settings: Settings) -> None:
    for name in POSITIVE:
        if getattr(settings, name) <= 0:
            raise SettingsError(f"{name} must be positive, got {getattr(settings, name)!r}")
    for name in NON_NEGATIVE:
        if getattr(settings, name) < 0:
            raise SettingsError(f"{name} must not be negative, got {getattr(settings, name)!r}")


def _check_limits(settings: Settings) -> None:
    if 0 < settings.max_history_bytes < settings.ring_max_bytes:
        raise SettingsError(
            f"max_history_bytes ({settings.max_history_bytes}) must be at least ring_max_bytes "
            f"({settings.ring_max_bytes}), one topic's history; or 0 for the default"
        )
    for name, (least, most, why) in RANGES.items():
        value = getattr(settings, name)
        if least is not None and value < least:
            raise SettingsError(f"{name} must be at least {least:g} ({why}), got {value!r}")
        if most is not None and value > most:
            raise SettingsError(f"{name} must be at most {most:g} ({why}), got {value!r}")


def _check_listening(settings: Settings) -> None:
    if settings.scheduling not in SCHEDULING:
        raise SettingsError(
            f"scheduling must be batch or normal, got {settings.scheduling!r} (batch: the "
            "default, SCHED_BATCH; normal: the policy it was started with)"
        )
    if settings.http not in ("1", "2", "auto"):
        raise SettingsError(f"http must be 1, 2 or auto, got {settings.http!r}")
    if settings.compression not in ("topics", "all", "off"):
        raise SettingsError(f"compression must be topics, all or off, got {settings.compression!r}")
    if settings.compression_context not in ("topic", "event", "stream"):
        raise SettingsError(
            "compression_context must be topic, event or stream, got "
            f"{settings.compression_context!r}"
        )
    known = ("zstd", "gzip", "deflate")
    codings = split_list(settings.compression_codings)
    for name in codings:
        if name not in known:
            raise SettingsError(
                f"compression_codings: {name!r} is not a coding this server has (it has "
                f"{', '.join(known)})"
            )
    if settings.compression != "off" and codings == ("zstd",) and not _has_zstandard():
        raise SettingsError(
            "compression_codings: zstd needs the zstandard package, which is not installed: "
            "pip install 'sse_fast[zstd]', or offer gzip too (zstd,gzip), or set compression off"
        )
    if settings.compression != "off" and not codings:
        raise SettingsError(
            "compression_codings is empty: name one coding at least (zstd,gzip,deflate), "
            "or set compression off"
        )
    for network in split_list(settings.ops_networks):
        if network:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise SettingsError(
                    f"ops_networks: {network.strip()!r} is not a network "
                    "(e.g. 10.0.0.0/8 or 127.0.0.1)"
                ) from None


def _check_proxies_and_patterns(settings: Settings) -> None:
    for network in split_list(settings.trusted_proxies):
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise SettingsError(
                f"trusted_proxies: {network!r} is not an address or network "
                "(e.g. 10.0.0.5 or 10.0.0.0/8)"
            ) from None
    if settings.forwarded_header not in ("x-forwarded-for", "forwarded"):
        raise SettingsError(
            "forwarded_header must be x-forwarded-for or forwarded (the header your "
            f"proxies write), got {settings.forwarded_header!r}"
        )
    for name in PATTERN_SETTINGS:
        for pattern in split_list(getattr(settings, name)):
            try:
                check_pattern(pattern)
            except PatternError as exc:
                raise SettingsError(f"{name}: {exc}") from None


def _check_redis(settings: Settings) -> None:
    """The Redis URLs (one, or shards) and the partitions."""
    urls = settings.redis_urls
    for url in urls:
        if url.startswith(CLUSTER_SCHEMES):
            _check_cluster_url(url, urls)
            continue
        if not url.startswith(("redis://", "rediss://", "unix://", "redis-sentinel://")):
            raise SettingsError(
                f"redis_url must start with redis://, rediss://, unix://, redis-sentinel:// or "
                f"redis-cluster://, got {url!r}"
            )
    repeated = sorted({url for url in urls if urls.count(url) > 1})
    if repeated:
        raise SettingsError(
            f"redis_url: {repeated[0]!r} is given twice: each shard is one Redis, given once"
        )
    partitions = settings.redis_partitions
    if not 0 <= partitions <= MAX_REDIS_PARTITIONS:
        raise SettingsError(
            f"redis_partitions must be 0 (the default for the URLs given) or 1 to "
            f"{MAX_REDIS_PARTITIONS}, got {partitions}"
        )
    if len(urls) > 1 and 0 < partitions < len(urls):
        raise SettingsError(
            f"redis_partitions {partitions} with {len(urls)} shards: a shard would hold no "
            f"partition; give at least {len(urls)} (the default with shards is 128)"
        )
    if settings.redis_partition_count > 1 and (
        "{" in settings.redis_prefix or "}" in settings.redis_prefix
    ):
        raise SettingsError(
            f"redis_prefix {settings.redis_prefix!r}: with partitions, choose one without '{{' "
            "or '}' (Redis Cluster would hash the text between braces, not the partition's tag)"
        )


def _check_cluster_url(url: str, urls: tuple[str, ...]) -> None:
    """A Redis Cluster URL: alone, and its seeds readable."""
    if len(urls) > 1:
        raise SettingsError(
            f"redis_url {url!r}: a Redis Cluster is given alone, as one URL with its seed "
            "nodes separated by commas (redis-cluster://host:6379,host2:6379), not beside "
            "other Redis URLs"
        )
    try:
        parse_cluster_url(url)
    except ValueError as exc:
        raise SettingsError(f"redis_url: {exc}") from None


def _check_services(settings: Settings) -> None:
    """Redis, mirror mode, typed streams, presence, webhooks, TLS, logging."""
    if settings.redis_url:
        _check_redis(settings)
    if settings.persistence not in ("interval", "always", "never", "off"):
        raise SettingsError(
            f"persistence must be interval, always, never or off, got {settings.persistence!r}"
        )
    if settings.upstream:
        _check_upstream(settings)
    if settings.schemas and (":" not in settings.schemas or settings.schemas.startswith(":")):
        raise SettingsError(
            f"schemas must be module:attribute (e.g. myapp.events:streams), got "
            f"{settings.schemas!r}"
        )
    if jwt_configured(settings):
        pyjwt()  # installed, or said now
    if settings.webhook_urls:
        for url in split_list(settings.webhook_urls):
            if not url.startswith(("http://", "https://")):
                raise SettingsError(f"webhook_urls: {url!r} is no http:// or https:// URL")
        if len(settings.webhook_secret) < 16:
            raise SettingsError(
                "webhooks are signed: give webhook_secret, at least 16 characters "
                "(--webhook-secret or SSE_FAST_WEBHOOK_SECRET)"
            )
    if bool(settings.ssl_certfile) != bool(settings.ssl_keyfile):
        raise SettingsError(
            "HTTPS needs both ssl_certfile and ssl_keyfile (--ssl-certfile cert.pem "
            "--ssl-keyfile key.pem)"
        )
    for name in ("ssl_certfile", "ssl_keyfile"):
        path = getattr(settings, name)
        if path and not os.access(path, os.R_OK):
            raise SettingsError(f"{name}: cannot read {path!r} (no such file, or no permission)")
    if settings.log_level not in ("debug", "info", "warning", "error"):
        raise SettingsError(
            f"log_level must be debug, info, warning or error, got {settings.log_level!r}"
        )


def _check_upstream(settings: Settings) -> None:
    url = urllib.parse.urlsplit(settings.upstream)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise SettingsError(
            f"upstream must be an http:// or https:// URL of an SSE stream, "
            f"got {settings.upstream!r}"
        )
    if not settings.upstream_topic:
        named = urllib.parse.parse_qs(url.query).get("topic", [])
        if len(named) != 1:
            raise SettingsError(
                "mirror mode needs the local topic to publish upstream events to: "
                "pass --upstream-topic (or --topic with sse-fast mirror); it can be left "
                "out only when the upstream URL has exactly one topic= parameter"
            )
        # resolved once, as the settings are built (they are frozen then)
        object.__setattr__(settings, "upstream_topic", named[0])
    if not TOPIC_NAME.fullmatch(settings.upstream_topic) or (
        len(settings.upstream_topic) > settings.max_topic_length
    ):
        raise SettingsError(
            f"upstream_topic {settings.upstream_topic!r} is not a valid topic name "
            f"(at most {settings.max_topic_length} of the characters {TOPIC_CHARACTERS})"
        )
    if settings.upstream_transform and ":" not in settings.upstream_transform:
        raise SettingsError(
            f"upstream_transform must be module:callable, got {settings.upstream_transform!r}"
        )


def _has_zstandard() -> bool:
    """Whether the zstd coding can be offered (``zstandard`` is installed)."""
    return importlib.util.find_spec("zstandard") is not None
