"""What checking a declared event costs per publish: the choice of record type.

    python -m benches.schema_validation            # 7 rounds of 200,000 checks each
    python -m benches.schema_validation --rounds 3 --count 50000

A publish arrives as JSON already parsed (a dict); checking it against a
declared event means: the right fields with the right types, missing ones
named, defaults filled, and the event as plain data again to encode. Four
ways, on the same record (``CommentAdded``: an int, two str, a list of str, an
optional nested record, a default) and the same dicts, valid and invalid:

* ``msgspec.Struct`` with ``msgspec.convert`` then ``msgspec.to_builtins``;
* a ``dataclass`` through ``msgspec.convert`` then ``dataclasses.asdict``
  (``msgspec.to_builtins`` of such a dataclass leaves out the defaults
  ``convert`` did not set: a wrong event);
* a ``dataclass`` checked by hand (``dataclasses.fields`` and ``isinstance``,
  what a dependency-free implementation would do; nested records and
  ``list[str]`` by a small recursive check) then ``dataclasses.asdict``;
* pydantic 2 ``BaseModel.model_validate`` then ``model_dump``, strict (a str
  is no int; pydantic's strict mode refuses dicts for a dataclass, so no
  dataclass through pydantic).

Also the floor: ``orjson.dumps`` of the dict (what an undeclared publish does
with the data anyway). One process, the methods interleaved per round, the
median per method; results in ``benches/results/schema_validation.{md,json}``.

Experiment, kept as the record of a decision (``benches/README.md``):

Question: Which record type should check a declared event on every publish?
Result: msgspec ``Struct`` (1.6 us a check; pydantic 3.8x, dataclasses 9-10x); a publish
    to a declared topic costs 1.31x one to an undeclared topic.
Date: 2026-11-23 (benches/results/schema_validation.md)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import statistics
import time
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import orjson

from .system import machine

RESULTS = Path(__file__).resolve().parent / "results"


class AuthorS(msgspec.Struct):
    id: int
    name: str


class CommentAddedS(msgspec.Struct):
    comment_id: int
    item_id: str
    text: str
    tags: list[str]
    author: AuthorS | None = None
    edited: bool = False


@dataclasses.dataclass
class AuthorD:
    id: int
    name: str


@dataclasses.dataclass
class CommentAddedD:
    comment_id: int
    item_id: str
    text: str
    tags: list[str]
    author: AuthorD | None = None
    edited: bool = False


VALID = {
    "comment_id": 42,
    "item_id": "item-7",
    "text": "Looks good to me",
    "tags": ["review", "ok"],
    "author": {"id": 3, "name": "Ada"},
}
INVALID = {**VALID, "tags": ["review", 5]}  # found last: the cost of a full walk


class Invalid(ValueError):
    pass


@functools.cache
def _hints(kind: Any) -> dict[str, Any]:
    return typing.get_type_hints(kind)


def _check(value: Any, kind: Any, path: str) -> Any:
    """A hand-written check of ``value`` against ``kind`` (the types used here)."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return _check(value, inner, path)
    if origin is list:
        if not isinstance(value, list):
            raise Invalid(f"{path}: expected a list")
        (item,) = typing.get_args(kind)
        return [_check(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise Invalid(f"{path}: expected an object")
        out = {}
        hints = _hints(typing.cast(Any, kind))
        for field in dataclasses.fields(kind):
            if field.name in value:
                out[field.name] = _check(
                    value[field.name], hints[field.name], f"{path}.{field.name}"
                )
            elif field.default is not dataclasses.MISSING:
                out[field.name] = field.default
            else:
                raise Invalid(f"{path}.{field.name}: missing")
        return out
    if kind is bool:
        if type(value) is not bool:
            raise Invalid(f"{path}: expected bool")
        return value
    if kind is int:
        if type(value) is not int:
            raise Invalid(f"{path}: expected int")
        return value
    if kind is str:
        if type(value) is not str:
            raise Invalid(f"{path}: expected str")
        return value
    raise TypeError(kind)


def methods() -> dict[str, Callable[[dict[str, Any]], Any]]:
    import pydantic

    class AuthorP(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(strict=True)
        id: int
        name: str

    class CommentAddedP(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(strict=True)
        comment_id: int
        item_id: str
        text: str
        tags: list[str]
        author: AuthorP | None = None
        edited: bool = False

    convert, to_builtins = msgspec.convert, msgspec.to_builtins

    def struct(data: dict[str, Any]) -> Any:
        return to_builtins(convert(data, CommentAddedS))

    def dataclass_msgspec(data: dict[str, Any]) -> Any:
        # not to_builtins: for a dataclass it leaves out defaults that convert did
        # not set on the instance (msgspec 0.22: "edited" is missing)
        return dataclasses.asdict(convert(data, CommentAddedD))

    def dataclass_by_hand(data: dict[str, Any]) -> Any:
        return _check(data, CommentAddedD, "$")

    def pydantic_model(data: dict[str, Any]) -> Any:
        return CommentAddedP.model_validate(data).model_dump()

    def floor(data: dict[str, Any]) -> Any:
        return orjson.dumps(data)

    return {
        "msgspec Struct": struct,
        "dataclass, msgspec": dataclass_msgspec,
        "dataclass, by hand": dataclass_by_hand,
        "pydantic BaseModel": pydantic_model,
        "floor: orjson.dumps": floor,
    }


def time_one(method: Callable[[dict[str, Any]], Any], data: dict[str, Any], count: int) -> float:
    """Nanoseconds per call (invalid data: per refusal)."""
    start = time.perf_counter_ns()
    for _ in range(count):
        with contextlib.suppress(msgspec.ValidationError, Invalid, ValueError):
            method(data)
    return (time.perf_counter_ns() - start) / count


def publish_path(rounds: int, count: int) -> dict[str, float]:
    """ns per event of ``Hub.publish_nowait`` (one event per call, to one of 10,000
    ``user/<n>`` topics as in the notifications benchmark; local broker, no
    subscribers): with no stream declared, with the three streams of
    ``benches/typed_example.py`` declared and an undeclared topic, and to one of
    their topics (``user:<n>``, checked and written back)."""
    import asyncio

    from sse_fast.hub import Hub
    from sse_fast.publishing import PublishRequest
    from sse_fast.settings import Settings

    from .typed_example import streams

    undeclared = [
        PublishRequest((f"user/{n}",), {"task_id": f"t{n}", "result": "ok"}) for n in range(10_000)
    ]
    declared = [
        PublishRequest((f"user:{n}",), {"task_id": f"t{n}", "result": "ok"}, "TaskComplete")
        for n in range(10_000)
    ]
    settings = Settings(max_topics=100_000)

    async def run() -> dict[str, list[float]]:
        hubs = {"no stream declared": Hub(settings), "undeclared topic": Hub(settings)}
        hubs["declared topic"] = Hub(settings)
        hubs["undeclared topic"].declare(*streams)
        hubs["declared topic"].declare(*streams)
        work = {
            "no stream declared": undeclared,
            "undeclared topic": undeclared,
            "declared topic": declared,
        }
        out: dict[str, list[float]] = {name: [] for name in hubs}
        for _ in range(rounds):
            for name, hub in hubs.items():
                requests = work[name]
                start = time.perf_counter_ns()
                for i in range(count):
                    hub.publish_nowait([requests[i % 10_000]])
                out[name].append((time.perf_counter_ns() - start) / count)
                await asyncio.sleep(0)  # let the flushes run
        return out

    samples = asyncio.run(run())
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benches.schema_validation")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--count", type=int, default=200_000)
    args = parser.parse_args()
    table = methods()
    # every method accepts VALID with the same result and refuses INVALID
    expected = {**VALID, "edited": False}
    for name, method in table.items():
        if name.startswith("floor"):
            continue
        assert method(VALID) == expected, (name, method(VALID))
        try:
            method(INVALID)
        except (msgspec.ValidationError, Invalid, ValueError):
            pass
        else:
            raise AssertionError(f"{name} accepted {INVALID}")
    samples: dict[str, dict[str, list[float]]] = {
        name: {"valid": [], "invalid": []} for name in table
    }
    for _ in range(args.rounds):
        for name, method in table.items():
            samples[name]["valid"].append(time_one(method, VALID, args.count))
            if not name.startswith("floor"):
                samples[name]["invalid"].append(time_one(method, INVALID, args.count))
    medians = {
        name: {k: statistics.median(v) if v else None for k, v in kinds.items()}
        for name, kinds in samples.items()
    }
    fastest = medians["msgspec Struct"]["valid"]
    assert fastest is not None
    lines = [
        "# Checking a declared event: cost per publish",
        "",
        f"`python -m benches.schema_validation --rounds {args.rounds} --count {args.count}`; "
        f"{machine()}. Median ns per call over {args.rounds} interleaved rounds of "
        f"{args.count:,} calls; one process, one core. The record: an int, two str, a "
        "list of str, an optional nested record, a default; the invalid input has its "
        "error in the last list item.",
        "",
        "| method | valid (ns) | ratio to msgspec Struct | invalid (ns) |",
        "|---|---:|---:|---:|",
    ]
    for name, m in medians.items():
        valid, invalid = m["valid"], m["invalid"]
        assert valid is not None
        lines.append(
            f"| {name} | {valid:,.0f} | {valid / fastest:.2f}x | "
            f"{'' if invalid is None else f'{invalid:,.0f}'} |"
        )
    path = publish_path(args.rounds, args.count // 4)
    floor_ns = path["no stream declared"]
    lines += [
        "",
        "## The publish path: `Hub.publish_nowait`, one event per call",
        "",
        "ns per event to one of 10,000 topics, local broker, no subscribers (the encoding, "
        "sequencing and storing every publish does); three streams declared in the last two "
        "rows.",
        "",
        "| publish | ns per event | ratio to no stream declared |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {ns:,.0f} | {ns / floor_ns:.2f}x |" for name, ns in path.items()]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "schema_validation.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "schema_validation.json").write_text(
        json.dumps(
            {
                "rounds": args.rounds,
                "count": args.count,
                "median_ns": medians,
                "publish_path_ns": path,
            },
            indent=2,
        )
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
