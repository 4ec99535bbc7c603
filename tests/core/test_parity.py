"""The Cython core and its pure twins: one API, the same answers.

The API is written once, in ``sse_fast/_core/<name>_ext.pyi`` for each name of
``NATIVE_MODULES`` (``sse_fast/_core/native.py``); ``.ci/stubtest.sh`` checks both
implementations against it with ``mypy.stubtest``. Here the same stubs are read
again, so that a twin cannot drift even where stubtest does not run (a tree
without the extension), and what stubs cannot say is pinned: both implementations
refuse the same ``None`` and wrong-type arguments with the same exception, the
same attributes are read-only, values and errors pickle, and equal events hash
equal.
"""

from __future__ import annotations

import ast
import copy
import importlib
import inspect
import pickle
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import sse_fast
from sse_fast import EncodeError, EventTooLarge, Lagged, ParseError
from sse_fast._core.native import NATIVE_MODULES

from ..conftest import PARITY_IMPLEMENTATIONS, as_tuples, load_implementation, needs_both

IMPLS = {name: load_implementation(name) for name in PARITY_IMPLEMENTATIONS}
STUBS = Path(sse_fast.__file__).parent / "_core"


def _public(obj: Any) -> set[str]:
    return {n for n in dir(obj) if not n.startswith("_")}


def _instances(impl: SimpleNamespace) -> dict[str, Any]:
    return {
        "Event": impl.Event({"n": 1}, event="e", id=1, retry=5, comment="c"),
        "ParsedEvent": impl.ParsedEvent("message", "d", "1", None),
        "Parser": impl.Parser(),
        "Ring": impl.Ring(),
    }


# -- the stubs, read back -------------------------------------------------------------


def _parameters(function: ast.FunctionDef) -> list[tuple[str, str]]:
    arguments = function.args
    kinds = [
        *[(a.arg, "POSITIONAL_ONLY") for a in arguments.posonlyargs],
        *[(a.arg, "POSITIONAL_OR_KEYWORD") for a in arguments.args],
        *[(a.arg, "KEYWORD_ONLY") for a in arguments.kwonlyargs],
    ]
    return [(name, kind) for name, kind in kinds if name != "self"]


def _stub(module: str) -> SimpleNamespace:
    """Names, ``__all__``, signatures and read-only attributes the stub declares."""
    tree = ast.parse((STUBS / f"{module}_ext.pyi").read_text())
    stub = SimpleNamespace(all=[], names=set(), functions={}, classes={})
    for node in tree.body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "__all__":
            stub.all = ast.literal_eval(node.value)
        elif isinstance(node, ast.AnnAssign):
            stub.names.add(ast.unparse(node.target))
        elif isinstance(node, ast.ImportFrom):
            stub.names |= {a.asname for a in node.names if a.asname == a.name}
        elif isinstance(node, ast.FunctionDef):
            stub.names.add(node.name)
            stub.functions[node.name] = _parameters(node)
        elif isinstance(node, ast.ClassDef):
            stub.names.add(node.name)
            members: dict[str, str] = {}  # name -> "method", "read-only" or "writable"
            methods: dict[str, list[tuple[str, str]]] = {}
            for item in node.body:
                if isinstance(item, ast.AnnAssign):
                    members[ast.unparse(item.target)] = "writable"
                elif isinstance(item, ast.FunctionDef):
                    decorators = [ast.unparse(d) for d in item.decorator_list]
                    if "property" in decorators:
                        members[item.name] = "read-only"
                    elif f"{item.name}.setter" in decorators:
                        members[item.name] = "writable"
                    else:
                        members[item.name] = "method"
                        methods[item.name] = _parameters(item)
            stub.classes[node.name] = SimpleNamespace(members=members, methods=methods)
    return stub


def _signature(function: Callable[..., Any]) -> list[tuple[str, str]]:
    try:
        signature = inspect.signature(function)
    except ValueError:  # a cdef class: its signature is the docstring's first line
        assert isinstance(function, type) and function.__doc__, function
        header = function.__doc__.splitlines()[0].removeprefix(function.__name__)
        (definition,) = ast.parse(f"def __init__{header}: pass").body
        assert isinstance(definition, ast.FunctionDef)
        return _parameters(definition)
    return [(p.name, p.kind.name) for p in signature.parameters.values()]


