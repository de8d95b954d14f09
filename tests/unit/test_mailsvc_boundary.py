"""mailsvc is a separate program: it imports nothing from idsvc, statically or at run time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

MAILSVC = Path(__file__).resolve().parents[2] / "mailsvc"


def test_no_module_imports_idsvc() -> None:
    offenders = []
    for path in MAILSVC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "idsvc"]
    assert offenders == []
    assert len(list(MAILSVC.rglob("*.py"))) > 10


def test_importing_the_server_loads_no_idsvc_module() -> None:
    code = (
        "import sys, mailsvc.serve, mailsvc.cli, mailsvc.maildir;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'idsvc'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
        cwd=MAILSVC.parent,
    )  # fmt: skip
    assert out.stdout.strip() == "[]"
