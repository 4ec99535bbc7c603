"""The pages' JavaScript: pinned packages from a registry, checked, served locally.

Nothing is loaded from a CDN: the pages work without internet. Each library
comes from a package registry at a pinned version, through the registry's own
client (``npm pack``, ``pip download``); the archive's SHA-256 and the served
file's SHA-256 are both checked, so a registry that serves something else (or a
corrupted cache) is refused with a message saying what differed.

* **htmx** ``htmx.org`` 2.0.11 and its SSE extension ``htmx-ext-sse`` 2.2.4
  (npm). htmx 4 moved SSE into its core; the FastAPI + HTMX guide the sensor
  example follows uses htmx 2 with the extension.
* **Datastar** 1.0.1: the 1.0 client, which speaks ``datastar-patch-elements``
  and ``datastar-patch-signals`` (as ``datastar-py`` 1.0.3 and our helpers do),
  is not on npm (npm's ``@starfederation/datastar`` stops at 1.0.0-beta.11, with
  the older event names). The PyPI wheel ``starhtml`` 0.7.0 carries it as
  package data (``starhtml/static/js/datastar-core.js``, marked "Datastar
  v1.0.1 (StarHTML patched: shadow-dom-scan, outside-race-fix)"). The wheel
  installs only on Python >= 3.12; ``pip download --no-deps --python-version
  3.13 --only-binary=:all:`` fetches it on any Python, and nothing of it but
  that file is used.

``python -m examples.vendor`` fetches what is missing (``python -m examples``
does it before serving), and writes ``events.js``: the client ``sse-fast
codegen`` generates from the typed example's declarations
(``examples/typed_events.py``), compiled with the pinned TypeScript 5.9.3
(``tsc --strict``; node runs it).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VENDOR = Path(__file__).parent / "static" / "vendor"


class VendorError(RuntimeError):
    """A pinned library could not be fetched or did not match its hash."""


@dataclass(frozen=True)
class Pinned:
    registry: str  # "npm" or "pypi"
    name: str
    version: str
    archive: str  # the archive's file name, as the registry's client saves it
    archive_sha256: str
    member: str  # the file taken from the archive
    served_as: str  # its name under /static/vendor/
    sha256: str  # of that file

    @property
    def spec(self) -> str:
        return (
            f"{self.name}@{self.version}"
            if self.registry == "npm"
            else f"{self.name}=={self.version}"
        )


PINNED = (
    Pinned(
        "npm",
        "htmx.org",
        "2.0.11",
        "htmx.org-2.0.11.tgz",
        "165a2655073e9e6e55e307a7c74e8ebcdb76afb7701f9c16cfd106a13add408e",
        "package/dist/htmx.min.js",
        "htmx.min.js",
        "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717",
    ),
    Pinned(
        "npm",
        "htmx-ext-sse",
        "2.2.4",
        "htmx-ext-sse-2.2.4.tgz",
        "90b46f5ab915ba2f64e6348448c8dba509277a47e15c125ffb65754eb4f6b5dc",
        "package/dist/sse.js",
        "htmx-ext-sse.js",
        "3b5992a541619babefc4c169505af474df5c3039da51e59b96ccf9241ecd61d2",
    ),
    Pinned(
        "pypi",
        "starhtml",
        "0.7.0",
        "starhtml-0.7.0-py3-none-any.whl",
        "3515ac3a21f1be7ce3e724b45440ed2be20d3afcdb60f92f6ebbfaec883d3ea2",
        "starhtml/static/js/datastar-core.js",
        "datastar.js",
        "31c8c9efb895beadeba5f73407c3ca60201dee321c5dea56c182817b475bde9f",
    ),
)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def present(pin: Pinned, directory: Path = VENDOR) -> bool:
    path = directory / pin.served_as
    return path.is_file() and _sha256(path.read_bytes()) == pin.sha256


def _download(pin: Pinned, into: Path) -> Path:
    if pin.registry == "npm":
        if shutil.which("npm") is None:
            raise VendorError(
                f"{pin.spec} comes from npm, and npm is not installed (apt-get install npm)"
            )
        command = ["npm", "pack", "--silent", "--pack-destination", str(into), pin.spec]
    else:
        command = [
            *(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"),
            *("--python-version", "3.13", "--only-binary=:all:", "--dest", str(into), pin.spec),
        ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    except subprocess.TimeoutExpired:
        raise VendorError(f"fetching {pin.spec} from {pin.registry} took over 300 s") from None
    archive = into / pin.archive
    if done.returncode != 0 or not archive.is_file():
        raise VendorError(
            f"fetching {pin.spec} from {pin.registry} failed ({' '.join(command[:3])} ...): "
            f"{(done.stderr or done.stdout).strip()[-500:]}"
        )
    return archive


def _member(pin: Pinned, archive: Path) -> bytes:
    try:
        if pin.archive.endswith(".whl"):
            with zipfile.ZipFile(archive) as wheel:
                return wheel.read(pin.member)
        with tarfile.open(archive) as tar:
            member = tar.extractfile(pin.member)
            if member is None:
                raise KeyError(pin.member)
            return member.read()
    except (KeyError, OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise VendorError(f"cannot read {pin.member} from {pin.archive}: {exc!r}") from None


def _checked_archive(pin: Pinned, into: Path) -> Path:
    """``pin``'s archive downloaded into ``into``, its SHA-256 checked."""
    archive = _download(pin, into)
    got = _sha256(archive.read_bytes())
    if got != pin.archive_sha256:
        raise VendorError(
            f"{pin.archive} from {pin.registry} has SHA-256 {got}, pinned {pin.archive_sha256}: "
            "refusing it (a different build under the same version, or a corrupt cache)"
        )
    return archive


