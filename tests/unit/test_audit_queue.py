"""The audit queue: bounded, never blocks the caller, counts drops, delivers in order, flushes on
close; the log sink writes failures only by default and every event with ``auth_log = all``."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from idsvc.audit import AuditEvent, LogAuditSink, QueuedAuditSink
from idsvc.config import Settings
from idsvc.runtime import log_sink


class SlowSink:
    """Keeps events; each emit waits until ``gate`` opens (a stuck disk)."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self.gate = threading.Event()
        self.threads: set[str] = set()

    def emit(self, event: AuditEvent) -> None:
        self.threads.add(threading.current_thread().name)
        self.gate.wait(10)
        self.events.append(event)


class FailingSink:
    def __init__(self) -> None:
        self.calls = 0

    def emit(self, event: AuditEvent) -> None:
        self.calls += 1
        raise RuntimeError("disk on fire")


def auth_event(outcome: str = "ok", n: int = 0) -> AuditEvent:
    return AuditEvent("auth", outcome, target=f"u{n}@example.org", detail={"n": n})


def test_events_arrive_in_order_on_the_writer_thread_and_close_flushes() -> None:
    sink = SlowSink()
    sink.gate.set()
    queued = QueuedAuditSink(sink, max_queue=1000, name="audit-test")
    for n in range(500):
        queued.emit(auth_event(n=n))
    queued.close()
    assert [e.detail["n"] for e in sink.events] == list(range(500))
    assert sink.threads == {"audit-test"}
    assert queued.dropped == 0
    assert queued.written == 500


def test_a_full_queue_drops_and_counts_without_blocking(caplog: pytest.LogCaptureFixture) -> None:
    sink = SlowSink()  # gate closed: the writer is stuck on the first event
    queued = QueuedAuditSink(sink, max_queue=10, linger=0)
    queued.emit(auth_event(n=0))
    deadline = time.monotonic() + 5
    while queued.pending and time.monotonic() < deadline:  # the writer took event 0
        time.sleep(0.001)
    started = time.perf_counter()
    for n in range(1, 1001):
        queued.emit(auth_event(n=n))
    spent = time.perf_counter() - started
    assert queued.pending == 10
    assert queued.dropped == 990
    assert spent < 0.5  # 1000 emits against a stuck sink: appends and counts, never a wait
    sink.gate.set()
    with caplog.at_level(logging.WARNING, logger="idsvc.audit"):
        queued.close()
    assert [e.detail["n"] for e in sink.events] == list(range(11))
    assert "990 event(s) dropped" in caplog.text


def test_emit_after_close_is_counted_as_dropped() -> None:
    sink = SlowSink()
    sink.gate.set()
    queued = QueuedAuditSink(sink)
    queued.close()
    queued.emit(auth_event())
    assert queued.dropped == 1
    assert sink.events == []


def test_close_gives_up_on_a_stuck_sink_and_counts_what_is_left() -> None:
    sink = SlowSink()
    queued = QueuedAuditSink(sink, max_queue=100, linger=0)
    for n in range(5):
        queued.emit(auth_event(n=n))
    started = time.monotonic()
    queued.close(timeout=0.2)
    assert time.monotonic() - started < 3
    assert queued.dropped >= 4  # the writer holds at most one event when close gives up
    sink.gate.set()


def test_a_failing_sink_does_not_stop_the_writer(caplog: pytest.LogCaptureFixture) -> None:
    sink = FailingSink()
    queued = QueuedAuditSink(sink)
    with caplog.at_level(logging.ERROR):
        for n in range(3):
            queued.emit(auth_event(n=n))
        assert queued.flush()
    queued.close()
    assert sink.calls == 3
    assert "disk on fire" in caplog.text


def test_flush_waits_for_delivery() -> None:
    sink = SlowSink()
    sink.gate.set()
    queued = QueuedAuditSink(sink, linger=0.05)
    queued.emit(auth_event())
    assert queued.flush(timeout=5)
    assert len(sink.events) == 1
    queued.close()


def test_queue_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        QueuedAuditSink(SlowSink(), max_queue=0)


@pytest.mark.parametrize(
    ("auth_log", "ok_logged", "failure_logged"),
    [("all", True, True), ("failures", False, True), ("none", False, False)],
)
def test_log_sink_auth_lines(
    caplog: pytest.LogCaptureFixture, auth_log: str, ok_logged: bool, failure_logged: bool
) -> None:
    logger = logging.getLogger("idsvc.audit.test-queue")
    sink = LogAuditSink(logger, auth=auth_log)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger=logger.name):
        sink.emit(auth_event("ok", 1))
        sink.emit(auth_event("mismatch", 2))
        sink.emit(AuditEvent("account.create", "ok", target="bob@example.org"))
        assert sink.enabled is (auth_log != "none")
    assert ('"u1@example.org"' in caplog.text) is ok_logged
    assert ('"u2@example.org"' in caplog.text) is failure_logged
    assert '"account.create"' in caplog.text  # provisioning is always logged


def test_default_configuration_logs_failures_only(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings()
    assert settings.logging.auth_log == "failures"
    sink = log_sink(settings)
    caplog.set_level(logging.INFO, logger="idsvc.audit")
    assert sink.wants(auth_event("mismatch")) is True
    assert sink.wants(auth_event("ok")) is False
    assert sink.wants(auth_event("tempfail")) is True
    assert sink.wants(AuditEvent("account.password", "ok")) is True


def test_queued_sink_reports_the_inner_enabled_flag() -> None:
    logger = logging.getLogger("idsvc.audit.test-queue-enabled")
    queued = QueuedAuditSink(LogAuditSink(logger, auth="none"))
    try:
        assert queued.enabled is False
    finally:
        queued.close()


def test_drops_are_published_by_the_writer() -> None:
    sink = SlowSink()
    published: list[int] = []
    queued = QueuedAuditSink(sink, max_queue=1, linger=0, publish=published.append)
    queued.emit(auth_event(n=0))
    deadline = time.monotonic() + 5
    while queued.pending and time.monotonic() < deadline:  # the writer holds event 0
        time.sleep(0.001)
    queued.emit(auth_event(n=1))  # queued
    queued.emit(auth_event(n=2))  # dropped
    queued.emit(auth_event(n=3))  # dropped
    sink.gate.set()
    assert queued.flush()
    deadline = time.monotonic() + 5
    while not published and time.monotonic() < deadline:
        time.sleep(0.01)
    queued.close()
    assert published == [2]


def test_shared_counters_sum_over_workers() -> None:
    from idsvc.workers import SharedCounters

    counters = SharedCounters(3)
    try:
        counters.set(0, 5)
        counters.set(2, 7)
        assert counters.get(2) == 7
        assert counters.total() == 12
    finally:
        counters.close()


def test_wants_auth_lets_the_engine_skip_unrecorded_successes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from idsvc.audit import FanoutAuditSink, wants_auth

    caplog.set_level(logging.INFO, logger="idsvc.audit")
    failures_only = QueuedAuditSink(LogAuditSink(auth="failures"))
    with_trail = QueuedAuditSink(FanoutAuditSink(LogAuditSink(auth="failures"), SlowSink()))
    try:
        assert wants_auth(failures_only, "ok") is False
        assert wants_auth(failures_only, "mismatch") is True
        assert wants_auth(with_trail, "ok") is True  # the persistent trail records every event
    finally:
        failures_only.close()
        with_trail.close()
