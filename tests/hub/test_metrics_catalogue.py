"""The metrics catalogue (``sse_fast.hub._catalogue.CATALOGUE``, the source of the docs'
metrics reference) against what real servers expose: every ``# HELP``/``# TYPE``
line of ``/metrics`` names a catalogue entry with its type and help text, every
sample carries its entry's labels, every entry shows up in some configuration
(the catalogue lists nothing that does not exist), and where it shows up is what
its ``when`` says.

The configurations (started together, scraped once): a plain server (one worker,
persistence on, the default), two workers on Redis (no data directory; two
workers with persistence off when there is no ``redis-server``), a mirror of the
plain server (``sse-fast mirror --upstream``) and a server with webhooks to a
local receiver and persistence off."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sse_fast.hub._catalogue import (
    CATALOGUE,
    Busiest,
    CountedBy,
    Figure,
    MetricInfo,
    PerWorker,
    Timed,
    header,
    metric,
)
from sse_fast.testing import HOST, RedisServer, ServerProcess, collect

from ..app.test_mirror_mode import relay_command

#: each ``when`` phrase of the catalogue and the feature of a configuration that
#: brings its metrics (None: every configuration has them)
WHEN = {
    "always": None,
    "with persistence on (no Redis)": "persistence",
    "in mirror mode": "mirror",
    "with webhook_urls": "webhooks",
}

BY_NAME = {info.name: info for info in CATALOGUE}
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


@dataclass
class Scrape:
    """One configuration's ``/metrics``: the features it has, its text, and what
    the text says (filled by ``read``)."""

    features: frozenset[str]
    text: str
    #: metric name -> (help text, type), in the order of the text
    headers: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: metric name -> the label names of each of its samples
    labels: dict[str, list[frozenset[str]]] = field(default_factory=dict)
    #: lines that are neither a header nor a sample of the metric above them
    stray: list[str] = field(default_factory=list)

    def read(self) -> Scrape:
        family: MetricInfo | None = None
        helps: dict[str, str] = {}
        for line in self.text.splitlines():
            if line.startswith("# HELP "):
                name, _, help_text = line[len("# HELP ") :].partition(" ")
                helps[name] = help_text
                family = None
            elif line.startswith("# TYPE "):
                name, _, kind = line[len("# TYPE ") :].partition(" ")
                if name in self.headers or name not in helps:
                    self.stray.append(line)  # a family twice, or a TYPE without its HELP
                self.headers[name] = (helps.get(name, ""), kind)
                family = BY_NAME.get(name)
            else:
                match = SAMPLE.match(line)
                if match is None or family is None:
                    self.stray.append(line)
                    continue
                name, body, _ = match.groups()
                suffixes = HISTOGRAM_SUFFIXES if family.kind == "histogram" else ("",)
                if name not in [family.name + suffix for suffix in suffixes]:
                    self.stray.append(line)
                    continue
                names = frozenset(label for label, _ in LABEL.findall(body or ""))
                self.labels.setdefault(family.name, []).append(
                    names - {"le"} if name.endswith("_bucket") else names
                )
        return self


def expected(features: frozenset[str]) -> set[str]:
    """The names of the entries a configuration with ``features`` exposes."""
    return {info.name for info in CATALOGUE if WHEN[info.when] in (None, *features)}


class Receiver(BaseHTTPRequestHandler):
    """A webhook receiver that takes every batch."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer((HOST, 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


async def scrape(server: ServerProcess) -> str:
    """``/metrics`` with a subscriber (a ``topic`` label) that got a publish, after a
    refusal (a ``reason`` label)."""
    client = server.client("m")
    await client.connect()
    code, _, _ = await server.publish(orjson.dumps({"topic": "m", "data": 1}))
    assert code == 200
    assert [event.data for event in await collect(client, 1)] == ["1"]
    code, _, _ = await server.get("/no-such-endpoint")
    assert code == 404
    code, headers, body = await server.get("/metrics")
    client.close()
    assert code == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    return body.decode()


