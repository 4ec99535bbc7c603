"""Settings from defaults, SSE_FAST_* variables and flags; the CLI's helpers."""

from __future__ import annotations

from typing import Any

import pytest

from sse_fast._compose import connection_capacity
from sse_fast._flags import build_parser
from sse_fast.cli import main
from sse_fast.settings import Settings, SettingsError


def test_defaults_fit_an_sse_edge() -> None:
    settings = Settings()
    assert (settings.port, settings.heartbeat_interval, settings.workers) == (8000, 15.0, 1)
    assert settings.http1_buffer_size == 8192 and settings.http == "1"


def test_environment_then_overrides() -> None:
    env = {
        "SSE_FAST_PORT": "9001",
        "SSE_FAST_HEARTBEAT_INTERVAL": "2.5",
        "SSE_FAST_ALLOW_ANONYMOUS_PUBLISH": "yes",
        "SSE_FAST_HOST": "",
    }
    settings = Settings.from_env(env, port=9002, workers=None)
    assert settings.port == 9002  # the flag wins
    assert settings.heartbeat_interval == 2.5
    assert settings.allow_anonymous_publish is True
    assert settings.host == "127.0.0.1"  # empty variables are ignored
    assert Settings.from_env(settings.to_env()) == settings


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"SSE_FAST_PORT": "eighty"}, "SSE_FAST_PORT='eighty' is not a valid int"),
        ({"SSE_FAST_PORT": "70000"}, "at most 65535"),
        ({"SSE_FAST_WORKERS": "0"}, "workers must be positive"),
        ({"SSE_FAST_HEARTBEAT_INTERVAL": "-1"}, "must not be negative"),
        ({"SSE_FAST_HTTP1_BUFFER_SIZE": "4096"}, "at least 8192"),
        ({"SSE_FAST_ALLOCATOR_DECAY": "-1"}, "allocator_decay must be at least 0"),
        ({"SSE_FAST_HTTP": "3"}, "http must be"),
        ({"SSE_FAST_LOG_LEVEL": "loud"}, "log_level"),
        ({"SSE_FAST_ALLOW_ANONYMOUS_PUBLISH": "maybe"}, "not a valid bool"),
        ({"SSE_FAST_HEADER_TIMEOUT": "0.5"}, "header_timeout must be at least 1 (seconds;"),
        ({"SSE_FAST_BODY_TIMEOUT": "4000"}, "body_timeout must be at most 3600"),
        ({"SSE_FAST_PRESENCE_INTERVAL": "11"}, "presence_interval must be at most 10"),
        ({"SSE_FAST_MAX_CONNECTIONS": "-1"}, "max_connections must not be negative"),
        ({"SSE_FAST_PUBLISH_RATE": "-5"}, "publish_rate must not be negative"),
        ({"SSE_FAST_RUNTIME_THREADS": "0"}, "runtime_threads must be positive"),
        ({"SSE_FAST_SCHEDULING": "fifo"}, "scheduling must be batch or normal, got 'fifo'"),
        ({"SSE_FAST_COMPRESSION": "yes"}, "compression must be topics, all or off"),
        ({"SSE_FAST_COMPRESSION_CONTEXT": "user"}, "compression_context must be topic"),
        ({"SSE_FAST_COMPRESSION_CODINGS": "gzip,br"}, "'br' is not a coding this server has"),
        ({"SSE_FAST_COMPRESSION_CODINGS": ","}, "compression_codings is empty"),
    ],
)
def test_bad_values_are_named(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment.replace("(", r"\(")):
        Settings.from_env(env)


def test_cli_flags_map_to_settings(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["serve", "--port", "8123", "--heartbeat-interval", "3"])
    assert args.port == 8123 and args.heartbeat_interval == 3.0
    assert main(["serve", "--port", "0"]) == 2
    assert "port must be positive" in capsys.readouterr().err


def test_connection_capacity() -> None:
    assert connection_capacity(Settings(), 20_000) == 20_000 - 64
    assert connection_capacity(Settings(backpressure=5000), 20_000) == 5000


#: one setting of each section: its variable's value, its flag's, and what each gives
#: (None: the text as given)
BY_SECTION: list[tuple[str, str, str, str, Any, Any]] = [
    ("listening", "port", "9001", "9002", 9001, 9002),
    ("streams", "heartbeat_interval", "2.5", "3", 2.5, 3.0),
    ("limits", "max_topic_length", "50", "60", 50, 60),
    ("access", "cors_origins", "https://a.example", "https://b.example", None, None),
    ("features", "presence_interval", "2", "0.5", 2.0, 0.5),
    ("brokers", "redis_prefix", "one:", "two:", None, None),
    ("storage", "fsync_interval", "3", "4", 3.0, 4.0),
    ("relay_mode", "upstream_max_delay", "7", "8", 7.0, 8.0),
]


@pytest.mark.parametrize(
    ("section", "name", "variable", "flag", "by_variable", "by_flag"), BY_SECTION
)
def test_variables_and_flags_set_the_same_fields_by_section(
    section: str, name: str, variable: str, flag: str, by_variable: Any, by_flag: Any
) -> None:
    """The sections changed no name: ``SSE_FAST_<NAME>`` and ``--<name>`` of
    ``sse-fast serve`` (and mirror) set the field, read flat or in its section, the
    flag winning."""
    from_variable = Settings.from_env({f"SSE_FAST_{name.upper()}": variable})
    expected = variable if by_variable is None else by_variable
    assert getattr(from_variable, name) == getattr(getattr(from_variable, section), name)
    assert getattr(from_variable, name) == expected
    for command in ("serve", "mirror"):
        extra = ["--upstream", "http://o/e?topic=a"] if command == "mirror" else []
        args = build_parser().parse_args([command, *extra, f"--{name.replace('_', '-')}", flag])
        overrides = {k: v for k, v in vars(args).items() if k != "command"}
        from_flag = Settings.from_env({f"SSE_FAST_{name.upper()}": variable}, **overrides)
        assert getattr(getattr(from_flag, section), name) == (flag if by_flag is None else by_flag)


def test_zstd_alone_without_zstandard_is_refused_with_the_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Offered zstd alone where ``zstandard`` is missing, no stream could be compressed:
    refused at start, saying what to install (with gzip beside it, zstd is left out)."""
    from sse_fast.settings import _checks

    monkeypatch.setattr(_checks, "_has_zstandard", lambda: False)
    with pytest.raises(SettingsError, match=r"pip install 'sse_fast\[zstd\]'"):
        Settings(compression_codings="zstd")
    assert Settings(compression_codings="zstd,gzip").compression_codings == "zstd,gzip"
    assert Settings(compression_codings="zstd", compression="off").compression == "off"
