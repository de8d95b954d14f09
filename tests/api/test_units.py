"""Pure pieces of the API layer: the sliding-window limiter, the error → problem mapping, and
the rank rule (``Principal.covers``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from idsvc.api.problems import (
    Forbidden,
    PayloadTooLarge,
    PreconditionFailed,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
    error_response,
)
from idsvc.api.security import Principal, SlidingLimiter
from idsvc.errors import (
    AlreadyExists,
    AmbiguousEntry,
    Conflict,
    IdsvcError,
    InvalidAddress,
    InvalidInput,
    NotFound,
    PasswordError,
    TemporaryFailure,
)
from idsvc.state import Scope, TokenInfo


def test_sliding_limiter_window_and_bounded_keys() -> None:
    now = [0.0]
    limiter = SlidingLimiter(3, 10.0, max_keys=2, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(4)] == [None, None, None, 10]
    now[0] = 5.0
    assert limiter.retry_after("a") == 5
    now[0] = 10.5
    assert limiter.take("a") is None  # the first hits have left the window
    limiter.hit("b")
    limiter.hit("c")  # evicts the least recently seen key ("a")
    assert len(limiter._hits) == 2
    assert "a" not in limiter._hits


@pytest.mark.parametrize(
    ("error", "status", "retry"),
    [
        (NotFound("user x@y.test does not exist"), 404, None),
        (AlreadyExists("exists"), 409, None),
        (Conflict("stale"), 409, None),
        (AmbiguousEntry("two entries"), 409, None),
        (TemporaryFailure("ldap://10.0.0.1 down: secret detail"), 503, "5"),
        (InvalidInput("bad"), 422, None),
        (InvalidAddress("bad address"), 422, None),
        (PasswordError("corrupt hash"), 422, None),
        (Unauthorized("no token"), 401, None),
        (Forbidden("no"), 403, None),
        (PreconditionFailed("stale"), 412, None),
        (PayloadTooLarge("big"), 413, None),
        (UnsupportedMediaType("xml"), 415, None),
        (TooManyRequests("slow down", retry_after=7), 429, "7"),
        (IdsvcError("something new"), 500, None),
    ],
)
def test_error_mapping(error: IdsvcError, status: int, retry: str | None) -> None:
    response = error_response(error, "/p")
    assert response.status_code == status
    assert response.media_type == "application/problem+json"
    assert response.headers.get("retry-after") == retry
    body = json.loads(bytes(response.body))
    assert body["status"] == status
    assert body["type"].startswith("https://idsvc.invalid/problems/")
    if status == 503:
        assert "10.0.0.1" not in body["detail"]  # backend details stay in the log
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_problem_detail_never_echoes_control_characters() -> None:
    response = error_response(InvalidInput("bad\r\nX-Injected: 1\x00"), "/p")
    detail = json.loads(bytes(response.body))["detail"]
    assert "\r" not in detail
    assert "\n" not in detail
    assert "\x00" not in detail


def _token(scope: Scope, *domains: str) -> TokenInfo:
    return TokenInfo("0" * 16, "t", scope, tuple(domains), None, datetime.now(UTC), "test")


def test_rank_rule() -> None:
    admin = Principal(_token(Scope.ADMIN), "x")
    da = Principal(_token(Scope.DOMAIN_ADMIN, "a.test", "b.test"), "x")
    ro = Principal(_token(Scope.READ_ONLY, "a.test"), "x")
    assert admin.covers(_token(Scope.ADMIN))
    assert da.covers(_token(Scope.DOMAIN_ADMIN, "a.test"))
    assert da.covers(_token(Scope.READ_ONLY, "a.test", "b.test"))
    assert not da.covers(_token(Scope.DOMAIN_ADMIN, "a.test", "c.test"))
    assert not da.covers(_token(Scope.READ_ONLY))  # global read-only sees more
    assert not da.covers(_token(Scope.ADMIN))
    assert not ro.covers(_token(Scope.READ_ONLY, "a.test"))  # read-only manages nothing
    assert da.can_write("a.test")
    assert not da.can_write("c.test")
    assert ro.can_read("a.test")
    assert not ro.can_write("a.test")
    assert not ro.can_read("b.test")
    assert Principal(_token(Scope.READ_ONLY), "x").can_read("any.test")
