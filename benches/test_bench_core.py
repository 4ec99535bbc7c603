"""pytest-benchmark versions of the ``bench_core.py`` scenarios.

Run explicitly (they are not part of the default test run, whose
``testpaths = ["tests"]``)::

    python -m pytest -n 0 benches/test_bench_core.py --benchmark-only

One function per scenario, parametrised over the implementations: ``ext``
(Cython), ``py`` (pure-Python twin) and, for the encoder, ``sse_starlette``.
Each case is verified against its oracle before and after it is timed, and the
Cython result is compared with the pure twin's, so a broken implementation
fails instead of benchmarking.
"""

from __future__ import annotations

from typing import Any

import pytest

from benches import core_scenarios as S

ENCODE = [S.EXT, S.PY, S.SS]
CORE = [S.EXT, S.PY]


def _id(impl: str) -> str:
    return impl.replace(" (", "_").replace(" ", "_").rstrip(")")


def _run(benchmark: Any, scenario: str, impl: str) -> None:
    case = S.build_case(scenario, impl)
    before = case.check()
    if impl == S.EXT and case.group != "parser" and not scenario.startswith("ring_publish"):
        twin = S.build_case(scenario, S.PY).check()
        assert before == twin, f"{scenario}: Cython output differs from the pure twin"
    benchmark.extra_info["nbytes_per_op"] = case.nbytes
    benchmark.extra_info["note"] = case.note
    if case.stmt is not None:
        benchmark(case.zero_arg())
    else:
        assert case.fn is not None
        benchmark(case.fn, *case.args, **case.kwargs)
    case.check()


# ------------------------------------------------------------------ encoder


@pytest.mark.benchmark(group="encode_small_json")
@pytest.mark.parametrize("impl", [*ENCODE, S.SS_PRESER, S.SS_JSONSSE], ids=_id)
def test_encode_small_json(benchmark: Any, impl: str) -> None:
    _run(benchmark, "encode_small_json", impl)


@pytest.mark.benchmark(group="encode_small_bytes")
@pytest.mark.parametrize("impl", ENCODE)
def test_encode_small_bytes(benchmark: Any, impl: str) -> None:
    _run(benchmark, "encode_small_bytes", impl)


@pytest.mark.benchmark(group="encode_16_lines")
@pytest.mark.parametrize("impl", ENCODE)
def test_encode_16_lines(benchmark: Any, impl: str) -> None:
    _run(benchmark, "encode_16_lines", impl)


@pytest.mark.benchmark(group="encode_text_4k")
@pytest.mark.parametrize("impl", ENCODE)
def test_encode_text_4k(benchmark: Any, impl: str) -> None:
    _run(benchmark, "encode_text_4k", impl)


@pytest.mark.benchmark(group="encode_text_64k")
@pytest.mark.parametrize("impl", ENCODE)
def test_encode_text_64k(benchmark: Any, impl: str) -> None:
    _run(benchmark, "encode_text_64k", impl)


@pytest.mark.benchmark(group="encode_text_64k_1024_lines")
@pytest.mark.parametrize("impl", ENCODE)
def test_encode_text_64k_1024_lines(benchmark: Any, impl: str) -> None:
    _run(benchmark, "encode_text_64k_1024_lines", impl)


@pytest.mark.benchmark(group="encode_many_100")
@pytest.mark.parametrize("impl", ENCODE)
def test_encode_many_100(benchmark: Any, impl: str) -> None:
    _run(benchmark, "encode_many_100", impl)


@pytest.mark.benchmark(group="build_and_encode_many_100")
@pytest.mark.parametrize("impl", ENCODE)
def test_build_and_encode_many_100(benchmark: Any, impl: str) -> None:
    _run(benchmark, "build_and_encode_many_100", impl)


# ------------------------------------------------------------------- parser


@pytest.mark.benchmark(group="parse_small_10k")
@pytest.mark.parametrize("impl", CORE)
def test_parse_small_10k(benchmark: Any, impl: str) -> None:
    _run(benchmark, "parse_small_10k", impl)


@pytest.mark.benchmark(group="parse_64k_events")
@pytest.mark.parametrize("impl", CORE)
def test_parse_64k_events(benchmark: Any, impl: str) -> None:
    _run(benchmark, "parse_64k_events", impl)


@pytest.mark.benchmark(group="parse_64k_events_1024_lines")
@pytest.mark.parametrize("impl", CORE)
def test_parse_64k_events_1024_lines(benchmark: Any, impl: str) -> None:
    _run(benchmark, "parse_64k_events_1024_lines", impl)


# --------------------------------------------------------------------- ring


@pytest.mark.benchmark(group="ring_publish")
@pytest.mark.parametrize("impl", CORE)
def test_ring_publish(benchmark: Any, impl: str) -> None:
    _run(benchmark, "ring_publish", impl)


@pytest.mark.benchmark(group="ring_publish_with_id")
@pytest.mark.parametrize("impl", CORE)
def test_ring_publish_with_id(benchmark: Any, impl: str) -> None:
    _run(benchmark, "ring_publish_with_id", impl)


@pytest.mark.benchmark(group="ring_read_since_1")
@pytest.mark.parametrize("impl", CORE)
def test_ring_read_since_1(benchmark: Any, impl: str) -> None:
    _run(benchmark, "ring_read_since_1", impl)


@pytest.mark.benchmark(group="ring_read_since_10")
@pytest.mark.parametrize("impl", CORE)
def test_ring_read_since_10(benchmark: Any, impl: str) -> None:
    _run(benchmark, "ring_read_since_10", impl)


@pytest.mark.benchmark(group="ring_read_since_1000")
@pytest.mark.parametrize("impl", CORE)
def test_ring_read_since_1000(benchmark: Any, impl: str) -> None:
    _run(benchmark, "ring_read_since_1000", impl)
