"""BINARY (RFC 3516) on mailsvc's IMAP front end, differential against Debian's Dovecot 2.3
imapd on a copy of the same Maildir: ``BINARY[section]<partial>``, ``BINARY.PEEK`` and
``BINARY.SIZE`` over the test corpus plus messages with NUL bytes in a base64 part, an unknown
transfer encoding, a quoted-printable single part and corrupt base64. The answers (literal8
``~{n}`` vs ``{n}`` included) must be byte-identical; for a ``NO`` only the response code is
compared (Dovecot also sends a FETCH carrying just the UID). APPEND of a ``literal8`` is checked
against our own server.

Where Dovecot and RFC 3516 part ways the RFC wins and the command is left out of the script:
Dovecot accepts ``BINARY[1.HEADER]``, ``BINARY[0]`` and ``BINARY[TEXT]`` (not section-binary;
ours: BAD), and answers ``BINARY.SIZE[1]`` with ``NO [UNKNOWN-CTE]`` when some *other* part
of the message has an unknown encoding (ours: the size)."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

import pytest

from tests.fixtures.imapwire import RawImap
from tests.fixtures.mailcorpus import CORPUS
from tests.fixtures.mailstack import ALICE, PASSWORD, MailStack, mail_stack
from tests.integration.test_mailsvc_imap_condstore import Entries, against_dovecot
from tests.integration.test_mailsvc_smtp import tls_client

NUL_PARTS = (
    b"From: a@example.org\r\nSubject: nul\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n"
    b"--zz\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.b64encode(b"ab\x00cd\xff\x01")
    + b"\r\n--zz\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n"
    b"begin 644 x\r\n--zz\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: BASE64\r\n"
    b"\r\naGVsbG8gd29y\r\nbGQ=\r\n--zz--\r\n"
)
QP_SINGLE = (
    b"From: a@example.org\r\nSubject: single\r\nContent-Transfer-Encoding: quoted-printable\r\n"
    b"\r\nGr=C3=BC=C3=9Fe=\r\n soft  \r\n=3D=3d end\r\n"
)
BAD_BASE64 = (
    b"From: a@example.org\r\nSubject: bad64\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"aGVsbG8*!!gd29y\r\n"
)
MESSAGES = [*CORPUS, NUL_PARTS, QP_SINGLE, BAD_BASE64]
SECTIONS = ["", "1", "2", "3", "1.1", "2.1", "2.2", "2.1.1", "9"]


def script() -> list[str]:
    commands: list[str] = []
    for n in range(1, len(MESSAGES) + 1):
        if n != len(CORPUS) + 1:  # an unknown encoding in one part: Dovecot refuses every size
            commands.append(f"FETCH {n} (" + " ".join(f"BINARY.SIZE[{s}]" for s in SECTIONS) + ")")
        commands += [f"FETCH {n} (BINARY.PEEK[{s}])" for s in SECTIONS]
        commands += [f"FETCH {n} (BINARY.PEEK[1]<2.5>)", f"UID FETCH {n} (BINARY.PEEK[]<10>)"]
    nul = len(CORPUS) + 1
    commands += [f"FETCH {nul} (BINARY.SIZE[2])", f"FETCH {nul} (BINARY.PEEK[3])",
                 "FETCH 1 (FLAGS)", "FETCH 1 (BINARY[1])", "FETCH 1 (FLAGS)",
                 "FETCH 2 (BINARY[2]<0.4>)", "FETCH 2 (FLAGS)",
                 f"FETCH 1:{len(CORPUS)} (BINARY.SIZE[1])", "FETCH 3 (BINARY.PEEK[1]<0.0>)",
                 "FETCH 3 (BINARY.PEEK[2]<9999.5>)", "FETCH 99 (BINARY[1])"]  # fmt: skip
    return commands


_LITERAL8 = re.compile(rb"~\{(\d+)\}\r\n")


def plain_literals(line: bytes) -> bytes:
    """``~{n}`` as ``{n}`` when the data has no NUL: RFC 3516 lets the server send any BINARY
    data as a literal8 (Dovecot's choice for undecoded content varies within a session)."""
    out, pos = b"", 0
    for found in _LITERAL8.finditer(line):
        if found.start() < pos:
            continue
        data = line[found.end() : found.end() + int(found.group(1))]
        marker = found.group(0) if b"\x00" in data else found.group(0)[1:]
        out += line[pos : found.start()] + marker + data
        pos = found.end() + len(data)
    return out + line[pos:]


def transcript(client: RawImap) -> Entries:
    _, answer = client.command("SELECT INBOX")
    assert answer.startswith(b"OK"), answer
    out: Entries = []
    for command in script():
        untagged, tagged = client.command(command)
        status, _, rest = tagged.partition(b" ")
        if status == b"OK":
            out.append((command, [plain_literals(ln) for ln in untagged], status))
        else:
            code = re.match(rb"\[[A-Z-]+\]", rest)
            out.append((command, [], status + (b" " + code.group(0) if code else b"")))
    client.command("LOGOUT")
    return out


@pytest.fixture(scope="module")
def stack() -> Iterator[MailStack]:
    with mail_stack() as running:
        yield running


def test_binary_answers_match_dovecot(stack: MailStack) -> None:
    ours, theirs = against_dovecot(stack, MESSAGES, transcript)
    assert len(ours) == len(theirs) > 130
    mismatches = [(a, b) for a, b in zip(ours, theirs, strict=True) if a != b]
    report = "\n".join(f"{a[0]}\n  ours:    {a[1]!r} {a[2]!r}\n  dovecot: {b[1]!r} {b[2]!r}"
                       for a, b in mismatches[:15])  # fmt: skip
    assert not mismatches, f"{len(mismatches)} differences:\n{report}"
    answers = {c: (u, t) for c, u, t in ours}
    nul = len(CORPUS) + 1
    assert answers[f"FETCH {nul} (BINARY.PEEK[1])"][0] == \
        [b"* %d FETCH (BINARY[1] ~{7}\r\nab\x00cd\xff\x01)\r\n" % nul]  # fmt: skip
    assert answers[f"FETCH {nul} (BINARY.PEEK[3])"][0] == \
        [b"* %d FETCH (BINARY[3] {11}\r\nhello world)\r\n" % nul]  # fmt: skip
    assert answers[f"FETCH {nul} (BINARY.PEEK[2])"] == ([], b"NO [UNKNOWN-CTE]")
    assert answers[f"FETCH {nul + 2} (BINARY.PEEK[1])"] == ([], b"NO [PARSE]")


@pytest.mark.parametrize(
    "command",
    ["FETCH 1 (BINARY.PEEK[1.HEADER])", "FETCH 1 (BINARY.PEEK[TEXT])", "FETCH 1 (BINARY[0])",
     "FETCH 1 (BINARY.SIZE[1]<0.5>)", "FETCH 1 (BINARY.PEEK[1.MIME])", "FETCH 1 (BINARY.SIZE)",
     "FETCH 1 (BINARY.PEEK[1.0])", "FETCH 1 (BINARY[1)"],
)  # fmt: skip
def test_binary_sections_outside_rfc_3516_are_bad(stack: MailStack, command: str) -> None:
    client = RawImap(stack.imaps, tls=tls_client())
    client.command(f'LOGIN "{ALICE}" "{PASSWORD}"')
    client.command("SELECT INBOX")
    untagged, answer = client.command(command)
    assert answer.startswith(b"BAD"), answer
    assert untagged == []
    client.close()


def test_append_literal8_stores_the_bytes(stack: MailStack) -> None:
    client = RawImap(stack.imaps, tls=tls_client())
    client.command(f'LOGIN "{ALICE}" "{PASSWORD}"')
    message = b"From: a@example.org\r\nSubject: raw\r\n\r\nnul \x00 and \xff\r\n"
    client.send(b"a1 APPEND Drafts ~{%d+}\r\n" % len(message) + message + b"\r\n")
    answer = client.line()
    assert answer.startswith(b"a1 OK [APPENDUID "), answer
    client.command("SELECT Drafts")
    untagged, _ = client.command("FETCH 1 (BINARY.PEEK[1] RFC822.SIZE)")
    assert untagged == [b"* 1 FETCH (BINARY[1] ~{13}\r\nnul \x00 and \xff\r\n RFC822.SIZE %d)\r\n"
                        % len(message)]  # fmt: skip
    client.close()
