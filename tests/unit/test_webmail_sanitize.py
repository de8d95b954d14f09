"""The webmail's HTML cleaner and message helpers: a table of hostile inputs, and properties
(hypothesis) that hold for any input."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailsvc.webmail.message import Draft, Refused, addresses, build, parse, single_line
from mailsvc.webmail.sanitize import clean_html

HANDLER = re.compile(r"<[^>]*\son[a-z]+\s*=")  # an event handler attribute in any tag
SCRIPT_URL = re.compile(r"(href|src)\s*=\s*[\"']?\s*(javascript|data:text|vbscript):")
NO_CID = {"logo@x": "/part?index=2"}


def cid(value: str) -> str | None:
    return NO_CID.get(value)


HOSTILE = [
    ("<script>alert(1)</script>", ["<script", "alert"]),
    ('<img src=x onerror="alert(1)">', ["onerror", "alert"]),
    ("<svg><script>alert(1)</script></svg>", ["<svg", "<script"]),
    ('<svg onload="alert(1)"><circle/></svg>', ["<svg", "onload"]),
    ("<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>", ["onerror", "<style"]),
    ('<a href="javascript:alert(1)">x</a>', ["javascript:"]),
    ('<a href=" JaVaScRiPt:alert(1)">x</a>', ["alert"]),
    ('<a href="data:text/html,<script>alert(1)</script>">x</a>', ["data:text/html", "<script"]),
    ("<style>body{background:url(https://evil.test/x)}</style>", ["evil.test", "<style"]),
    ('<p style="background:url(https://evil.test/x)">x</p>', ["evil.test", "style="]),
    ('<meta http-equiv="refresh" content="0;url=https://evil.test">', ["refresh", "<meta"]),
    ('<base href="https://evil.test/">', ["<base", "evil.test"]),
    ('<link rel="stylesheet" href="https://evil.test/a.css">', ["<link", "evil.test"]),
    ('<iframe src="https://evil.test"></iframe>', ["<iframe", "evil.test"]),
    ('<form action="https://evil.test"><input name=p></form>', ["<form", "<input"]),
    ('<img src="https://track.test/pixel.gif">', ["track.test"]),
    ('<img src="//track.test/pixel.gif">', ["track.test"]),
    ("<object data=x></object><embed src=x>", ["<object", "<embed"]),
    ('<noscript><p title="</noscript><img src=x onerror=alert(1)>">', ["onerror=alert"]),
    ('<table background="https://evil.test/x">', ["evil.test"]),
    ("<!--<img src=x onerror=alert(1)>-->", ["onerror"]),
]


@pytest.mark.parametrize(("html", "absent"), HOSTILE)
def test_hostile_html_is_cleaned(html: str, absent: list[str]) -> None:
    cleaned = clean_html(html, cid).html.lower()
    for fragment in absent:
        assert fragment.lower() not in cleaned, cleaned


def test_kept_structure_links_and_cid_images() -> None:
    out = clean_html(
        '<p>Hi <b>you</b> <a href="https://example.test/a">link</a>'
        '<img src="cid:logo@x" alt="logo"><img src="https://t.test/p.gif"></p>',
        cid,
    )
    assert "<b>you</b>" in out.html
    assert 'href="https://example.test/a"' in out.html
    assert 'rel="noopener noreferrer nofollow"' in out.html
    assert 'src="/part?index=2"' in out.html
    assert out.blocked_images == 1


@given(st.text(max_size=400))
def test_any_text_cleans_to_something_without_active_content(html: str) -> None:
    out = clean_html(html, cid).html.lower()
    assert "<script" not in out
    assert HANDLER.search(out) is None
    for tag in ("<iframe", "<object", "<embed", "<svg", "<math", "<style", "<meta", "<base"):
        assert tag not in out


@given(st.lists(st.sampled_from(["<a href='", "javascript:", "<img src=", "x", "'>", "<svg",
                                 "onerror=", "\"", "<script>", " ", "data:", "cid:"]),
                max_size=30))  # fmt: skip
def test_shuffled_fragments_never_yield_script_urls(parts: list[str]) -> None:
    out = clean_html("".join(parts), cid).html.lower()
    assert SCRIPT_URL.search(out) is None
    assert HANDLER.search(out) is None
    assert "<script" not in out


@pytest.mark.parametrize(
    "value",
    ["a\r\nBcc: x@y", "a\nb", "a\rb", "a\0b"],
)
def test_line_breaks_refused(value: str) -> None:
    with pytest.raises(Refused):
        single_line(value, "subject")
    with pytest.raises(Refused):
        addresses(value, "to")


@pytest.mark.parametrize("value", ["no-at-sign", "a@", "@b", "a b@c", '"x"@y, z', "<a@b>>"])
def test_bad_addresses_refused(value: str) -> None:
    with pytest.raises(Refused):
        addresses(value, "to")


def test_addresses_with_names() -> None:
    assert addresses("Bob <bob@example.test>, carol@example.test", "to") == [
        "bob@example.test",
        "carol@example.test",
    ]


def test_built_message_round_trips() -> None:
    draft = Draft("a@example.test", ["b@example.test"], [], "Grüße", "hello",
                  in_reply_to="<1@x>", attachments=[("n.txt", "text/plain", b"data")])  # fmt: skip
    raw = build(draft, "example.test").as_bytes()
    parsed = parse(raw)
    assert parsed.subject == "Grüße"
    assert parsed.text is not None
    assert parsed.text.strip() == "hello"
    assert [a.filename for a in parsed.attachments] == ["n.txt"]
    assert b"In-Reply-To: <1@x>" in raw


@given(st.binary(max_size=2000))
def test_parse_never_raises(raw: bytes) -> None:
    parse(raw)
