"""Build the compiled hot path: ``python -m idsvc.native_build [--if-stale]``, or report on it
with ``--status``. See ``idsvc/_native.py`` for what and why. Takes about 40 s (two cores)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from idsvc._native import (
    BUILD_DIR,
    HOT,
    MANIFEST,
    PACKAGE_DIR,
    SUFFIX,
    check,
    compiled_path,
    digest,
    source,
)

# mypy settings for the build (the package's own live in pyproject.toml, which setuptools must
# not read in the build directory: mypyc drives a setup.py there)
MYPY_INI = """[mypy]
python_version = {major}.{minor}
plugins = pydantic.mypy

[mypy-ldap,ldap.*,passlib,passlib.*,pyotp,pyotp.*,aioimaplib]
ignore_missing_imports = True
"""


class BuildError(Exception):
    """mypyc (or the C compiler it runs) failed; the message has its output."""


def build(out: Path = BUILD_DIR) -> None:
    """Compile ``HOT`` with mypyc into ``out`` (replaced only once the build succeeded)."""
    with tempfile.TemporaryDirectory(prefix="idsvc-native-") as tmp:
        work = Path(tmp)
        shutil.copytree(
            PACKAGE_DIR, work / "idsvc", ignore=shutil.ignore_patterns("__pycache__", "*.so")
        )
        major, minor = sys.version_info[:2]
        (work / "mypy.ini").write_text(MYPY_INI.format(major=major, minor=minor))
        sources = [str(source(name, work).relative_to(work)) for name in HOT]
        run = subprocess.run(
            [sys.executable, "-m", "mypyc", *sources], cwd=work, capture_output=True, text=True
        )
        if run.returncode != 0:
            raise BuildError(f"mypyc failed (exit {run.returncode}):\n{run.stdout}{run.stderr}")
        out.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=".native-", dir=out.parent))
        try:
            for lib in work.glob(f"*{SUFFIX}"):  # the shared runtime library
                shutil.copy2(lib, staged / lib.name)
            for name in HOT:
                target = compiled_path(name, staged)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(compiled_path(name, work), target)
            digests = {name: digest(source(name, work)) for name in HOT}
            manifest = {"suffix": SUFFIX, "sources": digests}
            (staged / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
            if out.exists():
                shutil.rmtree(out)
            staged.rename(out)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise


def main(argv: Sequence[str]) -> int:
    if "--status" in argv:
        problem = check()
        print("compiled hot path: usable" if problem is None else f"compiled hot path: {problem}")
        return 0 if problem is None else 1
    if "--if-stale" in argv and check() is None:
        print(f"compiled hot path: up to date in {BUILD_DIR}")
        return 0
    try:
        build()
    except (BuildError, OSError) as exc:
        print(f"compiled hot path: not built, pure Python stays in use: {exc}", file=sys.stderr)
        return 1
    print(f"compiled hot path: built in {BUILD_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
