"""Server-side sessions of the web pages and of the webmail: idle and absolute timeouts,
rotation, bounded size, and the webmail forgetting the password when a session ends."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from idsvc.web.sessions import SessionStore
from mailsvc.webmail.sessions import Sessions


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def idsvc_store(clock: Clock, size: int = 3) -> SessionStore:
    return SessionStore(idle=60, absolute=300, max_sessions=size, clock=clock)


def webmail_store(clock: Clock, size: int = 3) -> Sessions:
    return Sessions(idle=60, absolute=300, max_sessions=size, clock=clock)


STORES: list[Callable[[Clock], SessionStore | Sessions]] = [idsvc_store, webmail_store]


@pytest.mark.parametrize("make", STORES)
def test_idle_timeout(make: Callable[[Clock], SessionStore | Sessions]) -> None:
    clock = Clock()
    store = make(clock)
    s = store.new()
    clock.now += 59
    assert store.get(s.id) is s  # a request restarts the idle clock
    clock.now += 59
    assert store.get(s.id) is s
    clock.now += 61
    assert store.get(s.id) is None
    assert len(store) == 0


@pytest.mark.parametrize("make", STORES)
def test_absolute_timeout_even_when_active(
    make: Callable[[Clock], SessionStore | Sessions],
) -> None:
    clock = Clock()
    store = make(clock)
    s = store.new()
    for _ in range(6):
        clock.now += 50
        assert store.get(s.id) is s
    clock.now += 1
    assert store.get(s.id) is None


@pytest.mark.parametrize("make", STORES)
def test_bounded_least_recently_used_goes(make: Callable[[Clock], SessionStore | Sessions]) -> None:
    clock = Clock()
    store = make(clock)
    a, b, c = store.new(), store.new(), store.new()
    assert store.get(a.id) is a  # a is now the most recent
    d = store.new()
    assert store.get(b.id) is None
    assert {store.get(x.id) is not None for x in (a, c, d)} == {True}


@pytest.mark.parametrize("sid", [None, "", "x" * 129, "unknown"])
def test_unknown_ids(sid: str | None) -> None:
    assert idsvc_store(Clock()).get(sid) is None
    assert webmail_store(Clock()).get(sid) is None


def test_rotation_gives_new_id_and_csrf_and_ends_the_old() -> None:
    store = idsvc_store(Clock())
    old = store.new()
    new = store.rotate(old)
    assert new.id != old.id
    assert new.csrf != old.csrf
    assert store.get(old.id) is None
    assert store.get(new.id) is new


def test_csrf_comparison() -> None:
    s = idsvc_store(Clock()).new()
    assert s.csrf_ok(s.csrf)
    assert not s.csrf_ok(None)
    assert not s.csrf_ok("")
    assert not s.csrf_ok(s.csrf[:-1])
    assert not s.csrf_ok(s.csrf + "\udcff")  # not even encodable: refused, no exception


def test_webmail_forgets_the_password_when_a_session_ends() -> None:
    clock = Clock()
    store = webmail_store(clock, size=1)
    first = store.new()
    first.user, first.password = "a@example.test", "secret"
    store.new()  # evicts the first
    assert first.password == ""
    second = store.new()
    second.password = "other"
    clock.now += 61
    assert store.get(second.id) is None
    assert second.password == ""
    assert "other" not in repr(second)
