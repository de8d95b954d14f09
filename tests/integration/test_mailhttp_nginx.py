"""nginx ``auth_http`` endpoint over a real socket with the real Authenticator on the embedded
store: requests byte-for-byte as nginx writes them, every outcome, penalties, forged and missing
headers. (A real nginx mail proxy in front of a real Dovecot: test_nginx_mail_proxy.py.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from idsvc.directory.sqlite import SqliteDirectory
from idsvc.wire.mailhttp.server import MailHttpServer
from tests.integration.dovecot_auth_support import populate, short_dir
from tests.integration.mailhttp_support import (
    USERS,
    authenticator,
    nginx_request,
    raw_request,
    serve_nginx,
)

FAILED_IMAP = "[AUTHENTICATIONFAILED] Authentication failed."


@pytest.fixture
async def server(embedded_directory: SqliteDirectory) -> AsyncIterator[MailHttpServer]:
    await populate(embedded_directory)
    with short_dir() as tmp:
        async with serve_nginx(authenticator(embedded_directory), tmp) as srv:
            yield srv


async def test_ok_routes_to_the_protocol_backend_with_the_canonical_user(
    server: MailHttpServer,
) -> None:
    reply = await raw_request(server, nginx_request("Bob%40Example.ORG", USERS.good_pw))
    assert reply.status == 200
    assert reply["Auth-Status"] == "OK"
    assert (reply["Auth-Server"], reply["Auth-Port"]) == ("127.0.0.1", "1143")
    assert reply["Auth-User"] == USERS.good
    assert reply.get("Auth-Wait") is None
    pop = await raw_request(server, nginx_request(USERS.good, USERS.good_pw, protocol="pop3"))
    assert (pop["Auth-Status"], pop["Auth-Port"]) == ("OK", "1110")
    smtp = await raw_request(server, nginx_request(USERS.good, USERS.good_pw, protocol="smtp"))
    assert (smtp["Auth-Status"], smtp["Auth-Port"]) == ("OK", "1025")


@pytest.mark.parametrize(
    ("user", "password", "protocol", "status", "extra"),
    [
        # every definite failure looks the same per protocol
        ("bob@example.org", "wrong", "imap", FAILED_IMAP, ("Auth-Wait", "1")),
        ("nobody@example.org", "wrong", "imap", FAILED_IMAP, ("Auth-Wait", "1")),
        ("carol@example.org", "s3cret-Carol", "imap", FAILED_IMAP, ("Auth-Wait", "1")),
        ("dave@example.org", "s3cret-Dave", "pop3", "[AUTH] Authentication failed.", None),
        ("bad..login@example.org", "x", "pop3", "[AUTH] Authentication failed.", None),
        (
            "bob@example.org",
            "wrong",
            "smtp",
            "Authentication credentials invalid",
            ("Auth-Error-Code", "535 5.7.8"),
        ),
    ],
)
async def test_failures(
    server: MailHttpServer,
    user: str,
    password: str,
    protocol: str,
    status: str,
    extra: tuple[str, str] | None,
) -> None:
    reply = await raw_request(server, nginx_request(user, password, protocol=protocol))
    assert reply["Auth-Status"] == status
    assert reply.get("Auth-Server") is None
    assert reply.get("Auth-User") is None
    if extra is not None:
        assert reply[extra[0]] == extra[1]
    if protocol == "smtp":
        assert reply.get("Auth-Wait") is None  # never for SMTP (CVE-2025-53859 path)


async def test_cleartext_from_a_remote_client_is_refused(server: MailHttpServer) -> None:
    """nginx says whether the client's session is TLS (Auth-SSL); the auth core's cleartext
    policy (``allow_cleartext_remote`` off) refuses a password sent in clear from afar."""
    clear = await raw_request(server, nginx_request(USERS.good, USERS.good_pw, ssl=False))
    assert clear["Auth-Status"] == FAILED_IMAP
    local = await raw_request(
        server, nginx_request(USERS.good, USERS.good_pw, ssl=False, client_ip="127.0.0.1")
    )
    assert local["Auth-Status"] == "OK"


async def test_auth_wait_stops_at_max_attempts(server: MailHttpServer) -> None:
    second = await raw_request(server, nginx_request(USERS.good, "wrong", attempt=2))
    assert second["Auth-Wait"] == "1"
    third = await raw_request(server, nginx_request(USERS.good, "wrong", attempt=3))
    assert third["Auth-Status"] == FAILED_IMAP
    assert third.get("Auth-Wait") is None  # nginx closes the session


async def test_percent_escaped_credentials_are_decoded(
    embedded_directory: SqliteDirectory,
) -> None:
    """nginx escapes '%', space and control characters in Auth-User/Auth-Pass."""
    from idsvc.model import Account, Address, Domain
    from tests.fixtures.slapd import ssha

    await embedded_directory.add_domain(Domain(name="example.org"))
    await embedded_directory.add_account(
        Account(address=Address.parse("pct@example.org"), password_hash=ssha("a b%c\u00e9"))
    )
    with short_dir() as tmp:
        async with serve_nginx(authenticator(embedded_directory), tmp) as srv:
            ok = await raw_request(srv, nginx_request("pct@example.org", "a%20b%25c%C3%A9"))
            assert ok["Auth-Status"] == "OK"
            bad = await raw_request(srv, nginx_request("pct@example.org", "a%2520b%25c%C3%A9"))
            assert bad["Auth-Status"] == FAILED_IMAP


async def test_failure_delay_and_penalty_come_from_the_authenticator(
    embedded_directory: SqliteDirectory,
) -> None:
    await populate(embedded_directory)
    auth = authenticator(embedded_directory, failure_delay=0.2, penalty=True, penalty_max=0.5)
    with short_dir() as tmp:
        async with serve_nginx(auth, tmp) as srv:
            started = time.monotonic()
            await raw_request(srv, nginx_request(USERS.good, "wrong"))
            first = time.monotonic() - started
            await raw_request(srv, nginx_request(USERS.good, "wrong"))
            started = time.monotonic()
            await raw_request(srv, nginx_request(USERS.good, "wrong"))  # third: +0.5 s penalty
            third = time.monotonic() - started
            started = time.monotonic()
            ok = await raw_request(srv, nginx_request(USERS.good, USERS.good_pw))
            success = time.monotonic() - started
    assert 0.2 <= first < 0.6
    assert third >= 0.7
    assert ok["Auth-Status"] == "OK"
    assert success < 0.2  # successes are never delayed
    assert auth.penalties.sizes() == (1, 0)  # the success cleared the account's count


async def test_tempfail_asks_nginx_to_wait(embedded_directory: SqliteDirectory) -> None:
    await populate(embedded_directory)
    auth = authenticator(embedded_directory)
    with short_dir() as tmp:
        async with serve_nginx(auth, tmp, tempfail_wait=7) as srv:
            await embedded_directory.close()  # the store goes away: TEMPFAIL
            imap = await raw_request(srv, nginx_request(USERS.good, USERS.good_pw))
            smtp = await raw_request(srv, nginx_request(USERS.good, USERS.good_pw, protocol="smtp"))
    assert imap["Auth-Status"].startswith("[UNAVAILABLE]")
    assert imap["Auth-Wait"] == "7"
    assert smtp["Auth-Error-Code"] == "451 4.3.0"
    assert smtp.get("Auth-Wait") is None


async def test_protocol_without_backend_is_a_temporary_failure(
    embedded_directory: SqliteDirectory,
) -> None:
    await populate(embedded_directory)
    with short_dir() as tmp:
        async with serve_nginx(authenticator(embedded_directory), tmp, smtp_backend=None) as srv:
            reply = await raw_request(
                srv, nginx_request(USERS.good, USERS.good_pw, protocol="smtp")
            )
    assert reply["Auth-Error-Code"] == "451 4.3.0"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (nginx_request(USERS.good, USERS.good_pw).replace(b"Auth-Method: plain\r\n", b""), 400),
        (nginx_request(USERS.good, USERS.good_pw).replace(b"imap", b"nntp"), 400),
        (nginx_request(USERS.good, USERS.good_pw).replace(b"Auth-User: ", b"X-User: "), 400),
        (nginx_request(USERS.good, USERS.good_pw, client_ip="999.1.1.1"), 400),
        (nginx_request(USERS.good, USERS.good_pw, attempt=-1), 400),
        (nginx_request("%ff%fe", USERS.good_pw), 400),
        # a forged second Auth-User must not win or lose by position
        (nginx_request(USERS.good, USERS.good_pw, extra="Auth-User: carol@example.org\r\n"), 400),
        (nginx_request(USERS.good, USERS.good_pw, extra="auth-user: x\r\n"), 400),
        (nginx_request(USERS.good, USERS.good_pw, extra=" folded\r\n"), 400),
        (nginx_request(USERS.good, USERS.good_pw, extra="Bad Header: x\r\n"), 400),
        (nginx_request(USERS.good, USERS.good_pw, extra="X: a\x01b\r\n"), 400),
        (nginx_request(USERS.good, USERS.good_pw, extra="Transfer-Encoding: chunked\r\n"), 501),
        (nginx_request(USERS.good, USERS.good_pw).replace(b"/auth", b"/nope"), 404),
        (nginx_request(USERS.good, USERS.good_pw).replace(b"GET", b"POST"), 405),
        (nginx_request(USERS.good, USERS.good_pw).replace(b"HTTP/1.0", b"HTTP/2.0"), 505),
        (
            nginx_request(USERS.good, USERS.good_pw, extra="Connection: close\r\n").replace(
                b"HTTP/1.0", b"HTTP/1.1"
            ),
            200,
        ),
        (b"GET /auth HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
        (b"GET http://x/auth HTTP/1.0\r\n\r\n", 400),
        (b"GET /" + b"a" * 3000 + b" HTTP/1.0\r\n\r\n", 414),
        (b"GET /auth HTTP/1.0\r\n" + b"X-Pad: " + b"a" * 20000 + b"\r\n\r\n", 431),
        (
            b"GET /auth HTTP/1.0\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(80)) + b"\r\n",
            431,
        ),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # a TLS hello
    ],
)
async def test_malformed_or_forged_requests_get_a_clear_refusal(
    server: MailHttpServer, request_bytes: bytes, status: int
) -> None:
    reply = await raw_request(server, request_bytes)
    assert reply.status == status
    if status != 200:
        # nginx reads the headers, not the status: never OK, never an in-session retry
        assert (reply.get("Auth-Status") or "") != "OK"
        assert reply.get("Auth-Wait") is None
    # the server still serves others
    ok = await raw_request(server, nginx_request(USERS.good, USERS.good_pw))
    assert ok["Auth-Status"] == "OK"


@pytest.mark.parametrize("method", ["apop", "cram-md5", "external", "none"])
async def test_methods_without_a_cleartext_password_are_refused(
    server: MailHttpServer, method: str
) -> None:
    reply = await raw_request(server, nginx_request(USERS.good, "digest", method=method))
    assert reply["Auth-Status"] == "[AUTHENTICATIONFAILED] Unsupported authentication mechanism."
    smtp = await raw_request(server, nginx_request("", "", method=method, protocol="smtp"))
    assert smtp["Auth-Error-Code"] == "530 5.7.0"


async def test_shared_secret_header(embedded_directory: SqliteDirectory) -> None:
    await populate(embedded_directory)
    with short_dir() as tmp:
        async with serve_nginx(
            authenticator(embedded_directory), tmp, secret="k3y", secret_header="X-Auth-Key"
        ) as srv:
            missing = await raw_request(srv, nginx_request(USERS.good, USERS.good_pw))
            wrong = await raw_request(
                srv, nginx_request(USERS.good, USERS.good_pw, extra="X-Auth-Key: k3y2\r\n")
            )
            right = await raw_request(
                srv, nginx_request(USERS.good, USERS.good_pw, extra="X-Auth-Key: k3y\r\n")
            )
    assert (missing.status, wrong.status) == (403, 403)
    assert missing.get("Auth-Status") is None  # nginx: invalid response → temporary error
    assert right["Auth-Status"] == "OK"


async def test_slow_and_silent_clients_are_cut_off_and_bounded(
    embedded_directory: SqliteDirectory,
) -> None:
    await populate(embedded_directory)
    with short_dir() as tmp:
        async with serve_nginx(
            authenticator(embedded_directory),
            tmp,
            read_timeout=1.0,
            max_connections=4,
            reserved_connections=0,
        ) as srv:
            assert srv.path is not None
            path = str(srv.path)
            silent = [await asyncio.open_unix_connection(path) for _ in range(4)]
            # all four slots taken by silent clients: a real request evicts the oldest of them
            ok = await raw_request(srv, nginx_request(USERS.good, USERS.good_pw))
            assert ok["Auth-Status"] == "OK"
            assert await asyncio.wait_for(silent[0][0].read(), 1) == b""  # evicted at once
            assert srv.slots.evicted >= 1
            slow_r, slow_w = await asyncio.open_unix_connection(path)
            slow_w.write(b"GET /auth HTTP/1.0\r\nAuth-Method: plain\r\n")  # never finished
            started = time.monotonic()
            rest = [await asyncio.wait_for(r.read(), 5) for r, _ in silent[1:]]
            assert all(
                data in (b"", b"HTTP/1.1 408 Request Timeout") or data.startswith(b"HTTP/1.1 408")
                for data in rest
            )
            slow = await asyncio.wait_for(slow_r.read(), 5)
            assert slow.startswith(b"HTTP/1.1 408") or slow == b""
            assert time.monotonic() - started < 3  # read_timeout, not for ever
            for _, writer in [*silent, (slow_r, slow_w)]:
                writer.close()
            again = await raw_request(srv, nginx_request(USERS.good, USERS.good_pw))
            assert again["Auth-Status"] == "OK"
            assert srv.slots.active <= 1


async def test_keep_alive_serves_several_requests_on_one_connection(
    server: MailHttpServer,
) -> None:
    from tests.integration.mailhttp_support import open_conn

    reader, writer = await open_conn(server)
    one = nginx_request(USERS.good, USERS.good_pw).replace(
        b"HTTP/1.0\r\n", b"HTTP/1.0\r\nConnection: keep-alive\r\n"
    )
    for _ in range(3):
        writer.write(one)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert b"Auth-Status: OK" in head
        assert b"Connection: keep-alive" in head
    writer.close()


async def test_close_does_not_wait_for_idle_kept_alive_connections(
    embedded_directory: SqliteDirectory,
) -> None:
    from tests.integration.mailhttp_support import open_conn

    await populate(embedded_directory)
    with short_dir() as tmp:
        async with serve_nginx(authenticator(embedded_directory), tmp) as srv:
            reader, writer = await open_conn(srv)
            writer.write(
                nginx_request(USERS.good, USERS.good_pw).replace(
                    b"HTTP/1.0\r\n", b"HTTP/1.0\r\nConnection: keep-alive\r\n"
                )
            )
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            started = time.monotonic()
            await srv.close()
            assert time.monotonic() - started < 1.0
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
