"""Partitions: how a fleet's topics are split over Redis shards or a Redis Cluster.

Theory of operation
-------------------
*Partitions.* A layout has ``N`` partitions (1 to ``MAX_PARTITIONS``), each a
sequence of its own (position, epoch, floor, retry memory); a topic's is
``fnv1a64(utf8(topic)) % N`` (``partition_of``), the same in any language.
``N = 1`` on one Redis keeps today's keys (``_scripts.sequence_keys``).

*Tags.* Every key of partition ``p`` carries one Redis Cluster hash tag, so
that a script touches one slot (no CROSSSLOT): ``cluster_tags(N)[p]``, the first
of ``"p"``, ``"p.1"``, ``"p.2"``, ... whose slot lies in the ``p``-th of ``N``
even slot ranges (``slot_range``). A cluster made by ``redis-cli --cluster
create`` (contiguous even ranges) so holds an even share. The table depends on
``N`` only: the same keys on a Cluster, on shards and on one Redis. A slot is
CRC16-XMODEM of the key (or of its hash tag) modulo 16384 (``key_slot``). On
shards, partition ``p`` lives on shard ``p % S`` of the ``S`` URLs (``shard_of``).

*Keys* (``partition_keys(prefix, tag)``): ``P{T}:position``, ``P{T}:epoch``,
``P{T}:floor`` (a script's first KEYS), a topic's stream ``P{T}:t:<topic>`` and
channel ``P{T}:c:<topic>``, retry memory ``P{T}:r:<id bytes>:<id>:<topics>``,
presence ``P{T}:p:<topic>``, a pub/sub connection's probe channel
``P{T}:n:<member>``. A prefix with ``{`` or ``}`` is refused: it would be the tag.

*Layout.* Every shard (and a Cluster, in a slot of its own) holds a ``Layout``
record at ``layout_key(prefix)``, as JSON: format, kind (single, shards,
cluster), partitions, shard count, the shard's own index, a layout id shared by
all its shards, when and by which node it was made. At start a node compares
each record with its configuration (``layout_refusal``); any difference (kind,
partition or shard count, a shard's place in the URL list, shards of two
layouts, a Redis holding a one-sequence fleet's ``sse:position``) is refused
with one sentence: nodes that disagree publish into keys the others never read.
"""

from __future__ import annotations

import binascii
import json
import os
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import lru_cache

from ...settings._services import MAX_REDIS_PARTITIONS

__all__ = [
    "MAX_PARTITIONS",
    "SLOTS",
    "Layout",
    "PartitionKeys",
    "check_partitions",
    "check_prefix",
    "cluster_tags",
    "crc16",
    "fnv1a64",
    "key_slot",
    "layout_key",
    "layout_refusal",
    "new_layout",
    "partition_keys",
    "partition_of",
    "shard_of",
    "slot_range",
]

#: the number of Redis Cluster hash slots
SLOTS = 16384
#: the most partitions a layout may have (each then spans 16 slots)
MAX_PARTITIONS = MAX_REDIS_PARTITIONS
_FORMAT = 1  # the layout record's format version this module writes and reads
_DOCS = "docs/operations/redis.md"


def fnv1a64(data: bytes | str) -> int:
    """FNV-1a, 64 bits, of ``data`` (a string is hashed as its UTF-8 bytes)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    h = 0xCBF29CE484222325  # the offset basis; then the prime, 64 bits
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def check_partitions(count: int) -> int:
    """``count`` if it is a valid partition count, else ``ValueError`` saying what to give."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_PARTITIONS:
        one = "1 keeps one sequence, as on one Redis today; shards or a Cluster default to 128"
        raise ValueError(f"--redis-partitions {count!r}: give 1 to {MAX_PARTITIONS} ({one})")
    return count


def check_prefix(prefix: str) -> str:
    """``prefix`` if it can prefix partitioned keys, else ``ValueError`` saying why not."""
    if "{" in prefix or "}" in prefix:
        tag = "Redis Cluster would hash the text between braces, not the partition's tag"
        raise ValueError(f"--redis-prefix {prefix!r}: choose one without '{{' or '}}' ({tag})")
    return prefix


def partition_of(topic: str, partitions: int) -> int:
    """The partition of ``topic`` among ``partitions``: FNV-1a 64 of its UTF-8 bytes, modulo."""
    return fnv1a64(topic) % check_partitions(partitions)


def shard_of(partition: int, shards: int) -> int:
    """The index (in the URL list) of the shard that holds ``partition``: ``partition % shards``."""
    if shards < 1 or partition < 0:
        raise ValueError(f"shard_of({partition}, {shards}): a partition >= 0 and shards >= 1")
    return partition % shards


