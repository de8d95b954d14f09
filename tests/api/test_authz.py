"""Authentication and authorisation: every private route needs a token (swept from the OpenAPI
document), the scope matrix (global admin / domain admin / read-only by own / foreign /
higher-ranked objects), and the rate limits."""

from __future__ import annotations

import re
from typing import Any

import pytest

from idsvc.api.routes.ops import PUBLIC_PATHS
from idsvc.api.security import SlidingLimiter
from tests.api.conftest import Api

SAMPLES = {
    "domain": "own.test",
    "address": "plain@own.test",
    "source": "team@own.test",
    "token_id": "0123456789abcdef",
}


def _operations(api: Api) -> list[tuple[str, str]]:
    doc = api.app.openapi()
    ops = []
    for path, item in doc["paths"].items():
        for method in item:
            concrete = re.sub(r"\{(\w+)\}", lambda m: SAMPLES.get(m.group(1), "sample"), path)
            ops.append((method.upper(), concrete))
    return ops


async def test_every_private_route_requires_a_token(api: Api) -> None:
    ops = _operations(api)
    assert len(ops) >= 20  # the sweep covers the whole API, not a stale subset
    limiter = api.app.state.idsvc.token_failures
    for method, path in ops:
        public = path in PUBLIC_PATHS
        r = await api.client.request(method, path)
        if public:
            assert r.status_code not in (401, 403), (method, path)
            continue
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["www-authenticate"] == 'Bearer realm="idsvc"'
        for bad in ("Bearer idsvc_0123456789abcdef_" + "0" * 64, "Basic YTpi", "Bearer "):
            r = await api.client.request(method, path, headers={"Authorization": bad})
            assert r.status_code == 401, (method, path, bad)
        limiter.forget("198.51.100.7")


async def _setup(api: Api) -> None:
    for name in ("own.test", "foreign.test", "third.test"):
        r = await api.call("admin", "POST", "/api/v1/domains", json={"name": name})
        assert r.status_code == 201
    for address in ("plain@own.test", "boss@own.test", "peer@own.test", "da@own.test"):
        r = await api.call(
            "admin",
            "POST",
            f"/api/v1/domains/{address.split('@')[1]}/users",
            json={"address": address, "password": "passphrase of " + address},
        )
        assert r.status_code == 201
    r = await api.call(
        "admin",
        "POST",
        "/api/v1/domains/foreign.test/users",
        json={"address": "x@foreign.test", "password": "passphrase of x"},
    )
    assert r.status_code == 201
    for domain in ("own.test", "foreign.test"):
        r = await api.call(
            "admin",
            "POST",
            f"/api/v1/domains/{domain}/aliases",
            json={"source": "team", "destinations": [f"plain@{domain}"]},
        )
        assert r.status_code == 201
    await api.token("boss", "admin", owner="boss@own.test")  # a global admin's mailbox
    await api.token("peer", "domain_admin", ("own.test", "foreign.test"), owner="peer@own.test")
    await api.token("da", "domain_admin", ("own.test",), owner="da@own.test")
    await api.token("ro", "read_only", ("own.test",))
    await api.token("rog", "read_only")


PATCH = {"display_name": "changed"}
NEW = "a new passphrase"
PW = {"password": NEW}

