"""The package's layout rules that a reader relies on: no import cycle between
its modules (imports inside functions count: they run too; ``TYPE_CHECKING``
blocks do not), and the shipped package never imports the repository's
``benches`` or ``tests``. Real processes: a fresh interpreter, to see what importing one
part of the package loads."""

from __future__ import annotations

import ast
import functools
import itertools
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

import sse_fast

from .support.source import docstring_ids

PACKAGE = Path(sse_fast.__file__).resolve().parent  # the source tree, or an installed wheel

#: the rules read the source, which is the same in both modes; on one worker, which
#: parses the package once for all of them (``_tree``)
pytestmark = [pytest.mark.mode_independent, pytest.mark.xdist_group("layout")]


def _name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(path): path for path in PACKAGE.rglob("*.py")}


def _tree(path: Path) -> ast.Module:
    """``path`` parsed, once per process for each text it has: the checks below each
    read the whole package, and parsing it again for each was most of their time."""
    return _parsed(path.read_text())


@functools.cache
def _parsed(source: str) -> ast.Module:
    return ast.parse(source)


@functools.cache
def _walked(tree: ast.AST) -> tuple[ast.AST, ...]:
    return tuple(ast.walk(tree))


def _nodes(path: Path) -> tuple[ast.AST, ...]:
    """Every node of ``path``'s tree (``ast.walk``), walked once per tree."""
    return _walked(_tree(path))


def _targets(node: ast.AST) -> list[ast.expr]:
    """What ``node`` assigns to (``=``, ``+=``, annotated) or deletes; [] for others."""
    if isinstance(node, ast.Assign | ast.Delete):
        return list(node.targets)
    if isinstance(node, ast.AugAssign | ast.AnnAssign):
        return [node.target]
    return []