def crc16(data: bytes) -> int:
    """CRC16-XMODEM (polynomial 0x1021, initial 0), Redis Cluster's: ``binascii.crc_hqx``."""
    return binascii.crc_hqx(data, 0)


def key_slot(key: bytes | str) -> int:
    """The Redis Cluster slot of ``key``: CRC16 of its hash tag (the text between its first ``{``
    and the first ``}`` after it, when not empty), else of the whole key, modulo 16384."""
    if isinstance(key, str):
        key = key.encode("utf-8")
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return crc16(key) % SLOTS


def slot_range(partition: int, partitions: int) -> range:
    """The slots of the ``partition``-th of ``partitions`` even slot ranges."""
    if not 0 <= partition < check_partitions(partitions):
        raise ValueError(f"partition {partition} is not one of 0 to {partitions - 1}")
    return range(partition * SLOTS // partitions, (partition + 1) * SLOTS // partitions)


@lru_cache(maxsize=8)
def cluster_tags(partitions: int) -> tuple[str, ...]:
    """Each partition's hash tag: the first of ``"p"``, ``"p.1"``, ``"p.2"``, ... whose slot lies
    in ``slot_range(p, partitions)``."""
    tags = []
    for p in range(check_partitions(partitions)):
        slots, k = slot_range(p, partitions), 0
        while crc16((tag := f"{p}.{k}" if k else str(p)).encode()) % SLOTS not in slots:
            k += 1
        tags.append(tag)
    return tuple(tags)


@dataclass(frozen=True)
class PartitionKeys:
    """The key and channel names of one partition (``partition_keys``): ``tagged`` (``P{T}:``,
    which every name starts with), and the keys ``position`` (the newest position handed out),
    ``epoch`` (its dataset's epoch) and ``floor`` (what its history starts after)."""

    tagged: str
    position: str
    epoch: str
    floor: str

    @property
    def sequence(self) -> list[str]:
        """A script's first KEYS: position, epoch, floor."""
        return [self.position, self.epoch, self.floor]

    @property
    def directory(self) -> list[str]:
        """The partition's directory of topics (pattern streams): ``names`` (a sorted set read
        by prefix) and ``births`` (topics by the position of their birth)."""
        return [f"{self.tagged}names", f"{self.tagged}births"]

    @property
    def born(self) -> str:
        """Where the partition's births are told, ``<position> <topic>`` (SPUBLISH on a
        Cluster), before the event itself."""
        return f"{self.tagged}born"

    def stream(self, topic: str) -> str:
        """The Stream holding ``topic``'s history."""
        return f"{self.tagged}t:{topic}"

    def channel(self, topic: str) -> str:
        """``topic``'s pub/sub channel (SPUBLISH on a Cluster: same slot as the keys)."""
        return f"{self.tagged}c:{topic}"

    def retry(self, event_id: str, topics: list[str] | tuple[str, ...]) -> str:
        """The retry memory of a publisher's ``event_id`` on ``topics`` (of this partition): the
        id's length in bytes first, so that no other (id, topics) pair spells the same key."""
        return f"{self.tagged}r:{len(event_id.encode())}:{event_id}:{' '.join(topics)}"

    def presence(self, topic: str) -> str:
        """``topic``'s presence hash."""
        return f"{self.tagged}p:{topic}"

    def probe(self, member: str) -> str:
        """The probe channel of ``member``'s pub/sub connection to this partition's master."""
        return f"{self.tagged}n:{member}"


def partition_keys(prefix: str, tag: str) -> PartitionKeys:
    """The key names of the partition whose hash tag is ``tag`` (``cluster_tags``), under
    ``prefix`` (``sse:`` by default)."""
    if not tag or "{" in tag or "}" in tag:
        raise ValueError(f"hash tag {tag!r}: give one of cluster_tags(n), not empty, no braces")
    tagged = f"{check_prefix(prefix)}{{{tag}}}:"
    return PartitionKeys(tagged, tagged + "position", tagged + "epoch", tagged + "floor")


def layout_key(prefix: str) -> str:
    """Where the layout record lives (untagged: on a Cluster, a slot of its own)."""
    return check_prefix(prefix) + "layout"


@dataclass(frozen=True)
class Layout:
    """A layout record, or a node's configuration (no ``layout``, ``created``, ``by``): ``kind``
    (single, shards, cluster), ``partitions``, ``shards`` (1 but for shards), ``shard`` (its index
    in the URL list), ``layout`` (16 hex digits shared by the shards), ``created`` (ISO), ``by``."""

    kind: str
    partitions: int
    shards: int = 1
    shard: int = 0
    layout: str = ""
    created: str = ""
    by: str = ""
    format: int = _FORMAT

    def __post_init__(self) -> None:
        if self.kind not in ("single", "shards", "cluster"):
            raise ValueError(f"layout kind {self.kind!r}: one of single, shards, cluster")
        check_partitions(self.partitions)
        if not 0 <= self.shard < self.shards or (self.kind != "shards" and self.shards != 1):
            raise ValueError(f"shard {self.shard} of {self.shards} in a {self.kind} layout")

    def encode(self) -> str:
        """The record as stored in Redis: compact JSON, format first."""
        fields = asdict(self)
        return json.dumps({"format": fields.pop("format"), **fields}, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | bytes) -> Layout:
        """A stored record; ``ValueError`` saying what is wrong with it."""
        try:
            fields = json.loads(text)
            if fields["format"] == _FORMAT:
                return cls(**fields)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"it is not a layout record ({type(exc).__name__}: {exc})") from None
        wrote = f"its format is {fields['format']!r}: a newer sse-fast wrote it; upgrade this node"
        raise ValueError(f"{wrote} (it reads format {_FORMAT})")

    def shape(self) -> str:
        """Kind, shards and partitions in words: ``3 shards, 128 partitions``."""
        size = {"shards": f"{self.shards} shards", "cluster": "a Cluster"}
        return f"{size.get(self.kind, 'one Redis')}, {self.partitions} partitions"

    def describe(self) -> str:
        """The recorded layout in words, for refusals."""
        made = f"created {self.created} by node {self.by or '?'}"
        return f"layout {self.layout} ({self.shape()}, {made})"


