"""Audit events: one per authentication attempt and one per provisioning change.

An ``AuditSink`` takes events without blocking the caller (it may buffer); the default sink writes
one JSON object per line to the ``idsvc.audit`` logger. Events never carry passwords, hashes or
token secrets: ``before``/``after`` snapshots pass through :func:`redact` first.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

AUDIT_LOGGER = "idsvc.audit"
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)
SECRET_KEYS = frozenset({"password", "password_hash", "secret", "token", "token_hash", "resp"})


def redact(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` without secret-bearing keys (at any depth)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECRET_KEYS:
            continue
        out[key] = redact(value) if isinstance(value, Mapping) else value
    return out


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """``action`` is dotted: ``auth``, ``domain.create``, ``account.password`` … ``outcome`` is
    ``ok`` or an error/outcome name. ``actor`` is who acted (a token id, ``cli:<uid>``, or for
    auth the canonical user when known)."""

    action: str
    outcome: str
    actor: str = ""
    target: str = ""
    remote: str | None = None
    service: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_json(self) -> str:
        # built by hand: dataclasses.asdict deep-copies and is several times slower, and this
        # runs once per authentication
        data = {
            "action": self.action,
            "outcome": self.outcome,
            "actor": self.actor,
            "target": self.target,
            "remote": self.remote,
            "service": self.service,
            "detail": redact(self.detail),
            "time": self.time.isoformat(timespec="milliseconds"),
        }
        return _ENCODER.encode(data)


@runtime_checkable
class AuditSink(Protocol):
    def emit(self, event: AuditEvent) -> None:
        """Record ``event``; must not block on I/O for long and must not raise."""
        ...


class LogAuditSink:
    """Writes each event as one JSON line on the ``idsvc.audit`` logger (INFO)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger(AUDIT_LOGGER)

    @property
    def enabled(self) -> bool:
        """False while the logger drops INFO: a caller may then skip building events at all."""
        return self._log.isEnabledFor(logging.INFO)

    def emit(self, event: AuditEvent) -> None:
        if self._log.isEnabledFor(logging.INFO):
            self._log.info("%s", event.to_json())


class FanoutAuditSink:
    """Sends every event to several sinks; one failing sink does not stop the others."""

    def __init__(self, *sinks: AuditSink) -> None:
        self._sinks = sinks

    def emit(self, event: AuditEvent) -> None:
        for sink in self._sinks:
            try:
                sink.emit(event)
            except Exception:  # an audit sink must never break the request path
                logging.getLogger(__name__).exception("audit sink %r failed", sink)
