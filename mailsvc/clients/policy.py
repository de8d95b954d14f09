"""Postfix SMTP access policy delegation, client side (protocols.md §6).

The codec (:func:`encode_request`, :func:`parse_action`, :func:`decide`) is pure;
:class:`PolicyClient` sends one request at a time per connection over a bounded pool.

A request is ``name=value`` lines ended by an empty line; the reply one ``action=…`` line and an
empty line. :func:`decide` maps the action to what the SMTP front end does: ``None`` (go on:
``OK``/``DUNNO``/``PERMIT``/``WARN``/``INFO``/``PREPEND``), or an SMTP reply (``REJECT`` →
``554 5.7.1``, ``DEFER`` → ``450 4.7.1``, ``4NN``/``5NN text`` as given). An action this front end
cannot carry out (``HOLD``, ``FILTER``, ``REDIRECT``, a restriction name …) gives ``451 4.3.5``,
Postfix's ``smtpd_policy_service_default_action``, as does no reply at all (:class:`Unavailable`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping

from mailsvc.clients.errors import Unavailable
from mailsvc.clients.pool import Conn, Pool
from mailsvc.clients.target import Target

MAX_REPLY_LINE = 4096
DEFAULT_ACTION = "451 4.3.5 Server configuration problem"
_CODE = re.compile(r"^([45][0-9][0-9])(?:\s+(.*))?$", re.DOTALL)
_ENHANCED = re.compile(r"^[245]\.[0-9]{1,3}\.[0-9]{1,3}\s")
_PASS = {"OK", "DUNNO", "PERMIT", "WARN", "INFO", "PREPEND"}


def encode_request(attributes: Mapping[str, str]) -> bytes:
    """``name=value`` lines plus the empty line; values lose CR/LF (never another attribute)."""
    lines = ["request=smtpd_access_policy"]
    for name, value in attributes.items():
        if not re.fullmatch(r"[a-z_]+", name):
            raise ValueError(f"bad attribute name {name!r}")
        clean = "".join(c for c in value if c not in "\r\n\0")
        lines.append(f"{name}={clean}")
    return ("\n".join(lines) + "\n\n").encode("utf-8", "surrogateescape")


def parse_action(lines: list[str]) -> str:
    """The action from the reply lines (without the final empty line)."""
    for line in lines:
        name, sep, value = line.partition("=")
        if sep and name == "action":
            return value.strip()
    raise Unavailable("policy reply without action=")


def _text(text: str | None, default: str) -> str:
    clean = "".join(c for c in (text or "") if c.isprintable())[:400].strip()
    return clean or default


def decide(action: str) -> str | None:
    """``None`` to go on, or the SMTP reply line for ``action``."""
    word, _, rest = action.partition(" ")
    upper = word.upper()
    if upper in _PASS:
        return None
    if upper == "REJECT":
        return f"554 5.7.1 {_text(rest, 'Access denied')}"
    if upper in ("DEFER", "DEFER_IF_PERMIT"):
        return f"450 4.7.1 {_text(rest, 'Try again later')}"
    if upper == "DEFER_IF_REJECT":
        return None
    found = _CODE.match(action)
    if found:
        code, text = found.group(1), _text(found.group(2), "Refused")
        if not _ENHANCED.match(text + " "):
            text = f"{code[0]}.7.1 {text}"
        return f"{code} {text}"
    return DEFAULT_ACTION


async def _read_reply(conn: Conn) -> list[str]:
    lines: list[str] = []
    while True:
        raw = await conn.reader.readuntil(b"\n")
        if len(raw) > MAX_REPLY_LINE or len(lines) > 16:
            raise Unavailable("policy reply too long")
        line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
        if not line:
            return lines
        lines.append(line)


class PolicyClient:
    """Policy checks over persistent connections to one policy server."""

    def __init__(self, target: str | Target, *, size: int = 8, timeout: float = 20.0) -> None:
        self.target = target if isinstance(target, Target) else Target.parse(target)
        self._pool = Pool(self.target, size=size, timeout=timeout, max_idle=300.0, max_ttl=1000.0)

    async def check(self, attributes: Mapping[str, str]) -> str:
        """The raw action for ``attributes``; :class:`Unavailable` when there is none."""
        request = encode_request(attributes)

        async def step(conn: Conn) -> str:
            conn.writer.write(request)
            await conn.writer.drain()
            try:
                return parse_action(await _read_reply(conn))
            except asyncio.LimitOverrunError as exc:
                raise Unavailable("policy reply line too long") from exc

        return await self._pool.run(step)

    async def close(self) -> None:
        await self._pool.close()