@pytest.fixture(scope="module")
def scrapes() -> Iterator[dict[str, Scrape]]:
    with contextlib.ExitStack() as stack:
        hook = stack.enter_context(receiver())
        if shutil.which("redis-server"):
            redis_url = stack.enter_context(RedisServer()).url
            several = ServerProcess("--workers", "2", "--redis-url", redis_url)
        else:  # the same figures but for Redis's own: no data directory either way
            several = ServerProcess("--workers", "2", "--persistence", "off")
        plain = ServerProcess()
        webhooks = ServerProcess(
            "--persistence",
            "off",
            "--webhook-urls",
            hook,
            webhook_secret="a-secret-of-16-characters-or-more",
            webhook_interval="0.2",
        )
        with ThreadPoolExecutor(3) as pool:  # start them together: one wait, not three
            for server in pool.map(stack.enter_context, (plain, several, webhooks)):
                assert server.proc is not None
        mirror = stack.enter_context(
            ServerProcess(command=relay_command(f"{plain.url}/events?topic=news"))
        )

        async def main() -> dict[str, str]:
            texts = await asyncio.gather(*map(scrape, (plain, several, mirror, webhooks)))
            return dict(zip(("plain", "several", "mirror", "webhooks"), texts, strict=True))

        texts = asyncio.run(main())
        features = {
            "plain": {"persistence"},
            "several": set(),
            "mirror": {"mirror", "persistence"},
            "webhooks": {"webhooks"},
        }
        yield {name: Scrape(frozenset(features[name]), text).read() for name, text in texts.items()}


def test_the_catalogue_is_well_formed() -> None:
    names = [info.name for info in CATALOGUE]
    assert len(names) == len(set(names)), "a metric listed twice"
    for info in CATALOGUE:
        assert re.fullmatch(r"sse_fast_[a-z_]+", info.name), info.name
        assert info.kind in ("counter", "gauge", "histogram"), info
        assert info.name.endswith("_total") == (info.kind == "counter"), info
        assert info.when in WHEN, f"{info.name}: a new `when` ({info.when!r}): add it to WHEN"
        assert info.help and "\n" not in info.help and "\\" not in info.help, info
        assert metric(info.name) is info
        # its figure gives what its type and labels need
        assert isinstance(info.figure, Figure), info.name
        assert (info.kind == "histogram") == isinstance(info.figure, Timed), info.name
        assert bool(info.labels) == isinstance(info.figure, CountedBy | PerWorker | Busiest)
        if isinstance(info.figure, PerWorker):
            assert info.labels == ("worker",), info.name
        assert header(info.name) == [
            f"# HELP {info.name} {info.help}",
            f"# TYPE {info.name} {info.kind}",
        ]


@pytest.mark.processes("the scrapes of real servers: several workers, Redis, webhooks")
@pytest.mark.xdist_group("metrics_scrapes")  # one worker: the servers started once
def test_every_header_is_its_catalogue_entry(scrapes: dict[str, Scrape]) -> None:
    for name, one in scrapes.items():
        assert not one.stray, f"{name}: lines outside their family: {one.stray}"
        for metric_name, (help_text, kind) in one.headers.items():
            info = BY_NAME.get(metric_name)
            assert info is not None, f"{name}: {metric_name} is not in the catalogue"
            assert (help_text, kind) == (info.help, info.kind), f"{name}: {metric_name}"


@pytest.mark.processes("the scrapes of real servers: several workers, Redis, webhooks")
@pytest.mark.xdist_group("metrics_scrapes")  # one worker: the servers started once
def test_every_sample_carries_its_entrys_labels(scrapes: dict[str, Scrape]) -> None:
    seen: set[str] = set()
    for name, one in scrapes.items():
        for metric_name, label_sets in one.labels.items():
            for labels in label_sets:
                assert labels == set(BY_NAME[metric_name].labels), f"{name}: {metric_name}"
            seen.add(metric_name)
    unseen = [info.name for info in CATALOGUE if info.labels and info.name not in seen]
    assert not unseen, f"labelled metrics with no sample anywhere: {unseen}"


