"""The state store: tokens (hashed, shown once, revocable) and the persistent audit trail."""

from __future__ import annotations

import sqlite3
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from idsvc.audit import AuditEvent
from idsvc.errors import InvalidInput, NotFound
from idsvc.state import PersistentAuditSink, Scope, StateStore, create_token, parse_token


@pytest.fixture
async def state(tmp_path: Path) -> StateStore:
    store = await StateStore.open(tmp_path / "s" / "state.db")
    yield store  # type: ignore[misc]
    await store.close()


async def test_token_lifecycle_and_storage(state: StateStore, tmp_path: Path) -> None:
    info, secret = await create_token(
        state, name="ops", scope="domain_admin", domains=["B.example", "a.example"]
    )
    assert info.domains == ("a.example", "b.example")
    assert parse_token(secret) == (info.id, secret.rsplit("_", 1)[1])
    assert (await state.verify_token(secret)) == info
    # only an HMAC is stored: the secret appears nowhere in the file
    raw = (tmp_path / "s" / "state.db").read_bytes()
    wal = tmp_path / "s" / "state.db-wal"
    raw += wal.read_bytes() if wal.exists() else b""
    assert secret.rsplit("_", 1)[1].encode() not in raw
    mode = stat.S_IMODE((tmp_path / "s" / "state.db").stat().st_mode)
    assert mode == 0o600
    tampered = secret[:-1] + ("0" if secret[-1] != "0" else "1")
    for presented in (tampered, secret + "0", secret.upper(), "", "idsvc_x_y", "x" * 10_000):
        assert await state.verify_token(presented) is None
    other_id = "f" * 16 if info.id != "f" * 16 else "e" * 16
    assert await state.verify_token(f"idsvc_{other_id}_{secret.rsplit('_', 1)[1]}") is None
    revoked = await state.revoke_token(info.id)
    assert revoked.revoked is not None
    assert await state.verify_token(secret) is None
    assert (await state.revoke_token(info.id)).revoked == revoked.revoked  # idempotent
    with pytest.raises(NotFound):
        await state.get_token("0" * 16)
    with pytest.raises(NotFound):
        await state.get_token("../etc")


async def test_token_validation(state: StateStore) -> None:
    for kwargs in (
        {"name": "", "scope": "admin"},
        {"name": "a\nb", "scope": "admin"},
        {"name": "x" * 65, "scope": "admin"},
        {"name": "n", "scope": "root"},
        {"name": "n", "scope": "admin", "domains": ["a.example"]},
        {"name": "n", "scope": "domain_admin"},
        {"name": "n", "scope": "read_only", "domains": ["not a domain"]},
        {"name": "n", "scope": "read_only", "owner": "no-at-sign"},
    ):
        with pytest.raises(InvalidInput):
            await create_token(state, **kwargs)  # type: ignore[arg-type]
    assert await state.token_count(active_only=False) == 0


async def test_tokens_survive_reopen_and_list_pages(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = await StateStore.open(path)
    secrets = [
        (await create_token(store, name=f"t{i}", scope=Scope.READ_ONLY))[1] for i in range(5)
    ]
    await store.close()
    store = await StateStore.open(path)
    try:
        assert all([await store.verify_token(s) for s in secrets])
        seen: list[str] = []
        cursor = None
        while True:
            page = await store.list_tokens(cursor=cursor, limit=2)
            seen += [t.id for t in page.items]
            cursor = page.next_cursor
            if cursor is None or not page.items:
                break
        assert len(seen) == len(set(seen)) == 5
        assert seen == sorted(seen)
        with pytest.raises(InvalidInput):
            await store.list_tokens(cursor="' OR 1=1 --")
    finally:
        await store.close()


def _event(i: int, **kw: object) -> AuditEvent:
    base: dict[str, object] = {
        "action": "account.update" if i % 2 else "domain.create",
        "outcome": "ok",
        "actor": f"token:{i % 3}",
        "target": f"u{i}@a.example" if i % 2 else "b.example",
        "detail": {"after": {"quota": i}, "password": "never-stored", "password_hash": "{X}y"},
        "time": datetime(2030, 1, 1, tzinfo=UTC) + timedelta(minutes=i),
    }
    base.update(kw)
    return AuditEvent(**base)  # type: ignore[arg-type]


async def test_audit_persists_filters_and_pages(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = await StateStore.open(path, audit_retention_days=0)
    for i in range(30):
        store.audit_sink.emit(_event(i))
    await store.flush_audit()
    await store.close()
    store = await StateStore.open(path, audit_retention_days=0)
    try:
        page = await store.query_audit(limit=1000)
        assert len(page.items) == 30
        assert page.next_cursor is None
        assert [r.id for r in page.items] == sorted((r.id for r in page.items), reverse=True)
        assert all(
            "password" not in r.detail and "password_hash" not in r.detail for r in page.items
        )
        assert page.items[0].detail == {"after": {"quota": 29}}

        got = await store.query_audit(action="account.*", limit=1000)
        assert {r.action for r in got.items} == {"account.update"}
        got = await store.query_audit(action="account.", limit=1000)
        assert got.items == []
        got = await store.query_audit(actor="token:1", limit=1000)
        assert {r.actor for r in got.items} == {"token:1"}
        got = await store.query_audit(target="u3@a.example")
        assert [r.target for r in got.items] == ["u3@a.example"]
        got = await store.query_audit(domains=["a.example"], limit=1000)
        assert len(got.items) == 15
        assert (await store.query_audit(domains=[])).items == []
        start = datetime(2030, 1, 1, 0, 10, tzinfo=UTC)
        got = await store.query_audit(since=start, until=start + timedelta(minutes=5))
        assert sorted(r.time.minute for r in got.items) == [10, 11, 12, 13, 14]

        ids: list[int] = []
        cursor = None
        for _ in range(20):
            page = await store.query_audit(cursor=cursor, limit=7)
            ids += [r.id for r in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert len(ids) == len(set(ids)) == 30
        for bad in ("abc", "-1", "1;DROP TABLE audit", "9" * 40):
            with pytest.raises(InvalidInput):
                await store.query_audit(cursor=bad)
    finally:
        await store.close()


async def test_audit_retention_prunes_old_events(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = await StateStore.open(path, audit_retention_days=0)
    store.audit_sink.emit(_event(1, time=datetime.now(UTC) - timedelta(days=40)))
    store.audit_sink.emit(_event(2, time=datetime.now(UTC)))
    await store.flush_audit()
    await store.close()
    store = await StateStore.open(path, audit_retention_days=30)
    try:
        page = await store.query_audit()
        assert [r.target for r in page.items] == ["b.example"]
    finally:
        await store.close()


async def test_audit_queue_is_bounded(state: StateStore) -> None:
    sink = PersistentAuditSink(state, max_queue=5)
    # emit from a thread that is not the worker while the worker is kept busy
    gate = threading.Event()
    state._executor.submit(gate.wait, 10)  # hold the single worker thread
    for i in range(20):
        sink.emit(_event(i))
    assert sink.pending == 5
    assert sink.dropped == 15
    gate.set()
    events = sink.drain()
    assert len(events) == 5


async def test_database_rejects_writes_after_close(tmp_path: Path) -> None:
    store = await StateStore.open(tmp_path / "state.db")
    await store.close()
    store.audit_sink.emit(_event(1))  # never raises
    from idsvc.errors import TemporaryFailure

    with pytest.raises(TemporaryFailure):
        await store.token_count()
    conn = sqlite3.connect(tmp_path / "state.db")
    assert conn.execute("SELECT count(*) FROM audit").fetchone()[0] == 0
    conn.close()
