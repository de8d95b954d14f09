"""Server time of the web pages: the admin console's user list over a 100,000-user domain, and
the webmail's 1,000-message INBOX and a 50 KB HTML message against a real Dovecot.

What it measures (in-process: requests go through httpx's ASGI transport into the app, so the
time is the server's — routing, session and CSRF checks, directory or IMAP round trips, template
rendering — without a browser or a TCP stack):

* admin: ``GET /admin/domains/big.example`` (first page of 50), a prefix search, and a page deep
  in the domain (followed by its cursor), over ``--users`` accounts in one domain of the embedded
  store;
* webmail: ``GET /mail`` (newest 50 of ``--messages`` in INBOX), ``GET /read`` and ``GET /body``
  of a 50 KB HTML message (sanitised each time), each page one IMAP LOGIN + commands + LOGOUT to
  Dovecot 2.3 on loopback;
* memory per webmail session: what the app's session store holds per logged-in session
  (tracemalloc over ``--sessions`` sessions; the IMAP connection is per page, not per session).

Every loop is bounded by ``--rounds``; everything is local (temp dirs, loopback). The Roundcube
comparison (``--compare``) runs both webmails as processes on loopback against the same
Dovecot: see ``bench/roundcube.py`` for exactly which requests. Run
``.venv/bin/python bench/web.py --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import re
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import percentile_ms, rss_mib
from idsvc.config import EmbeddedSettings
from idsvc.directory.sqlite import SqliteDirectory
from idsvc.model import Account, Address
from tests.web.conftest import Browser, WebEnv, admin_login, open_web
from tests.webmail.conftest import ALICE, BASE, PASSWORD, Tab, mail, mail_stack

NEXT = re.compile(r'<a rel="next" href="([^"]+)"')


async def timed(fn: Callable[[], Awaitable[object]], rounds: int) -> tuple[float, float]:
    for _ in range(3):  # warm up
        await fn()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - started)
    return percentile_ms(times, 0.5), percentile_ms(times, 0.99)


async def admin(users: int, rounds: int) -> list[tuple[str, float, float]]:
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        directory = await SqliteDirectory.open(
            EmbeddedSettings(path=Path(tmp) / "idsvc.db", workers=4, busy_timeout=30)
        )
        try:
            async with open_web(directory, Path(tmp)) as web:
                await web.runtime.provisioner.create_domain("big.example", actor="bench")
                started = time.perf_counter()
                await directory.bulk_add_accounts(
                    (Account(Address.parse(f"user{i:06d}@big.example"), None)
                     for i in range(users)),
                    batch=20_000,
                )  # fmt: skip
                print(f"# {users} accounts inserted in {time.perf_counter() - started:.1f} s")
                return await _admin_pages(web, rounds)
        finally:
            await directory.close()


async def _admin_pages(web: WebEnv, rounds: int) -> list[tuple[str, float, float]]:
    b: Browser = web.browser()
    await admin_login(b, web.admin_token)
    first = "/admin/domains/big.example"
    page = await b.get(first)
    assert page.text.count('href="/admin/users/') == 50, page.text[:300]
    deep = first + "?cursor=" + "user090000%40big.example"
    link = NEXT.search(page.text)
    assert link is not None
    if "cursor=" in link.group(1):  # an opaque cursor: walk 20 pages to a deeper one
        for _ in range(20):
            page = await b.get(link.group(1).replace("&amp;", "&"))
            link = NEXT.search(page.text)
            assert link is not None
        deep = link.group(1).replace("&amp;", "&")

    async def get(path: str) -> None:
        answer = await b.get(path)
        assert answer.status_code == 200

    out = []
    for name, path in (
        ("admin: users, first page of 50", first),
        ("admin: users, prefix search", first + "?prefix=user0999"),
        ("admin: users, page 21 by cursor", deep),
    ):
        p50, p99 = await timed(lambda p=path: get(p), rounds)  # type: ignore[misc]
        out.append((name, p50, p99))
    await b.client.aclose()
    return out


async def seed_inbox(imap_port: int, messages: int) -> None:
    """``messages - 1`` small messages and one 50 KB HTML message ("big html") in ALICE's INBOX."""
    import aioimaplib

    c = aioimaplib.IMAP4(host="127.0.0.1", port=imap_port, timeout=60)
    await c.wait_hello_from_server()
    await c.login(ALICE, PASSWORD)
    for i in range(messages - 1):
        await c.append(mail(f"message {i}", f"body {i}").as_bytes(), mailbox="INBOX")
    html = "<div>" + "".join(
        f'<p>Paragraph {i} with <b>bold</b>, <a href="https://example.test/{i}">a link</a>'
        f' and <img src="https://track.test/{i}.gif"></p>'
        for i in range(400)
    ) + "</div>"  # fmt: skip
    html = html[: 50 * 1024]
    await c.append(mail("big html", "plain part", html=html).as_bytes(), mailbox="INBOX")
    await c.logout()


