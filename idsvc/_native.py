"""Compiled (mypyc) builds of the authentication hot path, and the import hook that loads them.

What. ``HOT`` lists the modules an uncached authentication runs through: the Dovecot codec and
listener, the auth core, the LDAP directory and its event-loop client, the entry mapping. They
are ``mypy --strict`` clean, which is what mypyc needs; compiled, an authentication costs 6 to 16 %
less CPU (docs/auth.md, "Compiled hot path").
The Python sources stay the reference: every module also runs, and is tested, as plain Python.

Building. ``python -m idsvc.native_build`` (run by ``scripts/bootstrap``) copies the package to
a temporary directory, compiles ``HOT`` there with mypyc and moves the extension modules to
``build/native/`` beside the package, with ``manifest.json``: the interpreter's extension
suffix and the SHA-256 of every source compiled. The checkout's own files are never touched, so
an edited ``.py`` is never shadowed by a stale ``.so``.

Loading. ``install()`` runs when ``idsvc`` is imported. It puts a finder first on
``sys.meta_path`` for the ``HOT`` modules only when the manifest matches this interpreter and
*every* source is unchanged; otherwise nothing is compiled in (all or nothing: compiled modules
call each other natively, so a compiled module must never meet a changed pure one). Setting
``IDSVC_NATIVE=off`` keeps everything pure Python. ``STATUS`` says which case applied, and
``idsvc serve`` logs it at start.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

HOT = (
    "idsvc.auth.cache",
    "idsvc.auth.engine",
    "idsvc.auth.inputs",
    "idsvc.auth.penalty",
    "idsvc.auth.request",
    "idsvc.directory.ldap.aio",
    "idsvc.directory.ldap.directory",
    "idsvc.directory.mapping",
    "idsvc.wire.dovecot_auth.protocol",
    "idsvc.wire.dovecot_auth.server",
)
PACKAGE_DIR = Path(__file__).resolve().parent
BUILD_DIR = PACKAGE_DIR.parent / "build" / "native"
MANIFEST = "manifest.json"
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]  # e.g. .cpython-311-x86_64-linux-gnu.so

STATUS = "pure Python (not installed yet)"


def source(module: str, root: Path = PACKAGE_DIR.parent) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def compiled_path(module: str, build: Path = BUILD_DIR) -> Path:
    return build.joinpath(*module.split(".")).with_suffix(SUFFIX)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check(build: Path = BUILD_DIR) -> str | None:
    """None when ``build`` holds a usable build of the current sources, else why not."""
    try:
        manifest = json.loads((build / MANIFEST).read_text())
    except FileNotFoundError:
        return "not built (python -m idsvc.native_build)"
    except (OSError, ValueError) as exc:
        return f"unreadable manifest: {exc}"
    if manifest.get("suffix") != SUFFIX:
        return f"built for another interpreter ({manifest.get('suffix')})"
    sources = manifest.get("sources")
    if not isinstance(sources, dict) or set(sources) != set(HOT):
        return "built for another module list"
    for module, expected in sources.items():
        if not compiled_path(module, build).is_file():
            return f"incomplete: no {compiled_path(module, build).name} for {module}"
        try:
            if digest(source(module)) != expected:
                return f"stale: {module} changed since the build"
        except OSError as exc:
            return f"cannot read {module}: {exc}"
    return None


class _Finder:
    """Finds the ``HOT`` modules in the build directory (a ``sys.meta_path`` entry)."""

    def __init__(self, build: Path) -> None:
        self._build = build

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in HOT:
            return None
        return importlib.util.spec_from_file_location(
            fullname, compiled_path(fullname, self._build)
        )


def install(build: Path = BUILD_DIR) -> bool:
    """Load ``HOT`` from ``build`` from now on, if it is a usable build; sets ``STATUS``."""
    global STATUS
    if os.environ.get("IDSVC_NATIVE", "auto").lower() == "off":
        STATUS = "pure Python (IDSVC_NATIVE=off)"
        return False
    loaded = [name for name in HOT if name in sys.modules]
    if loaded:
        STATUS = f"pure Python ({loaded[0]} was imported before the hook)"
        return False
    problem = check(build)
    if problem is not None:
        STATUS = f"pure Python ({problem})"
        return False
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.path.append(str(build))  # mypyc's shared runtime library is a top-level module
        sys.meta_path.insert(0, _Finder(build))
    STATUS = f"compiled (mypyc, {len(HOT)} modules from {build})"
    return True


def compiled() -> bool:
    """True when the hot path runs compiled code: every ``HOT`` module imported so far (at
    least one) is an extension module."""
    loaded = [sys.modules[name] for name in HOT if name in sys.modules]
    return bool(loaded) and all((m.__file__ or "").endswith(SUFFIX) for m in loaded)
