"""Maildir++ ``maildirsize`` usage."""

from __future__ import annotations

from pathlib import Path

import pytest

from idsvc.quota import MAX_SIZE, maildir_usage


@pytest.mark.parametrize(
    ("content", "usage"),
    [
        (b"1000000S\n", 0),
        (b"1000000S,1000C\n2048 2\n100 1\n-48 -1\n", 2100),
        (b"1000000S\n  512 1  \n\n", 512),
        (b"1000000S\n-5 -1\n", 0),  # never negative
        (b"1000000S\nabc 1\n", None),  # malformed: unknown
        (b"1000000S\n" + b"1 1\n" * (MAX_SIZE // 4 + 1), None),  # too large: unknown
    ],
)
def test_usage(tmp_path: Path, content: bytes, usage: int | None) -> None:
    (tmp_path / "maildirsize").write_bytes(content)
    assert maildir_usage(tmp_path) == usage


def test_missing_file_is_unknown(tmp_path: Path) -> None:
    assert maildir_usage(tmp_path) is None
    assert maildir_usage(tmp_path / "nope") is None
