"""``Settings``: the sections put together into one frozen value, checked as it
is built, read from and written to the environment; and the check of the
environment for variables that set nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from ._checks import check
from ._environment import as_variables, misspelt, read_variables
from ._handoff import Handoff
from ._services import BrokerSettings, FeatureSettings, RelayModeSettings, StorageSettings
from ._serving import AccessSettings, LimitSettings, ListeningSettings, StreamSettings


@dataclass(frozen=True)
class Settings(
    RelayModeSettings,
    StorageSettings,
    BrokerSettings,
    FeatureSettings,
    AccessSettings,
    LimitSettings,
    StreamSettings,
    ListeningSettings,
):
    """Every setting of the server, by section (the bases, listed here in reverse:
    a dataclass takes the fields of its last base first); ``sse-fast serve --help``
    lists them in that order. Frozen once built: another value is another
    ``Settings`` (``dataclasses.replace``), checked again. What serve decides for
    its workers is no setting: ``Handoff``, handed beside them.

    Each section is also a value of its own (``settings.limits``, a ``LimitSettings``
    with the same fields, ...): a part is given the sections it reads, never the
    whole (``app/_worker.py`` and ``Hub`` put the parts together)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``SettingsError`` naming the first setting that cannot be used."""
        check(self)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``SSE_FAST_*`` variables, then ``overrides`` (not None)."""
        environ = os.environ if environ is None else environ
        values = read_variables(fields(cls), environ)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The settings as ``SSE_FAST_*`` variables (how ``serve`` hands them to workers)."""
        return as_variables(self)

    def as_dict(self) -> dict[str, Any]:
        """Every setting by name (``dataclasses.asdict``)."""
        return dataclasses.asdict(self)

    # ---------------------------------------------------------------- the sections

    @functools.cached_property
    def listening(self) -> ListeningSettings:
        """Where and how the server listens."""
        return _section(self, ListeningSettings)

    @functools.cached_property
    def streams(self) -> StreamSettings:
        """Streams and their history."""
        return _section(self, StreamSettings)

    @functools.cached_property
    def limits(self) -> LimitSettings:
        """What one client or request may do."""
        return _section(self, LimitSettings)

    @functools.cached_property
    def access(self) -> AccessSettings:
        """Who may publish, subscribe and read the operations endpoints."""
        return _section(self, AccessSettings)

    @functools.cached_property
    def features(self) -> FeatureSettings:
        """Typed streams, presence and webhooks."""
        return _section(self, FeatureSettings)

    @functools.cached_property
    def brokers(self) -> BrokerSettings:
        """Several workers and several nodes: the relay, Redis."""
        return _section(self, BrokerSettings)

    @functools.cached_property
    def storage(self) -> StorageSettings:
        """The data directory: durable history."""
        return _section(self, StorageSettings)

    @functools.cached_property
    def relay_mode(self) -> RelayModeSettings:
        """Mirror mode: another server's streams relayed."""
        return _section(self, RelayModeSettings)


_S = TypeVar("_S")


def _section(settings: Settings, section: type[_S]) -> _S:
    """``settings``' fields of ``section``, as a value of that class alone."""
    return section(**{f.name: getattr(settings, f.name) for f in fields(section)})  # type: ignore[arg-type]


# their public names, for pickle, logs and reprs
for _public in (
    Settings,
    ListeningSettings,
    StreamSettings,
    LimitSettings,
    AccessSettings,
    FeatureSettings,
    BrokerSettings,
    StorageSettings,
    RelayModeSettings,
):
    _public.__module__ = "sse_fast.settings"


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """``SSE_FAST_*`` variables that set nothing (a misspelt name is otherwise
    ignored silently), each with the closest real name when there is one."""
    return misspelt(
        os.environ if environ is None else environ, [*fields(Settings), *fields(Handoff)]
    )
