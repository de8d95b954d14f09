"""SCIM /Users and /Groups through the app, on both directory backends (embedded and slapd)."""

from __future__ import annotations

import asyncio
from typing import Any

from idsvc.auth.request import AuthRequest, Outcome
from idsvc.model import Secret, utcnow
from tests.api.conftest import Api

SCIM = "application/scim+json"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


async def scim(
    api: Api, role: str | None, method: str, path: str, body: Any = None, **kw: Any
) -> Any:
    headers = dict(kw.pop("headers", {}))
    if body is not None:
        headers.setdefault("Content-Type", SCIM)
        kw["content"] = __import__("json").dumps(body)
    return await api.call(role, method, f"/scim/v2{path}", headers=headers, **kw)


async def _domain(api: Api, name: str = "example.org") -> None:
    r = await api.call("admin", "POST", "/api/v1/domains", json={"name": name})
    assert r.status_code == 201, r.text


async def _patch(api: Api, path: str, *operations: dict[str, Any]) -> Any:
    """A SCIM PatchOp of ``operations`` on ``path``, as admin."""
    return await scim(api, "admin", "PATCH", path, {"schemas": [PATCH], "Operations": operations})


def _user(user_name: str, /, **extra: Any) -> dict[str, Any]:
    return {"schemas": [USER], "userName": user_name, **extra}


async def _login(api: Api, login: str, password: str) -> Outcome:
    result = await api.runtime.authenticator.authenticate(
        AuthRequest(login=login, password=Secret(password), service="imap", secured=True)
    )
    return result.outcome


async def test_user_lifecycle(api: Api) -> None:
    await _domain(api)
    r = await scim(
        api,
        "admin",
        "POST",
        "/Users",
        _user(
            "Alice@Example.ORG",
            password="alice passphrase 1",
            displayName="Alice",
            externalId="okta-1",
            name={"givenName": "Alice", "familyName": "Liddell"},
            emails=[{"value": "alice@home.example", "type": "home"}],
            active=True,
            **{ENTERPRISE: {"department": "Mail"}},
        ),
    )
    assert r.status_code == 201, r.text
    assert r.headers["content-type"].startswith(SCIM)
    body = r.json()
    assert body["id"] == "alice@example.org"
    assert body["userName"] == "alice@example.org"
    assert "password" not in body
    assert body["externalId"] == "okta-1"
    assert body[ENTERPRISE] == {"department": "Mail"}
    assert body["meta"]["resourceType"] == "User"
    assert body["meta"]["location"] == "http://idsvc.test/scim/v2/Users/alice@example.org"
    assert r.headers["location"] == body["meta"]["location"]
    assert r.headers["etag"] == body["meta"]["version"]
    assert await _login(api, "alice@example.org", "alice passphrase 1") is Outcome.OK

    r = await scim(api, "admin", "GET", "/Users/alice@example.org")
    assert r.status_code == 200
    assert r.json()["name"] == {"givenName": "Alice", "familyName": "Liddell"}

    # Entra ID style: boolean as a string, no path, dotted keys
    r = await _patch(
        api,
        "/Users/alice@example.org",
        {"op": "Replace", "path": "active", "value": "False"},
        {"op": "replace", "value": {"name.givenName": "Alicia", "displayName": "A."}},
    )
    assert r.status_code == 200, r.text
    assert r.json()["active"] is False
    assert r.json()["name"]["givenName"] == "Alicia"
    assert r.json()["displayName"] == "A."
    assert await _login(api, "alice@example.org", "alice passphrase 1") is Outcome.DISABLED

    r = await _patch(api, "/Users/alice@example.org", {"op": "replace", "value": {"active": True}})
    assert r.json()["active"] is True
    # password change by PATCH; never echoed
    r = await _patch(
        api,
        "/Users/alice@example.org",
        {"op": "add", "path": "password", "value": "alice passphrase 2"},
    )
    assert r.status_code == 200
    assert "passphrase 2" not in r.text
    assert await _login(api, "alice@example.org", "alice passphrase 2") is Outcome.OK

    # PUT replaces the SCIM-only attributes
    etag = r.headers["etag"]
    r = await scim(
        api,
        "admin",
        "PUT",
        "/Users/alice@example.org",
        _user("alice@example.org", displayName="Alice L", externalId="okta-1"),
        headers={"If-Match": etag},
    )
    assert r.status_code == 200, r.text
    assert "name" not in r.json()
    assert "emails" not in r.json()
    assert r.json()["displayName"] == "Alice L"
    r2 = await scim(
        api,
        "admin",
        "PUT",
        "/Users/alice@example.org",
        _user("alice@example.org"),
        headers={"If-Match": etag},
    )
    assert r2.status_code == 412
    assert r2.json()["schemas"] == [ERROR]
    assert r2.json()["status"] == "412"

    # userName cannot change
    r = await scim(api, "admin", "PUT", "/Users/alice@example.org", _user("bob@example.org"))
    assert r.status_code == 400
    assert r.json()["scimType"] == "mutability"

    r = await scim(api, "admin", "DELETE", "/Users/alice@example.org")
    assert r.status_code == 204
    r = await scim(api, "admin", "GET", "/Users/alice@example.org")
    assert r.status_code == 404
    assert r.json() == {"schemas": [ERROR], "status": "404", "detail": r.json()["detail"]}


