"""The HTTP contract under hostile input: injection strings in every field, body size and
content type limits, malformed JSON, unknown fields, conditional writes and concurrent creates.
Nothing may answer 5xx; every error is problem+json."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import quote

from tests.api.conftest import Api

PROBLEM = "application/problem+json"

HOSTILE = [
    "*",
    "a*b",
    "*)(uid=*",
    "a)(|(objectClass=*)",
    "\\2a",
    "cn=admin,dc=idsvc,dc=test",
    "a,b+c=d",
    "#lead",
    " padded ",
    "<b>x</b>",
    '"quoted"',
    "a\r\nX-Injected: 1",
    "line\nfeed",
    "nul\x00byte",
    "\u212aelvin",  # KELVIN SIGN, lower-cases to "k"
    "d\u0131ck",  # dotless i
    "\uff41dmin",  # fullwidth a
    "b\u00fccher",
    "xn--bcher-kva",
    "xn--zz",
    "../../etc/passwd",
    "%2e%2e%2f",
    "a" * 300,
    "",
]


def _ok(r_status: int, content_type: str) -> bool:
    if r_status >= 500:
        return False
    return r_status < 400 or content_type == PROBLEM


async def _base(api: Api) -> None:
    r = await api.call("admin", "POST", "/api/v1/domains", json={"name": "own.test"})
    assert r.status_code == 201
    r = await api.call(
        "admin",
        "POST",
        "/api/v1/domains/own.test/users",
        json={"address": "kelvin@own.test", "password": "kelvin passphrase"},
    )
    assert r.status_code == 201


async def test_hostile_strings_in_every_field(api: Api) -> None:
    await _base(api)
    bad: list[tuple[str, str, int]] = []

    async def probe(what: str, method: str, path: str, **kw: object) -> int:
        r = await api.call("admin", method, path, **kw)
        if not _ok(r.status_code, r.headers.get("content-type", "")):
            bad.append((what, repr(kw)[:120], r.status_code))
        return r.status_code

    for s in HOSTILE:
        await probe("domain.name", "POST", "/api/v1/domains", json={"name": s + ".test"})
        await probe(
            "domain.description", "PATCH", "/api/v1/domains/own.test", json={"description": s}
        )
        await probe(
            "domain.alias", "PATCH", "/api/v1/domains/own.test", json={"alias_domains": [s]}
        )
        await probe(
            "user.address",
            "POST",
            "/api/v1/domains/own.test/users",
            json={"address": s, "password": "a good passphrase"},
        )
        await probe(
            "user.display_name", "PATCH", "/api/v1/users/kelvin@own.test", json={"display_name": s}
        )
        await probe(
            "user.password",
            "PUT",
            "/api/v1/users/kelvin@own.test/password",
            json={"password": s or "x"},
        )
        await probe(
            "user.password_hash",
            "POST",
            "/api/v1/users/kelvin@own.test/password-hash",
            json={"password_hash": s},
        )
        await probe(
            "alias.source",
            "POST",
            "/api/v1/domains/own.test/aliases",
            json={"source": s, "destinations": ["kelvin@own.test"]},
        )
        await probe(
            "alias.destination",
            "POST",
            "/api/v1/domains/own.test/aliases",
            json={"source": "fwd", "destinations": [s]},
        )
        await probe("token.name", "POST", "/api/v1/tokens", json={"name": s, "scope": "read_only"})
        await probe(
            "token.domains",
            "POST",
            "/api/v1/tokens",
            json={"name": "t", "scope": "read_only", "domains": [s]},
        )
        await probe("auth.login", "POST", "/api/v1/auth/test", json={"login": s, "password": "x"})
        quoted = quote(s, safe="")
        await probe("path.user", "GET", f"/api/v1/users/{quoted}@own.test")
        await probe("path.domain", "GET", f"/api/v1/domains/{quoted}")
        await probe("path.alias", "GET", f"/api/v1/aliases/{quoted}")
        await probe("path.token", "GET", f"/api/v1/tokens/{quoted}")
        for param in ("prefix", "cursor"):
            await probe(
                f"query.{param}", "GET", "/api/v1/domains/own.test/users", params={param: s}
            )
            await probe(
                f"query.{param}.aliases",
                "GET",
                "/api/v1/domains/own.test/aliases",
                params={param: s},
            )
        await probe("query.domains.cursor", "GET", "/api/v1/domains", params={"cursor": s})
        await probe(
            "query.audit", "GET", "/api/v1/audit", params={"actor": s, "target": s, "action": s}
        )
        await probe("query.audit.cursor", "GET", "/api/v1/audit", params={"cursor": s})
        header = s.encode() if not {"\r", "\n", "\x00"} & set(s) else b"x"
        await probe(
            "header.if-match",
            "PATCH",
            "/api/v1/users/kelvin@own.test",
            json={"quota": 1},
            headers={"If-Match": header},
        )
    assert bad == []

    # look-alikes never fold onto the ASCII account; wildcards never match other entries
    r = await api.call("admin", "GET", "/api/v1/users/" + quote("\u212aelvin@own.test"))
    assert r.status_code == 422
    r = await api.call("admin", "GET", "/api/v1/users/k*@own.test")
    assert r.status_code == 404  # not a wildcard for kelvin@
    r = await api.call("admin", "GET", "/api/v1/users/*@own.test")
    assert r.status_code == 200  # "*" is a legal local part (atext) and was created literally
    assert r.json()["address"] == "*@own.test"
    r = await api.call("admin", "GET", "/api/v1/domains/own.test/users", params={"limit": 1000})
    addresses = {u["address"] for u in r.json()["items"]}
    assert "kelvin@own.test" in addresses
    assert all(a.isascii() and a.endswith("@own.test") for a in addresses)
    r = await api.call("admin", "GET", "/api/v1/domains", params={"limit": 1000})
    names = {d["name"] for d in r.json()["items"]}
    assert "xn--bcher-kva.test" in names  # the IDN was stored as its A-label
    assert all(n.isascii() for n in names)
    r = await api.call("admin", "GET", "/api/v1/domains/b%C3%BCcher.test")
    assert r.json()["name"] == "xn--bcher-kva.test"


async def test_body_size_limit(api: Api) -> None:
    limit = api.settings.api.max_body
    big = {"name": "own.test", "description": "x" * (limit + 10)}
    r = await api.call("admin", "POST", "/api/v1/domains", json=big)
    assert r.status_code == 413
    assert r.headers["content-type"] == PROBLEM

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "own.test", "description": "'
        for _ in range(limit // 65536 + 2):
            yield b"y" * 65536
        yield b'"}'

    r = await api.call(
        "admin",
        "POST",
        "/api/v1/domains",
        content=chunks(),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413
    r = await api.call("admin", "GET", "/api/v1/domains/own.test")
    assert r.status_code == 404  # nothing was created


async def test_content_types_and_malformed_bodies(api: Api) -> None:
    await _base(api)
    body = b'{"name": "ct.test"}'
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/xml", ""):
        r = await api.call(
            "admin", "POST", "/api/v1/domains", content=body, headers={"Content-Type": ctype}
        )
        assert r.status_code == 415, ctype
        assert r.headers["content-type"] == PROBLEM
    r = await api.call(
        "admin",
        "PATCH",
        "/api/v1/users/kelvin@own.test",
        content=b'{"quota": 5}',
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 200
    r = await api.call(
        "admin",
        "POST",
        "/api/v1/domains",
        content=b'{"name": ',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert r.headers["content-type"] == PROBLEM
    for payload in ([], "string", 5, None):
        r = await api.call("admin", "POST", "/api/v1/domains", json=payload)
        assert r.status_code == 422, payload
    r = await api.call("admin", "POST", "/api/v1/domains", json={"name": "x.test", "admin": 1})
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "admin"]
    r = await api.call(
        "admin", "PATCH", "/api/v1/users/kelvin@own.test", json={"password_hash": "{PLAIN}x"}
    )
    assert r.status_code == 422
    r = await api.call(
        "admin", "POST", "/api/v1/domains", json={"name": "q.test", "default_quota": -1}
    )
    assert r.status_code == 422


async def test_conditional_writes(api: Api) -> None:
    await _base(api)
    r = await api.call("admin", "GET", "/api/v1/users/kelvin@own.test")
    tag = r.headers["etag"]
    r = await api.call(
        "admin",
        "PATCH",
        "/api/v1/users/kelvin@own.test",
        json={"quota": 1},
        headers={"If-Match": tag},
    )
    assert r.status_code == 200
    new_tag = r.headers["etag"]
    for stale in (tag, f"W/{new_tag}", '"999"', "garbage"):
        r = await api.call(
            "admin",
            "PATCH",
            "/api/v1/users/kelvin@own.test",
            json={"quota": 2},
            headers={"If-Match": stale},
        )
        assert r.status_code == 412, stale
    r = await api.call(
        "admin",
        "PUT",
        "/api/v1/users/kelvin@own.test/password",
        json={"password": "a new passphrase"},
        headers={"If-Match": tag},
    )
    assert r.status_code == 412
    r = await api.call(
        "admin",
        "PATCH",
        "/api/v1/users/kelvin@own.test",
        json={"quota": 3},
        headers={"If-Match": f'"0", {new_tag}'},
    )
    assert r.status_code == 200
    r = await api.call(
        "admin", "DELETE", "/api/v1/users/kelvin@own.test", headers={"If-Match": new_tag}
    )
    assert r.status_code == 412
    r = await api.call(
        "admin", "DELETE", "/api/v1/users/kelvin@own.test", headers={"If-Match": "*"}
    )
    assert r.status_code == 204


async def test_concurrent_create_of_one_user(api: Api) -> None:
    await _base(api)

    async def create() -> int:
        r = await api.call(
            "admin",
            "POST",
            "/api/v1/domains/own.test/users",
            json={"address": "race@own.test", "password": "race passphrase"},
        )
        return r.status_code

    codes = await asyncio.gather(*(create() for _ in range(12)))
    assert sorted(codes) == [201] + [409] * 11


async def test_concurrent_conditional_updates(api: Api) -> None:
    await _base(api)
    tag = (await api.call("admin", "GET", "/api/v1/users/kelvin@own.test")).headers["etag"]

    async def update(i: int) -> int:
        r = await api.call(
            "admin",
            "PATCH",
            "/api/v1/users/kelvin@own.test",
            json={"quota": i},
            headers={"If-Match": tag},
        )
        return r.status_code

    codes = await asyncio.gather(*(update(i) for i in range(8)))
    assert sorted(codes) == [200] + [412] * 7