MATRIX: list[tuple[str, str, str, Any, int]] = [
    # domain admin: own objects
    ("da", "GET", "/api/v1/users/plain@own.test", None, 200),
    ("da", "PATCH", "/api/v1/users/plain@own.test", PATCH, 200),
    ("da", "PUT", "/api/v1/users/plain@own.test/password", PW, 204),
    ("da", "GET", "/api/v1/domains/own.test", None, 200),
    ("da", "PATCH", "/api/v1/domains/own.test", {"description": "ours"}, 200),
    ("da", "GET", "/api/v1/domains/own.test/users", None, 200),
    ("da", "GET", "/api/v1/aliases/team@own.test", None, 200),
    ("da", "PATCH", "/api/v1/aliases/team@own.test", {"enabled": False}, 200),
    ("da", "POST", "/api/v1/domains/own.test/users", {"address": "n1", "password": NEW}, 201),
    # domain admin: foreign objects look absent (404), existing or not
    ("da", "GET", "/api/v1/users/x@foreign.test", None, 404),
    ("da", "GET", "/api/v1/users/ghost@foreign.test", None, 404),
    ("da", "PATCH", "/api/v1/users/x@foreign.test", PATCH, 404),
    ("da", "PUT", "/api/v1/users/x@foreign.test/password", PW, 404),
    ("da", "DELETE", "/api/v1/users/x@foreign.test", None, 404),
    ("da", "GET", "/api/v1/domains/foreign.test", None, 404),
    ("da", "PATCH", "/api/v1/domains/foreign.test", {"enabled": False}, 404),
    ("da", "GET", "/api/v1/domains/foreign.test/users", None, 404),
    ("da", "GET", "/api/v1/aliases/team@foreign.test", None, 404),
    ("da", "DELETE", "/api/v1/aliases/team@foreign.test", None, 404),
    ("da", "POST", "/api/v1/domains/foreign.test/users", {"address": "n", "password": "p"}, 404),
    (
        "da",
        "POST",
        "/api/v1/domains/foreign.test/aliases",
        {"source": "s", "destinations": ["plain@own.test"]},
        404,
    ),
    (
        "da",
        "POST",
        "/api/v1/domains/own.test/aliases",
        {"source": "s@foreign.test", "destinations": ["plain@own.test"]},
        422,
    ),
    (
        "da",
        "POST",
        "/api/v1/auth/test",
        {"login": "x@foreign.test", "password": "pw-x"},
        404,
    ),
    # domain admin: higher-ranked mailboxes can be read, not taken over
    ("da", "GET", "/api/v1/users/boss@own.test", None, 200),
    ("da", "PATCH", "/api/v1/users/boss@own.test", PATCH, 403),
    ("da", "PUT", "/api/v1/users/boss@own.test/password", PW, 403),
    ("da", "POST", "/api/v1/users/boss@own.test/password-hash", {"password_hash": "{X}y"}, 403),
    ("da", "DELETE", "/api/v1/users/boss@own.test", None, 403),
    ("da", "PATCH", "/api/v1/users/peer@own.test", {"enabled": False}, 403),
    ("da", "PATCH", "/api/v1/users/da@own.test", PATCH, 200),  # its own mailbox
    # domain admin: domain-level powers it does not have
    ("da", "POST", "/api/v1/domains", {"name": "new.test"}, 403),
    ("da", "DELETE", "/api/v1/domains/own.test", None, 403),
    ("da", "PATCH", "/api/v1/domains/own.test", {"alias_domains": ["own-alias.test"]}, 403),
    # domain admin: tokens only inside its own authority
    ("da", "POST", "/api/v1/tokens", {"name": "t", "scope": "admin"}, 403),
    ("da", "POST", "/api/v1/tokens", {"name": "t", "scope": "read_only"}, 403),
    (
        "da",
        "POST",
        "/api/v1/tokens",
        {"name": "t", "scope": "domain_admin", "domains": ["own.test", "foreign.test"]},
        403,
    ),
    (
        "da",
        "POST",
        "/api/v1/tokens",
        {"name": "t", "scope": "read_only", "domains": ["own.test"], "owner": "x@foreign.test"},
        403,
    ),
    (
        "da",
        "POST",
        "/api/v1/tokens",
        {"name": "t", "scope": "read_only", "domains": ["own.test"], "owner": "plain@own.test"},
        201,
    ),
    # read-only, one domain
    ("ro", "GET", "/api/v1/users/plain@own.test", None, 200),
    ("ro", "GET", "/api/v1/domains/own.test/aliases", None, 200),
    ("ro", "PATCH", "/api/v1/users/plain@own.test", PATCH, 403),
    ("ro", "PUT", "/api/v1/users/plain@own.test/password", PW, 403),
    ("ro", "DELETE", "/api/v1/aliases/team@own.test", None, 403),
    ("ro", "POST", "/api/v1/domains/own.test/users", {"address": "n2", "password": "p"}, 403),
    ("ro", "GET", "/api/v1/users/x@foreign.test", None, 404),
    ("ro", "GET", "/api/v1/tokens", None, 403),
    ("ro", "POST", "/api/v1/auth/test", {"login": "plain@own.test", "password": "p"}, 403),
    # read-only, global
    ("rog", "GET", "/api/v1/users/x@foreign.test", None, 200),
    ("rog", "GET", "/api/v1/audit", None, 200),
    ("rog", "PATCH", "/api/v1/users/x@foreign.test", PATCH, 403),
    ("rog", "DELETE", "/api/v1/domains/foreign.test", None, 403),
    # global admin reaches everything, including other admins' mailboxes
    ("admin", "PATCH", "/api/v1/users/boss@own.test", PATCH, 200),
    ("admin", "PATCH", "/api/v1/users/x@foreign.test", PATCH, 200),
    ("admin", "PATCH", "/api/v1/domains/own.test", {"alias_domains": ["own-alias.test"]}, 200),
]


