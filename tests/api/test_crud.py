"""CRUD of every resource through the REST API, on both directory backends."""

from __future__ import annotations

import json

from idsvc.auth.request import AuthRequest, Outcome
from idsvc.model import Secret
from tests.api.conftest import Api

PROBLEM = "application/problem+json"


async def _domain(api: Api, name: str = "example.org", **extra: object) -> None:
    r = await api.call("admin", "POST", "/api/v1/domains", json={"name": name, **extra})
    assert r.status_code == 201, r.text


async def _user(
    api: Api,
    address: str,
    password: str = "s3cret passphrase",  # noqa: S107
    **extra: object,
) -> None:
    domain = address.rpartition("@")[2]
    r = await api.call(
        "admin",
        "POST",
        f"/api/v1/domains/{domain}/users",
        json={"address": address, "password": password, **extra},
    )
    assert r.status_code == 201, r.text


async def _login(api: Api, login: str, password: str) -> Outcome:
    result = await api.runtime.authenticator.authenticate(
        AuthRequest(login=login, password=Secret(password), service="imap", secured=True)
    )
    return result.outcome


async def test_domain_crud(api: Api) -> None:
    r = await api.call(
        "admin",
        "POST",
        "/api/v1/domains",
        json={"name": "Example.ORG", "default_quota": 1000, "description": "main"},
    )
    assert r.status_code == 201
    assert r.headers["location"] == "/api/v1/domains/example.org"
    assert r.headers["etag"] == '"1"'
    body = r.json()
    assert body["name"] == "example.org"
    assert body["default_quota"] == 1000

    r = await api.call("admin", "GET", "/api/v1/domains/example.org")
    assert r.status_code == 200
    assert r.json()["description"] == "main"
    etag = r.headers["etag"]

    r = await api.call(
        "admin",
        "PATCH",
        "/api/v1/domains/example.org",
        json={"enabled": False, "alias_domains": ["example.net"]},
        headers={"If-Match": etag},
    )
    assert r.status_code == 200, r.text
    assert r.json()["enabled"] is False
    assert r.json()["alias_domains"] == ["example.net"]
    assert r.headers["etag"] != etag

    r = await api.call(
        "admin",
        "PATCH",
        "/api/v1/domains/example.org",
        json={"enabled": True},
        headers={"If-Match": etag},
    )
    assert r.status_code == 412
    assert r.headers["content-type"] == PROBLEM

    r = await api.call("admin", "POST", "/api/v1/domains", json={"name": "example.org"})
    assert r.status_code == 409
    assert r.json()["status"] == 409

    r = await api.call("admin", "GET", "/api/v1/domains")
    assert [d["name"] for d in r.json()["items"]] == ["example.org"]

    await _user(api, "a@example.org")
    r = await api.call("admin", "DELETE", "/api/v1/domains/example.org")
    assert r.status_code == 409
    r = await api.call("admin", "DELETE", "/api/v1/domains/example.org?cascade=true")
    assert r.status_code == 204
    assert r.content == b""
    r = await api.call("admin", "GET", "/api/v1/domains/example.org")
    assert r.status_code == 404
    assert r.headers["content-type"] == PROBLEM


async def test_user_crud_and_no_hash_in_responses(api: Api) -> None:
    await _domain(api, default_quota=5000)
    r = await api.call(
        "admin",
        "POST",
        "/api/v1/domains/example.org/users",
        json={"address": "Alice", "password": "alice passphrase 1", "display_name": "Alice A."},
    )
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/api/v1/users/alice@example.org"
    user = r.json()
    assert user["address"] == "alice@example.org"
    assert user["quota"] == 5000
    assert "password" not in r.text
    assert "{" not in json.dumps(user).replace("{", "", 1)[:-1]
    assert await _login(api, "alice@example.org", "alice passphrase 1") is Outcome.OK

    r = await api.call("admin", "GET", "/api/v1/users/ALICE@Example.org")
    assert r.status_code == 200
    assert r.headers["etag"] == '"1"'
    assert "hash" not in r.text
    assert "CRYPT" not in r.text

    r = await api.call(
        "admin",
        "PATCH",
        "/api/v1/users/alice@example.org",
        json={"quota": 42, "services": ["imap"], "display_name": "Alice"},
        headers={"If-Match": '"1"'},
    )
    assert r.status_code == 200, r.text
    assert r.json()["services"] == ["imap"]
    assert r.json()["quota"] == 42

    r = await api.call(
        "admin",
        "PUT",
        "/api/v1/users/alice@example.org/password",
        json={"password": "new passphrase 2"},
    )
    assert r.status_code == 204
    assert r.headers["etag"] == '"3"'
    assert await _login(api, "alice@example.org", "alice passphrase 1") is Outcome.MISMATCH
    assert await _login(api, "alice@example.org", "new passphrase 2") is Outcome.OK

    for bad in ("{NOSUCH}abc", "{SSHA512}###", "$9$nothing", "plain text"):
        r = await api.call(
            "admin",
            "POST",
            "/api/v1/users/alice@example.org/password-hash",
            json={"password_hash": bad},
        )
        assert r.status_code == 422, (bad, r.text)
        assert r.headers["content-type"] == PROBLEM
    stored = api.runtime.hasher.hash("imported-pw")
    r = await api.call(
        "admin",
        "POST",
        "/api/v1/users/alice@example.org/password-hash",
        json={"password_hash": stored},
    )
    assert r.status_code == 204, r.text
    assert await _login(api, "alice@example.org", "imported-pw") is Outcome.OK

    r = await api.call("admin", "GET", "/api/v1/domains/example.org/users")
    assert [u["address"] for u in r.json()["items"]] == ["alice@example.org"]

    r = await api.call("admin", "DELETE", "/api/v1/users/alice@example.org")
    assert r.status_code == 204
    r = await api.call("admin", "GET", "/api/v1/users/alice@example.org")
    assert r.status_code == 404
    assert await _login(api, "alice@example.org", "imported-pw") is Outcome.UNKNOWN_USER