@pytest.mark.parametrize("impl_name", PARITY_IMPLEMENTATIONS)
@pytest.mark.parametrize("module", NATIVE_MODULES)
def test_module_is_its_stub(impl_name: str, module: str) -> None:
    """Each implementation has the names, ``__all__`` and signatures of the stub."""
    stub = _stub(module)
    runtime = importlib.import_module(f"sse_fast._core.{module}_{impl_name}")
    assert runtime.__all__ == stub.all
    assert not {n for n in stub.names if not hasattr(runtime, n)}
    for name, parameters in stub.functions.items():
        assert _signature(getattr(runtime, name)) == parameters, name
    for name, declared in stub.classes.items():
        cls = getattr(runtime, name)
        assert _signature(cls) == declared.methods.pop("__init__"), name
        for method, parameters in declared.methods.items():
            if not method.startswith("__"):  # dunders: positional-only in the stub, by rule
                assert _signature(getattr(cls, method))[1:] == parameters, f"{name}.{method}"


@pytest.mark.parametrize("impl_name", PARITY_IMPLEMENTATIONS)
@pytest.mark.parametrize("name", ["Event", "ParsedEvent", "Parser", "Ring"])
def test_attributes_are_the_stubs(impl_name: str, name: str) -> None:
    """Public attributes are exactly the stub's; its properties refuse assignment and
    deletion, its plain attributes take it; no attribute can be added."""
    module = {"Event": "encoder", "Ring": "ring"}.get(name, "parser")
    members = _stub(module).classes[name].members
    obj = _instances(IMPLS[impl_name])[name]
    assert _public(obj) == {m for m in members if not m.startswith("_")}
    for attribute, kind in members.items():
        if kind == "method" or attribute.startswith("_"):
            continue
        value = getattr(obj, attribute)
        if kind == "read-only":
            with pytest.raises(AttributeError):
                setattr(obj, attribute, value)
        else:
            setattr(obj, attribute, value)
        with pytest.raises(AttributeError):
            delattr(obj, attribute)
    with pytest.raises(AttributeError):
        obj.no_such_attribute = 1


# -- the two implementations, compared ------------------------------------------------


@needs_both
def test_same_public_names_and_attributes() -> None:
    ext, py = IMPLS["ext"], IMPLS["py"]
    for module in NATIVE_MODULES:
        compiled = importlib.import_module(f"sse_fast._core.{module}_ext")
        twin = importlib.import_module(f"sse_fast._core.{module}_py")
        assert compiled.__all__ == twin.__all__, module
        for name in compiled.__all__:
            if isinstance(getattr(compiled, name), type):
                assert _public(getattr(compiled, name)) == _public(getattr(twin, name)), name
    for name, ext_obj in _instances(ext).items():
        assert _public(ext_obj) == _public(_instances(py)[name]), name


@needs_both
@pytest.mark.parametrize("name", ["Event", "ParsedEvent", "Parser", "Ring"])
def test_the_same_attributes_are_read_only(name: str) -> None:
    outcomes = {}
    for impl_name, impl in IMPLS.items():
        obj = _instances(impl)[name]
        writable = set()
        for attribute in sorted(_public(obj)):
            value = getattr(obj, attribute)
            if callable(value):
                continue
            try:
                setattr(obj, attribute, value)
            except AttributeError:
                continue
            writable.add(attribute)
        outcomes[impl_name] = writable
    assert outcomes["ext"] == outcomes["py"]
    expected_writable = {"Parser": {"last_event_id", "retry"}}.get(name, set())
    assert outcomes["py"] == expected_writable


# One valid call of each public callable: (callable, positional args, keyword args).
# Every argument is then replaced, in turn, by each of BAD_VALUES.
def _ring_with_a_frame(impl: SimpleNamespace) -> Any:
    ring = impl.Ring(max_frames=4, max_bytes=64)
    ring.publish(b"data: x\n\n", "a")
    return ring


