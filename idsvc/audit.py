"""Audit events: one per authentication attempt and one per provisioning change.

An ``AuditSink`` takes events without blocking the caller (it may buffer); the default sink writes
one JSON object per line to the ``idsvc.audit`` logger. Events never carry passwords, hashes or
token secrets: ``before``/``after`` snapshots pass through :func:`redact` first.

Off the request path: ``idsvc serve`` (``idsvc.runtime.build_runtime``) puts a
:class:`QueuedAuditSink` in front of its sinks. ``emit`` appends to a bounded in-memory queue and
returns; one writer thread drains the queue in batches and hands each event to the real sinks
(log line, persistent trail), so JSON encoding, log formatting and the write syscalls never run
inside an authentication. When the queue is full the event is dropped and counted
(``dropped``, exported as ``idsvc_audit_dropped``, and logged at most once a minute): an auth is
never blocked by a slow disk or a stuck log reader. ``close`` flushes what is queued.

Which authentications make a log line (``logging.auth_log``): ``failures`` (the default, as
Dovecot does without ``auth_verbose``), ``all`` or ``none``. Provisioning events are always
logged, and the persistent trail (the API's state store) always receives every event.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, runtime_checkable

AUDIT_LOGGER = "idsvc.audit"
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)
SECRET_KEYS = frozenset({"password", "password_hash", "secret", "token", "token_hash", "resp"})
AuthLog = Literal["all", "failures", "none"]
AUTH_ACTION = "auth"
OK_OUTCOME = "ok"
DEFAULT_QUEUE = 10_000  # events waiting for the writer thread before new ones are dropped


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


def wants_auth(sink: AuditSink, outcome: str) -> bool:
    """Whether ``sink`` records an authentication with ``outcome`` (``Outcome.value``): a sink
    without a ``wants_auth`` method (the persistent trail) records every one."""
    method = getattr(sink, "wants_auth", None)
    return True if method is None else bool(method(outcome))


class LogAuditSink:
    """Writes each event as one JSON line on the ``idsvc.audit`` logger (INFO).

    ``auth`` picks which authentication events make a line: ``all``, ``failures`` (every
    outcome but ``ok``) or ``none``; other events (provisioning, tokens) always do.
    """

    def __init__(self, logger: logging.Logger | None = None, *, auth: AuthLog = "all") -> None:
        self._log = logger or logging.getLogger(AUDIT_LOGGER)
        self._auth = auth

    @property
    def enabled(self) -> bool:
        """False when no authentication event would make a line (logger above INFO, or
        ``auth="none"``): a caller may then skip building auth events at all."""
        return self._auth != "none" and self._log.isEnabledFor(logging.INFO)

    def wants(self, event: AuditEvent) -> bool:
        if event.action == AUTH_ACTION:
            return self.wants_auth(event.outcome)
        return self._log.isEnabledFor(logging.INFO)

    def wants_auth(self, outcome: str) -> bool:
        """Whether an authentication with ``outcome`` makes a line (lets a caller skip
        building the event of a success nobody records)."""
        if self._auth == "none" or (self._auth == "failures" and outcome == OK_OUTCOME):
            return False
        return self._log.isEnabledFor(logging.INFO)

    def emit(self, event: AuditEvent) -> None:
        if self.wants(event):
            self._log.info("%s", event.to_json())


class FanoutAuditSink:
    """Sends every event to several sinks; one failing sink does not stop the others."""

    def __init__(self, *sinks: AuditSink) -> None:
        self._sinks = sinks

    def wants_auth(self, outcome: str) -> bool:
        return any(wants_auth(sink, outcome) for sink in self._sinks)

    def emit(self, event: AuditEvent) -> None:
        for sink in self._sinks:
            try:
                sink.emit(event)
            except Exception:  # an audit sink must never break the request path
                logging.getLogger(__name__).exception("audit sink %r failed", sink)


class QueuedAuditSink:
    """A bounded queue in front of ``sink``, drained in batches by one writer thread.

    ``emit`` never blocks and never raises: it appends to the queue (a ``deque`` append) and wakes
    the writer once per batch; when ``max_queue`` events are already waiting, the event is dropped
    and counted in ``dropped``. The writer lingers ``linger`` seconds after a wake-up so a burst
    of authentications becomes one batch, hands each event to ``sink`` (whose failures are logged,
    never propagated), and logs the drop count at most every ``report_every`` seconds.
    :meth:`close` stops accepting, delivers what is queued (bounded by ``timeout``) and joins the
    writer; events still queued after the timeout are counted as dropped.
    """

    def __init__(
        self,
        sink: AuditSink,
        *,
        max_queue: int = DEFAULT_QUEUE,
        linger: float = 0.01,
        report_every: float = 60.0,
        name: str = "idsvc-audit",
        publish: Callable[[int], None] | None = None,
    ) -> None:
        if max_queue < 1:
            raise ValueError("audit queue size must be at least 1")
        self.sink = sink
        self._max = max_queue
        self._linger = linger
        self._report_every = report_every
        self._queue: deque[AuditEvent] = deque()
        self._wake = threading.Event()
        self._waiting = False  # a wake-up is pending: emit need not set the event again
        self._closed = False
        self._busy = False
        self._idle = threading.Condition()
        self.dropped = 0
        self.written = 0
        self._reported = 0
        self._publish = publish  # gets the drop count from the writer (at most once a second)
        self._published = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def enabled(self) -> bool:
        return bool(getattr(self.sink, "enabled", True))

    @property
    def pending(self) -> int:
        return len(self._queue)

    def wants_auth(self, outcome: str) -> bool:
        return wants_auth(self.sink, outcome)

    @property
    def capacity(self) -> int:
        return self._max

    def emit(self, event: AuditEvent) -> None:
        if self._closed or len(self._queue) >= self._max:
            self.dropped += 1
            return
        self._queue.append(event)
        if not self._waiting:
            self._waiting = True
            self._wake.set()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued event was handed to the sink; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._queue or self._busy:
                self._wake.set()
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._idle.wait(min(left, 0.05))
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (up to ``timeout`` seconds), then stop the writer."""
        if self._closed:
            return
        self.flush(timeout)
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=1.0)
        lost = len(self._queue)
        if lost:
            self.dropped += lost
            self._queue.clear()
        self._report(final=True)
        closer = getattr(self.sink, "close", None)
        if callable(closer):
            try:
                closer()
            except Exception:
                logging.getLogger(__name__).exception("audit sink %r failed to close", self.sink)

    def _run(self) -> None:
        last_report = time.monotonic()
        while not self._closed:
            woken = self._wake.wait(timeout=1.0)
            if woken and self._linger > 0 and not self._closed:
                time.sleep(self._linger)  # let a burst gather into one batch
            with self._idle:
                self._busy = True
            self._wake.clear()
            self._waiting = False  # from here on, a new event sets the event again
            try:
                self._deliver()
            finally:
                with self._idle:
                    self._busy = False
                    self._idle.notify_all()
            if self._publish is not None and self.dropped != self._published:
                self._published = self.dropped
                self._publish(self._published)
            now = time.monotonic()
            if now - last_report >= self._report_every:
                last_report = now
                self._report()

    def _deliver(self) -> None:
        queue, sink = self._queue, self.sink
        while queue:
            try:
                event = queue.popleft()
            except IndexError:
                return
            try:
                sink.emit(event)
            except Exception:  # an audit sink must never stop the writer
                logging.getLogger(__name__).exception("audit sink %r failed", sink)
            self.written += 1

    def _report(self, *, final: bool = False) -> None:
        dropped = self.dropped
        if dropped > self._reported:
            logging.getLogger(__name__).warning(
                "audit queue full: %d event(s) dropped (%d in total%s)",
                dropped - self._reported,
                dropped,
                ", at shutdown" if final else "",
            )
            self._reported = dropped
