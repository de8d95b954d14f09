"""The benchmarks' shared helpers (bench/common.py, bench/daemons.py): table lines, percentiles,
medians, /proc CPU accounting, process trees and their shutdown, and the ``idsvc serve`` config
the comparison benchmarks write (validated by idsvc's own Settings)."""

from __future__ import annotations

import math
import subprocess
import time
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bench.common import (
    Meter,
    RunStats,
    cpu_seconds,
    md_head,
    md_row,
    percentile_ms,
    process_tree,
    ratio,
    rss_mib,
    stat_fields,
    summarise,
)
from bench.daemons import Daemon, _merge, idsvc_config, interleaved, kill_tree, summarize
from idsvc.config import LdapSettings, Settings


def test_markdown_lines() -> None:
    assert md_head(["a", "b", "c"]) == ["| a | b | c |", "|---|---:|---:|"]
    assert md_head(["a", "b", "c"], left=2)[1] == "|---|---|---:|"
    assert md_row(["x", 1, f"{2.5:.2f}"]) == "| x | 1 | 2.50 |"


def test_percentiles_and_ratios() -> None:
    latencies = [i / 1000 for i in range(100, 0, -1)]  # 1 … 100 ms, unsorted
    assert percentile_ms(latencies, 0.50) == pytest.approx(51.0)
    assert percentile_ms(latencies, 0.99) == pytest.approx(100.0)
    assert percentile_ms(latencies, 1.0) == pytest.approx(100.0)
    assert math.isnan(percentile_ms([], 0.5))
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(1.0, 0.0) == math.inf


def test_summarise_takes_medians_and_sums() -> None:
    runs = [
        RunStats(ops=100, seconds=1.0, latencies=[0.001] * 100, failures=1, cpu=0.1, cached=50),
        RunStats(ops=300, seconds=1.0, latencies=[0.003] * 300, failures=2, cpu=0.3, cached=0),
        RunStats(ops=200, seconds=1.0, latencies=[0.002] * 200, failures=0, cpu=0.2, cached=100),
    ]
    cell = summarise(runs)
    assert cell.rate == 200.0
    assert cell.p50 == pytest.approx(2.0)
    assert cell.failures == 3
    assert cell.cpu_us == pytest.approx(1000.0)
    assert cell.server_us == 0.0
    assert cell.hit_ratio == pytest.approx(150 / 600)


def test_meter_counts_this_process_cpu() -> None:
    with Meter(None) as meter:
        deadline = time.process_time() + 0.05
        while time.process_time() < deadline:
            pass
    stats = meter.stats(10, [0.01] * 10, 0)
    assert stats.cpu >= 0.04
    assert stats.seconds >= stats.cpu * 0.5
    assert stats.server_cpu == 0.0


def test_process_tree_cpu_and_kill_tree() -> None:
    proc = subprocess.Popen(["/bin/sh", "-c", "sleep 30 & sleep 30; wait"])
    try:
        deadline = time.monotonic() + 5
        tree = process_tree(proc.pid)
        while len(tree) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
            tree = process_tree(proc.pid)
        assert len(tree) == 3, tree  # the shell and its two sleeps
        assert cpu_seconds(tree) >= 0.0
        assert rss_mib(proc.pid) > 0
        started = time.monotonic()
        kill_tree(proc.pid, proc)  # type: ignore[arg-type]
        assert time.monotonic() - started < 6
        assert proc.returncode is not None
        # the orphaned sleeps are gone, or zombies until whoever adopted them reaps them
        assert all((stat_fields(pid) or ["Z"])[0] == "Z" for pid in tree[1:])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert cpu_seconds([proc.pid]) == 0.0  # a vanished pid counts 0
    assert math.isnan(rss_mib(proc.pid))