async def test_authorisation_matrix(api: Api) -> None:
    await _setup(api)
    failures = []
    for role, method, path, body, expected in MATRIX:
        kwargs = {} if body is None else {"json": body}
        r = await api.call(role, method, path, **kwargs)
        if r.status_code != expected:
            failures.append((role, method, path, expected, r.status_code, r.text[:200]))
    assert failures == []


async def test_foreign_and_absent_look_the_same(api: Api) -> None:
    await _setup(api)
    present = await api.call("da", "GET", "/api/v1/users/x@foreign.test")
    absent = await api.call("da", "GET", "/api/v1/users/nobody@foreign.test")
    assert present.status_code == absent.status_code == 404
    assert present.json()["detail"].replace("x@", "nobody@") == absent.json()["detail"]
    assert set(present.headers) == set(absent.headers)
    own_absent = await api.call("da", "GET", "/api/v1/users/nobody@own.test")
    assert own_absent.json()["type"] == present.json()["type"]


async def test_scoped_listings_hide_foreign_objects(api: Api) -> None:
    await _setup(api)
    r = await api.call("da", "GET", "/api/v1/domains")
    assert [d["name"] for d in r.json()["items"]] == ["own.test"]
    r = await api.call("peer", "GET", "/api/v1/domains", params={"limit": 1})
    first = r.json()
    assert [d["name"] for d in first["items"]] == ["foreign.test"]
    r = await api.call("peer", "GET", "/api/v1/domains", params={"cursor": first["next_cursor"]})
    assert [d["name"] for d in r.json()["items"]] == ["own.test"]
    r = await api.call("rog", "GET", "/api/v1/domains")
    assert len(r.json()["items"]) == 3

    r = await api.call("da", "GET", "/api/v1/tokens")
    names = {t["name"] for t in r.json()["items"]}
    assert names == {"da", "ro"}
    r = await api.call("da", "DELETE", f"/api/v1/tokens/{api.infos['admin'].id}")
    assert r.status_code == 404
    r = await api.call("da", "DELETE", f"/api/v1/tokens/{api.infos['ro'].id}")
    assert r.status_code == 204

    r = await api.call("da", "GET", "/api/v1/audit", params={"limit": 1000})
    targets = {i["target"] for i in r.json()["items"]}
    assert targets
    assert all(t.endswith("own.test") for t in targets), targets


async def test_auth_test_is_rate_limited_per_token(api: Api) -> None:
    await _setup(api)
    ctx = api.app.state.idsvc
    ctx.auth_tests = SlidingLimiter(2, 60.0)
    body = {"login": "plain@own.test", "password": "wrong"}
    codes = [(await api.call("da", "POST", "/api/v1/auth/test", json=body)).status_code]
    codes.append((await api.call("da", "POST", "/api/v1/auth/test", json=body)).status_code)
    codes.append((await api.call("da", "POST", "/api/v1/auth/test", json=body)).status_code)
    assert codes == [200, 200, 429]
    r = await api.call("admin", "POST", "/api/v1/auth/test", json=body)
    assert r.status_code == 200  # another token has its own budget


@pytest.mark.parametrize("policy", ["loopback", "never"])
async def test_metrics_policy(api: Api, policy: str) -> None:
    from httpx import ASGITransport, AsyncClient

    settings = api.settings.model_copy(
        update={"api": api.settings.api.model_copy(update={"metrics_public": policy})}
    )
    api.app.state.idsvc.settings = settings
    transport = ASGITransport(app=api.app, client=("127.0.0.1", 5555))
    async with AsyncClient(transport=transport, base_url="http://localhost") as local:
        r = await local.get("/metrics")
    assert r.status_code == (200 if policy == "loopback" else 401)
