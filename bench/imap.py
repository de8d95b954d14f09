"""Benchmark: mailsvc's IMAP/POP3 front ends vs Dovecot 2.3 on copies of the same Maildir.

What it runs, on this machine, in one go:

* ``idsvc serve`` + ``mailsvc serve`` (``tests/fixtures/mailstack.py``, plaintext login allowed
  on loopback so both servers are driven the same way, no TLS);
* Alice's Maildir filled with the test corpus (``tests/fixtures/mailcorpus.py``, round robin):
  INBOX with 1,000 messages and folders ``B1k``, ``B10k`` (and ``B100k`` with ``--big``); one
  SELECT through mailsvc assigns the UIDs, then the whole Maildir is copied (with our
  ``dovecot-uidlist``) for a Dovecot 2.3 imapd/pop3d started in a temp dir;
* rows, each run ``--rounds`` times with the two servers interleaved (order alternating):
  LOGIN + SELECT + ``UID FETCH 1:* (UID FLAGS RFC822.SIZE)`` per folder size; ``FETCH 1:1000
  BODY.PEEK[]``; ``SEARCH TEXT needle`` on 10k; POP3 ``UIDL`` + ``RETR`` of the 1,000 INBOX
  messages; 50 concurrent sessions (LOGIN, SELECT, ``FETCH 1:50 (FLAGS)``, LOGOUT) — then the
  memory of 100 idle selected sessions (mailsvc: its RSS growth / 100; Dovecot: the mean RSS of
  its per-session ``imap`` processes).

Figures: seconds per run (median, min-max) and ours/Dovecot throughput ratios. The machine is
shared: run it twice and look at the spread. Every process it starts is stopped by pid.

Usage: ``PYTHONPATH=. .venv/bin/python bench/imap.py [--rounds 3] [--big]`` (as root: Dovecot
switches to the mail user).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import poplib
import pwd
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import md_head, md_row, process_tree, rss_mib  # noqa: E402
from mailsvc.maildir import MaildirStore  # noqa: E402
from tests.fixtures.dovecot import DovecotServer  # noqa: E402
from tests.fixtures.imapwire import RawImap  # noqa: E402
from tests.fixtures.mailcorpus import CORPUS  # noqa: E402
from tests.fixtures.mailstack import ALICE, PASSWORD, MailStack, free_port, mail_stack  # noqa: E402
from tests.integration.test_mailsvc_dovecot import chown_tree  # noqa: E402

DC_PASSWORD = "bench-Secret"


class Server:
    def __init__(self, name: str, imap: int, pop3: int, user: str, password: str) -> None:
        self.name, self.imap, self.pop3, self.user, self.password = name, imap, pop3, user, password

    def login(self) -> RawImap:
        client = RawImap(self.imap, timeout=300)
        _, answer = client.command(f'LOGIN "{self.user}" "{self.password}"')
        assert answer.startswith(b"OK"), answer
        return client


def fill(stack: MailStack, sizes: list[int]) -> Path:
    box = stack.maildir(ALICE)
    store = MaildirStore(stack.vmail, hostname="bench", fsync=False)
    root = store.mailbox(str(box.relative_to(stack.vmail)))
    for i in range(1000):
        root.deliver([CORPUS[i % len(CORPUS)]])
    for size in sizes:
        folder = root.folder(f".B{size // 1000}k", create=True)
        for i in range(size):
            folder.deliver([CORPUS[i % len(CORPUS)]])
    return box


def timed(fn: Callable[[], None]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def select_fetch(server: Server, folder: str) -> Callable[[], None]:
    def run() -> None:
        client = server.login()
        _, answer = client.command(f"SELECT {folder}")
        assert answer.startswith(b"OK"), answer
        _, answer = client.command("UID FETCH 1:* (UID FLAGS RFC822.SIZE)")
        assert answer.startswith(b"OK"), answer
        client.command("LOGOUT")
        client.close()

    return run


def folder_row(folder: str) -> Callable[[Server], Callable[[], None]]:
    return lambda server: select_fetch(server, folder)


def fetch_bodies(server: Server) -> Callable[[], None]:
    def run() -> None:
        client = server.login()
        client.command("SELECT INBOX")
        untagged, answer = client.command("FETCH 1:1000 BODY.PEEK[]")
        assert answer.startswith(b"OK"), answer
        assert len(untagged) == 1000
        client.command("LOGOUT")
        client.close()

    return run


def search_text(server: Server) -> Callable[[], None]:
    def run() -> None:
        client = server.login()
        client.command("SELECT B10k")
        _, answer = client.command("SEARCH TEXT needle")
        assert answer.startswith(b"OK"), answer
        client.command("LOGOUT")
        client.close()

    return run


def pop3_all(server: Server) -> Callable[[], None]:
    def run() -> None:
        client = poplib.POP3("127.0.0.1", server.pop3, timeout=300)
        client.user(server.user)
        client.pass_(server.password)
        listing = client.uidl()[1]
        for n in range(1, len(listing) + 1):
            client.retr(n)
        client.quit()

    return run


def sessions(server: Server, count: int = 50) -> Callable[[], None]:
    def one(_: int) -> None:
        client = server.login()
        client.command("SELECT INBOX")
        client.command("FETCH 1:50 (FLAGS)")
        client.command("LOGOUT")
        client.close()

    def run() -> None:
        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            list(pool.map(one, range(count)))

    return run


def idle_memory(server: Server, pid: int, dovecot: bool) -> float:
    """KiB per idle selected session."""
    before_pids = set(process_tree(pid))
    before = sum(rss_mib(p) for p in before_pids)
    clients = []
    for _ in range(100):
        client = server.login()
        client.command("SELECT INBOX")
        clients.append(client)
    time.sleep(1)
    if dovecot:
        fresh = [p for p in process_tree(pid) if p not in before_pids]
        imap_pids = [p for p in fresh if Path(f"/proc/{p}/comm").read_text().strip() == "imap"]
        per = statistics.mean(rss_mib(p) for p in imap_pids) * 1024 if imap_pids else float("nan")
    else:
        per = (rss_mib(pid) - before) * 1024 / 100
    for client in clients:
        client.command("LOGOUT")
        client.close()
    return per


def dovecot_for(home: Path, imap_port: int, pop3_port: int) -> DovecotServer:
    owner = pwd.getpwnam("nobody")
    blocks = f"""\