VALID_CALLS: dict[str, Callable[[SimpleNamespace], tuple[Any, tuple[Any, ...], dict[str, Any]]]] = {
    "encode": lambda i: (
        i.encode,
        (),
        {"data": "x", "event": "e", "id": "1", "retry": 1, "comment": "c"},
    ),
    "Event": lambda i: (
        i.Event,
        (),
        {"data": "x", "event": "e", "id": 1, "retry": 1, "comment": "c"},
    ),
    "encode_many": lambda i: (i.encode_many, ([i.Event("x")],), {}),
    "utf8_error_at": lambda i: (i.utf8_error_at, (b"x",), {}),
    "ParsedEvent": lambda i: (i.ParsedEvent, ("message", "d", "1", 5), {}),
    "Parser": lambda i: (i.Parser, (), {"max_event_size": 64, "last_event_id": "7"}),
    "Parser.feed": lambda i: (i.Parser().feed, (b"data: x\n\n",), {}),
    "Ring": lambda i: (i.Ring, (), {"max_frames": 4, "max_bytes": 64}),
    "Ring.publish": lambda i: (i.Ring().publish, (b"data: x\n\n",), {"event_id": "a"}),
    "Ring.pending": lambda i: (_ring_with_a_frame(i).pending, (0,), {}),
    "Ring.read_since": lambda i: (_ring_with_a_frame(i).read_since, (0,), {}),
    "Ring.read_frames": lambda i: (_ring_with_a_frame(i).read_frames, (0,), {}),
    "Ring.resume": lambda i: (_ring_with_a_frame(i).resume, ("a",), {}),
    "Ring.trim": lambda i: (_ring_with_a_frame(i).trim, (0,), {}),
}
BAD_VALUES: dict[str, Any] = {
    "None": None,
    "True": True,
    "-1": -1,
    "2**70": 2**70,
    "1.5": 1.5,
    "'text'": "text",
    "b'bytes'": b"bytes",
    "object()": object(),
}


def _bad_calls() -> list[Any]:
    sample = load_implementation("py")
    cases = []
    for name, make in VALID_CALLS.items():
        _, args, kwargs = make(sample)
        slots: list[int | str] = [*range(len(args)), *kwargs]
        for slot in slots:
            for text, value in BAD_VALUES.items():
                shown = f"{name}[{slot}={text}]"
                cases.append(pytest.param(name, slot, value, id=shown))
    return cases


def _outcome(call: Callable[[], Any]) -> Any:
    """The exception's type, or the result in a form both implementations share."""
    try:
        result = call()
    except Exception as exc:
        return type(exc).__name__
    if isinstance(result, list):
        return as_tuples(result) if result and hasattr(result[0], "data") else result
    if result is None or isinstance(result, (bytes, int, str, tuple)):
        return result
    return type(result).__name__


@needs_both
@pytest.mark.parametrize(("name", "slot", "value"), _bad_calls())
def test_none_and_wrong_types_get_the_same_answer(name: str, slot: int | str, value: Any) -> None:
    outcomes = {}
    for impl_name, impl in IMPLS.items():
        function, args, kwargs = VALID_CALLS[name](impl)
        if isinstance(slot, int):
            args = (*args[:slot], value, *args[slot + 1 :])
        else:
            kwargs = {**kwargs, slot: value}
        outcomes[impl_name] = _outcome(lambda: function(*args, **kwargs))  # noqa: B023
    assert outcomes["ext"] == outcomes["py"]


MORE_CALLS: list[tuple[str, Callable[[SimpleNamespace], Any]]] = [
    ("Parser(last_event_id=None)", lambda i: i.Parser(last_event_id=None)),
    ("Parser().feed('text')", lambda i: i.Parser().feed("text")),
    ("Parser().last_event_id = None", lambda i: setattr(i.Parser(), "last_event_id", None)),
    ("Parser().last_event_id = 5", lambda i: setattr(i.Parser(), "last_event_id", 5)),
    ("Parser().retry = 5", lambda i: setattr(i.Parser(), "retry", 5)),
    ("Ring().read_since(5)", lambda i: i.Ring().read_since(5)),
    ("encode()", lambda i: i.encode()),
    ("encode_many([None])", lambda i: i.encode_many([None])),
    ("Event()", lambda i: i.Event()),
    ("pickle Parser", lambda i: pickle.dumps(i.Parser())),
    ("pickle Ring", lambda i: pickle.dumps(i.Ring())),
    ("copy Parser", lambda i: copy.copy(i.Parser())),
    ("deepcopy Ring", lambda i: copy.deepcopy(i.Ring())),
    ("hash ParsedEvent", lambda i: hash(i.ParsedEvent("message", "d", "", None))),
]