async def webmail(messages: int, rounds: int, sessions: int) -> list[tuple[str, float, float]]:
    import httpx

    from mailsvc.webmail.app import create_app

    gen = mail_stack.__wrapped__()  # type: ignore[attr-defined]
    stack = next(gen)
    try:
        await seed_inbox(stack.imap_port, messages)
        app = create_app(dataclasses.replace(stack.settings, page_size=50))
        transport = httpx.ASGITransport(app=app, client=("198.51.100.9", 40000))
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            tab = Tab(client)
            answer = await tab.login()
            assert answer.status_code == 303, (answer.status_code, answer.text[-600:])
            inbox = await client.get("/mail")
            assert inbox.text.count('href="/read?') == 50
            uid = re.search(r"uid=(\d+)\">big html", inbox.text)
            assert uid is not None

            async def get(path: str) -> None:
                answer = await client.get(path)
                assert answer.status_code == 200

            out = []
            for name, path in (
                (f"webmail: INBOX of {messages}, newest 50", "/mail"),
                ("webmail: read a 50 KB HTML message", f"/read?folder=INBOX&uid={uid.group(1)}"),
                ("webmail: its sanitised HTML frame", f"/body?folder=INBOX&uid={uid.group(1)}"),
            ):
                p50, p99 = await timed(lambda p=path: get(p), rounds)  # type: ignore[misc]
                out.append((name, p50, p99))
            # server-side state per session: measured with tracemalloc on the app's own store
            # (RSS moves in pages, too coarse for a few hundred sessions)
            store = app.state.sessions
            gc.collect()
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            made = []
            for i in range(sessions):
                s = store.new()
                s.user, s.password = f"user{i}@example.test", "a mail password of 24 ch"
                made.append(s)
            per = (tracemalloc.get_traced_memory()[0] - base) / sessions
            tracemalloc.stop()
            print(f"# memory per webmail session (server side): {per:.0f} bytes over "
                  f"{sessions} sessions; bench process RSS {rss_mib():.0f} MiB")  # fmt: skip
            print(f"# per parked IMAP conversation (server side, upper bound): "
                  f"{await _parked_memory(app, transport, 8):.0f} bytes")  # fmt: skip
            await app.state.park.close()
            return out
    finally:
        with __import__("contextlib").suppress(StopIteration):
            next(gen)


async def _parked_memory(app: Any, transport: Any, count: int) -> float:
    """Traced bytes per logged-in session whose IMAP conversation is parked (``count`` sessions
    of one user: Dovecot allows 10 connections per user and address by default). An upper
    bound: it includes the session and the bench's own client objects."""
    import httpx

    clients = [httpx.AsyncClient(transport=transport, base_url=BASE) for _ in range(count)]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for client in clients:
        assert (await Tab(client).login()).status_code == 303
        assert (await client.get("/mail")).status_code == 200
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert len(app.state.park) >= count
    for client in clients:
        await client.aclose()
    return used / count


