"""Print or write the API's OpenAPI 3.1 document (the committed copy is schemas/openapi.json).

Regenerate after changing the API::

    .venv/bin/python -m idsvc.api.openapi schemas/openapi.json

Without an argument the document goes to standard output. No directory is opened.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from idsvc.api.app import build_app
from idsvc.config import Settings

REGENERATE = ".venv/bin/python -m idsvc.api.openapi schemas/openapi.json"


def document() -> dict[str, Any]:
    return build_app(Settings()).openapi()


def render() -> str:
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1:
        print("usage: python -m idsvc.api.openapi [OUTPUT.json]", file=sys.stderr)
        return 2
    text = render()
    if args:
        Path(args[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
