"""What a failed Redis command means for a publish: one table from redis-py's
exceptions to the answer the publisher gets, and to what the broker does next.

Theory of operation
-------------------
A publisher gets a 400 only for an event the scripts refuse (``sse_fast:`` in
the error: its fault, retrying cannot help). Everything else Redis can say is
a 503 with ``Retry-After``, never a 500: the publisher retries, and the ids of
its events (or the ``x...`` id an event over several partitions gets) make a
retry harmless. Besides the answer, ``classify`` says what the failure means to
the broker:

* ``unanswered``: the Redis (a shard, a Cluster master) did not answer (refused,
  reset, timed out): mark it down, so that further publishes to it are refused
  at once instead of after a timeout, until a probe or a resync gets an answer;
  the publish may or may not have been published, and the answer says so.
* ``rehome``: the partition is no longer where the broker sent it (``MOVED``,
  ``ASK``, ``READONLY`` from a master demoted by a failover): read the slot map
  again (``_cluster.Topology.refresh``) and move that partition's subscription.
* ``ours``: Redis refused the keys themselves (``CROSSSLOT``, a key of another
  slot, redis-py's "all keys must map to the same key slot"): sse-fast's bug,
  to be logged as an error with the keys; the publisher still gets a 503.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterCrossSlotError,
    ClusterDownError,
    ClusterError,
    MasterDownError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...publishing import PublishError

__all__ = ["RETRY_AFTER", "Failure", "classify", "unavailable"]

#: seconds a publisher refused with 503 is told to wait (``Retry-After``)
RETRY_AFTER = 1.0

_MAYBE = (
    "the publish may or may not have been published (retry it: events with ids are "
    "recognised and not published twice)"
)


@dataclass(frozen=True)
class Failure:
    """A failed command: the publisher's answer (``error``) and what it means to the broker."""

    error: PublishError
    #: the Redis did not answer: mark it down until it does
    unanswered: bool = False
    #: the partition moved to another node: read the slot map again
    rehome: bool = False
    #: Redis refused the keys: a bug of sse-fast, to be logged
    ours: bool = False


def unavailable(why: str) -> PublishError:
    """The 503 that refuses a publish or a stream while Redis is away."""
    return PublishError(
        f"Redis unavailable ({why}); try again shortly", status=503, retry_after=RETRY_AFTER
    )


def _busy(message: str, **flags: bool) -> Failure:
    return Failure(PublishError(message, status=503, retry_after=RETRY_AFTER), **flags)


def classify(exc: BaseException, where: str = "Redis") -> Failure | None:
    """What ``exc`` (raised by a command to ``where``: "Redis", "Redis shard 2 of 3 (...)",
    "the Redis Cluster master 10.0.0.5:6379 of partition 17") means; None for an exception
    that is not Redis's (let it propagate)."""
    text = str(exc)
    if isinstance(exc, ResponseError) and "sse_fast:" in text:
        return Failure(PublishError(text))  # the event is refused: 400
    if isinstance(exc, ClusterCrossSlotError) or (
        isinstance(exc, (ResponseError, RedisClusterException))
        and ("non local key" in text or "must map to the same key slot" in text)
    ):
        return _busy(
            f"{where} refused the publish's keys ({text}): a bug of sse-fast, logged on the "
            "server; nothing was published",
            ours=True,
        )
    if isinstance(exc, AskError):  # MOVED too (a subclass)
        return _busy(f"{where} no longer holds this partition ({text}); try again", rehome=True)
    if isinstance(exc, ReadOnlyError):
        return _busy(f"{where} became a replica (a failover); try again", rehome=True)
    if isinstance(exc, MasterDownError):
        return _busy(f"{where} lost its link with its master ({text}); try again shortly")
    if isinstance(exc, ClusterDownError):
        return _busy(
            f"the Redis Cluster says CLUSTERDOWN ({text}): it lost every copy of some slots, "
            "or a master failed with cluster-require-full-coverage yes; try again shortly"
        )
    if isinstance(exc, (TryAgainError, SlotNotCoveredError)) or (
        isinstance(exc, ClusterError) and "TTL exhausted" in text
    ):
        return _busy(f"{where}: the partition is being moved between nodes ({text}); try again")
    if isinstance(exc, BusyLoadingError):
        return _busy(f"{where} is loading its data; try again shortly")
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError)):
        return _busy(f"{where} did not answer ({exc}): {_MAYBE}", unanswered=True)
    if isinstance(exc, NoScriptError):
        return _busy(f"{where} lost the scripts ({text}); try again")
    if isinstance(exc, (RedisError, RedisClusterException)):
        return _busy(f"{where} refused the publish ({type(exc).__name__}: {text}); try again")
    return None
