"""CONDSTORE / QRESYNC (RFC 7162) on mailsvc's IMAP front end.

* Differential: the same scripted CONDSTORE and QRESYNC sessions against mailsvc and against
  Debian's Dovecot 2.3 imapd on a copy of the same Maildir (our dovecot-uidlist included, so UIDs
  agree). Absolute modseq values are the server's choice: every modseq in a transcript is
  replaced by its rank among the transcript's modseqs, so the two must agree on which changes
  came after which, not on numbers. Commands that need a modseq (``CHANGEDSINCE``,
  ``UNCHANGEDSINCE``, ``QRESYNC``) take it from the same server's earlier answers.
* Two sessions: A stores a flag and expunges, B reconnects with ``SELECT (QRESYNC …)`` and sees
  exactly that change and the ``VANISHED (EARLIER)`` UID.
* Persistence: modseqs survive a restart of mailsvc (a new process reads ``mailsvc-modseq``).

The only clients here are scripted raw-protocol sessions: none of the real clients the project
drives (mbsync, fetchmail, mutt, curl, Roundcube) uses CONDSTORE/QRESYNC.
"""

from __future__ import annotations

import pwd
import re
import shutil
import time
from collections.abc import Callable, Iterator

import pytest

from tests.fixtures.imapwire import RawImap
from tests.fixtures.mailcorpus import CORPUS
from tests.fixtures.mailstack import ALICE, PASSWORD, MailStack, free_port, mail_stack
from tests.integration.test_mailsvc_dovecot import chown_tree
from tests.integration.test_mailsvc_imap_dovecot import (
    DOVECOT_PASSWORD,
    dovecot_client,
    dovecot_imap,
    literals_as_quoted,
)
from tests.integration.test_mailsvc_pop3 import seed
from tests.integration.test_mailsvc_smtp import tls_client

# "#save NAME" remembers the server's current HIGHESTMODSEQ (via STATUS); "{NAME}" in a command
# is replaced by it, "{V}" by the UIDVALIDITY.
CONDSTORE_SCRIPT = [
    "ENABLE CONDSTORE",
    "ENABLE CONDSTORE",
    "SELECT INBOX",
    "FETCH 1:* (MODSEQ)",
    "FETCH 1:* (FLAGS)",
    "UID FETCH 2:4 (UID MODSEQ FLAGS)",
    "STATUS INBOX (HIGHESTMODSEQ MESSAGES)",
    "#save a",
    "STORE 1 +FLAGS (\\Seen)",
    "STORE 2,3 +FLAGS.SILENT (\\Flagged)",
    "STORE 2 (UNCHANGEDSINCE {a}) +FLAGS ($Label1)",
    "STORE 4 (UNCHANGEDSINCE {a}) +FLAGS (\\Seen)",
    "UID STORE 1:5 (UNCHANGEDSINCE {a}) +FLAGS.SILENT (\\Answered)",
    "STORE 6 (UNCHANGEDSINCE {a}) +FLAGS.SILENT (\\Draft)",
    "FETCH 1:* (FLAGS) (CHANGEDSINCE {a})",
    "UID FETCH 1:* (UID) (CHANGEDSINCE {a})",
    "FETCH 1:* (UID) (CHANGEDSINCE 0)",
    "SEARCH MODSEQ {a}",
    'SEARCH MODSEQ "/flags/\\\\draft" all {a}',
    "UID SEARCH MODSEQ 1 UNSEEN",
    "SEARCH MODSEQ 9000000000000",
    "SEARCH NOT MODSEQ {a}",
    "STATUS INBOX (HIGHESTMODSEQ)",
    "#save b",
    "STORE 1 (UNCHANGEDSINCE 0) +FLAGS (\\Deleted)",
    "STORE 1 +FLAGS (\\Seen)",
    "FETCH 1 (MODSEQ) (CHANGEDSINCE {b})",
    "STORE 3 -FLAGS (\\Flagged)",
    "FETCH 1:* (MODSEQ) (CHANGEDSINCE {b})",
    "NOOP",
    # malformed
    "FETCH 1 (FLAGS) (CHANGEDSINCE x)",
    "FETCH 1 (FLAGS) (CHANGEDSINCE)",
    "FETCH 1 (FLAGS) (CHANGEDSINCE 1 VANISHED)",
    "STORE 1 (UNCHANGEDSINCE) +FLAGS (\\Seen)",
    "STORE 1 (UNCHANGEDSINCE -1) +FLAGS (\\Seen)",
    "SEARCH MODSEQ",
    "SEARCH MODSEQ x",
    "SELECT INBOX (QRESYNC ({V} 1))",
    "EXAMINE INBOX (CONDSTORE)",
    "FETCH 2 (FLAGS MODSEQ)",
]

