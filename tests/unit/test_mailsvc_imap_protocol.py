"""The IMAP codec: command parsing (table of good and malformed input; hypothesis fuzzing of
literals, quoting and nesting with the parser's work bounded), sequence sets, string output,
FETCH section specs, ENVELOPE addresses and BODYSTRUCTURE sizes measured on raw bytes (a
pymap defect: part sizes included the part's own headers and dispositions were raw strings)."""

from __future__ import annotations

import contextlib
import tracemalloc

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailsvc.imap import fetch as fx
from mailsvc.imap import protocol as p
from mailsvc.imap.search import parse_keys
from mailsvc.mailbox.mime import parse as parse_mime


@pytest.mark.parametrize(
    ("line", "name", "args"),
    [
        (b"a1 NOOP", "NOOP", []),
        (b"a1 login alice \"pa ss\\\"w\"", "LOGIN", ["alice", b'pa ss"w']),
        (b"a1 LOGIN {5}\r\nalice {2}\r\npw", "LOGIN", [b"alice", b"pw"]),
        (b"a1 LOGIN {5+}\r\nalice \"\"", "LOGIN", [b"alice", b""]),
        (b"x UID FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (From To)]<0.10>)", "UID FETCH",
         ["1:*", ["UID", "FLAGS", "BODY.PEEK[HEADER.FIELDS (From To)]<0.10>"]]),
        (b"x STORE 2 -FLAGS.SILENT (\\Seen $Junk)", "STORE", ["2", "-FLAGS.SILENT",
                                                           ["\\Seen", "$Junk"]]),
        (b"x LIST \"\" %", "LIST", [b"", "%"]),
        (b"x SEARCH OR (FROM a) (TO b) NOT SEEN", "SEARCH",
         ["OR", ["FROM", "a"], ["TO", "b"], "NOT", "SEEN"]),
        (b"x APPEND Sent () {0}\r\n", "APPEND", ["Sent", [], b""]),
    ],
)  # fmt: skip
def test_parse(line: bytes, name: str, args: list[p.Token]) -> None:
    command = p.parse_command(line)
    assert command.name == name
    assert command.args == args


@pytest.mark.parametrize(
    "line",
    [b"", b"NOOP", b"+ NOOP", b"a{1} NOOP", b"a ", b"a NOOP  x", b"a NOOP (x", b"a NOOP x)",
     b'a LOGIN "unterminated', b'a LOGIN "bad\\escape"', b"a LOGIN {5}\r\nabc",
     b"a LOGIN {x}\r\n", b"a LOGIN {3}abc", b"a LOGIN \"a\rb\"", b"a FETCH 1 (BODY[HEADER",
     b"a NOOP \xff", b"a NOOP " + b"(" * 40 + b")" * 40, b"a NOOP ( x)", b"a NOOP (x )",
     b"a LOGIN {99999999999}\r\n"],
)  # fmt: skip
def test_malformed(line: bytes) -> None:
    with pytest.raises(p.ParseError):
        p.parse_command(line)


def test_bad_command_keeps_the_tag() -> None:
    with pytest.raises(p.ParseError) as info:
        p.parse_command(b"tag7 FETCH (x")
    assert info.value.tag == "tag7"


@pytest.mark.parametrize(
    ("line", "announced"),
    [(b"a LOGIN {5}", (5, False)), (b"a APPEND x {300000000+}", (300000000, True)),
     (b"a LOGIN x", None), (b"a {5} x", None), (b"a LOGIN {12345678901}", None)],
)  # fmt: skip
def test_literal_at_end(line: bytes, announced: tuple[int, bool] | None) -> None:
    assert p.literal_at_end(line) == announced


def test_sequence_sets() -> None:
    seq = p.parse_sequence("1:3,7,9:*")
    assert list(seq.resolve(12)) == [(1, 3), (7, 7), (9, 12)]
    assert seq.contains(10, 12)
    assert not seq.contains(5, 12)
    assert list(p.parse_sequence("*:4").resolve(2)) == [(2, 4)]
    for bad in ("", "0", "1:0", "a", "1,,2", "1:2:3", "4294967296", "-1"):
        with pytest.raises(p.ParseError):
            p.parse_sequence(bad)
    assert p.compact_set([1, 2, 3, 5, 7, 8]) == "1:3,5,7:8"


