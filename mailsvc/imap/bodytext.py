"""The text SEARCH BODY/TEXT looks in: every ``text/*`` leaf of a message, its transfer encoding
and charset undone, joined and lower-cased (pure code, no I/O).

It walks the MIME tree the way :mod:`mailsvc.mailbox.mime` cuts it (same header end, same
multipart split, ``message/rfc822`` and digest parts descended into) but reads only the two
header fields it needs, ``Content-Type`` (type, ``boundary``, ``charset``) and
``Content-Transfer-Encoding``, with a regex on the unfolded header block instead of the stdlib
``email`` parser: that parser was 80 % of a SEARCH TEXT over a folder with encoded parts. A
``boundary`` or ``charset`` in RFC 2231 form (``charset*=``) is read with the stdlib parser
instead.

Lenient like a mail reader: invalid base64 is decoded from its alphabet's characters, an
unknown transfer encoding or charset leaves the bytes as they are (read as UTF-8). Bounded like
the structure parser: :data:`~mailsvc.mailbox.mime.MAX_DEPTH` levels,
:data:`~mailsvc.mailbox.mime.MAX_PARTS` parts.
"""

from __future__ import annotations

import binascii
import re
from email.parser import BytesHeaderParser
from email.policy import compat32

from mailsvc.imap.fetch import BadEncoding, UnknownCte, decode_transfer, raw_params
from mailsvc.mailbox.mime import MAX_DEPTH, MAX_PARTS, header_end, split_multipart

_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_CONTENT_TYPE = re.compile(rb"(?im)^content-type[ \t]*:[ \t]*([^\r\n]*)")
_CTE = re.compile(rb"(?im)^content-transfer-encoding[ \t]*:[ \t]*([^\r\n]*)")
_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # RFC 2045's token
_TYPE = re.compile(rb"[ \t]*(" + _TOKEN + rb")[ \t]*/[ \t]*(" + _TOKEN + rb")")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")
_EXTENDED = re.compile(rb"(?i);[ \t]*(?:boundary|charset)\*")
_PARSER = BytesHeaderParser(policy=compat32)


class _Header:
    """The fields of one part's header block that the text walk needs."""

    def __init__(self, block: bytes, default: str) -> None:
        unfolded = _FOLD.sub(b"", block)
        self.maintype, self.subtype = default.split("/", 1)
        self.params: dict[str, str] = {}
        found = _CONTENT_TYPE.search(unfolded)
        if found is not None:
            value = found.group(1)
            kind = _TYPE.match(value)
            if kind is not None:
                self.maintype = kind.group(1).decode("ascii").lower()
                self.subtype = kind.group(2).decode("ascii").lower()
            if _EXTENDED.search(value):  # RFC 2231 boundary/charset: the stdlib reads them
                self.params = _stdlib_params(block)
            else:
                for name, text in raw_params(value.decode("latin-1")):
                    self.params.setdefault(name, text)
        cte = _CTE.search(unfolded)
        self.cte = cte.group(1).strip().decode("latin-1").lower() if cte is not None else ""


def _stdlib_params(block: bytes) -> dict[str, str]:
    headers = _PARSER.parsebytes(block)
    params: dict[str, str] = {}
    for name in ("boundary", "charset"):
        value = headers.get_param(name, header="content-type")
        if isinstance(value, tuple):  # (charset, language, text) of an RFC 2231 value
            value = value[2]
        if isinstance(value, str):
            params[name] = value
    return params


def body_text(raw: bytes) -> str:
    """The lower-cased decoded text of every text part of ``raw``, joined by line breaks."""
    texts: list[str] = []
    _walk(raw, 0, len(raw), "text/plain", 0, [0], texts)
    return "\n".join(texts).lower()


def _walk(
    raw: bytes, start: int, end: int, default: str, depth: int, parts: list[int], out: list[str]
) -> None:
    parts[0] += 1
    body_start = header_end(raw, start, end)
    header = _Header(raw[start:body_start], default)
    if depth >= MAX_DEPTH or parts[0] >= MAX_PARTS:
        return
    if header.maintype == "multipart":
        boundary = header.params.get("boundary", "")
        if boundary:
            child_default = "message/rfc822" if header.subtype == "digest" else "text/plain"
            spans, _closed = split_multipart(
                raw, body_start, end, boundary.encode("latin-1", "replace")
            )
            for child_start, child_end, _break in spans:
                _walk(raw, child_start, child_end, child_default, depth + 1, parts, out)
                if parts[0] >= MAX_PARTS:
                    break
        return
    if header.maintype == "message" and header.subtype == "rfc822":
        _walk(raw, body_start, end, "text/plain", depth + 1, parts, out)
        return
    if header.maintype != "text":
        return
    body = raw[body_start:end]
    try:
        data = decode_transfer(body, header.cte)
    except BadEncoding:
        data = _lenient_base64(body) if header.cte == "base64" else body
    except UnknownCte:
        data = body
    charset = header.params.get("charset", "").strip() or "us-ascii"
    try:
        out.append(data.decode(charset, "replace"))
    except LookupError:
        out.append(data.decode("utf-8", "replace"))


def _lenient_base64(body: bytes) -> bytes:
    """What a mail reader makes of broken base64: the alphabet's characters, padded."""
    usable = _NOT_BASE64.sub(b"", body)
    if len(usable) % 4 == 1:
        usable = usable[:-1]  # a lone trailing character carries no whole byte
    return binascii.a2b_base64(usable + b"=" * (-len(usable) % 4))