QRESYNC_SCRIPT = [
    "ENABLE QRESYNC",
    "STATUS INBOX (HIGHESTMODSEQ)",
    "#save a",
    "SELECT INBOX",
    "STORE 2 +FLAGS (\\Seen)",
    "STORE 5,6 +FLAGS.SILENT (\\Deleted)",
    "#save b",
    "EXPUNGE",
    "UID FETCH 1:* (FLAGS) (CHANGEDSINCE {b} VANISHED)",
    "UID FETCH 1:* (FLAGS) (CHANGEDSINCE {a} VANISHED)",
    "UID FETCH 2:5 (FLAGS) (CHANGEDSINCE {a} VANISHED)",
    "FETCH 1:* (FLAGS) (CHANGEDSINCE {a} VANISHED)",
    "SELECT INBOX (QRESYNC ({V} {a}))",
    "SELECT INBOX (QRESYNC ({V} {a} 1:5))",
    "SELECT INBOX (QRESYNC ({V} {b} 1:8 (1:3 1:3)))",
    "SELECT INBOX (QRESYNC ({V} {b}))",
    "SELECT INBOX (QRESYNC (12345 {a}))",
    "EXAMINE INBOX (QRESYNC ({V} {a}))",
    "SELECT INBOX (QRESYNC ({V}))",
    "SELECT INBOX (QRESYNC ({V} 0))",
    "SELECT INBOX (QRESYNC ({V} {a} 1:*))",
    "SELECT INBOX (QRESYNC ({V} {a} 1:5 (1:2 1:3)))",
    "SELECT INBOX (FOO)",
    "SELECT INBOX (QRESYNC ({V} {a}))",
    "STORE 1 +FLAGS (\\Deleted)",
    "UID EXPUNGE 1",
    "FETCH 1 (FLAGS)",
]

_MODSEQ = re.compile(rb"(MODSEQ \(|HIGHESTMODSEQ |MODSEQ )(\d+)")
_STATUS_MODSEQ = re.compile(rb"HIGHESTMODSEQ (\d+)")


class Transcript:
    """One server's run of a script: normalised lines, modseqs kept for ranking."""

    def __init__(self, client: RawImap) -> None:
        self.client = client
        self.saved: dict[str, str] = {}
        self.uidvalidity = ""
        self.entries: list[tuple[str, list[bytes], bytes]] = []

    def highest(self) -> str:
        untagged, _ = self.client.command("STATUS INBOX (HIGHESTMODSEQ UIDVALIDITY)")
        text = b"".join(untagged)
        found = _STATUS_MODSEQ.search(text)
        validity = re.search(rb"UIDVALIDITY (\d+)", text)
        assert found is not None, text
        assert validity is not None, text
        self.uidvalidity = validity.group(1).decode()
        return found.group(1).decode()

    def run(self, script: list[str]) -> None:
        self.highest()
        for template in script:
            if template.startswith("#save "):
                self.saved[template.split()[1]] = self.highest()
                continue
            command = template.replace("{V}", self.uidvalidity)
            for name, value in self.saved.items():
                command = command.replace("{" + name + "}", value)
            untagged, tagged = self.client.command(command)
            self.entries.append((template, *normalise(untagged, tagged)))

    def ranked(self) -> list[tuple[str, list[bytes], bytes]]:
        values: set[int] = set()
        for _, lines, tagged in self.entries:
            for line in [*lines, tagged]:
                values.update(int(m.group(2)) for m in _MODSEQ.finditer(line))
        rank = {v: i for i, v in enumerate(sorted(values), 1)}

        def swap(line: bytes) -> bytes:
            return _MODSEQ.sub(lambda m: m.group(1) + b"#%d" % rank[int(m.group(2))], line)

        return [(c, [swap(ln) for ln in lines], swap(t)) for c, lines, t in self.entries]


