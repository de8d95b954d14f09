"""Differential: the same scripted IMAP session against mailsvc and against Debian's Dovecot 2.3
imapd on a copy of the same Maildir (our dovecot-uidlist included, so UIDs agree). FETCH
ENVELOPE / BODYSTRUCTURE / BODY / BODY[section]<partial> / RFC822.* and SEARCH answers must be
identical after normalising what RFC 3501 leaves free (SEARCH result order, the text of tagged
responses)."""

from __future__ import annotations

import pwd
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.fixtures.dovecot import DovecotServer
from tests.fixtures.imapwire import RawImap
from tests.fixtures.mailcorpus import CORPUS
from tests.fixtures.mailstack import ALICE, PASSWORD, free_port, mail_stack
from tests.integration.test_mailsvc_dovecot import chown_tree
from tests.integration.test_mailsvc_pop3 import seed
from tests.integration.test_mailsvc_smtp import tls_client

DOVECOT_PASSWORD = "dc-Secret"
SECTIONS = ["", "HEADER", "TEXT", "1", "1.MIME", "2", "2.MIME", "2.HEADER", "2.TEXT", "2.1",
            "2.2", "3", "1.1", "2.1.1", "HEADER.FIELDS (From Subject)",
            "HEADER.FIELDS.NOT (Date Message-ID)", "2.HEADER.FIELDS (Subject)", "4"]  # fmt: skip
ITEMS = ["ENVELOPE", "BODYSTRUCTURE", "BODY", "RFC822.SIZE", "RFC822.HEADER", "FLAGS", "UID"]
SEARCHES = [
    "ALL", "TEXT needle", "BODY needle", "FROM alice", "TO bob", "SUBJECT hello", "CC eve",
    "BCC hidden", "HEADER Message-ID plain", "LARGER 300", "SMALLER 300", "NOT FROM alice",
    "OR FROM alice TO alice", "SENTSINCE 3-Dec-2025", "SENTBEFORE 3-Dec-2025",
    "SENTON 2-Dec-2025", "UID 2:4", "2:*", "1,3,5", "SEEN", "UNSEEN", "FLAGGED", "DELETED",
    "KEYWORD $Label1", "UNKEYWORD $Label1", "ANSWERED", "DRAFT", "SUBJECT digest NOT TO bob",
    "(FROM alice) (SUBJECT inner)", "OR (SUBJECT plain) (LARGER 700)", "HEADER X-Missing \"\"",
    "CHARSET UTF-8 TEXT needle", "BODY Zeile", "TEXT digest", "UID 1:* NOT UID 3",
]  # fmt: skip


def script() -> list[str]:
    commands: list[str] = []
    for n in range(1, len(CORPUS) + 1):
        commands += [f"FETCH {n} ({item})" for item in ITEMS]
        commands += [f"FETCH {n} (BODY.PEEK[{s}])" for s in SECTIONS]
        commands += [f"FETCH {n} (BODY.PEEK[]<10.20>)", f"FETCH {n} (BODY.PEEK[1]<0.3>)",
                     f"UID FETCH {n} (BODY.PEEK[TEXT]<5>)"]  # fmt: skip
    commands += [f"SEARCH {s}" for s in SEARCHES]
    commands += ["STORE 1 +FLAGS.SILENT (\\Seen)", "STORE 2 +FLAGS (\\Flagged $Label1)",
                 "STORE 3 FLAGS (\\Answered)", "STORE 2 -FLAGS ($Label1)"]  # fmt: skip
    commands += [f"SEARCH {s}" for s in SEARCHES if s.split()[0] in
                 ("SEEN", "UNSEEN", "FLAGGED", "KEYWORD", "UNKEYWORD", "ANSWERED")]  # fmt: skip
    commands += ["FETCH 1:* (FLAGS)", "UID FETCH 1:* (FLAGS)", "FETCH 2 (BODY[1])",
                 "FETCH 2 (FLAGS)", "STATUS INBOX (MESSAGES UNSEEN UIDNEXT)", "SEARCH 99",
                 "FETCH 99 (UID)", "FETCH 1 (BODY[9])", "UID FETCH 99 (FLAGS)"]  # fmt: skip
    return commands


_PLAIN_LITERAL = re.compile(rb"\{(\d+)\}\r\n")


