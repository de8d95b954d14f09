"""Reading a fetched message (RFC 5322 / MIME bytes) into what the pages show, and building the
messages the webmail sends.

Parts are numbered in ``Message.walk()`` order; that number is how the pages name an
attachment or a ``cid:`` image. Header values the user typed are refused when they contain CR
or LF (header injection), and every recipient must be a plain ``local@domain`` address.
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser

MAX_TEXT = 2_000_000  # characters of a body shown
MAX_RECIPIENTS = 100


class Refused(ValueError):
    """User input the webmail will not put into a message."""


@dataclass(frozen=True, slots=True)
class Attachment:
    index: int
    filename: str
    content_type: str
    size: int
    content_id: str = ""


@dataclass
class Parsed:
    subject: str
    sender: str
    to: str
    cc: str
    date: str
    message_id: str
    references: str
    text: str | None
    html: str | None
    attachments: list[Attachment] = field(default_factory=list)

    def cid_index(self, content_id: str) -> int | None:
        for a in self.attachments:
            if a.content_id and a.content_id == content_id:
                return a.index
        return None


def _header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except Exception:  # a malformed header: show nothing rather than fail the page
        return ""
    return "" if value is None else str(value)


def _body(part: Message) -> str:
    try:
        content = part.get_content()  # type: ignore[attr-defined]
    except Exception:
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return str(content)[:MAX_TEXT]


def parse(raw: bytes) -> Parsed:
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = []
    for index, part in enumerate(msg.walk()):
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        disposition = part.get_content_disposition()
        filename = part.get_filename() or ""
        cid = _header(part, "Content-ID").strip().strip("<>")
        if disposition != "attachment" and not filename:
            if ctype == "text/plain" and text is None:
                text = _body(part)
                continue
            if ctype == "text/html" and html is None:
                html = _body(part)
                continue
        payload = part.get_payload(decode=True)
        size = len(payload) if isinstance(payload, bytes) else 0
        attachments.append(Attachment(index, filename or f"part-{index}", ctype, size, cid))
    return Parsed(
        subject=_header(msg, "Subject"),
        sender=_header(msg, "From"),
        to=_header(msg, "To"),
        cc=_header(msg, "Cc"),
        date=_header(msg, "Date"),
        message_id=_header(msg, "Message-ID"),
        references=_header(msg, "References"),
        text=text,
        html=html,
        attachments=attachments,
    )


def part_bytes(raw: bytes, index: int) -> tuple[bytes, str] | None:
    """The decoded bytes and filename of part ``index``, or None."""
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    for i, part in enumerate(msg.walk()):
        if i == index and not part.is_multipart():
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                return None
            return payload, part.get_filename() or f"part-{index}"
    return None


def single_line(value: str, what: str, limit: int = 998) -> str:
    if "\r" in value or "\n" in value or "\0" in value:
        raise Refused(f"{what} must be one line")
    if len(value) > limit:
        raise Refused(f"{what} is too long")
    return value.strip()


def addresses(value: str, what: str) -> list[str]:
    """``local@domain`` addresses from a comma-separated field (display names allowed)."""
    value = single_line(value, what)
    found = email.utils.getaddresses([value]) if value else []
    out = []
    for _name, addr in found:
        local, at, domain = addr.rpartition("@")
        if not at or not local or not domain or any(c in addr for c in ' <>"\\,;'):
            raise Refused(f"{what}: not an address: {addr[:64]!r}")
        out.append(addr)
    if len(out) > MAX_RECIPIENTS:
        raise Refused(f"{what}: too many recipients")
    return out


@dataclass
class Draft:
    sender: str
    to: list[str]
    cc: list[str]
    subject: str
    body: str
    in_reply_to: str = ""
    references: str = ""
    attachments: list[tuple[str, str, bytes]] = field(default_factory=list)  # name, type, data


def build(draft: Draft, domain: str) -> EmailMessage:
    """The message to submit (and to append to Sent)."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = draft.sender
    msg["To"] = ", ".join(draft.to)
    if draft.cc:
        msg["Cc"] = ", ".join(draft.cc)
    msg["Subject"] = single_line(draft.subject, "subject")
    msg["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = email.utils.make_msgid(domain=domain)
    if draft.in_reply_to:
        msg["In-Reply-To"] = single_line(draft.in_reply_to, "in-reply-to")
        msg["References"] = single_line(
            f"{draft.references} {draft.in_reply_to}".strip(), "references"
        )
    msg.set_content(draft.body)
    for name, ctype, data in draft.attachments:
        maintype, _, subtype = ctype.partition("/")
        if not subtype:
            maintype, subtype = "application", "octet-stream"
        msg.add_attachment(
            data, maintype=maintype, subtype=subtype, filename=single_line(name, "file name")
        )
    return msg