def normalise(untagged: list[bytes], tagged: bytes) -> tuple[list[bytes], bytes]:
    """What RFC 3501/7162 leave free: response texts, \\Recent ownership, CAPABILITY lists,
    the informational OK codes of SELECT (checked elsewhere), the order of FETCH items and of
    untagged responses within one answer."""
    lines: list[bytes] = []
    for line in untagged:
        if line.startswith((b"* FLAGS ", b"* CAPABILITY ")) or line.endswith(b" RECENT\r\n"):
            continue
        if line.startswith(b"* OK ") and not line.startswith(b"* OK [HIGHESTMODSEQ "):
            continue
        line = literals_as_quoted(line).replace(b" \\Recent", b"").replace(b"\\Recent", b"")
        line = re.sub(rb"^(\* OK \[[A-Z]+ \d+\]).*", rb"\1", line.rstrip(b"\r\n"))
        if line.startswith(b"* SEARCH"):
            head, _, tail = line.partition(b" (MODSEQ")
            line = b" ".join(sorted(head.split())) + (b" (MODSEQ" + tail if tail else b"")
        if b" FETCH (" in line:
            msn, _, items = line.partition(b" FETCH (")
            pairs = re.findall(rb"([A-Z0-9.]+) (\([^)]*\)|[^ )]+)", items.rstrip(b"\r\n")[:-1])
            line = msn + b" FETCH " + b" ".join(sorted(a + b" " + v for a, v in pairs))
        if line.startswith(b"* STATUS "):
            head, _, items = line.partition(b" (")
            pairs = re.findall(rb"([A-Z]+) (\d+)", items)
            line = head + b" (" + b" ".join(sorted(a + b" " + v for a, v in pairs)) + b")"
        lines.append(line)
    status, _, rest = tagged.partition(b" ")
    code = re.match(rb"\[([A-Z-]+)(?: ([^\]]*))?\]", rest)
    kept = b"[" + code.group(1) + (b" " + code.group(2) if code.group(1) == b"MODIFIED" and
                                   code.group(2) else b"") + b"]" if code else b""  # fmt: skip
    if kept in (b"[READ-WRITE]", b"[READ-ONLY]", b"[CLOSED]", b"[CLIENTBUG]"):
        kept = b""
    return sorted(lines), status + (b" " + kept if kept and status != b"BAD" else b"")


Entries = list[tuple[str, list[bytes], bytes]]


def against_dovecot(
    stack: MailStack, messages: list[bytes], drive: Callable[[RawImap], Entries]
) -> tuple[Entries, Entries]:
    """``drive`` (a logged-in client → its transcript) run against mailsvc, then against a
    Dovecot on a copy of the same Maildir (UIDs assigned by us first)."""
    box = seed(stack, ALICE, messages)
    first = RawImap(stack.imaps, tls=tls_client())
    first.command(f'LOGIN "{ALICE}" "{PASSWORD}"')
    first.command("SELECT INBOX")  # UIDs assigned, files moved to cur/
    first.command("LOGOUT")
    first.close()
    home = stack.workdir / f"dc-home-{time.monotonic_ns()}"
    shutil.copytree(box, home / "Maildir", ignore=shutil.ignore_patterns("mailsvc-*"))
    client = RawImap(stack.imaps, tls=tls_client())
    client.command(f'LOGIN "{ALICE}" "{PASSWORD}"')
    ours = drive(client)
    client.close()
    owner = pwd.getpwnam("nobody")
    chown_tree(home, owner.pw_uid, owner.pw_gid)
    stack.workdir.chmod(0o711)
    port = free_port()
    with dovecot_imap(home, port) as server:
        client = dovecot_client(server, port)
        client.command(f'LOGIN "alice" "{DOVECOT_PASSWORD}"')
        theirs = drive(client)
        client.close()
    return ours, theirs


def run_both(stack: MailStack, script: list[str]) -> tuple[Entries, Entries]:
    def drive(client: RawImap) -> Entries:
        transcript = Transcript(client)
        transcript.run(script)
        return transcript.ranked()

    return against_dovecot(stack, CORPUS, drive)


@pytest.fixture(scope="module")
def stack() -> Iterator[MailStack]:
    with mail_stack() as running:
        yield running


def _compare(
    ours: list[tuple[str, list[bytes], bytes]], theirs: list[tuple[str, list[bytes], bytes]]
) -> None:
    assert len(ours) == len(theirs)
    mismatches = [(a, b) for a, b in zip(ours, theirs, strict=True) if a != b]
    report = "\n".join(f"{a[0]}\n  ours:    {a[1]!r} {a[2]!r}\n  dovecot: {b[1]!r} {b[2]!r}"
                       for a, b in mismatches[:20])  # fmt: skip
    assert not mismatches, f"{len(mismatches)} differences:\n{report}"