def _imports(name: str, path: Path) -> set[str]:
    """The modules ``name`` imports (of this package, and any other by its top name)."""
    tree = _tree(path)
    type_only = {
        id(node)
        for branch in _walked(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for node in ast.walk(branch)
    }
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in _walked(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:  # `from . import resume` imports the submodule
                submodule = f"{target}.{alias.name}"
                out.add(submodule if submodule in MODULES else target)
    return out - {name}


@functools.cache
def graph() -> dict[str, set[str]]:
    """Each module's imports (parsed when a test first asks: not in every worker's
    collection, where it cost a second)."""
    return {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles() -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph()[module] & MODULES.keys():
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                other = stack.pop()
                group.append(other)
                if other == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in graph():
        if module not in index:
            visit(module)
    return groups


def test_the_package_has_no_import_cycle() -> None:
    assert {"sse_fast.hub._hub", "sse_fast.cli", "sse_fast.codegen"} <= MODULES.keys()
    assert "sse_fast.schemas" in graph()["sse_fast.codegen"]  # the graph sees lazy imports
    assert _cycles() == []


def test_the_package_never_imports_the_repositorys_benches_or_tests() -> None:
    found = {
        name: sorted(i for i in imported if i.split(".")[0] in ("benches", "tests"))
        for name, imported in graph().items()
    }
    assert {name: i for name, i in found.items() if i} == {}


@pytest.mark.processes("a fresh interpreter importing one part of the package")
def test_the_hub_loads_without_the_credentials_module() -> None:
    """The hub (topics, fan-out, presence, webhooks) matches topic patterns with
    ``_patterns.matches``: it never loads ``app.auth`` and PyJWT, which only the
    edge's app needs."""
    code = (
        "import sys, sse_fast.hub; "
        "print(sorted(m for m in ('jwt', 'sse_fast.app._auth') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.processes("a fresh interpreter importing one part of the package")
def test_the_app_loads_pyjwt_only_once_a_jwt_key_is_configured() -> None:
    """PyJWT brings cryptography: about 50 ms of CPU at every server's start, which a
    server that takes no JWT never needs. The app loads it with its first
    authenticator that has a JWT key."""
    code = (
        "import sys\n"
        "import sse_fast.app\n"
        "from sse_fast.app._auth import Authenticator\n"
        "from sse_fast.settings import Settings\n"
        "Authenticator(Settings(publish_token='a-token'))\n"
        "print(sorted(m for m in ('jwt', 'cryptography') if m in sys.modules))\n"
        "Authenticator(Settings(jwt_secret='a-secret-of-32-characters-or-more'))\n"
        "print('jwt' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[:2] == ["[]", "True"], done.stdout + done.stderr


def test_the_sizes_report_names_each_outlier(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sizes are a report (``scripts/sizes``), not a gate: it names the modules,
    classes and functions over their limits, largest first."""
    root = tmp_path / "pkg"
    root.mkdir()
    body = "".join(f"    x{n} = {n}\n" for n in range(300))
    (root / "big.py").write_text(f"class Big:\n{body}\n\ndef small():\n    pass\n")
    (root / "fits.py").write_text("class Fits:\n    pass\n")
    report = runpy.run_path(str(Path(__file__).resolve().parent.parent / "scripts" / "sizes"))
    assert report["main"]([str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(
        "1 outlier(s) (lines: module over 500, class over 300, function over 80)"
    )
    assert lines[1].split() == ["301", "class", "pkg/big.py:Big"]
    assert len(lines) == 2


@pytest.mark.processes("a fresh interpreter importing one part of the package")
def test_a_webhook_receiver_loads_nothing_of_the_hub() -> None:
    """``sse_fast.webhooks`` (``verify``) is what a receiving service imports."""
    code = (
        "import sys, sse_fast.webhooks; "
        "print(sorted(m for m in sys.modules if m.startswith(('sse_fast.hub', 'sse_fast.app'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def _relative(path: Path) -> str:
    return f"sse_fast/{path.relative_to(PACKAGE).as_posix()}"


def _attribute_writes(attribute: str) -> set[str]:
    """Where the package changes an attribute named ``attribute``: assigned (``=``,
    ``+=``, annotated), deleted, set with ``setattr``, or given a property setter."""
    return set(_attribute_writers().get(attribute, ()))


@functools.cache
def _attribute_writers() -> dict[str, frozenset[str]]:
    """``_attribute_writes`` for every attribute at once: the package read once."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        where = _relative(path)
        for node in _nodes(path):
            for attribute in _written(node):
                found.setdefault(attribute, set()).add(where)
    return {attribute: frozenset(files) for attribute, files in found.items()}


def _written(node: ast.AST) -> list[str]:
    """The attributes ``node`` changes (see ``_attribute_writes``)."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("setattr", "delattr")
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    ):
        return [node.args[1].value]
    if isinstance(node, ast.FunctionDef) and any(
        ast.unparse(d).endswith(".setter") for d in node.decorator_list
    ):
        return [node.name]
    # the attribute itself as a target, or within a tuple of targets
    targets = _targets(node)
    named = [t for t in targets if isinstance(t, ast.Attribute)]
    named += [
        e
        for t in targets
        if isinstance(t, ast.Tuple | ast.List)
        for e in t.elts
        if isinstance(e, ast.Attribute)
    ]
    return [t.attr for t in named]


def test_only_the_topics_table_moves_the_newest_applied_position() -> None:
    """What "resumed" and a new stream's first id rest on, the newest position the
    hub applied (``TopicTable.last_position``), has one owner: the core's topics
    table (the twin here; the Cython one declares it ``readonly``), which moves it
    in ``store`` and ``skip_to``. The hub, the fan-out, the breaks and the brokers
    read it or ask. The durable log's ``Loaded.last_position`` is another value of
    the same name (the newest position in the log's files)."""
    assert _attribute_writes("last_position") == {
        "sse_fast/brokers/durable/_reading.py",  # Loaded.last_position: not the hub's
    }
    assert _attribute_writes("_last_position") == {"sse_fast/_core/topic_py.py"}


def test_only_the_topic_moves_its_floor() -> None:
    """A topic's floor (``evicted_up_to``: below it a resume is not vouched for) is moved
    by the topic alone, ``raise_floor`` (the hub for a broker's floor, the breaks for a
    marker) and ``forget_oldest``; the Cython class declares it ``readonly``."""
    assert _attribute_writes("evicted_up_to") == set()
    assert _attribute_writes("_floor") == {"sse_fast/_core/topic_py.py"}


#: what changes a dict in place when called on it
_DICT_CHANGES = {"pop", "popitem", "clear", "update", "setdefault", "__setitem__", "__delitem__"}
#: what a hub's stream registry tells its listeners, and how a stream leaves its topics
_REGISTRY_CALLS = {"joined", "left", "follows", "ended", "leave_topics"}


def _registry_changes() -> set[str]:
    """Where the package changes a hub's map of open streams (``subscriptions``,
    ``by_id``: an item set, deleted, or a changing method called), tells stream
    listeners, or takes a stream out of its topics' sets, as ``file:what``."""
    maps = {"subscriptions", "by_id"}
    found = set()
    for path in PACKAGE.rglob("*.py"):
        for node in _nodes(path):
            for target in _targets(node):
                if (
                    isinstance(target, ast.Subscript)
                    and isinstance(target.value, ast.Attribute)
                    and target.value.attr in maps
                ):
                    found.add(f"{_relative(path)}:{target.value.attr}[]")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                method, owner = node.func.attr, node.func.value
                if method in _REGISTRY_CALLS:
                    found.add(f"{_relative(path)}:{method}()")
                elif (
                    method in _DICT_CHANGES
                    and isinstance(owner, ast.Attribute)
                    and owner.attr in maps
                ):
                    found.add(f"{_relative(path)}:{owner.attr}.{method}()")
    return found


def test_streams_join_and_leave_in_one_place() -> None:
    """A stream joins and leaves a hub in ``hub/_streams.py`` only (``Streams.join``,
    ``Streams.leave``): its place in the map of open streams, its count on its
    topics (``Topic.subscribers``; the core only starts it at 0), its topics' sets
    at the leave, and what the listeners (presence, webhooks, metrics) are told.
    Closing, resuming and the fan-out ask it; the listeners are given to it."""
    # the load tools are clients (of any SSE server): their subscribers are their own
    clients = ("sse_fast/loadgen/", "sse_fast/locust")
    assert {w for w in _attribute_writes("subscribers") if not w.startswith(clients)} == {
        "sse_fast/_core/topic_py.py",  # Topic.__init__: 0
        "sse_fast/hub/_streams.py",
    }
    expected = ["by_id[]", "by_id.pop()", "leave_topics()", "joined()", "left()"]
    expected += ["follows()", "ended()"]
    assert {w for w in _registry_changes() if not w.startswith(clients)} == {
        f"sse_fast/hub/_streams.py:{what}" for what in expected
    }


#: what changes a set in place when called on it
_SET_CHANGES = {"add", "discard", "remove", "pop", "clear", "update", "difference_update"}


def _writers_by_class(folder: Path) -> dict[str, set[str]]:
    """Where the modules under ``folder`` change an attribute (assigned, ``+=``,
    annotated, deleted, or a set-changing method called on it), by attribute name:
    ``{name: {"file.py:Class", ...}}`` (``file.py:`` alone outside any class)."""
    found: dict[str, set[str]] = {}

    def visit(node: ast.AST, where: str, file: str) -> None:
        if isinstance(node, ast.ClassDef):
            where = f"{file}:{node.name}"
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign | ast.Delete):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        targets += [e for t in targets if isinstance(t, ast.Tuple | ast.List) for e in t.elts]
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _SET_CHANGES
        ):
            targets.append(node.func.value)
        for target in targets:
            if isinstance(target, ast.Attribute):
                found.setdefault(target.attr, set()).add(where)
        for child in ast.iter_child_nodes(node):
            visit(child, where, file)

    for path in sorted(folder.rglob("*.py")):
        visit(_tree(path), f"{path.name}:", path.name)
    return found


#: what a Redis member read of a partition, and its one owner (``_state.py``'s ``PartitionRead``)
REDIS_KNOWN = ("seen", "horizon", "epoch", "first_position", "reconnects", "repairs")
REDIS_KNOWN += ("history_breaks",)


def redis_state_problems(folder: Path) -> list[str]:
    """Each piece of a Redis member's state changed outside its one owner (nothing: [])."""
    writers = _writers_by_class(folder)
    owners = {name: {"_state.py:PartitionRead"} for name in REDIS_KNOWN}  # one per partition
    owners["reconnects"] = {"_connection.py:Connection"}  # one per Redis
    owners["held"] = {"_held_topics.py:HeldTopics"}  # prepare, a failed load, release
    # up or down: the subscription's liveness and whether Redis answers
    owners |= {name: {"_availability.py:Availability"} for name in ("_live", "_answers")}
    owners["_down_since"] = {"_availability.py:Availability"}
    for second_copy in ("live", "commands_ok", "down_since", "available"):
        owners[second_copy] = set()  # once kept here too: one owner, Availability
    return [
        f"{name} is changed in {sorted(writers.get(name, set()) - owner)}"
        for name, owner in owners.items()
        if writers.get(name, set()) - owner
    ]


def test_the_redis_members_state_has_one_owner_each() -> None:
    """What a Redis member's promises rest on is changed by one owner each, through
    named operations (``brokers/redis/_broker.py``'s theory of operation): the feed's
    ``PartitionRead`` (the newest position seen, the horizon, the epoch, where claims start,
    the counts), the feed (the topics held), and ``Availability`` (up or down, which
    the feed, the publishes, the probes and the resyncs tell it). The broker's
    ``first_position`` and ``horizon`` only read the feed's."""
    assert redis_state_problems(PACKAGE / "brokers" / "redis") == []


#: where the metrics are declared: each one's name, type, help, labels and figure
METRICS_TABLE = "sse_fast/hub/_catalogue.py"


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring nodes of a module, its classes and functions."""
    found = set()
    for node in _walked(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _metric_name_spellings(names: set[str]) -> tuple[dict[str, list[str]], list[str]]:
    """Where the package's code (docstrings aside) writes each metric name of
    ``names`` in a string (whole, or with a histogram's ``_bucket``, ``_sum`` or
    ``_count``), as ``{name: ["file:line", ...]}``; and the f-strings that build one
    (``f"sse_fast_{...}"``), as ``["file:line", ...]``."""
    token = re.compile(r"sse_fast_[a-z0-9_]*")
    spelled: dict[str, list[str]] = {name: [] for name in names}
    built = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = _tree(path)
        docstrings = _docstrings(tree)
        where = _relative(path)
        for node in _walked(tree):
            if isinstance(node, ast.JoinedStr):
                parts = node.values
                for part, after in itertools.pairwise(parts):
                    if (
                        isinstance(part, ast.Constant)
                        and isinstance(after, ast.FormattedValue)
                        and re.search(r"sse_fast_[a-z0-9_]*$", str(part.value))
                    ):
                        built.append(f"{where}:{node.lineno}")
            if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
                continue
            if id(node) in docstrings:
                continue
            for found in token.findall(node.value):
                name = re.sub(r"_(bucket|sum|count)$", "", found) if found not in names else found
                if name in names:
                    spelled[name].append(f"{where}:{node.lineno}")
    return spelled, built


def test_each_metric_is_spelled_in_one_place() -> None:
    """A metric's name is written once, in its entry of the metrics table
    (``CATALOGUE``, with its type, help, labels and where its figure comes from);
    the exposition, ``/stats``, the docs' reference and the whole-server rendering
    read it from there. Nothing else in the package writes a metric's name in a
    string, or builds one with an f-string."""
    from sse_fast.hub._catalogue import CATALOGUE

    names = {info.name for info in CATALOGUE}
    spelled, built = _metric_name_spellings(names)
    assert len(names) > 30 and spelled["sse_fast_published_total"]  # the scan sees them
    again = {name: places for name, places in spelled.items() if len(places) != 1}
    assert again == {}, "metric names written more than once (or not at all)"
    outside = {
        name: places for name, places in spelled.items() if places[0].split(":")[0] != METRICS_TABLE
    }
    assert outside == {}, f"metric names written outside {METRICS_TABLE}"
    assert built == [], "metric names built by f-string"


#: the wire's lower layer: headers as dicts, bytes by hand (``brokers/_relay/wire.py``)
_RELAY_RAW = {"pack", "read_message", "pack_publish", "pack_delivery", "parse"}
_RELAY_RAW |= {"unpack_publish", "unpack_delivery"}


def relay_message_problems(package: Path) -> list[str]:
    """Where a module of ``package`` (the source tree's ``sse_fast``) builds or reads a
    relay message outside ``brokers/_relay/wire.py`` (nothing: []): calls the wire's
    lower layer, or (in the relay package) writes a dict with a ``type`` or reads a
    header's field by name."""
    import dataclasses

    from sse_fast.brokers._relay import wire

    fields = {"type", "events"} | {
        f.name
        for name in wire.__all__
        if dataclasses.is_dataclass(cls := getattr(wire, name))
        for f in dataclasses.fields(cls)
    }
    found = []
    for path in sorted(package.rglob("*.py")):
        where = path.relative_to(package.parent).as_posix()
        if where == "sse_fast/brokers/_relay/wire.py":
            continue
        tree = _tree(path)
        raw = set()  # the lower layer's names imported from the relay, and the wire module
        for node in _walked(tree):
            if isinstance(node, ast.ImportFrom) and "relay" in where + (node.module or ""):
                raw |= {a.asname or a.name for a in node.names if a.name in _RELAY_RAW}
        in_relay = where.startswith("sse_fast/brokers/_relay/")
        for node in _walked(tree):
            line = f"{where}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Call):
                func = node.func
                if (isinstance(func, ast.Name) and func.id in raw) or (
                    isinstance(func, ast.Attribute)
                    and func.attr in _RELAY_RAW
                    and ast.unparse(func.value).endswith("wire")
                ):
                    found.append(f"{line} calls {ast.unparse(func)}")
                if (
                    in_relay
                    and isinstance(func, ast.Attribute)
                    and func.attr == "get"
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and node.args[0].value in fields
                ):
                    found.append(f"{line} reads a header's {node.args[0].value!r}")
            elif in_relay and isinstance(node, ast.Dict):
                if any(isinstance(k, ast.Constant) and k.value == "type" for k in node.keys):
                    found.append(f"{line} builds a message dict")
            elif (
                in_relay
                and isinstance(node, ast.Subscript)
                and isinstance(node.slice, ast.Constant)
                and node.slice.value in fields
            ):
                found.append(f"{line} reads a header's {node.slice.value!r}")
    return sorted(found)


def test_relay_messages_are_built_and_read_in_the_wire_module() -> None:
    """Every message between the workers and the relay is built and read in
    ``brokers/_relay/wire.py``, as one of its message classes (``Hello``, ``Welcome``,
    ``Publish``, ``Deliver``, ...: ``pack()`` and ``receive``); the relay and its
    workers never write a header dict, read a header's field by name, or call the
    lower layer (``pack``, ``read_message``, ``unpack_delivery``, ...)."""
    assert relay_message_problems(PACKAGE) == []


# ------------------------------------------------------------------ benches/ in tiers

BENCHES = Path(__file__).resolve().parents[1] / "benches"  # not in the sdist: skipped there
TIERS = ("Harness", "Maintained suites", "Experiments")
needs_benches = pytest.mark.skipif(not BENCHES.is_dir(), reason="no benches/ (an sdist)")


def bench_tiers(readme: str) -> dict[str, dict[str, str]]:
    """The tables of ``benches/README.md``'s tier sections: tier -> {module: its row},
    a module being the first cell of a row (`` `name.py` ``)."""
    tiers: dict[str, dict[str, str]] = {}
    for section in re.split(r"^## ", readme, flags=re.MULTILINE)[1:]:
        title, _, body = section.partition("\n")
        if title.strip() in TIERS:
            rows = re.findall(r"^\| `(\w+\.py)` \|(.*)$", body, flags=re.MULTILINE)
            tiers[title.strip()] = dict(rows)
    return tiers


def bench_tier_problems(benches: Path) -> list[str]:
    """Modules of ``benches/`` not listed under exactly one tier, tests not in their
    module's row, maintained suites without their command, experiments without their
    question, result and date."""
    tiers = bench_tiers((benches / "README.md").read_text())
    problems = [f"benches/README.md: no section {tier!r}" for tier in TIERS if tier not in tiers]
    listed = [module for rows in tiers.values() for module in rows]
    problems += [
        f"{module} listed twice" for module in sorted(set(listed)) if listed.count(module) > 1
    ]
    for path in sorted(benches.glob("*.py")):
        if path.name == "__init__.py":
            continue
        if path.name.startswith("test_"):
            tested = path.name.removeprefix("test_")
            rows = {**tiers.get("Harness", {}), **tiers.get("Maintained suites", {})}
            if f"`{path.name}`" not in rows.get(tested, ""):
                problems.append(f"{path.name}: not in {tested}'s row of a harness or suite")
        elif path.name not in listed:
            problems.append(f"{path.name}: listed under no tier of benches/README.md")
    for module, row in tiers.get("Maintained suites", {}).items():
        if f"python -m benches.{module.removesuffix('.py')}" not in row:
            problems.append(f"{module}: its row gives no `python -m benches.` command")
    for module in tiers.get("Experiments", {}):
        path = benches / module
        doc = ast.get_docstring(_tree(path)) if path.exists() else None
        for label in ("Question: ", "Result: ", "Date: "):
            if not re.search(rf"^{label}\S", doc or "", flags=re.MULTILINE):
                problems.append(f"{module}: its docstring has no {label.strip()}")
        if doc and not re.search(r"^Date: \d{4}-\d\d-\d\d", doc, flags=re.MULTILINE):
            problems.append(f"{module}: its Date is not YYYY-MM-DD")
    return problems


def bench_private_imports(benches: Path) -> list[str]:
    """Where a module of ``benches/`` takes a ``_private`` name of another bench module
    (``from .peers import _x``, or ``peers._x`` after ``from benches import peers``);
    a module's own test (``test_x.py`` of ``x.py``) may reach its privates."""
    found = []
    for path in sorted(benches.rglob("*.py")):
        tree, where = _tree(path), path.relative_to(benches.parent).as_posix()
        own = path.stem.removeprefix("test_") if path.stem.startswith("test_") else path.stem
        modules: dict[str, str] = {}  # local name -> bench module
        for node in _walked(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = node.module or ""
            if not (node.level or source == "benches" or source.startswith("benches.")):
                continue
            for alias in node.names:
                module = alias.name if source in ("", "benches") else source.split(".")[-1]
                if source in ("", "benches"):
                    modules[alias.asname or alias.name] = module
                elif alias.name.startswith("_") and module != own:
                    found.append(f"{where}: from {'.' * node.level}{source} import {alias.name}")
        for node in _walked(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in modules
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and modules[node.value.id] != own
            ):
                found.append(f"{where}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def bench_proc_reads(benches: Path) -> list[str]:
    """Strings naming ``/proc`` in code of ``benches/`` outside ``benches/system.py`` (which
    reads /proc for all of them, and takes the processes' figures from the package's
    ``sse_fast.loadgen._procfs``)."""
    found = []
    for path in sorted(benches.rglob("*.py")):
        if path == benches / "system.py":
            continue
        where = path.relative_to(benches.parent).as_posix()
        for node in _nodes(path):
            if isinstance(node, ast.Constant) and str(node.value).startswith("/proc"):
                found.append(f"{where}:{node.lineno}: {node.value!r}")
    return found


def bench_imports_of_experiments(benches: Path) -> list[str]:
    """Where a harness module or a maintained suite imports an experiment: an experiment
    is a record, nothing builds on it."""
    tiers = bench_tiers((benches / "README.md").read_text())
    experiments = {module.removesuffix(".py") for module in tiers.get("Experiments", {})}
    found = []
    for module in [*tiers.get("Harness", {}), *tiers.get("Maintained suites", {})]:
        path = benches / module
        for node in _nodes(path) if path.exists() else ():
            if isinstance(node, ast.ImportFrom) and (node.level or node.module == "benches"):
                names = [node.module or "", *(alias.name for alias in node.names)]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("benches."):
                names = [(node.module or "").split(".")[1]]
            else:
                continue
            found += [f"{module} imports {name}" for name in names if name in experiments]
    return found


@needs_benches
def test_every_bench_module_is_listed_under_one_tier() -> None:
    assert bench_tier_problems(BENCHES) == []


@needs_benches
def test_no_bench_module_takes_another_ones_private_name() -> None:
    assert bench_private_imports(BENCHES) == []


@needs_benches
def test_no_harness_or_suite_builds_on_an_experiment() -> None:
    assert bench_imports_of_experiments(BENCHES) == []


@needs_benches
def test_benches_read_proc_through_one_module_over_the_packages_procfs() -> None:
    assert bench_proc_reads(BENCHES) == []
    system = ast.parse((BENCHES / "system.py").read_text())
    sources = {node.module for node in ast.walk(system) if isinstance(node, ast.ImportFrom)}
    assert "sse_fast.loadgen._procfs" in sources


def test_the_bench_checks_find_what_they_look_for(tmp_path: Path) -> None:
    benches = tmp_path / "benches"
    benches.mkdir()
    (benches / "README.md").write_text(
        "## Harness\n\n| `peers.py` | targets |\n\n"
        "## Maintained suites\n\n| `suite.py` | `python -m benches.other` | `test_suite.py` |\n"
        "| `peers.py` | again |\n\n"
        "## Experiments\n\n| `trial.py` | a question |\n"
    )
    (benches / "peers.py").write_text('def _hidden() -> None: ...\nPROC = "/proc/loadavg"\n')
    (benches / "suite.py").write_text(
        "from benches import peers\nfrom .peers import _hidden\npeers._hidden()\n"
        'stat = f"/proc/{1}/stat"\n'
    )
    (benches / "test_suite.py").write_text("from benches import suite\nsuite._own()\n")
    (benches / "test_peers.py").write_text("")
    (benches / "trial.py").write_text('"""A trial.\n\nQuestion: which?\nDate: soon\n"""\n')
    (benches / "stray.py").write_text("")
    assert sorted(bench_tier_problems(benches)) == [
        "peers.py listed twice",
        "peers.py: its row gives no `python -m benches.` command",
        "stray.py: listed under no tier of benches/README.md",
        "suite.py: its row gives no `python -m benches.` command",
        "test_peers.py: not in peers.py's row of a harness or suite",
        "trial.py: its Date is not YYYY-MM-DD",
        "trial.py: its docstring has no Result:",
    ]
    assert bench_private_imports(benches) == [
        "benches/suite.py: from .peers import _hidden",
        "benches/suite.py:3: peers._hidden",
    ]
    assert bench_imports_of_experiments(benches) == []
    (benches / "peers.py").write_text('from . import trial\nPROC = "/proc/loadavg"\n')
    # once for each of the two tiers that list peers.py
    assert bench_imports_of_experiments(benches) == ["peers.py imports trial"] * 2
    assert bench_proc_reads(benches) == [
        "benches/peers.py:2: '/proc/loadavg'",
        "benches/suite.py:4: '/proc/'",
    ]


#: Granian's private names that ``sse-fast serve`` relies on (each checked against the
#: installed Granian by tests/test_granian_contract.py): code outside the door,
#: ``sse_fast/_granian/``, never says them (docstrings may name them)
GRANIAN_PRIVATE = frozenset(
    {
        "_init_shared_socket",
        "_spawn_worker",
        "_stop_workers",
        "_shd",
        "_ssp",
        "_sfd",
        "_sso",
        "main_loop_interrupt",
        "interrupt_signal",
        "interrupt_children",
        "wrks",
        "SocketHolder",
        "PyEmptyAwaitable",
    }
)


def granian_private_uses(package: Path) -> list[str]:
    """``file:line name`` of each private Granian name in the code of ``package``
    outside its ``_granian/`` folder: an attribute, a name, an import (of it, or from a
    ``granian._...`` module), or a string that holds one (``getattr(server, "...")``)."""
    found = []
    for path in sorted(package.rglob("*.py")):
        where = path.relative_to(package)
        if where.parts[0] == "_granian":
            continue
        tree = ast.parse(path.read_text())
        docstrings = docstring_ids(tree)
        for node in ast.walk(tree):
            said: set[str] = set()
            if isinstance(node, ast.Attribute):
                said = {node.attr}
            elif isinstance(node, ast.Name):
                said = {node.id}
            elif isinstance(node, ast.ImportFrom):
                said = {alias.name for alias in node.names}
                if (node.module or "").startswith("granian._"):
                    said.add(str(node.module))
            elif isinstance(node, ast.Import):
                said = {alias.name for alias in node.names if alias.name.startswith("granian._")}
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
            ):
                said = {name for name in GRANIAN_PRIVATE if name in node.value}
                if "granian._" in node.value:
                    said.add("granian._")
            for name in sorted(said & GRANIAN_PRIVATE | {n for n in said if "granian._" in n}):
                found.append(f"{package.name}/{where}:{node.lineno} {name}")  # type: ignore[attr-defined]
    return found


def test_granians_private_names_only_behind_its_door() -> None:
    """Everything that touches Granian's private parts is in ``sse_fast/_granian/``
    (docs/operations/granian.md): one place to change when Granian does."""
    assert granian_private_uses(PACKAGE) == []


def test_a_private_granian_name_outside_the_door_is_named(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "_granian").mkdir(parents=True)
    (package / "_granian" / "inside.py").write_text("x.main_loop_interrupt = None\n")
    (package / "outside.py").write_text(
        '"""main_loop_interrupt, named in a docstring: allowed."""\n'
        "from granian._granian import SocketHolder\n"
        "def f(server):\n"
        "    server._stop_workers()\n"
        "    return getattr(server, 'interrupt_signal', False)\n"
    )
    assert granian_private_uses(package) == [
        "pkg/outside.py:2 SocketHolder",
        "pkg/outside.py:2 granian._granian",
        "pkg/outside.py:4 _stop_workers",
        "pkg/outside.py:5 interrupt_signal",
    ]


# ---------------------------------------------------------------- construction


#: the composition roots: where a worker's parts are made, each under a name
ROOTS = {"sse_fast.app._worker": "worker_parts", "sse_fast.hub._hub": "Hub"}


def _classes() -> dict[str, tuple[str, ast.ClassDef]]:
    """Every class of the package by name: (its module, its definition)."""
    return {
        node.name: (name, node)
        for name, path in MODULES.items()
        for node in _nodes(path)
        if isinstance(node, ast.ClassDef)
    }


def _attributes(definition: ast.ClassDef) -> set[str]:
    """What a class's methods assign to ``self``."""
    return {
        target.attr
        for node in ast.walk(definition)
        for assigned in _targets(node)
        for target in ast.walk(assigned)
        if isinstance(target, ast.Attribute)
        and isinstance(target.value, ast.Name)
        and target.value.id == "self"
    }


def _family(name: str, classes: dict[str, tuple[str, ast.ClassDef]]) -> set[str]:
    """Class ``name`` and every class of the package made from it (``broker_for`` makes a
    ``Broker``: a ``RedisBroker``, ``RelayBroker`` or ``LocalBroker``)."""
    family = {name}
    while True:
        more = {
            other
            for other, (_, definition) in classes.items()
            if other not in family
            and any(ast.unparse(base).split(".")[-1] in family for base in definition.bases)
        }
        if not more:
            return family
        family |= more


def parts(roots: dict[str, str] = ROOTS) -> dict[str, tuple[set[str], set[str]]]:
    """The name each part goes by in its root (``self.fanout = FanOut(...)``,
    ``events=EventsEndpoint(...)``, ``start = WorkerStart(hub)``) -> the modules of its
    class (and of the classes made from it) and their attributes."""
    classes = _classes()
    found: dict[str, tuple[set[str], set[str]]] = {}
    for module, root in roots.items():
        (made_in,) = [
            node
            for node in _nodes(MODULES[module])
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == root
        ]
        # a helper of the root's module that makes one (``_topics_for(...) -> Topics``)
        makers = {
            node.name: node.returns.id
            for node in _nodes(MODULES[module])
            if isinstance(node, ast.FunctionDef) and isinstance(node.returns, ast.Name)
        }
        for node in ast.walk(made_in):
            pairs: list[tuple[ast.expr, ast.expr]] = []
            if isinstance(node, ast.Assign):
                pairs = [(target, node.value) for target in node.targets]
            elif isinstance(node, ast.keyword) and node.arg:
                pairs = [(ast.Name(node.arg), node.value)]
            for target, value in pairs:
                if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)):
                    continue
                made = makers.get(value.func.id, value.func.id)
                if made not in classes:
                    continue
                name = target.attr if isinstance(target, ast.Attribute) else ""
                name = name or (target.id if isinstance(target, ast.Name) else "")
                family = _family(made, classes)
                if name:
                    found[name] = (
                        {classes[one][0] for one in family},
                        set().union(*(_attributes(classes[one][1]) for one in family)),
                    )
    return found


def _stored(target: ast.expr) -> list[ast.Attribute]:
    """The attributes an assignment's target stores to (``a.b = ``, ``a.b, c.d = ``)."""
    if isinstance(target, ast.Attribute):
        return [target]
    if isinstance(target, ast.Tuple | ast.List):
        return [one for element in target.elts for one in _stored(element)]
    return []


def finished_from_outside(modules: dict[str, Path] = MODULES) -> set[str]:
    """Each place that assigns an attribute of a part from another module than its
    class's: ``<...>.fanout.on_first = ...`` outside ``hub/_fanout.py``."""
    known = parts()
    found = set()
    for module, path in modules.items():
        for node in _nodes(path):
            for assigned in _targets(node):
                for target in _stored(assigned):
                    base = target.value
                    name = base.attr if isinstance(base, ast.Attribute) else ""
                    name = name or (base.id if isinstance(base, ast.Name) else "")
                    if name not in known or name == "self":
                        continue
                    where, attributes = known[name]
                    if target.attr in attributes and module not in where:
                        found.add(f"{module}: {ast.unparse(target)}")
    return found


#: parts finished from outside once made (none: the Redis broker's Cluster rehoming,
#: the last, now moves the placement in place and adds to the feed's connections,
#: which it is given, issue 55)
FINISHED_FROM_OUTSIDE: set[str] = set()


def test_a_workers_parts_are_made_in_one_place() -> None:
    """No part of a worker is finished from outside once made: its collaborators and
    hooks are given as it is made, in ``app/_worker.py`` and ``Hub.__init__``."""
    known = parts()
    assert {"hub", "fanout", "topics", "streams", "operations", "lifespan", "start"} <= set(known)
    assert known["fanout"][0] == {"sse_fast.hub._fanout"} and "on_first" in known["fanout"][1]
    assert "sse_fast.brokers.redis._broker" in known["broker"][0]  # broker_for's family
    assert finished_from_outside() == FINISHED_FROM_OUTSIDE


def test_a_part_finished_from_outside_is_named(tmp_path: Path) -> None:
    path = tmp_path / "late.py"
    path.write_text("def late(hub, topics):\n    hub.fanout.on_first = print\n    topics.x = 1\n")
    assert finished_from_outside({"sse_fast.late": path}) == {"sse_fast.late: hub.fanout.on_first"}


# ---------------------------------------------------------------- settings by section


#: the composition roots, which may take the whole ``Settings``: the command line and
#: serve (``cli``, ``_compose``, ``_flags``), the worker's (``app/_worker.py``, the
#: app and its factory), the hub's (``Hub`` makes its own parts), and the settings'
#: own modules
SETTINGS_ROOTS = {
    "sse_fast.cli",
    "sse_fast._compose",
    "sse_fast._flags",
    "sse_fast.app",
    "sse_fast.app._worker",
    "sse_fast.app._routing",
    "sse_fast.hub._hub",
}


def take_the_whole_settings(modules: dict[str, Path] = MODULES) -> set[str]:
    """Functions and methods outside the roots with a parameter annotated ``Settings``
    (alone, optional, or quoted): a part given every setting, not its sections."""
    found = set()
    for module, path in modules.items():
        if module in SETTINGS_ROOTS or module.startswith("sse_fast.settings"):
            continue
        for node in _nodes(path):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            arguments = node.args
            for argument in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]:
                annotation = ast.unparse(argument.annotation) if argument.annotation else ""
                if re.search(r"(?<![\w.])(settings\.)?Settings\b", annotation.strip("'\"")):
                    found.add(f"{module}:{node.name}({argument.arg})")
    return found


def test_a_part_is_given_the_sections_it_reads() -> None:
    """Outside the composition roots no function takes the whole ``Settings``: each part
    is given its sections (``settings.limits``, ...; issue 55). The app's parts are
    walked for a held ``Settings`` too (``tests/app/test_composition.py``)."""
    assert take_the_whole_settings() == set()


def test_a_part_given_the_whole_settings_is_named(tmp_path: Path) -> None:
    path = tmp_path / "whole.py"
    path.write_text(
        "def a(settings: Settings): ...\n\nclass B:\n"
        "    def __init__(self, x, *, s: 'Settings | None' = None): ...\n\n"
        "def c(limits: LimitSettings, settings: settings.Settings): ...\n\n"
        "def d(limits: LimitSettings, s: MySettings): ...\n"
    )
    assert take_the_whole_settings({"sse_fast.whole": path}) == {
        "sse_fast.whole:a(settings)",
        "sse_fast.whole:__init__(s)",
        "sse_fast.whole:c(settings)",
    }


# ---------------------------------------------------------------- time limits


def time_limits_not_by_timeout(modules: dict[str, Path] = MODULES) -> set[str]:
    """Each await given a time limit otherwise than by ``asyncio.timeout``:
    ``asyncio.wait_for``, or a helper of its own (``within``, removed). (Waiting on
    tasks without cancelling them, ``asyncio.wait``'s ``timeout``, is another thing.)"""
    found = set()
    for module, path in modules.items():
        for node in _nodes(path):
            if isinstance(node, ast.Call):
                called = ast.unparse(node.func)
                if called in ("asyncio.wait_for", "within") or (
                    called == "wait_for" and module != "sse_fast.testing"  # a poller
                ):
                    found.add(f"{module}:{node.lineno}: {called}")
            elif (
                isinstance(node, ast.ImportFrom)
                and node.module == "asyncio"
                and any(alias.name == "wait_for" for alias in node.names)
            ):
                found.add(f"{module}:{node.lineno}: from asyncio import wait_for")
    return found


def test_one_way_to_put_a_time_limit_on_an_await() -> None:
    """``async with asyncio.timeout(seconds)``, everywhere (``sse_fast/_tasks.py``)."""
    assert time_limits_not_by_timeout() == set()


def test_another_way_to_time_out_is_named(tmp_path: Path) -> None:
    path = tmp_path / "late.py"
    path.write_text(
        "import asyncio\nfrom asyncio import wait_for\n\n"
        "async def f(x):\n    await asyncio.wait_for(x, 1)\n"
        "    async with asyncio.timeout(1):\n        await x\n"
    )
    assert time_limits_not_by_timeout({"sse_fast.late": path}) == {
        "sse_fast.late:2: from asyncio import wait_for",
        "sse_fast.late:5: asyncio.wait_for",
    }


# ---------------------------------------------------------------- hubs and brokers


#: module functions that take a hub or a broker first (none: the hub's opening of a
#: stream and the Redis broker's publishing, presence and directory became objects that
#: own what they use, issue 55; the issue's rule allows 5)
TAKE_A_BROKER_FIRST: set[str] = set()


def take_a_hub_or_broker_first(modules: dict[str, Path] = MODULES) -> set[str]:
    """Module functions whose first parameter is a hub or a broker (by its name, or
    its annotation: ``Hub``, ``Broker``, ``RedisBroker``, ...): logic of an object
    spread over its module's functions."""
    found = set()
    for module, path in modules.items():
        for node in _tree(path).body:
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            parameters = [*node.args.posonlyargs, *node.args.args]
            if not parameters:
                continue
            first = parameters[0]
            annotation = ast.unparse(first.annotation) if first.annotation else ""
            if first.arg in ("hub", "broker") or re.search(r"\w*(Hub|Broker)\b", annotation):
                found.add(f"{module}:{node.name}")
    return found


def test_few_module_functions_take_a_hub_or_broker_first() -> None:
    assert take_a_hub_or_broker_first() == TAKE_A_BROKER_FIRST


def test_a_function_taking_a_hub_first_is_named(tmp_path: Path) -> None:
    path = tmp_path / "spread.py"
    path.write_text(
        "def a(hub, x): ...\n\ndef b(member: 'RedisBroker'): ...\n\n"
        "def c(refusal, names): ...\n\nclass H:\n    def d(self, hub): ...\n"
    )
    assert take_a_hub_or_broker_first({"sse_fast.spread": path}) == {
        "sse_fast.spread:a",
        "sse_fast.spread:b",
    }


#: file names two folders share (none: the Redis broker's ``_presence.py`` became
#: ``_presence_store.py`` beside the hub's ``_presence.py``, issue 55)
SHARED_FILE_NAMES: set[str] = set()


def test_modules_are_named_apart_across_folders() -> None:
    """A newcomer reading ``_control.py`` should not have to ask which one."""
    folders: dict[str, set[Path]] = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name not in ("__init__.py", "__main__.py"):
            folders.setdefault(path.name, set()).add(path.parent)
    assert {name for name, where in folders.items() if len(where) > 1} == SHARED_FILE_NAMES