async def test_create_errors(api: Api) -> None:
    await _domain(api)
    r = await scim(
        api, "admin", "POST", "/Users", _user("a@example.org", password="x passphrase x")
    )
    assert r.status_code == 201
    r = await scim(
        api, "admin", "POST", "/Users", _user("A@example.org", password="x passphrase x")
    )
    assert r.status_code == 409
    assert r.json()["scimType"] == "uniqueness"
    r = await scim(api, "admin", "POST", "/Users", _user("b@elsewhere.example"))
    assert r.status_code == 400
    assert r.json()["scimType"] == "invalidValue"
    r = await scim(api, "admin", "POST", "/Users", _user("not an address"))
    assert r.status_code == 400
    r = await scim(api, "admin", "POST", "/Users", {"schemas": [USER]})
    assert r.status_code == 400
    r = await scim(api, "admin", "POST", "/Users", _user("c@example.org", active="maybe"))
    assert r.status_code == 400
    r = await api.call(
        "admin", "POST", "/scim/v2/Users", content=b"{", headers={"Content-Type": SCIM}
    )
    assert r.status_code == 400
    assert r.json()["scimType"] == "invalidSyntax"
    r = await api.call(
        "admin", "POST", "/scim/v2/Users", content=b"<x/>", headers={"Content-Type": "text/xml"}
    )
    assert r.status_code == 415
    assert r.json()["schemas"] == [ERROR]
    # plain application/json is accepted too
    r = await api.call("admin", "POST", "/scim/v2/Users", json=_user("d@example.org"))
    assert r.status_code == 201, r.text
    # no password given: the account exists but no password works until one is set
    assert await _login(api, "d@example.org", "") is not Outcome.OK


async def test_auth_and_scopes(api: Api) -> None:
    await _domain(api)
    await _domain(api, "other.example")
    for name in ("a@example.org", "b@other.example"):
        r = await scim(api, "admin", "POST", "/Users", _user(name, password="a good passphrase"))
        assert r.status_code == 201
    r = await scim(api, None, "GET", "/Users")
    assert r.status_code == 401
    assert r.json()["schemas"] == [ERROR]
    assert r.headers["www-authenticate"].startswith("Bearer")
    await api.token("dadmin", "domain_admin", ("example.org",))
    await api.token("reader", "read_only")
    r = await scim(api, "dadmin", "GET", "/Users")
    assert [u["userName"] for u in r.json()["Resources"]] == ["a@example.org"]
    assert r.json()["totalResults"] == 1
    r = await scim(api, "dadmin", "GET", "/Users/b@other.example")
    assert r.status_code == 404
    r = await scim(
        api, "dadmin", "GET", "/Users", params={"filter": 'userName eq "b@other.example"'}
    )
    assert r.json()["totalResults"] == 0
    r = await scim(api, "dadmin", "POST", "/Users", _user("c@other.example"))
    assert r.status_code == 404
    r = await scim(api, "dadmin", "POST", "/Users", _user("c@example.org"))
    assert r.status_code == 201
    r = await scim(api, "reader", "GET", "/Users")
    assert r.json()["totalResults"] == 3
    # a token over two domains pages through both in one stable order
    await api.token("both", "domain_admin", ("example.org", "other.example"))
    seen = []
    for start in (1, 2, 3, 4):
        r = await scim(api, "both", "GET", "/Users", params={"startIndex": start, "count": 1})
        assert r.json()["totalResults"] == 3
        seen += [u["id"] for u in r.json()["Resources"]]
    assert seen == ["a@example.org", "c@example.org", "b@other.example"]
    r = await scim(api, "reader", "DELETE", "/Users/a@example.org")
    assert r.status_code == 403
    r = await scim(api, "reader", "POST", "/Users", _user("e@example.org"))
    assert r.status_code == 403