def test_condstore_answers_match_dovecot(stack: MailStack) -> None:
    ours, theirs = run_both(stack, CONDSTORE_SCRIPT)
    _compare(ours, theirs)


def test_qresync_answers_match_dovecot(stack: MailStack) -> None:
    ours, theirs = run_both(stack, QRESYNC_SCRIPT)
    _compare(ours, theirs)


# --- sessions of our own server -------------------------------------------------------------


def login(stack: MailStack) -> RawImap:
    client = RawImap(stack.imaps, tls=tls_client())
    _, answer = client.command(f'LOGIN "{ALICE}" "{PASSWORD}"')
    assert answer.startswith(b"OK"), answer
    caps = re.search(rb"\[CAPABILITY ([^\]]*)\]", answer)
    assert caps is not None
    assert {b"CONDSTORE", b"QRESYNC"} <= set(caps.group(1).split())
    return client


def select_state(untagged: list[bytes]) -> tuple[int, int]:
    """(UIDVALIDITY, HIGHESTMODSEQ) from a SELECT's untagged answers."""
    text = b"".join(untagged)
    validity = re.search(rb"\[UIDVALIDITY (\d+)\]", text)
    highest = re.search(rb"\[HIGHESTMODSEQ (\d+)\]", text)
    assert validity is not None, text
    assert highest is not None, text
    return int(validity.group(1)), int(highest.group(1))


def test_qresync_reconnect_sees_exactly_the_other_sessions_changes(stack: MailStack) -> None:
    seed(stack, ALICE, CORPUS[:5])
    b = login(stack)
    b.command("ENABLE QRESYNC")
    untagged, answer = b.command("SELECT INBOX")
    assert answer.startswith(b"OK")
    validity, since = select_state(untagged)
    b.command("LOGOUT")
    b.close()

    a = login(stack)
    a.command("SELECT INBOX")
    _, answer = a.command("UID STORE 2 +FLAGS (\\Flagged)")
    assert answer.startswith(b"OK")
    a.command("UID STORE 4 +FLAGS.SILENT (\\Deleted)")
    untagged, answer = a.command("UID EXPUNGE 4")
    assert untagged == [b"* 4 EXPUNGE\r\n"]  # A never enabled QRESYNC: classic EXPUNGE
    a.command("LOGOUT")
    a.close()

    b = login(stack)
    b.command("ENABLE QRESYNC")
    untagged, answer = b.command(f"SELECT INBOX (QRESYNC ({validity} {since} 1:5))")
    assert answer.startswith(b"OK [READ-WRITE]"), answer
    _, highest = select_state(untagged)
    changes = [ln for ln in untagged if ln.startswith((b"* VANISHED", b"* 2 FETCH", b"* 3 FETCH"))]
    fetched = re.fullmatch(rb"\* 2 FETCH \(UID 2 FLAGS \(\\Flagged\) MODSEQ \((\d+)\)\)\r\n",
                           changes[1] if len(changes) == 2 else b"")  # fmt: skip
    assert changes[0] == b"* VANISHED (EARLIER) 4\r\n", untagged
    assert fetched is not None, untagged
    assert since < int(fetched.group(1)) < highest  # the expunge came after the flag
    assert sum(b" FETCH " in ln for ln in untagged) == 1  # nothing else changed
    # a client that knows the current state learns nothing
    untagged, _ = b.command(f"SELECT INBOX (QRESYNC ({validity} {highest}))")
    assert not [ln for ln in untagged if b"VANISHED" in ln or b" FETCH " in ln]
    b.command("LOGOUT")
    b.close()


