"""The admission bench's report: its tables from a run's figures."""

from __future__ import annotations

from benches.admission import markdown


def _costs(ms: list[float], status: int) -> dict[str, object]:
    return {"ms": ms, "statuses": [status]}


def test_the_report_gives_each_case_and_the_latency_ratio() -> None:
    phase = {"events": 200, "p50_ms": 1.0, "server_cpu_s": 0.1, "attacker_answers": {}}
    report = {
        "conditions": {"cpu": "test"},
        "admission": [
            {
                "tree": "after",
                "private": "two",
                "count": 8,
                "anonymous": _costs([0.2, 0.3], 401),
                "granted": _costs([0.1, 0.4], 403),
                "walked": _costs([1.0, 1.5], 400),
            }
        ],
        "stream": {"after": {"idle": {**phase, "p99_ms": 2.0}, "attack": {**phase, "p99_ms": 3.0}}},
    }
    text = markdown(report)
    assert (
        "| after | two | 8 | 0.250 / 0.300 (answer [401]) | 0.250 / 0.400 (answer [403]) |" in text
    )
    assert "1.250 / 1.500 (answer [400])" in text
    assert "| after | attack / idle p99 | | | 1.50x | | |" in text
