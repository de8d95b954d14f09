"""FETCH data from the raw message bytes (pure): ENVELOPE, BODY/BODYSTRUCTURE and
``BODY[section]<partial>`` contents, measured on the bytes as stored (see
:mod:`mailsvc.mailbox.mime`). Nothing here re-encodes a message: sections are slices.

Header values in ENVELOPE are unfolded (the CRLF of a folded line removed, the whitespace kept)
and otherwise given as sent (encoded words are not decoded, as RFC 3501 and Dovecot do).
Addresses follow RFC 5322 with groups (``(NIL NIL "group" NIL)`` … ``(NIL NIL NIL NIL)``).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from mailsvc.imap.protocol import nstring, quoted_or_literal
from mailsvc.mailbox.mime import Part, section

_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.M)
_PARAM = re.compile(r'\s*([^\s=;]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))\s*(?:;|$)')


# --- headers --------------------------------------------------------------------------------


def header_lines(header: bytes) -> list[tuple[bytes, bytes]]:
    """(field name, whole field bytes including continuation lines and line ends)."""
    fields: list[tuple[bytes, bytes]] = []
    pos = 0
    while pos < len(header):
        end = header.find(b"\n", pos)
        end = len(header) if end < 0 else end + 1
        line = header[pos:end]
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            name, text = fields[-1]
            fields[-1] = (name, text + line)
        else:
            found = _FIELD.match(line)
            fields.append((found.group(1).lower() if found else b"", line))
        pos = end
    return fields


def header_value(header: bytes, name: str) -> bytes | None:
    """The first ``name:`` field's value, unfolded, without leading/trailing whitespace."""
    wanted = name.lower().encode()
    for field_name, text in header_lines(header):
        if field_name == wanted:
            value = text.split(b":", 1)[1]
            value = re.sub(rb"\r?\n(?=[ \t])", b"", value)
            return value.strip(b" \t\r\n")
    return None


def header_fields(header: bytes, names: list[str], *, exclude: bool) -> bytes:
    """``HEADER.FIELDS`` / ``HEADER.FIELDS.NOT``: the matching fields as stored, then CRLF."""
    wanted = {n.lower().encode() for n in names}
    out = [text for name, text in header_lines(header) if (name in wanted) != exclude]
    ended = header.endswith((b"\n\r\n", b"\n\n")) or header in (b"\r\n", b"\n")
    # Dovecot ends HEADER.FIELDS with the empty line always, HEADER.FIELDS.NOT only when the
    # header had one
    return b"".join(out) + (b"\r\n" if ended or not exclude else b"")


# --- addresses ---------------------------------------------------------------------------

_TOKEN = re.compile(rb'\s+|"(?:[^"\\]|\\.)*"?|\((?:[^()\\]|\\.)*\)?|[<>,:;@]|[^\s"(),:;<>@]+', re.S)


@dataclass
class Address:
    name: bytes | None
    mailbox: bytes | None
    host: bytes | None


def _unquote(token: bytes) -> bytes:
    if token.startswith(b'"'):
        token = token[1:-1] if token.endswith(b'"') and len(token) > 1 else token[1:]
        return re.sub(rb"\\(.)", rb"\1", token)
    return token


def parse_addresses(value: bytes) -> list[Address | str | None]:
    """Address list; a group is ``"name"`` (str) before its members and ``None`` after."""
    tokens = [t for t in _TOKEN.findall(value) if not t.isspace() and not t.startswith(b"(")]
    out: list[Address | str | None] = []
    phrase: list[bytes] = []
    in_group = False
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == b":" and not in_group and phrase:
            out.append(b" ".join(_unquote(t) for t in phrase).decode("utf-8", "replace"))
            phrase, in_group = [], True
        elif tok == b"<":
            j = tokens.index(b">", i) if b">" in tokens[i:] else len(tokens)
            inner = tokens[i + 1 : j]
            if b":" in inner:  # source route: drop it
                inner = inner[inner.index(b":") + 1 :]
            local, host = _split_addr(inner)
            name = b" ".join(_unquote(t) for t in phrase) if phrase else None
            out.append(Address(name, local, host))
            phrase = []
            i = j
        elif tok in (b",", b";"):
            if phrase:
                local, host = _split_addr(phrase)
                out.append(Address(None, local, host))
                phrase = []
            if tok == b";" and in_group:
                out.append(None)
                in_group = False
        else:
            phrase.append(tok)
        i += 1
    if phrase:
        local, host = _split_addr(phrase)
        out.append(Address(None, local, host))
    if in_group:
        out.append(None)
    return out


