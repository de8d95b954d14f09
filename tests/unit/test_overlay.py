"""The local overlay's app passwords (idsvc/overlay.py, idsvc/auth/app_password.py): secret shape
and normalisation, keyed digests only, scoping by service / network / expiry, revocation,
subject isolation, the per-account bound, batched last-use times, and a closed store."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idsvc.auth.app_password import AppCheck, AppPassword
from idsvc.errors import InvalidInput, NotFound, TemporaryFailure
from idsvc.model import Service
from idsvc.overlay import (
    ALPHABET,
    MAX_PER_ACCOUNT,
    OverlayStore,
    check_networks,
    generate_secret,
    normalise,
)

NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


def test_secret_shape_and_normalisation() -> None:
    secret = generate_secret()
    groups = secret.split("-")
    assert [len(g) for g in groups] == [4, 4, 4, 4, 4]
    assert all(c in ALPHABET for c in "".join(groups))
    raw = "".join(groups)
    assert normalise(secret) == raw
    assert normalise(secret.upper().replace("-", " ")) == raw
    assert normalise(raw) == raw
    for other in ("", "short", raw + "a", raw[:-1] + "1", "x" * 1000, raw[:-1] + "é"):
        assert normalise(other) is None
    assert len({generate_secret() for _ in range(200)}) == 200


@given(st.text(max_size=80))
def test_normalise_accepts_only_the_alphabet(text: str) -> None:
    result = normalise(text)
    if result is not None:
        assert len(result) == 20
        assert set(result) <= set(ALPHABET)


def app(**kw: object) -> AppPassword:
    values: dict[str, object] = {
        "id": "0" * 16, "subject": "s", "owner": "a@x.test", "name": "n",
        "services": frozenset(), "networks": (), "created": NOW,
    }  # fmt: skip
    values.update(kw)
    return AppPassword(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "service", "ip", "usable"),
    [
        ({}, Service.IMAP, "203.0.113.9", True),
        ({"services": frozenset({Service.SMTP})}, Service.SMTP, None, True),
        ({"services": frozenset({Service.SMTP})}, Service.IMAP, None, False),
        ({"services": frozenset({Service.SMTP})}, None, None, False),
        ({"networks": ("192.0.2.0/24",)}, Service.IMAP, "192.0.2.7", True),
        ({"networks": ("192.0.2.0/24",)}, Service.IMAP, "198.51.100.7", False),
        ({"networks": ("192.0.2.0/24",)}, Service.IMAP, None, False),
        ({"networks": ("2001:db8::/32",)}, Service.IMAP, "2001:db8::1", True),
        ({"expires": NOW + timedelta(seconds=1)}, Service.IMAP, None, True),
        ({"expires": NOW}, Service.IMAP, None, False),
        ({"revoked": NOW - timedelta(days=1)}, Service.IMAP, None, False),
    ],
)
def test_usable(
    kw: dict[str, object], service: Service | None, ip: str | None, usable: bool
) -> None:
    assert app(**kw).usable(service, ip, NOW) is usable


def test_networks_are_checked_and_normalised() -> None:
    assert check_networks(["192.0.2.7/24", "192.0.2.0/24", " 10.0.0.1 "]) == (
        "10.0.0.1/32",
        "192.0.2.0/24",
    )
    with pytest.raises(InvalidInput):
        check_networks(["not-a-net"])
    with pytest.raises(InvalidInput):
        check_networks([f"10.0.{i}.0/24" for i in range(17)])


@pytest.fixture
async def store(tmp_path: Path) -> OverlayStore:
    s = await OverlayStore.open(tmp_path / "sub" / "overlay.db")
    yield s  # type: ignore[misc]
    await s.close()


async def test_create_check_revoke(store: OverlayStore, tmp_path: Path) -> None:
    made, secret = await store.create(
        "guid-1", "alice@x.test", "phone", services=[Service.SMTP], networks=["127.0.0.0/8"]
    )
    assert (tmp_path / "sub" / "overlay.db").stat().st_mode & 0o777 == 0o600
    assert (await store.check("guid-1", secret, Service.SMTP, "127.0.0.1"))[0] is AppCheck.OK
    assert (await store.check("guid-1", secret.upper(), Service.SMTP, "127.0.0.1"))[
        0
    ] is AppCheck.OK
    assert (await store.check("guid-1", secret, Service.IMAP, "127.0.0.1"))[0] is AppCheck.REFUSED
    assert (await store.check("guid-1", secret, Service.SMTP, "192.0.2.1"))[0] is AppCheck.REFUSED
    # someone else's app password is no app password of this account
    assert (await store.check("guid-2", secret, Service.SMTP, "127.0.0.1"))[0] is (
        AppCheck.NO_MATCH
    )
    assert (await store.check("guid-1", "not an app password", Service.SMTP, None))[0] is (
        AppCheck.NO_MATCH
    )
    revoked = await store.revoke("guid-1", made.id)
    assert revoked.revoked is not None
    assert (await store.check("guid-1", secret, Service.SMTP, "127.0.0.1"))[0] is (AppCheck.REFUSED)
    with pytest.raises(NotFound):
        await store.revoke("guid-2", made.id)  # not that account's
    [listed] = await store.list_for("guid-1")
    assert listed.id == made.id
    assert listed.revoked is not None


async def test_only_a_keyed_digest_is_stored(store: OverlayStore) -> None:
    _made, secret = await store.create("guid-1", "alice@x.test", "laptop")
    conn = sqlite3.connect(store.path)
    try:
        dump = "\n".join(conn.iterdump())
    finally:
        conn.close()
    assert secret not in dump
    assert secret.replace("-", "") not in dump


async def test_expired_app_password_is_refused(store: OverlayStore) -> None:
    _made, secret = await store.create(
        "g", "a@x.test", "soon", expires=datetime.now(UTC) + timedelta(seconds=1)
    )
    assert (await store.check("g", secret, Service.IMAP, None))[0] is AppCheck.OK
    past = datetime.now(UTC) - timedelta(seconds=1)
    _old, old_secret = await store.create("g", "a@x.test", "old", expires=past)
    assert (await store.check("g", old_secret, Service.IMAP, None))[0] is AppCheck.REFUSED


async def test_bounded_per_account_and_validated(store: OverlayStore) -> None:
    for i in range(MAX_PER_ACCOUNT):
        await store.create("g", "a@x.test", f"device {i}")
    with pytest.raises(InvalidInput, match="at most"):
        await store.create("g", "a@x.test", "one too many")
    await store.create("other", "b@x.test", "fine")  # the bound is per account
    with pytest.raises(InvalidInput):
        await store.create("x", "c@x.test", "")
    with pytest.raises(InvalidInput):
        await store.create("x", "c@x.test", "bad\nname")
    with pytest.raises(InvalidInput):
        await store.create("x", "c@x.test", "naive", expires=datetime(2030, 1, 1))


async def test_last_use_is_recorded_in_batches(store: OverlayStore) -> None:
    made, secret = await store.create("g", "a@x.test", "phone")
    assert (await store.check("g", secret, Service.IMAP, "127.0.0.5"))[0] is AppCheck.OK
    [before] = await store.list_for("g")  # listing flushes what is pending
    assert before.id == made.id
    assert before.last_used is not None
    assert before.last_ip == "127.0.0.5"


async def test_a_closed_store_is_a_temporary_failure(tmp_path: Path) -> None:
    s = await OverlayStore.open(tmp_path / "o.db")
    await s.close()
    with pytest.raises(TemporaryFailure):
        await s.check("g", generate_secret(), Service.IMAP, None)