@pytest.mark.parametrize("profile", ["default", "tuned"])
@pytest.mark.parametrize("listener", ["saslauthd", "dovecot_auth"])
def test_idsvc_config_is_valid_settings(listener: Any, profile: Any, tmp_path: Path) -> None:
    slapd = SimpleNamespace(
        uri="ldap://127.0.0.1:3890", reader_dn="cn=reader,dc=idsvc,dc=test", reader_pw="r-pw"
    )
    sock = tmp_path / "sock" / "s"
    text = idsvc_config(
        slapd,  # type: ignore[arg-type]
        "o=bench,dc=idsvc,dc=test",
        sock,
        listener=listener,
        auth_method="bind",
        cache=False,
        profile=profile,
    )
    settings = Settings.model_validate(tomllib.loads(text))
    ours = getattr(settings, listener)
    other = settings.dovecot_auth if listener == "saslauthd" else settings.saslauthd
    assert ours.socket.path == sock
    assert ours.socket.enabled
    assert not other.socket.enabled
    assert settings.control.socket.path == sock.parent / "control"
    assert not settings.auth.cache
    assert settings.auth.failure_delay == 0.0
    assert settings.directory.ldap is not None
    assert settings.directory.ldap.auth_method == "bind"
    assert not settings.api.enabled
    defaults = Settings()
    if profile == "default":  # what a user runs: only the cache and the delay differ
        assert settings.auth.penalty == defaults.auth.penalty
        assert settings.logging.level == defaults.logging.level
        assert settings.directory.ldap.pool_size == LdapSettings.model_fields["pool_size"].default
    else:
        assert not settings.auth.penalty
        assert settings.logging.level == "WARNING"


def _client_result(attempts: int, wall: float, cpu: float) -> dict[str, Any]:
    return {
        "protocol": "dovecot", "concurrency": 4, "attempts": attempts, "good": attempts,
        "bad": 0, "verdicts": {"ok": attempts, "no": 0, "fail": 1}, "wrong_ok": 0,
        "wrong_no": 0, "wall_s": wall, "auths_per_s": attempts / wall, "p50_ms": 0.0,
        "p90_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "client_cpu_s": cpu,
    }  # fmt: skip


def test_merge_sums_counts_and_takes_percentiles_over_all_latencies() -> None:
    latencies = sorted([0.001] * 98 + [0.050, 0.100])
    merged = _merge([_client_result(60, 2.0, 0.5), _client_result(40, 2.5, 0.25)], latencies)
    assert merged["attempts"] == 100
    assert merged["concurrency"] == 8
    assert merged["verdicts"] == {"ok": 100, "no": 0, "fail": 2}
    assert merged["wall_s"] == 2.5
    assert merged["auths_per_s"] == 40.0
    assert merged["client_cpu_s"] == 0.75
    assert merged["client_processes"] == 2
    assert merged["p50_ms"] == 1.0
    assert merged["p99_ms"] == 100.0
    assert merged["max_ms"] == 100.0


def test_interleaved_rotates_and_summarize_takes_medians() -> None:
    daemons = [Daemon(name, Path("/nonexistent"), 0) for name in ("a", "b")]
    order: list[str] = []
    rates = iter([10.0, 20.0, 30.0, 40.0, 50.0, 60.0])

    def measure(daemon: Daemon) -> dict[str, Any]:
        order.append(daemon.name)
        result = _client_result(1, 1.0, 0.1)
        result.update(server=daemon.name, auths_per_s=next(rates), server_cpu_per_1k=1.0)
        result["slapd_cpu_per_1k"] = 2.0
        return result

    results = interleaved(daemons, 3, measure)
    assert order == ["a", "b", "b", "a", "a", "b"]
    rows = {row["server"]: row for row in summarize(results, ("concurrency",))}
    assert rows["a"]["auths_per_s"] == 40.0  # median of 10, 40, 50
    assert rows["b"]["auths_per_s"] == 30.0  # median of 20, 30, 60
    assert rows["b"]["spread"] == (20.0, 60.0)
    assert rows["a"]["rounds"] == 3
    assert rows["a"]["attempts"] == 3