@needs_both
@pytest.mark.parametrize(("text", "call"), MORE_CALLS, ids=[text for text, _ in MORE_CALLS])
def test_edge_calls_get_the_same_answer(text: str, call: Any) -> None:
    assert _outcome(lambda: call(IMPLS["ext"])) == _outcome(lambda: call(IMPLS["py"])), text


@needs_both
def test_signatures_match() -> None:
    ext, py = IMPLS["ext"], IMPLS["py"]
    for name in ("encode", "encode_many", "utf8_error_at", "Event", "ParsedEvent"):
        assert _signature(getattr(ext, name)) == _signature(getattr(py, name)), name
    for cls in ("Event", "Parser", "Ring"):
        assert _signature(getattr(ext, cls)) == _signature(getattr(py, cls)), cls
        for method in sorted(_public(getattr(ext, cls))):
            compiled = getattr(getattr(ext, cls), method)
            if callable(compiled):
                twin = getattr(getattr(py, cls), method)
                assert _signature(compiled) == _signature(twin), f"{cls}.{method}"


# -- what each implementation must do -------------------------------------------------


@pytest.mark.parametrize("impl_name", PARITY_IMPLEMENTATIONS)
def test_equal_events_hash_equal(impl_name: str) -> None:
    impl = IMPLS[impl_name]
    # equal means the same bytes on the wire
    assert impl.Event(1) != impl.Event(1.0)
    assert impl.Event("1") == impl.Event(1) and hash(impl.Event("1")) == hash(impl.Event(1))
    assert impl.Event({"a": 1}, id=2) == impl.Event({"a": 1}, id="2")
    assert len({impl.Event(1), impl.Event(1.0), impl.Event("1")}) == 2


@pytest.mark.parametrize("impl_name", PARITY_IMPLEMENTATIONS)
def test_errors_and_values_pickle(impl_name: str) -> None:
    impl = IMPLS[impl_name]
    parser = impl.Parser(max_event_size=10)
    with pytest.raises(EventTooLarge) as info:
        parser.feed(b"data: ok\n\ndata: " + b"x" * 50)
    info.value.add_note("while reading topic t")
    errors: list[Exception] = [
        info.value,
        ParseError("broken", []),
        EncodeError("id", "bad"),
        Lagged(3, 7),
    ]
    for error in errors:
        copied = pickle.loads(pickle.dumps(error))
        assert type(copied) is type(error) and str(copied) == str(error)
        assert copied.__dict__.keys() == error.__dict__.keys()
    copied = pickle.loads(pickle.dumps(info.value))
    assert (copied.size, copied.limit) == (info.value.size, info.value.limit)
    assert copied.events == info.value.events and len(copied.events) == 1
    assert copied.__notes__ == ["while reading topic t"]
    event = impl.ParsedEvent("message", "d", "1", 3)
    assert pickle.loads(pickle.dumps(event)) == event
    sse_event = impl.Event({"n": 1}, event="e", id=1)
    assert pickle.loads(pickle.dumps(sse_event)).encode() == sse_event.encode()


@pytest.mark.parametrize("impl_name", PARITY_IMPLEMENTATIONS)
def test_parser_and_ring_refuse_to_be_copied(impl_name: str) -> None:
    """Both hold live state (a stream half read, a log with cursors into it); a
    copy would be a second owner. The error says what to do instead."""
    impl = IMPLS[impl_name]
    for obj, advice in ((impl.Parser(), "new Parser"), (impl.Ring(), "new Ring")):
        for attempt in (pickle.dumps, copy.copy, copy.deepcopy):
            with pytest.raises(TypeError, match=f"cannot be pickled or copied.*{advice}"):
                attempt(obj)
