"""Server settings: one object, filled from defaults, ``SSE_FAST_*`` environment
variables and command-line flags (flags win over the environment).

Every field is documented where it is declared; ``sse-fast serve --help`` prints
the same text. The environment variable of a field is ``SSE_FAST_`` plus its
name in upper case (``heartbeat_interval`` -> ``SSE_FAST_HEARTBEAT_INTERVAL``).

Theory of operation:

* A setting is a field of one section, a frozen dataclass with its default and
  its line of help; ``Settings`` inherits every section, so its fields, the
  flags of ``sse-fast serve`` and the options page come out in the sections'
  order.
* Each section is also a value of its own: ``settings.listening``,
  ``.streams``, ``.limits``, ``.access``, ``.features``, ``.brokers``,
  ``.storage`` and ``.relay_mode`` are ``ListeningSettings``, ``StreamSettings``,
  ... with the same fields. The parts of a worker are given the sections (or
  the single values) they read, never the whole ``Settings``: only the
  composition roots hold it (``sse-fast serve``, ``app/_worker.py`` and the
  app, and the hub, which makes its own parts; ``tests/test_layout.py`` checks).
* ``Settings`` is checked as it is built, and frozen then: another value is
  another ``Settings``, checked again. A value that cannot be used is a
  ``SettingsError`` naming the setting and what it accepts.
* The hand-off, what ``sse-fast serve`` decides for its workers (the relay's
  socket, the data directory it locked, ...), is no setting: a value of its own,
  ``Handoff``, which the workers read back from the environment beside the
  settings and their app is given whole (``app/_worker.py``).

Where each part is (the modules are private: users import ``Settings``,
``SettingsError`` and the sections' classes from here, the server its own names
from their module):

* ``_serving.py``: the sections about serving clients (listening, streams,
  limits, access);
* ``_services.py``: the sections about what runs beside the streams (typed
  streams, presence and webhooks, brokers, storage, mirror mode);
* ``_handoff.py``: ``Handoff``;
* ``_settings.py``: ``Settings``, the sections put together, and
  ``unknown_variables``;
* ``_checks.py``: the checks, their tables (``POSITIVE``, ``NON_NEGATIVE``,
  ``RANGES``, ``PATTERN_SETTINGS``) and ``SettingsError``;
* ``_cluster_url.py``: the grammar of a Redis Cluster URL (``redis-cluster://``),
  read by the checks and by the Redis broker;
* ``_environment.py``: the ``SSE_FAST_*`` variables, read and written;
* ``_memory.py``: the memory available and the history budget it gives.
"""

from __future__ import annotations

from ._checks import SettingsError
from ._services import BrokerSettings, FeatureSettings, RelayModeSettings, StorageSettings
from ._serving import AccessSettings, LimitSettings, ListeningSettings, StreamSettings
from ._settings import Settings

__all__ = [
    "AccessSettings",
    "BrokerSettings",
    "FeatureSettings",
    "LimitSettings",
    "ListeningSettings",
    "RelayModeSettings",
    "Settings",
    "SettingsError",
    "StorageSettings",
    "StreamSettings",
]