async def test_disable_and_password_change_apply_to_auth_at_once(api: Api) -> None:
    await _domain(api)
    await _user(api, "bob@example.org", "first passphrase")
    assert await _login(api, "bob@example.org", "first passphrase") is Outcome.OK  # now cached
    r = await api.call("admin", "PATCH", "/api/v1/users/bob@example.org", json={"enabled": False})
    assert r.status_code == 200
    assert await _login(api, "bob@example.org", "first passphrase") is Outcome.DISABLED
    r = await api.call("admin", "PATCH", "/api/v1/users/bob@example.org", json={"enabled": True})
    assert await _login(api, "bob@example.org", "first passphrase") is Outcome.OK
    r = await api.call(
        "admin",
        "PUT",
        "/api/v1/users/bob@example.org/password",
        json={"password": "second passphrase"},
    )
    assert r.status_code == 204
    assert await _login(api, "bob@example.org", "first passphrase") is Outcome.MISMATCH
    r = await api.call("admin", "PATCH", "/api/v1/domains/example.org", json={"enabled": False})
    assert await _login(api, "bob@example.org", "second passphrase") is Outcome.DISABLED


async def test_alias_crud_catchall_and_multiple_destinations(api: Api) -> None:
    await _domain(api)
    await _user(api, "carol@example.org")
    r = await api.call(
        "admin",
        "POST",
        "/api/v1/domains/example.org/aliases",
        json={"source": "Team", "destinations": ["carol@example.org", "x@elsewhere.test"]},
    )
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/api/v1/aliases/team@example.org"
    assert r.json()["destinations"] == ["carol@example.org", "x@elsewhere.test"]

    r = await api.call(
        "admin",
        "POST",
        "/api/v1/domains/example.org/aliases",
        json={"source": "@example.org", "destinations": ["carol@example.org"]},
    )
    assert r.status_code == 201, r.text
    r = await api.call("admin", "GET", "/api/v1/aliases/@example.org")
    assert r.status_code == 200
    assert r.json()["source"] == "@example.org"

    r = await api.call(
        "admin",
        "POST",
        "/api/v1/domains/example.org/aliases",
        json={"source": "team@other.test", "destinations": ["carol@example.org"]},
    )
    assert r.status_code == 422

    r = await api.call(
        "admin",
        "PATCH",
        "/api/v1/aliases/team@example.org",
        json={"destinations": ["carol@example.org"], "enabled": False},
        headers={"If-Match": '"1"'},
    )
    assert r.status_code == 200
    assert r.json()["enabled"] is False
    r = await api.call("admin", "GET", "/api/v1/domains/example.org/aliases?limit=1")
    page = r.json()
    assert len(page["items"]) == 1
    assert page["next_cursor"]
    r = await api.call(
        "admin",
        "GET",
        "/api/v1/domains/example.org/aliases",
        params={"limit": 1, "cursor": page["next_cursor"]},
    )
    assert len(r.json()["items"]) == 1
    for source in ("team@example.org", "@example.org"):
        r = await api.call("admin", "DELETE", f"/api/v1/aliases/{source}")
        assert r.status_code == 204
    r = await api.call("admin", "GET", "/api/v1/aliases/team@example.org")
    assert r.status_code == 404


async def test_listing_pages_with_cursor_prefix_and_limit(api: Api) -> None:
    await _domain(api)
    for i in range(7):
        await _user(api, f"u{i}@example.org")
    await _user(api, "zed@example.org")
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, object] = {"limit": 3, "prefix": "u"}
        if cursor:
            params["cursor"] = cursor
        r = await api.call("admin", "GET", "/api/v1/domains/example.org/users", params=params)
        assert r.status_code == 200
        body = r.json()
        assert len(body["items"]) <= 3
        seen += [u["address"] for u in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"u{i}@example.org" for i in range(7)]
    r = await api.call("admin", "GET", "/api/v1/domains/example.org/users?limit=1000000")
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["query", "limit"]
    r = await api.call("admin", "GET", "/api/v1/domains/example.org/users?limit=0")
    assert r.status_code == 422