def _split_addr(tokens: list[bytes]) -> tuple[bytes | None, bytes | None]:
    if b"@" in tokens:
        at = len(tokens) - 1 - tokens[::-1].index(b"@")
        local = b"".join(_unquote(t) if t.startswith(b'"') else t for t in tokens[:at])
        return local or None, b"".join(tokens[at + 1 :]) or None
    local = b"".join(_unquote(t) for t in tokens)
    return (local or None), None


def _address_list(value: bytes | None) -> bytes:
    if value is None:
        return b"NIL"
    items = parse_addresses(value)
    if not items:
        return b"NIL"
    out: list[bytes] = []
    for item in items:
        if item is None:
            out.append(b"(NIL NIL NIL NIL)")
        elif isinstance(item, str):
            out.append(b"(NIL NIL " + nstring(item) + b" NIL)")
        else:
            out.append(b"(" + nstring(item.name) + b" NIL " + nstring(item.mailbox) + b" "
                       + nstring(item.host) + b")")  # fmt: skip
    return b"(" + b"".join(out) + b")"


def envelope(raw: bytes, part: Part) -> bytes:
    header = part.header_bytes(raw)

    def get(name: str) -> bytes | None:
        return header_value(header, name)

    sender = get("sender") or get("from")
    reply_to = get("reply-to") or get("from")
    fields = [
        nstring(get("date")),
        nstring(get("subject")),
        _address_list(get("from")),
        _address_list(sender),
        _address_list(reply_to),
        _address_list(get("to")),
        _address_list(get("cc")),
        _address_list(get("bcc")),
        nstring(get("in-reply-to")),
        nstring(get("message-id")),
    ]
    return b"(" + b" ".join(fields) + b")"


# --- body structure -----------------------------------------------------------------------


def raw_params(value: str) -> list[tuple[str, str]]:
    """Parameters after the first ``;`` as written (RFC 2231 ``name*`` kept, quotes removed)."""
    out: list[tuple[str, str]] = []
    for found in _PARAM.finditer(value.split(";", 1)[1] if ";" in value else ""):
        name, quoted, plain = found.groups()
        text = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else plain
        out.append((name.lower(), text))
    return out


def _params(part: Part) -> bytes:
    value = part.headers.get("content-type")
    params = raw_params(str(value)) if value is not None else []
    if part.maintype == "text" and not any(k == "charset" for k, _ in params):
        params.append(("charset", "us-ascii"))
    if not params:
        return b"NIL"
    return b"(" + b" ".join(nstring(k) + b" " + nstring(v) for k, v in params) + b")"


def _disposition(part: Part) -> bytes:
    value = part.headers.get("content-disposition")
    if value is None:
        return b"NIL"
    main = str(value).split(";", 1)[0].strip()
    items = raw_params(str(value))
    plist = b"NIL" if not items else b"(" + b" ".join(
        nstring(k) + b" " + nstring(v) for k, v in items) + b")"  # fmt: skip
    return b"(" + nstring(main) + b" " + plist + b")"


def _hdr(part: Part, name: str) -> bytes:
    value = part.headers.get(name)
    return nstring(str(value).strip()) if value is not None else b"NIL"


def _language(part: Part) -> bytes:
    value = part.headers.get("content-language")
    if value is None:
        return b"NIL"
    langs = [x.strip() for x in str(value).split(",") if x.strip()]
    if len(langs) == 1:
        return nstring(langs[0])
    return b"(" + b" ".join(nstring(x) for x in langs) + b")"


