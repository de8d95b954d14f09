"""RFC 7162 syntax (mailsvc.imap.condstore) on commands parsed by the real codec: SELECT/EXAMINE
parameters, FETCH and STORE modifiers, SEARCH MODSEQ — tables of good and malformed input, and
hypothesis: any token tree either parses or raises ParseError, never anything else; the
VANISHED set arithmetic against a brute-force model."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailsvc.imap import condstore as cs
from mailsvc.imap import protocol as p
from mailsvc.imap.search import Candidate, parse_program


def args(text: bytes) -> list[p.Token]:
    return p.parse_command(b"t SELECT INBOX " + text).args[1:]


def one(text: bytes) -> p.Token:
    (token,) = args(text)
    return token


@pytest.mark.parametrize(
    ("text", "condstore", "qresync"),
    [
        (b"(CONDSTORE)", True, None),
        (b"(condstore)", True, None),
        (b"(QRESYNC (67890007 20050715194045000))", False, cs.Qresync(67890007, 20050715194045000)),
        (b"(QRESYNC (1 0))", False, cs.Qresync(1, 0)),
        (b"(QRESYNC (1 5 1:3,7) CONDSTORE)", True,
         cs.Qresync(1, 5, p.SequenceSet(((1, 3), (7, 7))))),
        (b"(QRESYNC (1 5 1:9 (1:3 2,4,6)))", False,
         cs.Qresync(1, 5, p.SequenceSet(((1, 9),)),
                    (p.SequenceSet(((1, 3),)), p.SequenceSet(((2, 2), (4, 4), (6, 6)))))),
    ],
)  # fmt: skip
def test_select_params(text: bytes, condstore: bool, qresync: cs.Qresync | None) -> None:
    assert cs.parse_select_params(one(text)) == cs.SelectParams(condstore, qresync)


@pytest.mark.parametrize(
    "text",
    [
        b"()",
        b"CONDSTORE",
        b"(CONDSTORE CONDSTORE)",
        b"(FOO)",
        b"(QRESYNC)",
        b"(QRESYNC 1)",
        b"(QRESYNC ())",
        b"(QRESYNC (1))",
        b"(QRESYNC (0 5))",  # UIDVALIDITY 0
        b"(QRESYNC (4294967296 5))",
        b"(QRESYNC (x 5))",
        b"(QRESYNC (1 x))",
        b"(QRESYNC (1 -1))",
        b"(QRESYNC (1 9223372036854775808))",  # 2^63
        b"(QRESYNC (1 5 1:*))",
        b"(QRESYNC (1 5 0:3))",
        b"(QRESYNC (1 5 1:3 (1:2 1:3)))",  # sets differ in size
        b"(QRESYNC (1 5 1:3 (1:* 1:3)))",
        b"(QRESYNC (1 5 1:3 (1:3)))",
        b"(QRESYNC (1 5 1:3 (1:3 1:3) extra))",
        b'(QRESYNC (1 5 "1:3"))',
        b"(QRESYNC (1 5) QRESYNC (1 5))",
        b"((CONDSTORE))",
    ],
)
def test_select_params_malformed(text: bytes) -> None:
    with pytest.raises(p.ParseError):
        cs.parse_select_params(one(text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"(CHANGEDSINCE 12345)", cs.FetchModifiers(12345)),
        (b"(CHANGEDSINCE 0)", cs.FetchModifiers(0)),
        (b"(changedsince 7 vanished)", cs.FetchModifiers(7, True)),
        (b"(VANISHED CHANGEDSINCE 7)", cs.FetchModifiers(7, True)),
    ],
)
def test_fetch_modifiers(text: bytes, expected: cs.FetchModifiers) -> None:
    assert cs.parse_fetch_modifiers(one(text)) == expected


@pytest.mark.parametrize(
    "text",
    [b"()", b"CHANGEDSINCE", b"(CHANGEDSINCE)", b"(CHANGEDSINCE x)", b"(CHANGEDSINCE -1)",
     b"(VANISHED)", b"(CHANGEDSINCE 1 CHANGEDSINCE 2)", b"(CHANGEDSINCE 1 VANISHED VANISHED)",
     b"(CHANGEDSINCE 99999999999999999999)", b'(CHANGEDSINCE "5")', b"(FOO 1)"],
)  # fmt: skip
def test_fetch_modifiers_malformed(text: bytes) -> None:
    with pytest.raises(p.ParseError):
        cs.parse_fetch_modifiers(one(text))


def test_store_modifiers() -> None:
    assert cs.parse_store_modifiers(one(b"(UNCHANGEDSINCE 320162338)")) == 320162338
    assert cs.parse_store_modifiers(one(b"(unchangedsince 0)")) == 0
    for bad in (b"()", b"(UNCHANGEDSINCE)", b"(UNCHANGEDSINCE x)", b"(UNCHANGEDSINCE 1 2)",
                b"(CHANGEDSINCE 1)", b"UNCHANGEDSINCE", b"(UNCHANGEDSINCE (1))"):  # fmt: skip
        with pytest.raises(p.ParseError):
            cs.parse_store_modifiers(one(bad))


_tokens = st.recursive(
    st.one_of(
        st.sampled_from(["CONDSTORE", "QRESYNC", "CHANGEDSINCE", "UNCHANGEDSINCE", "VANISHED",
                         "0", "1", "5", "1:3", "2,4", "*", "1:*", "x", "9223372036854775808"]),
        st.binary(max_size=4),
    ).map(lambda v: p.Atom(v) if isinstance(v, str) else v),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=20,
)  # fmt: skip


@given(_tokens)
def test_any_token_tree_parses_or_is_bad(token: p.Token) -> None:
    """Only ParseError escapes, and whatever parses is in range."""
    with contextlib.suppress(p.ParseError):
        params = cs.parse_select_params(token)
        assert params.condstore or params.qresync is not None
        if params.qresync is not None:
            assert 0 < params.qresync.uidvalidity < 2**32
            assert 0 <= params.qresync.modseq <= cs.MAX_MODSEQ
    with contextlib.suppress(p.ParseError):
        mods = cs.parse_fetch_modifiers(token)
        assert mods.changedsince is not None
        assert 0 <= mods.changedsince <= cs.MAX_MODSEQ
    with contextlib.suppress(p.ParseError):
        assert 0 <= cs.parse_store_modifiers(token) <= cs.MAX_MODSEQ


@pytest.mark.parametrize(
    ("text", "hits", "modseq"),
    [
        (b"MODSEQ 5", [2, 3], True),
        (b'MODSEQ "/flags/\\\\draft" all 5', [2, 3], True),
        (b'MODSEQ "/flags/$label" priv 9', [3], True),
        (b"OR MODSEQ 9 SEEN", [1, 3], True),
        (b"(MODSEQ 0)", [1, 2, 3], True),
        (b"SEEN", [1], False),
    ],
)
def test_search_modseq(text: bytes, hits: list[int], modseq: bool) -> None:
    matcher, uses = parse_program(p.parse_command(b"t SEARCH " + text).args)
    assert uses is modseq
    cands = [
        Candidate(
            i,
            i,
            frozenset({"\\Seen"}) if i == 1 else frozenset(),
            False,
            size=lambda: 0,
            internaldate=lambda: 0.0,
            load=lambda: b"",
            largest_msn=3,
            largest_uid=3,
            modseq=m,
        )
        for i, m in ((1, 1), (2, 5), (3, 9))
    ]
    assert [c.uid for c in cands if matcher(c)] == hits


@pytest.mark.parametrize(
    "text",
    [b"MODSEQ", b"MODSEQ x", b'MODSEQ "/flags/x"', b'MODSEQ "/flags/x" all',
     b'MODSEQ "/flags/x" bogus 5', b'MODSEQ "/other" all 5', b"MODSEQ -1",
     b"MODSEQ 9223372036854775808"],
)  # fmt: skip
def test_search_modseq_malformed(text: bytes) -> None:
    with pytest.raises(p.ParseError):
        parse_program(p.parse_command(b"t SEARCH " + text).args)


@given(
    st.lists(st.tuples(st.integers(1, 60), st.integers(1, 60)), min_size=1, max_size=5),
    st.sets(st.integers(1, 50), max_size=40),
    st.integers(0, 55),
)
def test_missing_ranges_match_a_model(
    ranges: list[tuple[int, int]], present: set[int], top: int
) -> None:
    ordered = [(min(a, b), max(a, b)) for a, b in ranges]
    got = list(cs.missing_ranges(iter(ordered), sorted(present), top))
    model = {u for lo, hi in ordered for u in range(lo, hi + 1) if u <= top and u not in present}
    assert {u for lo, hi in got for u in range(lo, hi + 1)} == model
    text = cs.format_ranges(got)
    if model:
        parsed = p.parse_sequence(text)
        assert {u for lo, hi in parsed.resolve(top) for u in range(lo, hi + 1)} == model


def test_vanished_response() -> None:
    assert cs.vanished([], earlier=True) == b""
    assert cs.vanished([1, 2, 3, 7], earlier=False) == b"* VANISHED 1:3,7\r\n"
    assert cs.vanished([4], earlier=True) == b"* VANISHED (EARLIER) 4\r\n"