async def compare(messages: int, rounds: int, repeats: int) -> list[str]:
    """Our webmail (twice: parking the IMAP conversation between pages, the default, and one
    conversation per page, ``imap_keep = 0``) and Roundcube on the same Dovecot and INBOX,
    interleaved request by request (A, B, C, A, B, C, …) in ``repeats`` runs of ``rounds`` each;
    the median over runs of each run's p50/p99, and each server process's CPU per view."""
    from bench import roundcube as rc

    why = rc.env_ok()
    if why is not None:
        raise SystemExit(f"--compare: {why}")
    gen = mail_stack.__wrapped__()  # type: ignore[attr-defined]
    stack = next(gen)
    servers: list[rc.Server] = []
    work = tempfile.TemporaryDirectory(prefix="bench-rc-")
    try:
        await seed_inbox(stack.imap_port, messages)
        ours = rc.start_ours(stack.imap_port, ALICE, PASSWORD, keep=30.0)
        servers.append(ours)
        unparked = rc.start_ours(stack.imap_port, ALICE, PASSWORD, keep=0.0)
        servers.append(unparked)
        theirs = rc.start_roundcube(stack.imap_port, Path(work.name), ALICE, PASSWORD)
        servers.append(theirs)
        page = ours.request("GET", "/mail").text
        found = re.search(r"uid=(\d+)\">big html", page)
        assert found is not None
        uid = int(found.group(1))
        rc.check_views(ours, theirs, uid)
        contenders = (
            ("ours (imap_keep 30 s, default)", ours, "ours"),
            ("ours (imap_keep 0)", unparked, "ours"),
            ("Roundcube 1.6 (php -S)", theirs, "roundcube"),
        )
        rows = []
        for view, paths in rc.views(uid).items():
            for _ in range(3):  # warm up
                for _label, server, kind in contenders:
                    server.timed(*paths[kind])
            runs: dict[str, list[tuple[float, float]]] = {c[0]: [] for c in contenders}
            cpu = dict.fromkeys(runs, 0.0)
            for _ in range(repeats):
                wall: dict[str, list[float]] = {c[0]: [] for c in contenders}
                for _ in range(rounds):
                    for label, server, kind in contenders:
                        took, used = server.timed(*paths[kind])
                        wall[label].append(took)
                        cpu[label] += used
                for label, times in wall.items():
                    runs[label].append((percentile_ms(times, 0.5), percentile_ms(times, 0.99)))
            total = repeats * rounds
            for label, _server, _kind in contenders:
                p50 = statistics.median(r[0] for r in runs[label])
                p99 = statistics.median(r[1] for r in runs[label])
                per = cpu[label] / total * 1000
                rows.append(f"| {view} | {label} | {p50:.1f} | {p99:.1f} | {per:.1f} |")
        return [
            f"# same Dovecot, INBOX of {messages}; {repeats} runs x {rounds} interleaved "
            "requests per view; medians over runs; CPU = the webmail server process per view",
            "| view | webmail | p50 ms | p99 ms | CPU ms |",
            "|---|---|---|---|---|",
            *rows,
        ]
    finally:
        for server in servers:
            server.close()
        work.cleanup()
        with __import__("contextlib").suppress(StopIteration):
            next(gen)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument(
        "--compare", action="store_true", help="only: our webmail vs Roundcube on one Dovecot"
    )
    parser.add_argument("--repeats", type=int, default=3, help="--compare: runs (median)")
    args = parser.parse_args()
    if args.compare:
        print("\n".join(await compare(args.messages, args.rounds, max(3, args.repeats))))
        return
    rows = await admin(args.users, args.rounds)
    rows += await webmail(args.messages, args.rounds, args.sessions)
    print("| page | p50 ms | p99 ms |\n|---|---|---|")
    for name, p50, p99 in rows:
        print(f"| {name} | {p50:.1f} | {p99:.1f} |")


if __name__ == "__main__":
    asyncio.run(main())