def bodystructure(raw: bytes, part: Part, *, extended: bool) -> bytes:
    if part.is_multipart:
        children = b"".join(bodystructure(raw, c, extended=extended) for c in part.children)
        if not children:  # a multipart without parts: described as an empty text part
            children = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)'
        out = b"(" + children + b" " + nstring(part.subtype)
        if extended:
            out += b" " + _params(part) + b" " + _disposition(part) + b" " + _language(part)
            out += b" " + _hdr(part, "content-location")
        return out + b")"
    fields = [
        nstring(part.maintype),
        nstring(part.subtype),
        _params(part),
        _hdr(part, "content-id"),
        _hdr(part, "content-description"),
        nstring(str(part.headers.get("content-transfer-encoding", "7bit")).strip()),
        str(part.end - part.body_start).encode(),
    ]  # fmt: skip
    if part.message is not None:
        inner = part.message
        fields += [
            envelope(raw, inner),
            bodystructure(raw, inner, extended=extended),
            str(part.body_lines(raw)).encode(),
        ]
    elif part.maintype == "text":
        fields.append(str(part.body_lines(raw)).encode())
    if extended:
        fields += [_hdr(part, "content-md5"), _disposition(part), _language(part),
                   _hdr(part, "content-location")]  # fmt: skip
    return b"(" + b" ".join(fields) + b")"


# --- sections --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    path: tuple[int, ...]
    text: str  # "", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"
    fields: tuple[str, ...] = ()


class BadSection(ValueError):
    pass


def parse_section(spec: str) -> Section:
    """The part between ``[`` and ``]``."""
    spec = spec.strip()
    fields: tuple[str, ...] = ()
    paren = spec.find("(")
    if paren >= 0:
        if not spec.endswith(")"):
            raise BadSection(spec)
        inner = spec[paren + 1 : -1].split()
        fields = tuple(f.strip('"') for f in inner)
        if not fields:
            raise BadSection(spec)
        spec = spec[:paren].strip()
    path: list[int] = []
    rest = spec
    while rest:
        head, dot, tail = rest.partition(".")
        if head.isdigit():
            if int(head) == 0:
                raise BadSection(spec)
            path.append(int(head))
            rest = tail
            if not dot:
                break
            continue
        break
    text = rest.upper()
    if text not in ("", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"):
        raise BadSection(spec)
    if (text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT")) != bool(fields):
        raise BadSection(spec)
    if text == "MIME" and not path:
        raise BadSection(spec)
    return Section(tuple(path), text, fields)


def section_bytes(raw: bytes, root: Part, sec: Section) -> bytes | None:
    """The bytes of ``sec``; ``None`` when the part does not exist (answered as empty)."""
    if not sec.path:
        target: Part | None = root
    else:
        target = section(root, sec.path)
    if target is None:
        return None
    if sec.text == "":
        if not sec.path:
            return raw
        return target.body_bytes(raw)
    if sec.text == "MIME":
        return target.header_bytes(raw)
    if sec.path:
        if target.message is None:
            return None
        target = target.message
    if sec.text == "HEADER":
        return target.header_bytes(raw)
    if sec.text == "TEXT":
        return target.body_bytes(raw)
    return header_fields(target.header_bytes(raw), list(sec.fields),
                         exclude=sec.text == "HEADER.FIELDS.NOT")  # fmt: skip


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


# --- BINARY (RFC 3516) ------------------------------------------------------------------------

_IDENTITY = {"", "7bit", "8bit", "binary"}
_CTE_FIELD = re.compile(rb"(?im)^(content-transfer-encoding[ \t]*:)[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*")
_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_LINE = re.compile(rb"([^\n]*?)(\r?\n|\Z)")
_BINARY_SPEC = re.compile(r"(?:[1-9][0-9]{0,8}(?:\.[1-9][0-9]{0,8})*)?")


class UnknownCte(Exception):
    """A part's Content-Transfer-Encoding this server cannot decode: ``NO [UNKNOWN-CTE]``."""


class BadEncoding(Exception):
    """A part's content is not valid in its Content-Transfer-Encoding: ``NO [PARSE]``."""


def parse_binary_section(spec: str) -> tuple[int, ...]:
    """``section-binary`` (RFC 3516): part numbers only; :class:`BadSection` otherwise."""
    if not _BINARY_SPEC.fullmatch(spec):
        raise BadSection(spec)
    return tuple(int(n) for n in spec.split(".")) if spec else ()


def decode_qp(data: bytes) -> bytes:
    """Quoted-printable (RFC 2045 §6.7): trailing blanks dropped, ``=`` line ends joined,
    ``=XX`` decoded; any other ``=`` is kept as it is."""
    out = bytearray()
    for found in _LINE.finditer(data):
        text, end = found.group(1).rstrip(b" \t"), found.group(2)
        if not text and not end:
            break
        if text.endswith(b"="):
            out += _QP_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), text[:-1])
            continue
        out += _QP_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), text) + end
    return bytes(out)