passdb {{
  driver = static
  args = password={DC_PASSWORD}
}}
userdb {{
  driver = static
  args = uid={owner.pw_uid} gid={owner.pw_gid} home={home}
}}
"""
    extra = f"""\
protocols = imap pop3
mail_location = maildir:~/Maildir
pop3_uidl_format = %08Xu%08Xv
mail_max_userip_connections = 500
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"""
    return DovecotServer(blocks, extra=extra)


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--big", action="store_true", help="also a 100k-message folder")
    args = parser.parse_args()
    sizes = [1000, 10000] + ([100000] if args.big else [])
    extra = {"access": {"allow_plaintext": True, "max_connections_per_ip": 500,
                        "max_user_ip_connections": 500}}  # fmt: skip
    with mail_stack(**extra) as stack:
        assert stack.mailsvc is not None
        box = fill(stack, sizes)
        ours = Server("mailsvc", stack.imap, stack.pop3, ALICE, PASSWORD)
        warm = ours.login()
        for folder in ["INBOX"] + [f"B{s // 1000}k" for s in sizes]:
            warm.command(f"SELECT {folder}")  # UIDs assigned once, files moved to cur/
        warm.command("LOGOUT")
        warm.close()
        home = stack.workdir / "dc-home"
        shutil.copytree(box, home / "Maildir")
        owner = pwd.getpwnam("nobody")
        chown_tree(home, owner.pw_uid, owner.pw_gid)
        stack.workdir.chmod(0o711)
        imap_port, pop3_port = free_port(), free_port()
        with dovecot_for(home, imap_port, pop3_port) as dovecot:
            assert dovecot.proc is not None
            theirs = Server("dovecot", imap_port, pop3_port, "alice", DC_PASSWORD)
            deadline = time.monotonic() + 20
            while True:
                try:
                    theirs.login().close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            rows: list[tuple[str, Callable[[Server], Callable[[], None]]]] = [
                *((f"LOGIN+SELECT+UID FETCH 1:* (UID FLAGS RFC822.SIZE), {s // 1000}k",
                   folder_row(f"B{s // 1000}k")) for s in sizes),
                ("FETCH 1:1000 BODY.PEEK[]", fetch_bodies),
                ("SEARCH TEXT needle, 10k", search_text),
                ("POP3 UIDL + RETR x1000", pop3_all),
                ("50 concurrent sessions (LOGIN SELECT FETCH LOGOUT)", sessions),
            ]  # fmt: skip
            print(f"mailsvc RSS at start: {rss_mib(stack.mailsvc.proc.pid):.1f} MiB")
            lines = md_head(["row", "mailsvc s", "Dovecot s", "throughput ratio"])
            for label, make in rows:
                times: dict[str, list[float]] = {"mailsvc": [], "dovecot": []}
                for r in range(args.rounds):
                    order = [ours, theirs] if r % 2 == 0 else [theirs, ours]
                    for server in order:
                        times[server.name].append(timed(make(server)))
                ratio = statistics.median(times["dovecot"]) / statistics.median(times["mailsvc"])
                lines.append(md_row([label, fmt(times["mailsvc"]), fmt(times["dovecot"]),
                                     f"{ratio:.2f}"]))  # fmt: skip
                print(lines[-1], flush=True)
            ours_kib = idle_memory(ours, stack.mailsvc.proc.pid, dovecot=False)
            theirs_kib = idle_memory(theirs, dovecot.proc.pid, dovecot=True)
            print(f"mailsvc RSS at end: {rss_mib(stack.mailsvc.proc.pid):.1f} MiB")
    print()
    print("\n".join(lines))
    print(f"\nidle selected session: mailsvc {ours_kib:.0f} KiB (RSS growth / 100 sessions), "
          f"Dovecot {theirs_kib:.0f} KiB (mean RSS of one imap process)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