def test_string_output() -> None:
    assert p.nstring(None) == b"NIL"
    assert p.nstring(b'a "q" \\') == b'"a \\"q\\" \\\\"'
    assert p.nstring(b"two\r\nlines") == b"{10}\r\ntwo\r\nlines"
    assert p.nstring("Grüße".encode()) == b"{7}\r\nGr\xc3\xbc\xc3\x9fe"
    assert p.astring("INBOX") == b"INBOX"
    assert p.astring("with space") == b'"with space"'


@pytest.mark.parametrize(
    ("spec", "section"),
    [("", fx.Section((), "")), ("1.2.MIME", fx.Section((1, 2), "MIME")),
     ("HEADER.FIELDS (From \"To\")", fx.Section((), "HEADER.FIELDS", ("From", "To"))),
     ("3.text", fx.Section((3,), "TEXT"))],
)  # fmt: skip
def test_sections(spec: str, section: fx.Section) -> None:
    assert fx.parse_section(spec) == section


@pytest.mark.parametrize("spec", ["0", "MIME", "HEADER.FIELDS", "1.BOGUS", "HEADER (x)", "1..2"])
def test_bad_sections(spec: str) -> None:
    with pytest.raises(fx.BadSection):
        fx.parse_section(spec)


def test_bodystructure_sizes_exclude_part_headers_and_disposition_is_a_list() -> None:
    raw = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
           b"Content-Type: application/pdf\r\n"
           b"Content-Disposition: attachment; filename=\"a.pdf\"\r\n\r\n"
           b"12345\r\n--b--\r\n")  # fmt: skip
    structure = fx.bodystructure(raw, parse_mime(raw), extended=True)
    assert b'"base64"' not in structure
    assert b'"7bit" 5 NIL ("attachment" ("filename" "a.pdf"))' in structure


def test_envelope_groups_and_quoting() -> None:
    raw = (b'From: "Doe, J." <j@x.example>\r\nTo: team: a@x.example, B <b@x.example>;\r\n'
           b"Subject: s\r\n\r\n")  # fmt: skip
    env = fx.envelope(raw, parse_mime(raw))
    assert b'(("Doe, J." NIL "j" "x.example"))' in env
    assert b'((NIL NIL "team" NIL)(NIL NIL "a" "x.example")("B" NIL "b" "x.example")' \
           b"(NIL NIL NIL NIL))" in env  # fmt: skip


def test_search_key_errors() -> None:
    for tokens in ([], [p.Atom("FROM")], [p.Atom("BOGUS")], [p.Atom("SINCE"), b"1-Foo-2020"],
                   [p.Atom("LARGER"), p.Atom("x")]):  # fmt: skip
        with pytest.raises(p.ParseError):
            parse_keys(tokens)


_TOKEN = st.recursive(
    st.one_of(
        st.from_regex(rb"\\?[A-Za-z0-9.$]{1,8}", fullmatch=True),
        st.binary(max_size=20).map(lambda b: b'"' + b.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
                                   .replace(b"\r", b"").replace(b"\n", b"").replace(b"\0", b"")
                                   + b'"'),
        st.binary(max_size=30).map(lambda b: b"{%d}\r\n" % len(b) + b),
    ),
    lambda inner: st.lists(inner, max_size=4).map(lambda xs: b"(" + b" ".join(xs) + b")"),
    max_leaves=30,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(_TOKEN, max_size=8))
def test_fuzz_well_formed_commands_parse(tokens: list[bytes]) -> None:
    line = b"t1 CMD" + b"".join(b" " + t for t in tokens)
    command = p.parse_command(line)
    assert command.tag == "t1"
    assert len(command.args) == len(tokens)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
@example(b"[\x80]")  # 8-bit inside a section once escaped as UnicodeDecodeError
@example(b"FETCH 1 BODY[\xff]")
def test_fuzz_garbage_never_crashes_and_memory_stays_bounded(data: bytes) -> None:
    tracemalloc.start()
    try:
        with contextlib.suppress(p.ParseError):
            p.parse_command(b"t " + data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000
