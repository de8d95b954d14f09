"""PROXY protocol only from trusted networks (and then the proxied client address is the one
every decision and the Received header use), relay_networks decided on that address, and the
per-IP connection limit — against a real mailsvc + idsvc stack."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.fixtures.mailstack import BOB, MailStack, mail_stack


@pytest.fixture(scope="module")
def proxied() -> Iterator[MailStack]:
    with mail_stack(
        mx={"proxy_trusted": ["127.0.0.1/32"]},
        smtp={"relay_networks": ["203.0.113.0/24"], "max_connections_per_ip": 3},
    ) as stack:
        yield stack


def session(port: int, header: bytes, commands: list[bytes]) -> list[bytes]:
    """Send the PROXY header, then each command; the reply line to each (b'' once closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        f = sock.makefile("rb")
        sock.sendall(header)
        replies = [f.readline()]
        for cmd in commands:
            if not replies[-1]:
                break
            sock.sendall(cmd + b"\r\n")
            line = f.readline()
            while line[3:4] == b"-":
                line = f.readline()
            replies.append(line)
        return replies


MESSAGE = [b"EHLO p.test", b"MAIL FROM:<a@remote.example>", b"RCPT TO:<bob@example.org>", b"DATA",
           b"Subject: proxied\r\n\r\nhi\r\n."]  # fmt: skip


def test_proxied_connections_count_only_against_the_total(proxied: MailStack) -> None:
    socks = [socket.create_connection(("127.0.0.1", proxied.mx), timeout=20) for _ in range(5)]
    try:
        for sock in socks:
            sock.sendall(b"PROXY TCP4 198.51.100.7 127.0.0.1 4444 25\r\n")
        assert all(s.makefile("rb").readline().startswith(b"220") for s in socks)
    finally:
        for sock in socks:
            sock.close()


def test_proxied_client_address_is_used(proxied: MailStack) -> None:
    before = len(proxied.messages(BOB))
    replies = session(proxied.mx, b"PROXY TCP4 198.51.100.7 127.0.0.1 4444 25\r\n", MESSAGE)
    assert replies[0].startswith(b"220")
    assert replies[-1].startswith(b"250 2.0.0"), replies
    files = proxied.messages(BOB)
    assert len(files) == before + 1
    newest = max(files, key=lambda p: p.stat().st_mtime_ns).read_bytes()
    assert b"([198.51.100.7])" in newest


def test_relay_networks_apply_to_the_proxied_address(proxied: MailStack) -> None:
    relay = [b"EHLO p.test", b"MAIL FROM:<a@remote.example>", b"RCPT TO:<x@remote.example>"]
    inside = session(proxied.mx, b"PROXY TCP4 203.0.113.9 127.0.0.1 4444 25\r\n", relay)
    outside = session(proxied.mx, b"PROXY TCP4 198.51.100.7 127.0.0.1 4444 25\r\n", relay)
    assert inside[-1].startswith(b"250"), inside
    assert outside[-1].startswith(b"554 5.7.1"), outside


def test_missing_or_garbage_proxy_header_closes(proxied: MailStack) -> None:
    assert session(proxied.mx, b"EHLO no-proxy.test\r\n", [])[0] == b""
    assert session(proxied.mx, b"PROXY TCP4 junk\r\n", [])[0] == b""


def test_proxy_header_from_an_untrusted_peer_is_refused() -> None:
    with mail_stack(mx={"proxy_trusted": ["192.0.2.0/24"]}) as stack:
        replies = session(stack.mx, b"PROXY TCP4 203.0.113.9 127.0.0.1 4444 25\r\n", [b"EHLO x"])
        assert replies[0] == b""  # closed before any greeting


def test_connections_per_ip_are_limited(proxied: MailStack) -> None:
    port = proxied.submission  # no PROXY there: the peer address is the client's
    socks = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(4)]
    try:
        greetings = [s.makefile("rb").readline() for s in socks]
        assert [g[:3] for g in greetings] == [b"220", b"220", b"220", b"421"], greetings
    finally:
        for sock in socks:
            sock.close()