def decode_transfer(data: bytes, cte: str) -> bytes:
    """``data`` with its Content-Transfer-Encoding ``cte`` (lower case) undone."""
    if cte in _IDENTITY:
        return data
    if cte == "base64":
        compact = re.sub(rb"[ \t\r\n]+", b"", data)
        if len(compact) % 4 == 1:
            raise BadEncoding("truncated base64")
        compact += b"=" * (-len(compact) % 4)
        try:
            return base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError):
            raise BadEncoding("invalid base64") from None
    if cte == "quoted-printable":
        return decode_qp(data)
    raise UnknownCte(cte)


def _cte(part: Part) -> str:
    return str(part.headers.get("content-transfer-encoding", "")).strip().lower()


def _binary_whole(raw: bytes, part: Part) -> tuple[bytes, bool]:
    """``part`` (header and body) with every leaf decoded and its Content-Transfer-Encoding
    field saying ``binary``; True when anything was decoded."""
    if part.is_multipart and part.children:
        children = part.children
        out = [raw[part.start : children[0].start]]
        decoded = False
        for i, child in enumerate(children):
            if i:
                out.append(raw[children[i - 1].end : child.start])
            data, changed = _binary_whole(raw, child)
            out.append(data)
            decoded = decoded or changed
        out.append(raw[children[-1].end : part.end])
        return b"".join(out), decoded
    if part.message is not None:
        inner, decoded = _binary_whole(raw, part.message)
        return raw[part.start : part.message.start] + inner + raw[part.message.end : part.end], \
            decoded  # fmt: skip
    cte = _cte(part)
    if cte in _IDENTITY:
        return raw[part.start : part.end], False
    body = decode_transfer(part.body_bytes(raw), cte)
    header = _CTE_FIELD.sub(rb"\1 binary", part.header_bytes(raw), count=1)
    return header + body, True


def binary_section(raw: bytes, root: Part, path: tuple[int, ...]) -> tuple[bytes, bool]:
    """``BINARY[path]``: the part's content with its transfer encoding undone (a leaf: its
    decoded body; an encapsulated message or a multipart: as stored, each leaf in it decoded);
    True when anything was decoded (the answer is then a ``literal8``). A missing part is empty.
    :class:`UnknownCte`, :class:`BadEncoding`."""
    if not path:
        return _binary_whole(raw, root)
    target = section(root, path)
    if target is None:
        return b"", False
    if target.message is not None:
        return _binary_whole(raw, target.message)
    if target.is_multipart and target.children:
        whole, decoded = _binary_whole(raw, target)
        return whole[target.body_start - target.start :], decoded
    cte = _cte(target)
    return decode_transfer(target.body_bytes(raw), cte), cte not in _IDENTITY


def literal8(data: bytes) -> bytes:
    return b"~{%d}\r\n" % len(data) + data


__all__ = ["BadEncoding", "BadSection", "Section", "UnknownCte", "binary_section",
           "bodystructure", "envelope", "literal", "literal8", "parse_binary_section",
           "parse_section", "quoted_or_literal", "section_bytes"]  # fmt: skip