async def test_tokens_create_list_revoke(api: Api) -> None:
    await _domain(api)
    r = await api.call(
        "admin",
        "POST",
        "/api/v1/tokens",
        json={"name": "helpdesk", "scope": "domain_admin", "domains": ["Example.org"]},
    )
    assert r.status_code == 201, r.text
    created = r.json()
    secret = created["token"]
    assert secret.startswith(f"idsvc_{created['id']}_")
    assert r.headers["location"] == f"/api/v1/tokens/{created['id']}"
    assert created["domains"] == ["example.org"]

    r = await api.call("admin", "GET", "/api/v1/tokens")
    listed = {t["id"]: t for t in r.json()["items"]}
    assert created["id"] in listed
    assert "token" not in listed[created["id"]]
    assert secret not in r.text

    headers = {"Authorization": f"Bearer {secret}"}
    r = await api.client.get("/api/v1/domains/example.org", headers=headers)
    assert r.status_code == 200
    r = await api.call("admin", "DELETE", f"/api/v1/tokens/{created['id']}")
    assert r.status_code == 204
    r = await api.client.get("/api/v1/domains/example.org", headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = await api.call("admin", "GET", f"/api/v1/tokens/{created['id']}")
    assert r.json()["revoked"] is not None

    r = await api.call(
        "admin", "POST", "/api/v1/tokens", json={"name": "x", "scope": "domain_admin"}
    )
    assert r.status_code == 422
    r = await api.call("admin", "POST", "/api/v1/tokens", json={"name": "x", "scope": "root"})
    assert r.status_code == 422


async def test_audit_trail_records_changes_and_pages(api: Api) -> None:
    await _domain(api)
    await _user(api, "dave@example.org", "dave passphrase")
    r = await api.call("admin", "PATCH", "/api/v1/users/dave@example.org", json={"quota": 7})
    assert r.status_code == 200
    r = await api.call("admin", "GET", "/api/v1/audit", params={"target": "dave@example.org"})
    assert r.status_code == 200
    items = r.json()["items"]
    assert [i["action"] for i in items] == ["account.update", "account.create"]
    assert all(i["actor"] == api.infos["admin"].actor for i in items)
    assert "dave passphrase" not in r.text
    assert "CRYPT" not in r.text
    assert items[0]["detail"]["after"]["quota"] == 7

    r = await api.call("admin", "GET", "/api/v1/audit", params={"action": "account.*", "limit": 1})
    first = r.json()
    assert len(first["items"]) == 1
    assert first["next_cursor"]
    r = await api.call(
        "admin",
        "GET",
        "/api/v1/audit",
        params={"action": "account.*", "limit": 1, "cursor": first["next_cursor"]},
    )
    assert r.json()["items"][0]["id"] < first["items"][0]["id"]
    r = await api.call("admin", "GET", "/api/v1/audit", params={"since": "2999-01-01T00:00:00Z"})
    assert r.json()["items"] == []
    r = await api.call("admin", "GET", "/api/v1/audit", params={"since": "2020-01-01T00:00:00"})
    assert r.status_code == 422


async def test_auth_test_route(api: Api) -> None:
    await _domain(api)
    await _user(api, "erin@example.org", "erin passphrase")
    r = await api.call(
        "admin",
        "POST",
        "/api/v1/auth/test",
        json={"login": "Erin@example.org", "password": "erin passphrase"},
    )
    assert r.status_code == 200
    assert r.json() == {"outcome": "ok", "user": "erin@example.org"}
    r = await api.call(
        "admin", "POST", "/api/v1/auth/test", json={"login": "erin@example.org", "password": "no"}
    )
    assert r.json() == {"outcome": "mismatch", "user": None}


async def test_ops_routes(api: Api) -> None:
    r = await api.client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    r = await api.client.get("/readyz")
    assert r.status_code == 200
    await _domain(api)
    r = await api.client.get("/metrics")  # not loopback: needs a token
    assert r.status_code == 401
    r = await api.call("admin", "GET", "/metrics")
    assert r.status_code == 200
    created = [
        line
        for line in r.text.splitlines()
        if line.startswith("idsvc_api_requests_total{") and 'route="/api/v1/domains"' in line
    ]
    assert any('status="201"' in line and 'method="POST"' in line for line in created)
    assert "example.org" not in r.text
    api.runtime.dropped_counter = lambda: 7  # e.g. the sum over the workers' shared counters
    r = await api.call("admin", "GET", "/metrics")
    assert "\nidsvc_audit_dropped 7.0\n" in r.text
