"""The POP3 codec: command parsing (table of malformed input), responses with RFC 2449 codes,
byte-stuffing of RETR/TOP bodies (hypothesis: un-stuffing gives the message back with CRLF line
ends), Dovecot-compatible UIDLs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailsvc.pop3 import protocol as p


@pytest.mark.parametrize(
    ("line", "name", "args"),
    [
        (b"STAT", "STAT", ()),
        (b"list 2", "LIST", ("2",)),
        (b"TOP 1 10", "TOP", ("1", "10")),
        (b"PASS secret with spaces", "PASS", ("secret with spaces",)),
        (b"AUTH PLAIN AGFsaWNlAHB3", "AUTH", ("PLAIN", "AGFsaWNlAHB3")),
        (b"USER alice@example.org", "USER", ("alice@example.org",)),
    ],
)
def test_parse(line: bytes, name: str, args: tuple[str, ...]) -> None:
    assert p.parse(line) == p.Command(name, args)


@pytest.mark.parametrize(
    "line",
    [b"", b" ", b"ST", b"STATUS", b"ST4T", b"RETR\x001", b"RETR 1\r", b"RETR \xff",
     b"TOP 1 2 3", b"LIST " + b"9" * 41, b"X" * 300, b"\tSTAT"],
)  # fmt: skip
def test_malformed(line: bytes) -> None:
    with pytest.raises(p.BadCommand):
        p.parse(line)


NUMBERS = [("1", 1), ("007", 7), ("-1", None), ("1.0", None), ("", None), ("9999999999", None),
           ("\u0663", None)]  # fmt: skip


@pytest.mark.parametrize(("text", "value"), NUMBERS)
def test_number(text: str, value: int | None) -> None:
    assert p.number(text) == value


def test_responses() -> None:
    assert p.ok() == b"+OK\r\n"
    assert p.err("Mailbox is locked", "IN-USE") == b"-ERR [IN-USE] Mailbox is locked\r\n"
    assert p.multiline(p.ok(), ["1 10", ".x"]) == b"+OK\r\n1 10\r\n..x\r\n.\r\n"
    assert p.uidl(1, 0x5F00) == "0000000100005f00"


def test_top_and_stuffing() -> None:
    raw = b"Subject: x\r\n.Dot: y\r\n\r\nl1\r\n.l2\nl3\r\n"
    assert p.message_lines(raw, 0) == b"Subject: x\r\n..Dot: y\r\n\r\n.\r\n"
    assert p.message_lines(raw, 2) == b"Subject: x\r\n..Dot: y\r\n\r\nl1\r\n..l2\r\n.\r\n"
    assert p.message_lines(raw) == b"Subject: x\r\n..Dot: y\r\n\r\nl1\r\n..l2\r\nl3\r\n.\r\n"


@given(st.lists(st.binary(max_size=40).filter(lambda b: b"\n" not in b and b"\r" not in b),
                max_size=30))  # fmt: skip
def test_stuffing_round_trip(lines: list[bytes]) -> None:
    raw = b"".join(line + b"\r\n" for line in lines)
    wire = p.message_lines(raw)
    assert wire.endswith(b".\r\n")
    body = wire[:-3].split(b"\r\n")[:-1]
    assert all(not ln.startswith(b".") or ln.startswith(b"..") for ln in body)
    restored = b"".join((ln[1:] if ln.startswith(b".") else ln) + b"\r\n" for ln in body)
    assert restored == raw