async def test_list_paging_and_filters(api: Api) -> None:
    await _domain(api)
    for i in range(7):
        r = await scim(
            api,
            "admin",
            "POST",
            "/Users",
            _user(
                f"u{i}@example.org",
                externalId=f"ext-{i}",
                active=i % 2 == 0,
                emails=[{"value": f"u{i}@work.example", "type": "work"}],
            ),
        )
        assert r.status_code == 201, r.text

    async def query(**params: Any) -> Any:
        r = await scim(api, "admin", "GET", "/Users", params=params)
        assert r.status_code == 200, r.text
        return r.json()

    page = await query(startIndex=3, count=2)
    assert page["totalResults"] == 7
    assert page["startIndex"] == 3
    assert page["itemsPerPage"] == 2
    assert [u["id"] for u in page["Resources"]] == ["u2@example.org", "u3@example.org"]
    assert (await query(count=0))["Resources"] == []
    assert (await query(count=10_000))["itemsPerPage"] == 7
    cases = [
        ('userName eq "U3@example.org"', ["u3@example.org"]),
        ('externalId eq "ext-4"', ["u4@example.org"]),
        ('externalId eq "EXT-4"', []),
        ('emails[type eq "work"].value eq "u5@work.example"', ["u5@example.org"]),
        ('emails[type eq "home"].value eq "u5@work.example"', []),
        ('emails.value eq "u6@WORK.example"', ["u6@example.org"]),
        ("active eq false", ["u1@example.org", "u3@example.org", "u5@example.org"]),
        ('active eq true and userName sw "u4"', ["u4@example.org"]),
        (
            'userName eq "u1@example.org" or externalId eq "ext-2"',
            ["u1@example.org", "u2@example.org"],
        ),
        ('not (active eq true) and externalId eq "ext-1"', ["u1@example.org"]),
    ]
    for expr, expected in cases:
        got = await query(filter=expr)
        assert [u["id"] for u in got["Resources"]] == expected, expr
        assert got["totalResults"] == len(expected)
    r = await scim(api, "admin", "GET", "/Users", params={"filter": 'userName eq "x'})
    assert r.status_code == 400
    assert r.json()["scimType"] == "invalidFilter"
    r = await scim(api, "admin", "GET", "/Users", params={"filter": "x" * 2000})
    assert r.json()["scimType"] == "invalidFilter"
    # attributes / excludedAttributes
    got = await query(filter='externalId eq "ext-1"', attributes="userName")
    assert set(got["Resources"][0]) == {"id", "schemas", "userName"}
    got = await query(filter='externalId eq "ext-1"', excludedAttributes="emails,meta")
    assert "emails" not in got["Resources"][0]
    assert "meta" not in got["Resources"][0]
    # POST /.search
    r = await scim(
        api,
        "admin",
        "POST",
        "/Users/.search",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter": "active eq true",
            "count": 2,
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["totalResults"] == 4
    assert len(r.json()["Resources"]) == 2


async def test_groups(api: Api) -> None:
    await _domain(api)
    for name in ("a@example.org", "b@example.org"):
        assert (await scim(api, "admin", "POST", "/Users", _user(name))).status_code == 201
    # created empty (as Okta and Entra do), then members arrive by PATCH
    r = await scim(
        api,
        "admin",
        "POST",
        "/Groups",
        {"schemas": [GROUP], "displayName": "Team@example.org", "externalId": "g-1"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["id"] == "team@example.org"
    assert "members" not in r.json()
    r = await scim(api, "admin", "GET", "/Groups/team@example.org")
    assert r.status_code == 200
    assert r.json()["externalId"] == "g-1"
    r = await api.call("admin", "GET", "/api/v1/aliases/team@example.org")
    assert r.status_code == 404  # no alias until there is a destination
    r = await _patch(
        api,
        "/Groups/team@example.org",
        {
            "op": "Add",
            "path": "members",
            "value": [{"value": "a@example.org"}, {"value": "b@example.org"}],
        },
    )
    assert r.status_code == 200, r.text
    assert [m["value"] for m in r.json()["members"]] == ["a@example.org", "b@example.org"]
    r = await api.call("admin", "GET", "/api/v1/aliases/team@example.org")
    assert r.json()["destinations"] == ["a@example.org", "b@example.org"]
    # an external forward stays when SCIM changes members
    r = await api.call(
        "admin",
        "PATCH",
        "/api/v1/aliases/team@example.org",
        json={"destinations": ["a@example.org", "b@example.org", "ext@far.example"]},
    )
    assert r.status_code == 200, r.text
    r = await _patch(
        api,
        "/Groups/team@example.org",
        {"op": "remove", "path": 'members[value eq "a@example.org"]'},
    )
    assert r.status_code == 200, r.text
    assert [m["value"] for m in r.json()["members"]] == ["b@example.org"]
    r = await api.call("admin", "GET", "/api/v1/aliases/team@example.org")
    assert sorted(r.json()["destinations"]) == ["b@example.org", "ext@far.example"]
    # Entra style removal with a value list
    r = await _patch(
        api,
        "/Groups/team@example.org",
        {"op": "Remove", "path": "members", "value": [{"value": "b@example.org"}]},
    )
    assert r.status_code == 200
    assert "members" not in r.json()
    r = await _patch(
        api,
        "/Groups/team@example.org",
        {"op": "add", "path": "members", "value": [{"value": "nobody@example.org"}]},
    )
    assert r.status_code == 400
    r = await scim(
        api, "admin", "GET", "/Groups", params={"filter": 'displayName eq "team@example.org"'}
    )
    assert r.json()["totalResults"] == 1
    r = await scim(api, "admin", "GET", "/Groups", params={"filter": 'externalId eq "g-1"'})
    assert [g["id"] for g in r.json()["Resources"]] == ["team@example.org"]
    r = await scim(api, "admin", "POST", "/Groups", {"schemas": [GROUP], "displayName": "Sales"})
    assert r.status_code == 400
    r = await scim(
        api, "admin", "POST", "/Groups", {"schemas": [GROUP], "displayName": "a@example.org"}
    )
    assert r.status_code == 409
    r = await scim(api, "admin", "DELETE", "/Groups/team@example.org")
    assert r.status_code == 204
    r = await scim(api, "admin", "GET", "/Groups/team@example.org")
    assert r.status_code == 404
    assert (await api.call("admin", "GET", "/api/v1/aliases/team@example.org")).status_code == 404


async def test_discovery_and_unknown_paths(api: Api) -> None:
    r = await scim(api, "admin", "GET", "/ServiceProviderConfig")
    assert r.status_code == 200
    assert r.json()["patch"]["supported"] is True
    r = await scim(api, "admin", "GET", "/ResourceTypes")
    assert {t["id"] for t in r.json()["Resources"]} == {"User", "Group"}
    r = await scim(api, "admin", "GET", "/Schemas")
    assert len(r.json()["Resources"]) == 3
    r = await scim(api, "admin", "GET", f"/Schemas/{USER}")
    assert r.json()["id"] == USER
    r = await scim(api, "admin", "DELETE", "/Schemas")
    assert r.status_code == 405
    r = await scim(api, "admin", "GET", "/Nope")
    assert r.status_code == 404
    assert r.json()["schemas"] == [ERROR]
    r = await scim(api, "admin", "POST", "/.search", {"schemas": []})
    assert r.status_code == 501


async def test_writes_are_audited_and_stale_rows_ignored(api: Api) -> None:
    await _domain(api)
    r = await scim(api, "admin", "POST", "/Users", _user("a@example.org", externalId="x-1"))
    assert r.status_code == 201
    await api.state.flush_audit()
    events = await api.state.query_audit(action="account.create", target="a@example.org")
    assert [e.actor for e in events.items] == [api.infos["admin"].actor]
    assert "password" not in str(events.items[0].detail)
    # deleted and re-created outside SCIM: the old externalId must not come back. Rows are tied
    # to the account's creation time, which directories keep in whole seconds: re-create later.
    assert (await api.call("admin", "DELETE", "/api/v1/users/a@example.org")).status_code == 204
    first = utcnow()
    while utcnow() == first:
        await asyncio.sleep(0.05)
    r = await api.call(
        "admin",
        "POST",
        "/api/v1/domains/example.org/users",
        json={"address": "a@example.org", "password": "a passphrase 1"},
    )
    assert r.status_code == 201
    r = await scim(api, "admin", "GET", "/Users/a@example.org")
    assert "externalId" not in r.json()
    r = await scim(api, "admin", "GET", "/Users", params={"filter": 'externalId eq "x-1"'})
    assert r.json()["totalResults"] == 0


async def test_group_members_only_when_shown(api: Api) -> None:
    await _domain(api)
    assert (await scim(api, "admin", "POST", "/Users", _user("a@example.org"))).status_code == 201
    r = await scim(
        api,
        "admin",
        "POST",
        "/Groups",
        {
            "schemas": [GROUP],
            "displayName": "l@example.org",
            "members": [{"value": "a@example.org"}],
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["members"][0]["$ref"].endswith("/scim/v2/Users/a@example.org")
    for params in ({"excludedAttributes": "members"}, {"attributes": "displayName"}):
        r = await scim(api, "admin", "GET", "/Groups/l@example.org", params=params)
        assert "members" not in r.json()
        assert r.json()["id"] == "l@example.org"
        r = await scim(api, "admin", "GET", "/Groups", params=params)
        assert r.json()["totalResults"] == 1
        assert "members" not in r.json()["Resources"][0]
    r = await scim(
        api,
        "admin",
        "GET",
        "/Groups",
        params={"filter": 'members[value eq "a@example.org"]', "excludedAttributes": "members"},
    )
    assert [g["id"] for g in r.json()["Resources"]] == ["l@example.org"]
    assert "members" not in r.json()["Resources"][0]
    st = (api.state.path.parent / "scim.db").stat()
    assert st.st_mode & 0o777 == 0o600
