"""The composition root of ``sse-fast serve``: where the server is put together.

Theory of operation
-------------------
The settings say what the server is (``settings.Settings``, frozen once built);
this module decides, from them alone, what runs.

* The broker of a worker is ``broker_for(settings)``, one function of the
  settings: Redis when ``redis_url`` is set; else the multi-worker relay when
  serve handed the workers its socket (``relay_socket``); else the local broker,
  on the data directory serve locked (``store_dir``: durable history) or in
  memory. Mirror mode changes no broker: one worker reads upstream and publishes
  through it (the lock that elects it is ``upstream_lock``).
* The supervising process (``serve``) checks what can be checked before any
  worker exists (``startup.py``), locks the data directory, starts the relay
  when several workers need one, and hands its decisions to the workers as one
  frozen ``settings.Handoff`` inside the settings they read back from
  ``SSE_FAST_*`` variables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .brokers import Broker
    from .settings import Settings

__all__ = ["RELAY_JOIN_LIMIT", "broker_for"]

#: seconds a starting worker under serve waits for the relay (its supervisor stops the
#: server sooner if the relay cannot start)
RELAY_JOIN_LIMIT = 3600.0


def broker_for(settings: Settings) -> Broker:
    """The broker a worker with ``settings`` publishes through: ``RedisBroker``
    (``redis_url``), ``RelayBroker`` (``relay_socket``, handed by serve), or
    ``LocalBroker``, durable on ``store_dir`` (handed by serve) or in memory."""
    if settings.redis_url:
        from .brokers.redis import RedisBroker

        return RedisBroker(
            settings.redis_url,
            prefix=settings.redis_prefix,
            history_frames=settings.redis_history_frames,
            history_age=settings.redis_history_age,
            probe_interval=settings.redis_probe_interval,
            wait_replicas=settings.redis_wait_replicas,
            load_frames=settings.ring_max_frames,
            node=settings.node_name or None,
            workers=settings.workers,
        )
    if settings.relay_socket:
        from .brokers.relay import RelayBroker

        # under serve the relay starts beside the workers, restoring history too:
        # its supervisor, not this wait, says when it failed (``startup.py``)
        return RelayBroker(
            settings.relay_socket,
            store_dir=settings.store_dir,
            connect_timeout=RELAY_JOIN_LIMIT if settings.start_failure_file else 10.0,
        )
    from .brokers.local import LocalBroker

    if settings.store_dir:
        from .brokers.durable import EventLog, log_options

        return LocalBroker(EventLog(**log_options(settings)))
    return LocalBroker()