@pytest.mark.processes("the scrapes of real servers: several workers, Redis, webhooks")
@pytest.mark.xdist_group("metrics_scrapes")  # one worker: the servers started once
def test_every_entry_shows_up_where_its_when_says(scrapes: dict[str, Scrape]) -> None:
    everywhere: set[str] = set()
    for name, one in scrapes.items():
        exposed = set(one.headers)
        assert exposed == expected(one.features), (
            f"{name} ({sorted(one.features)}): missing {sorted(expected(one.features) - exposed)}, "
            f"unexpected {sorted(exposed - expected(one.features))}"
        )
        everywhere |= exposed
    assert everywhere == set(BY_NAME), f"never exposed: {sorted(set(BY_NAME) - everywhere)}"
    always = {info.name for info in CATALOGUE if info.when == "always"}
    assert always <= set(scrapes["plain"].headers)


@pytest.mark.processes("the scrapes of real servers: several workers, Redis, webhooks")
@pytest.mark.xdist_group("metrics_scrapes")  # one worker: the servers started once
def test_the_order_is_the_catalogues(scrapes: dict[str, Scrape]) -> None:
    """The docs list the metrics in the catalogue's order: the order a scrape has."""
    order = {info.name: n for n, info in enumerate(CATALOGUE)}
    for one in scrapes.values():
        positions = [order[name] for name in one.headers]
        assert positions == sorted(positions)


@pytest.mark.processes("the scrapes of real servers: several workers, Redis, webhooks")
@pytest.mark.xdist_group("metrics_scrapes")  # one worker: the servers started once
def test_prometheus_reads_every_scrape(scrapes: dict[str, Scrape]) -> None:
    for name, one in scrapes.items():
        families = {family.name for family in text_string_to_metric_families(one.text)}
        assert len(families) == len(one.headers), name


def _refusal_reasons_in_the_code() -> dict[str, str]:
    """Every string the code may count in ``sse_fast_refused_total`` (reason -> where):
    ``reason="..."`` in a call, an ``AuthError``'s or a publish stream ``_end``'s
    third argument, ``refuse("...")``, ``.get("reason", "...")`` and the defaults
    of parameters named ``reason``."""
    import ast
    from pathlib import Path

    import sse_fast

    found: dict[str, str] = {}
    package = Path(sse_fast.__file__).parent
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        where = str(path.relative_to(package))

        def literal(node: ast.AST | None, line: int, where: str = where) -> None:
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value:
                found.setdefault(node.value, f"{where}:{line}")

        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                for keyword in node.keywords:
                    if keyword.arg == "reason":
                        literal(keyword.value, node.lineno)
                if name in ("AuthError", "_end") and len(node.args) >= 3:
                    literal(node.args[2], node.lineno)
                if name == "refuse" and node.args:
                    literal(node.args[0], node.lineno)
                if (
                    name == "get"
                    and len(node.args) == 2
                    and isinstance(node.args[0], ast.Constant)
                    and node.args[0].value == "reason"
                ):
                    literal(node.args[1], node.lineno)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                arguments = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                defaults = [None] * (
                    len(node.args.posonlyargs + node.args.args) - len(node.args.defaults)
                )
                defaults += [*node.args.defaults, *node.args.kw_defaults]
                for argument, default in zip(arguments, defaults, strict=True):
                    if argument.arg == "reason":
                        literal(default, node.lineno)
    return found


def test_every_refusal_reason_is_in_the_catalogue() -> None:
    """The reasons of ``sse_fast_refused_total`` are documented (the metrics
    reference lists ``REFUSAL_REASONS``): none in the code is missing from it,
    none in it is gone from the code."""
    from sse_fast.hub._catalogue import REFUSAL_REASONS

    in_code = _refusal_reasons_in_the_code()
    assert "forbidden_topic" in in_code and "storage" in in_code  # the scan finds them
    missing = {reason: where for reason, where in in_code.items() if reason not in REFUSAL_REASONS}
    assert not missing, f"reasons the code refuses with, not in REFUSAL_REASONS: {missing}"
    gone = set(REFUSAL_REASONS) - set(in_code)
    assert not gone, f"REFUSAL_REASONS lists reasons no code uses: {gone}"