@contextlib.contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """One process at a time writes into ``directory`` (the test suite runs in
    several processes, which would otherwise unpack and write the same files at
    once on a fresh machine)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def fetch(pin: Pinned, directory: Path = VENDOR) -> None:
    """Download ``pin``'s archive, check both hashes, write the one file."""
    with tempfile.TemporaryDirectory(prefix="sse-fast-vendor-") as tmp:
        data = _member(pin, _checked_archive(pin, Path(tmp)))
    got = _sha256(data)
    if got != pin.sha256:
        raise VendorError(f"{pin.member} in {pin.archive} has SHA-256 {got}, pinned {pin.sha256}")
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / (pin.served_as + ".partial")
    partial.write_bytes(data)
    partial.replace(directory / pin.served_as)


#: TypeScript, to compile the client generated from the typed example's
#: declarations (``typed_client``); the whole package is kept (tsc needs its lib files)
TYPESCRIPT = Pinned(
    "npm",
    "typescript",
    "5.9.3",
    "typescript-5.9.3.tgz",
    "10e108c9cf7d5f2879053dff18515fb405abf2ccef63eaaf017d9c571687a1d3",
    "package/lib/tsc.js",
    "",
    "2cffde0b8c6760dfb0b5b0382bbb7e00ba6a8b2d981b9205b256a700a481d983",
)
CACHE = Path(os.environ.get("SSE_FAST_EXAMPLES_CACHE", Path.home() / ".cache" / "sse-fast"))


def unpacked(pin: Pinned, cache: Path = CACHE) -> Path:
    """``pin``'s member in its whole package, unpacked once into ``cache`` (a tool that
    needs the files around it); both hashes checked."""
    root = cache / f"{pin.name.replace('/', '+')}-{pin.version}"
    tool = root / pin.member
    if tool.is_file() and _sha256(tool.read_bytes()) == pin.sha256:
        return tool
    with _exclusive(cache):
        if tool.is_file() and _sha256(tool.read_bytes()) == pin.sha256:
            return tool  # another process unpacked it meanwhile
        with (
            tempfile.TemporaryDirectory(prefix="sse-fast-vendor-") as tmp,
            tarfile.open(_checked_archive(pin, Path(tmp))) as tar,
        ):
            tar.extractall(root, filter="data")
    if not tool.is_file() or _sha256(tool.read_bytes()) != pin.sha256:
        raise VendorError(f"{pin.member} in {pin.archive} is not the pinned file")
    return tool


def typescript_compiler(cache: Path = CACHE) -> Path:
    """The pinned ``tsc.js`` (run it with node)."""
    return unpacked(TYPESCRIPT, cache)


def typed_client(schema: dict[str, Any], directory: Path = VENDOR) -> Path:
    """``events.js``: the TypeScript client ``sse-fast codegen`` writes for
    ``schema``, compiled with ``tsc --strict`` (again only when it changed)."""
    from sse_fast.codegen import generate

    source = generate(schema, "typescript")
    stamp = f"// generated by sse-fast codegen, source {_sha256(source.encode())[:16]}\n"
    out = directory / "events.js"
    if out.is_file() and out.read_text().startswith(stamp):
        return out
    node = shutil.which("node")
    if node is None:
        raise VendorError("compiling the typed client needs node (apt-get install nodejs)")
    tsc = typescript_compiler()
    with tempfile.TemporaryDirectory(prefix="sse-fast-codegen-") as tmp:
        (Path(tmp) / "events.ts").write_text(source)
        options = ["--strict", "--target", "es2020", "--module", "es2020", "--lib", "es2020,dom"]
        done = subprocess.run(
            [node, str(tsc), *options, "--outDir", tmp, str(Path(tmp) / "events.ts")],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise VendorError(f"the generated client does not compile: {done.stdout[-2000:]}")
        compiled = (Path(tmp) / "events.js").read_text()
    directory.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f"events.js.{os.getpid()}.partial")
    partial.write_text(stamp + compiled)
    partial.replace(out)  # whole or not at all, for a reader in another process
    return out


def ensure(directory: Path = VENDOR, *, quiet: bool = False) -> None:
    """Fetch every pinned file that is missing or differs from its hash; write the
    typed example's client (``typed_client``). One process at a time."""
    from sse_fast.schemas import Schemas

    from .typed_events import streams

    with _exclusive(directory):
        for pin in PINNED:
            if not present(pin, directory):
                if not quiet:
                    print(f"fetching {pin.spec} from {pin.registry} ...", file=sys.stderr)
                fetch(pin, directory)
        typed_client(Schemas(streams).json_schema(), directory)


if __name__ == "__main__":
    try:
        ensure()
    except VendorError as exc:
        sys.exit(f"examples.vendor: {exc}")
    for pin in PINNED:
        print(f"{pin.served_as:18} {pin.spec:22} sha256 {pin.sha256}")