def new_layout(kind: str, partitions: int, shards: int = 1, by: str = "") -> Layout:
    """A fresh layout's record for shard 0 (a new layout id, created now, by node ``by``)."""
    created = datetime.now(UTC).isoformat(timespec="seconds")
    return Layout(kind, partitions, shards, 0, os.urandom(8).hex(), created, by)


def layout_refusal(
    recorded: str | bytes | None,
    configured: Layout,
    url: str,
    *,
    layout_id: str | None = None,
    single_sequence: bool = False,
) -> str | None:
    """The sentence to refuse to start with, or ``None``: ``recorded`` is the layout record read
    from the Redis at ``url`` (``None``: it has none), ``configured`` what this node was given for
    it (kind, partitions, shards, shard), ``layout_id`` the id the other shards' records hold,
    ``single_sequence`` whether that Redis holds a one-sequence fleet's ``sse:position``."""
    c = configured
    place = {"shards": f"Redis shard {c.shard + 1} of {c.shards}", "cluster": "the Redis Cluster"}
    shown = re.sub(r"//[^@/]*@", "//", url)  # no password in a sentence
    where = f"{place.get(c.kind, 'Redis')} ({shown}, as given to this node)"
    same = "give every node the same --redis-url list in the same order and the same "
    same += f"--redis-partitions (changing the layout: {_DOCS}#changing-the-layout)"
    partitioned = c.kind != "single" or c.partitions > 1
    lost = f"{'partitioned layouts use' if partitioned else 'one sequence uses'} other keys, so "
    lost += "its history would be invisible: start the new layout on an empty Redis (or a new "
    lost += f"--redis-prefix) and see {_DOCS}#upgrading"
    if recorded is None:
        if single_sequence and partitioned:
            return f"{where} holds a one-sequence fleet's data (sse:position); {lost}"
        return None
    try:
        record = Layout.decode(recorded)
    except ValueError as exc:
        return f"the layout record on {where} cannot be used: {exc}"
    if (record.kind, record.partitions) == ("single", 1) and partitioned:
        return f"{where} holds a one-sequence fleet's data ({record.describe()}); {lost}"
    if record.partitions > 1 and not partitioned:
        return f"{where} holds a partitioned fleet's data ({record.describe()}); {lost}"
    if (record.kind, record.partitions, record.shards) != (c.kind, c.partitions, c.shards):
        given = f"but this node is configured for {c.shape()}"
        return f"{where} is part of {record.describe()}, {given}: {same}"
    if record.shard != c.shard:
        return f"{where} is shard {record.shard + 1} of {record.describe()}: {same}"
    if layout_id is not None and record.layout != layout_id:
        other = f"but the other shards belong to layout {layout_id}: different fleets' data"
        return f"{where} belongs to {record.describe()}, {other}; {same}"
    return None