def literals_as_quoted(line: bytes) -> bytes:
    """A literal whose text could be a quoted string, written as one (RFC 3501 leaves the choice
    to the server)."""
    out, pos = b"", 0
    for found in _PLAIN_LITERAL.finditer(line):
        if found.start() < pos:
            continue
        size = int(found.group(1))
        data = line[found.end() : found.end() + size]
        out += line[pos : found.start()]
        if all(0x20 <= b < 0x7F and b not in b'"\\' for b in data):
            out += b'"' + data + b'"'
        else:
            out += found.group(0) + data
        pos = found.end() + size
    return out + line[pos:]


def _sorted_items(found: re.Match[bytes]) -> bytes:
    return b" ".join(sorted(found.group(0).strip(b"()").split(b" ")))


def normalise(command: str, untagged: list[bytes], tagged: bytes) -> tuple[str, list[bytes], bytes]:
    status = tagged.split(b" ", 1)[0]
    # \Recent belongs to whichever session saw a message first: the two servers' sessions differ
    lines = [
        literals_as_quoted(ln).replace(b" \\Recent", b"").replace(b"\\Recent", b"")
        for ln in untagged
        if not ln.startswith((b"* OK ", b"* FLAGS ")) and not ln.endswith(b" RECENT\r\n")
    ]
    if command.startswith("SEARCH") or " SEARCH " in command:
        lines = [b" ".join(sorted(ln.split())) for ln in lines]
    if command.startswith("STATUS"):
        lines = [re.sub(rb"\(.*\)", _sorted_items, ln) for ln in lines]
    return command, lines, status


def session(client: RawImap, login: str) -> list[tuple[str, list[bytes], bytes]]:
    _, answer = client.command(login)
    assert answer.startswith(b"OK"), answer
    _, answer = client.command("SELECT INBOX")
    assert answer.startswith(b"OK"), answer
    out = []
    for command in script():
        untagged, tagged = client.command(command)
        out.append(normalise(command, untagged, tagged))
    client.command("LOGOUT")
    client.close()
    return out


def dovecot_client(server: DovecotServer, port: int) -> RawImap:
    """A plain connection to the Dovecot of ``dovecot_imap`` once it listens (20 s at most)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            return RawImap(port)
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(server.tail())
            time.sleep(0.1)


def dovecot_imap(home: Path, port: int) -> DovecotServer:
    owner = pwd.getpwnam("nobody")
    blocks = f"""\
passdb {{
  driver = static
  args = password={DOVECOT_PASSWORD}
}}
userdb {{
  driver = static
  args = uid={owner.pw_uid} gid={owner.pw_gid} home={home}
}}
"""
    extra = f"""\
protocols = imap
mail_location = maildir:~/Maildir
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""
    return DovecotServer(blocks, extra=extra)


def test_imap_answers_match_dovecot() -> None:
    with mail_stack() as stack:
        box = seed(stack, ALICE, CORPUS)
        first = RawImap(stack.imaps, tls=tls_client())
        first.command(f'LOGIN "{ALICE}" "{PASSWORD}"')
        first.command("SELECT INBOX")  # UIDs assigned, files moved to cur/
        first.command("LOGOUT")
        first.close()
        home = stack.workdir / "dc-home"
        shutil.copytree(box, home / "Maildir")  # with the dovecot-uidlist we wrote
        ours_client = RawImap(stack.imaps, tls=tls_client())
        ours = session(ours_client, f'LOGIN "{ALICE}" "{PASSWORD}"')
        owner = pwd.getpwnam("nobody")
        chown_tree(home, owner.pw_uid, owner.pw_gid)
        stack.workdir.chmod(0o711)  # the mail user traverses the test's temp dir
        port = free_port()
        with dovecot_imap(home, port) as server:
            theirs = session(dovecot_client(server, port), f'LOGIN "alice" "{DOVECOT_PASSWORD}"')
    assert len(ours) == len(theirs) > 250
    mismatches = [(a, b) for a, b in zip(ours, theirs, strict=True) if a != b]
    report = "\n".join(f"{a[0]}\n  ours:   {a[1]!r} {a[2]!r}\n  dovecot: {b[1]!r} {b[2]!r}"
                       for a, b in mismatches[:15])  # fmt: skip
    assert not mismatches, f"{len(mismatches)} differences:\n{report}"
