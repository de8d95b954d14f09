"""Trace headers (Received, Return-Path) and the bare CR/LF check, table-driven plus hypothesis:
client-supplied text can never break a header line."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailsvc.smtp import headers


@pytest.mark.parametrize(
    ("data", "bare"),
    [
        (b"", False),
        (b"a\r\nb\r\n", False),
        (b"a\nb\r\n", True),
        (b"a\rb\r\n", True),
        (b"a\r\n.\n", True),
        (b"a\r\r\n", True),
        (b"a\n\r\n", True),
        (b"\r\n\r\n", False),
    ],
)
def test_bare_cr_or_lf(data: bytes, bare: bool) -> None:
    assert headers.has_bare_cr_or_lf(data) is bare


@pytest.mark.parametrize(
    ("esmtp", "tls", "auth", "name"),
    [
        (False, False, False, "SMTP"),
        (True, False, False, "ESMTP"),
        (True, True, False, "ESMTPS"),
        (True, True, True, "ESMTPSA"),
        (True, False, True, "ESMTPA"),
    ],
)
def test_protocol_names(esmtp: bool, tls: bool, auth: bool, name: str) -> None:
    assert headers.protocol(esmtp, tls, auth) == name


def test_received_layout() -> None:
    text = headers.received(
        helo="client.example", client_ip="192.0.2.7", by="mx.example.org", proto="ESMTPSA",
        queue_id="ABC123", login="alice@example.org", recipient="bob@example.org", when=0,
        tls="using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384",
    )  # fmt: skip
    assert text == (
        b"Received: from client.example ([192.0.2.7])\r\n"
        b"\tby mx.example.org (mailsvc) with ESMTPSA id ABC123\r\n"
        b"\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n"
        b"\t(authenticated sender: alice@example.org)\r\n"
        b"\tfor <bob@example.org>; Thu, 01 Jan 1970 00:00:00 -0000\r\n"
    )


@given(st.text(max_size=200), st.text(max_size=60))
def test_client_text_never_breaks_the_header(helo: str, login: str) -> None:
    text = headers.received(
        helo=helo, client_ip="192.0.2.7", by="mx", proto="ESMTP", queue_id="X",
        login=login or None, recipient=None,
    )  # fmt: skip
    lines = text.split(b"\r\n")
    assert lines[-1] == b""
    assert lines[0].startswith(b"Received: from ")
    assert all(line.startswith(b"\t") for line in lines[1:-1])
    assert b"\n" not in text.replace(b"\r\n", b"")
    assert b"\r" not in text.replace(b"\r\n", b"")
    assert text.isascii()


@given(st.text(max_size=100))
def test_return_path_is_one_line(sender: str) -> None:
    line = headers.return_path(sender)
    assert line.startswith(b"Return-Path: <")
    assert line.endswith(b">\r\n")
    assert line.count(b"\r\n") == 1


def test_dot_stuffing_for_the_smarthost() -> None:
    import io

    from mailsvc.smtp.outbound import dot_stuffed

    spool = io.BytesIO(b".a\r\nb\r\n..c\r\n.\r\n")
    out = b"".join(dot_stuffed([b"Received: x\r\n", spool], block=4))
    assert out == b"Received: x\r\n..a\r\nb\r\n...c\r\n..\r\n"
