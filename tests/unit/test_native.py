"""The compiled hot path's loader (idsvc/_native.py): used only when built from the current
sources for this interpreter, all or nothing, and never when IDSVC_NATIVE=off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import idsvc.auth.engine
import idsvc.directory.ldap.directory
import idsvc.wire.dovecot_auth.server
from idsvc import _native


def _manifest(build: Path, **overrides: object) -> None:
    """A manifest of the current sources, and (empty) files where the modules would be."""
    sources = {name: _native.digest(_native.source(name)) for name in _native.HOT}
    manifest = {"suffix": _native.SUFFIX, "sources": sources, **overrides}
    for name in _native.HOT:
        _native.compiled_path(name, build).parent.mkdir(parents=True, exist_ok=True)
        _native.compiled_path(name, build).touch()
    (build / _native.MANIFEST).write_text(json.dumps(manifest))


def test_check_says_why_a_build_is_not_usable(tmp_path: Path) -> None:
    build = tmp_path / "native"
    assert "not built" in (_native.check(build) or "")
    _manifest(build)
    assert _native.check(build) is None
    _manifest(build, suffix=".cpython-39-x86_64-linux-gnu.so")
    assert "another interpreter" in (_native.check(build) or "")
    _manifest(build, sources={"idsvc.auth.engine": "0" * 64})
    assert "another module list" in (_native.check(build) or "")
    stale = {name: _native.digest(_native.source(name)) for name in _native.HOT}
    stale["idsvc.auth.engine"] = "0" * 64
    _manifest(build, sources=stale)
    assert _native.check(build) == "stale: idsvc.auth.engine changed since the build"
    _manifest(build)
    _native.compiled_path("idsvc.auth.engine", build).unlink()
    assert (_native.check(build) or "").startswith("incomplete: no engine.")
    (build / _native.MANIFEST).write_text("{not json")
    assert "unreadable manifest" in (_native.check(build) or "")


def test_modules_already_imported_are_never_swapped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installing after a hot module was imported would mix compiled and pure code."""
    build = tmp_path / "native"
    _manifest(build)
    monkeypatch.setattr(_native, "STATUS", _native.STATUS)  # restored afterwards
    monkeypatch.delenv("IDSVC_NATIVE", raising=False)
    before = list(sys.meta_path)
    assert _native.install(build) is False
    assert sys.meta_path == before
    status = _native.STATUS
    assert status == f"pure Python ({_native.HOT[0]} was imported before the hook)"


def test_this_process_runs_what_the_status_says() -> None:
    """The hot modules this test session imported are compiled exactly when a usable build
    exists and IDSVC_NATIVE is not off; CI (CI=true) must test what ships: a usable build."""
    off = os.environ.get("IDSVC_NATIVE", "auto").lower() == "off"
    problem = _native.check()
    if os.environ.get("CI") == "true" and not off:
        assert problem is None, f"CI runs without the compiled hot path: {problem}"
    assert _native.compiled() is (problem is None and not off)
    for module in (idsvc.auth.engine, idsvc.directory.ldap.directory):
        assert (module.__file__ or "").endswith(_native.SUFFIX) is _native.compiled()
    assert idsvc.wire.dovecot_auth.server.__file__ is not None


@pytest.mark.parametrize("setting", ["off", "auto"])
def test_idsvc_native_off_keeps_pure_python(setting: str) -> None:
    code = "import idsvc.auth.engine, idsvc._native as n;print(n.compiled(), n.STATUS, sep='|')"
    env = {**os.environ, "IDSVC_NATIVE": setting}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    compiled, status = out.split("|", 1)
    if setting == "off":
        assert (compiled, status) == ("False", "pure Python (IDSVC_NATIVE=off)")
    else:
        assert compiled == str(_native.check() is None)
        assert status.startswith("compiled" if _native.check() is None else "pure Python")