def test_live_updates_carry_modseq_and_vanished(stack: MailStack) -> None:
    seed(stack, ALICE, CORPUS[:4])
    watcher_q = login(stack)  # QRESYNC: VANISHED
    watcher_q.command("ENABLE QRESYNC")
    watcher_q.command("SELECT INBOX")
    watcher_c = login(stack)  # CONDSTORE only: EXPUNGE, FETCH with UID and MODSEQ
    watcher_c.command("SELECT INBOX (CONDSTORE)")
    plain = login(stack)  # neither: RFC 3501 as before
    plain.command("SELECT INBOX")
    actor = login(stack)
    actor.command("SELECT INBOX")
    actor.command("STORE 1 +FLAGS.SILENT (\\Seen)")
    actor.command("STORE 3 +FLAGS.SILENT (\\Deleted)")
    actor.command("EXPUNGE")
    flagged = rb"\* 1 FETCH \(UID 1 FLAGS \(\\Seen( \\Recent)?\) MODSEQ \(\d+\)\)\r\n"
    untagged, _ = watcher_q.command("NOOP")
    assert b"* VANISHED 3\r\n" in untagged, untagged
    assert any(re.fullmatch(flagged, ln) for ln in untagged), untagged
    assert not any(b"EXPUNGE" in ln for ln in untagged)
    untagged, _ = watcher_c.command("NOOP")
    assert b"* 3 EXPUNGE\r\n" in untagged, untagged
    assert any(re.fullmatch(flagged, ln) for ln in untagged), untagged
    untagged, _ = plain.command("NOOP")
    assert b"* 3 EXPUNGE\r\n" in untagged, untagged
    assert b"* 1 FETCH (FLAGS (\\Seen))\r\n" in untagged, untagged
    for client in (watcher_q, watcher_c, plain, actor):
        client.command("LOGOUT")
        client.close()


def test_modseqs_survive_a_restart_of_mailsvc(stack: MailStack) -> None:
    seed(stack, ALICE, CORPUS[:4])
    client = login(stack)
    client.command("ENABLE QRESYNC")
    untagged, _ = client.command("SELECT INBOX")
    validity, since = select_state(untagged)
    client.command("STORE 2 +FLAGS (\\Answered)")
    client.command("STORE 4 +FLAGS.SILENT (\\Deleted)")
    client.command("EXPUNGE")
    before, _ = client.command("FETCH 1:* (MODSEQ FLAGS)")
    status, _ = client.command("STATUS INBOX (HIGHESTMODSEQ)")
    client.command("LOGOUT")
    client.close()

    stack.start_mailsvc()  # a new process: only mailsvc-modseq remembers

    client = login(stack)
    client.command("ENABLE QRESYNC")
    untagged, _ = client.command(f"SELECT INBOX (QRESYNC ({validity} {since}))")
    assert select_state(untagged) == (validity, int(re.findall(rb"\d+", status[0])[-1]))
    assert b"* VANISHED (EARLIER) 4\r\n" in untagged
    assert [ln for ln in untagged if b" FETCH " in ln] == [
        b"* 2 FETCH (UID 2 FLAGS (\\Answered) MODSEQ (%s))\r\n"
        % re.search(rb"\* 2 FETCH \(MODSEQ \((\d+)\)", before[1]).group(1)  # type: ignore[union-attr]
    ]
    after, _ = client.command("FETCH 1:* (MODSEQ FLAGS)")
    assert after == before
    client.command("LOGOUT")
    client.close()


def test_conditional_store_lets_one_of_two_sessions_win(stack: MailStack) -> None:
    seed(stack, ALICE, CORPUS[:2])
    first = login(stack)
    first.command("SELECT INBOX")  # \Recent goes to this session, not to A or B
    first.command("LOGOUT")
    first.close()
    a, b = login(stack), login(stack)
    untagged, _ = a.command("SELECT INBOX (CONDSTORE)")
    _, since = select_state(untagged)
    b.command("SELECT INBOX (CONDSTORE)")
    untagged, answer = a.command(f"UID STORE 1 (UNCHANGEDSINCE {since}) +FLAGS ($Done)")
    assert answer.startswith(b"OK Store completed"), answer
    won = re.fullmatch(rb"\* 1 FETCH \(UID 1 FLAGS \(\$Done\) MODSEQ \((\d+)\)\)\r\n", untagged[0])
    assert won is not None, untagged
    untagged, answer = b.command(f"UID STORE 1 (UNCHANGEDSINCE {since}) +FLAGS ($Other)")
    assert answer.startswith(b"OK [MODIFIED 1] "), answer
    # B was told about A's change (with its modseq), and its own STORE changed nothing
    assert b"* 1 FETCH (UID 1 FLAGS ($Done) MODSEQ (%s))\r\n" % won.group(1) in untagged, untagged
    untagged, _ = b.command("UID FETCH 1 (FLAGS MODSEQ)")
    assert untagged == [b"* 1 FETCH (UID 1 FLAGS ($Done) MODSEQ (%s))\r\n" % won.group(1)]
    for client in (a, b):
        client.command("LOGOUT")
        client.close()
