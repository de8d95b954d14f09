"""The password policy at the REST and SCIM ingresses (hardening item 4), on both backends:
short, over-long, control-character and common passwords are refused with a problem naming the
rule (never the password); hash imports are limited by scheme and role, cleartext and unsalted
ones only through the global-admin migration switch, and a cleartext import is hashed."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from idsvc.api import create_app
from idsvc.auth.request import AuthRequest, Outcome
from idsvc.model import Address, Secret
from tests.api.conftest import Api, build_runtime_over

PROBLEM = "application/problem+json"
POLICY_TYPE = "https://idsvc.invalid/problems/password-policy"
SCIM = "application/scim+json"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
GOOD = "correct horse battery"
MD5_OF_PASSWORD = "{MD5}" + base64.b64encode(hashlib.md5(b"password").digest()).decode()

# (rule named in the detail, password)
BAD_PASSWORDS = [
    ("min_length", "x"),
    ("min_length", "eleven-char"),
    ("min_length", "\U0001f511" * 11),  # code points, not bytes: 44 bytes, 11 characters
    ("max_length", "y" * 1025),
    ("control_characters", "line one\nline two"),
    ("control_characters", "tab\tseparated words"),
    ("control_characters", "carriage return\r"),
    ("control_characters", "delete char \x7f here"),
    ("control_characters", "c1 control \x85 here"),
    ("control_characters", "line separator \u2028 here"),
    ("blocklist", "Password1234"),
    ("blocklist", "QazWsxEdcRfv"),  # case-insensitive
    ("context", "Alice@Example.org"),
]


async def _setup(api: Api) -> None:
    for name in ("example.org", "other.org"):
        r = await api.call("admin", "POST", "/api/v1/domains", json={"name": name})
        assert r.status_code == 201, r.text
    r = await api.call(
        "admin",
        "POST",
        "/api/v1/domains/example.org/users",
        json={"address": "alice", "password": GOOD},
    )
    assert r.status_code == 201, r.text
    await api.token("da", "domain_admin", ("example.org",))


def _assert_policy_problem(r: httpx.Response, rule: str, password: str) -> None:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["type"] == POLICY_TYPE
    assert body["title"] == "Password policy violation"
    assert f"password policy ({rule})" in body["detail"]
    if len(password) > 3:
        assert password not in r.text


async def _login(api: Api, login: str, password: str) -> Outcome:
    result = await api.runtime.authenticator.authenticate(
        AuthRequest(login=login, password=Secret(password), service="imap", secured=True)
    )
    return result.outcome


@pytest.mark.parametrize(("rule", "password"), BAD_PASSWORDS)
async def test_bad_passwords_are_refused_everywhere(api: Api, rule: str, password: str) -> None:
    await _setup(api)
    r = await api.call(
        "da",
        "POST",
        "/api/v1/domains/example.org/users",
        json={"address": "bob", "password": password if rule != "context" else "bob@example.org"},
    )
    _assert_policy_problem(r, rule, password)
    for role in ("admin", "da"):
        r = await api.call(
            role, "PUT", "/api/v1/users/alice@example.org/password", json={"password": password}
        )
        _assert_policy_problem(r, rule, password)
    assert await _login(api, "alice@example.org", GOOD) is Outcome.OK  # unchanged
    r = await api.call("admin", "GET", "/api/v1/users/bob@example.org")
    assert r.status_code == 404


async def test_good_passwords_are_accepted_and_work(api: Api) -> None:
    await _setup(api)
    for password in (
        "twelve chars",  # exactly the minimum, with a space
        "\U0001f511" * 12,  # 12 code points (48 bytes)
        "Пароль-на-русском",
        "z" * 511,  # the most SHA512-CRYPT (these tests' scheme) can hash
        "bidi \u202e and zero\u200bwidth",  # format characters are not control characters
    ):
        r = await api.call(
            "da", "PUT", "/api/v1/users/alice@example.org/password", json={"password": password}
        )
        assert r.status_code == 204, (password[:20], r.text)
        assert await _login(api, "alice@example.org", password) is Outcome.OK


async def test_utf8_byte_limit_keeps_every_settable_password_usable(api: Api) -> None:
    await _setup(api)
    r = await api.call(
        "admin", "PUT", "/api/v1/users/alice@example.org/password", json={"password": "z" * 512}
    )
    _assert_policy_problem(r, "max_length", "z" * 512)
    assert "at most 511 bytes" in r.json()["detail"]  # SHA512-CRYPT's limit
    password = "\U0001f511" * 300  # 300 code points, 1200 bytes > auth.max_password_length
    r = await api.call(
        "admin", "PUT", "/api/v1/users/alice@example.org/password", json={"password": password}
    )
    _assert_policy_problem(r, "max_length", password)
    assert "bytes" in r.json()["detail"]


async def _import(api: Api, role: str, stored: str) -> httpx.Response:
    return await api.call(
        role,
        "POST",
        "/api/v1/users/alice@example.org/password-hash",
        json={"password_hash": stored},
    )


async def test_hash_imports_are_limited_by_scheme_and_role(api: Api) -> None:
    await _setup(api)
    hasher = api.runtime.hasher
    for weak in (MD5_OF_PASSWORD, "{PLAIN}pass-word", "{CLEARTEXT}xyzzy", "{SHA}" + "A" * 27 + "="):
        for role in ("admin", "da"):
            r = await _import(api, role, weak)
            _assert_policy_problem(r, "hash_scheme", weak.partition("}")[2])
        r = await api.call(
            "admin",
            "POST",
            "/api/v1/domains/example.org/users",
            json={"address": "carol", "password_hash": weak},
        )
        _assert_policy_problem(r, "hash_scheme", weak.partition("}")[2])
    assert await _login(api, "alice@example.org", "password") is Outcome.MISMATCH
    assert await _login(api, "alice@example.org", GOOD) is Outcome.OK
    await api.state.flush_audit()
    refused = await api.state.query_audit(action="account.password", target="alice@example.org")
    assert len(refused.items) == 8  # 4 hashes x 2 roles, each audited with the rule only
    for event in refused.items:
        assert event.outcome == "PolicyViolation"
        assert "hash_scheme" in str(event.detail)
        assert "pass-word" not in str(event.detail)
        assert "X03MO1q" not in str(event.detail)

    ssha = hasher.hash("imported salted", "SSHA512")
    r = await _import(api, "da", ssha)
    _assert_policy_problem(r, "hash_scheme", ssha[9:])
    assert "domain admin" in r.json()["detail"]
    r = await _import(api, "admin", ssha)
    assert r.status_code == 204, r.text
    assert await _login(api, "alice@example.org", "imported salted") is Outcome.OK

    slow = hasher.hash("imported slow one", "SHA512-CRYPT")
    r = await _import(api, "da", slow)
    assert r.status_code == 204, r.text
    assert await _login(api, "alice@example.org", "imported slow one") is Outcome.OK
    r = await api.call(
        "da",
        "POST",
        "/api/v1/domains/example.org/users",
        json={"address": "dave", "password_hash": slow},
    )
    assert r.status_code == 201, r.text


@asynccontextmanager
async def _with_passwords(api: Api, **passwords: Any) -> AsyncIterator[Api]:
    """The same directory and state behind an app whose settings change ``passwords``."""
    settings = api.settings.model_copy(
        update={"passwords": api.settings.passwords.model_copy(update=passwords)}
    )
    runtime = await build_runtime_over(settings, api.runtime.directory)
    app = create_app(settings, runtime, api.state)
    transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 40000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://idsvc.test") as c:
            yield Api(app, c, api.state, runtime, settings, api.tokens, api.infos)
    finally:
        app.state.idsvc.close()
        runtime.provisioner.close()
        await runtime.authenticator.close()


async def test_weak_imports_only_for_a_global_admin_with_the_migration_switch(api: Api) -> None:
    await _setup(api)
    async with _with_passwords(api, allow_weak_imports=True) as migrating:
        r = await _import(migrating, "da", MD5_OF_PASSWORD)
        _assert_policy_problem(r, "hash_scheme", MD5_OF_PASSWORD[5:])
        r = await _import(migrating, "da", "{PLAIN}legacy secret")
        _assert_policy_problem(r, "hash_scheme", "legacy secret")

        r = await _import(migrating, "admin", MD5_OF_PASSWORD)
        assert r.status_code == 204, r.text
        assert await _login(migrating, "alice@example.org", "password") is Outcome.OK

        r = await _import(migrating, "admin", "{PLAIN}legacy secret")
        assert r.status_code == 204, r.text
        assert await _login(migrating, "alice@example.org", "legacy secret") is Outcome.OK
        account = await migrating.runtime.directory.find_account(Address.parse("alice@example.org"))
        assert account is not None
        assert account.password_hash is not None
        assert account.password_hash.startswith("{SHA512-CRYPT}$6$")  # hashed, not cleartext
        assert "legacy secret" not in account.password_hash


async def test_policy_settings_apply(api: Api) -> None:
    await _setup(api)
    async with _with_passwords(api, min_length=8, blocklist=False) as relaxed:
        r = await relaxed.call(
            "da", "PUT", "/api/v1/users/alice@example.org/password", json={"password": "password"}
        )
        assert r.status_code == 204, r.text
        r = await relaxed.call(
            "da", "PUT", "/api/v1/users/alice@example.org/password", json={"password": "seven77"}
        )
        _assert_policy_problem(r, "min_length", "seven77")
        assert "at least 8" in r.json()["detail"]


async def _scim(api: Api, method: str, path: str, body: Any) -> httpx.Response:
    return await api.call(
        "da",
        method,
        f"/scim/v2{path}",
        content=json.dumps(body),
        headers={"Content-Type": SCIM},
    )


@pytest.mark.parametrize(("rule", "password"), BAD_PASSWORDS[:11:2])
async def test_scim_create_replace_and_patch_follow_the_policy(
    api: Api, rule: str, password: str
) -> None:
    await _setup(api)

    def refused(r: httpx.Response) -> None:
        assert r.status_code == 400, r.text
        body = r.json()
        assert body["scimType"] == "invalidValue"
        assert f"password policy ({rule})" in body["detail"]
        assert password not in r.text

    refused(
        await _scim(
            api,
            "POST",
            "/Users",
            {"schemas": [USER], "userName": "eve@example.org", "password": password},
        )
    )
    user = {"schemas": [USER], "userName": "alice@example.org", "password": password}
    refused(await _scim(api, "PUT", "/Users/alice@example.org", user))
    patch = {
        "schemas": [PATCH_OP],
        "Operations": [{"op": "replace", "path": "password", "value": password}],
    }
    refused(await _scim(api, "PATCH", "/Users/alice@example.org", patch))
    assert await _login(api, "alice@example.org", GOOD) is Outcome.OK
    good = {
        **patch,
        "Operations": [{"op": "replace", "path": "password", "value": "scim passphrase"}],
    }
    assert (await _scim(api, "PATCH", "/Users/alice@example.org", good)).status_code == 200
    assert await _login(api, "alice@example.org", "scim passphrase") is Outcome.OK
