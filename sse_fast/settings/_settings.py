"""``Settings``: the sections put together into one frozen value, checked as it
is built, read from and written to the environment; and the check of the
environment for variables that set nothing.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ._checks import check
from ._environment import as_variables, misspelt, read_variables
from ._handoff import Handoff
from ._services import _Brokers, _Features, _RelayMode, _Storage
from ._serving import _Access, _Limits, _Listening, _Streams


@dataclass(frozen=True)
class Settings(
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
    ``Settings`` (``dataclasses.replace``), checked again. What serve decides for
    its workers is no setting: ``Handoff``, handed beside them."""

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


Settings.__module__ = "sse_fast.settings"  # its public name, for pickle, logs and reprs


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """``SSE_FAST_*`` variables that set nothing (a misspelt name is otherwise
    ignored silently), each with the closest real name when there is one."""
    return misspelt(
        os.environ if environ is None else environ, [*fields(Settings), *fields(Handoff)]
    )
