"""The committed OpenAPI document matches the app, and schemathesis finds no 5xx and no response
that breaks the document, against a real uvicorn on loopback, on both backends."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from idsvc.api.openapi import REGENERATE, document
from idsvc.config import EmbeddedSettings
from idsvc.model import Secret
from tests.api.conftest import api_settings
from tests.api.live import LiveApi

COMMITTED = Path(__file__).resolve().parents[2] / "schemas" / "openapi.json"
EXAMPLES = 25  # per operation; keeps the whole run to seconds


def test_committed_openapi_matches_the_app() -> None:
    committed = json.loads(COMMITTED.read_text(encoding="utf-8"))
    assert committed == document(), f"schemas/openapi.json is stale; run: {REGENERATE}"


def test_every_operation_declares_its_errors() -> None:
    doc = document()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            codes = set(op["responses"])
            if path in ("/healthz",):
                continue
            if path.startswith("/api/"):
                assert {"401", "422", "429", "503"} <= codes, (method, path)
            for code, response in op["responses"].items():
                if code[0] in "45":
                    assert list(response["content"]) == ["application/problem+json"], (
                        method,
                        path,
                        code,
                    )


@pytest.fixture(params=["embedded", "ldap"])
def live_api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveApi]:
    config = api_settings(tmp_path)
    if request.param == "embedded":
        from idsvc.directory.sqlite import SqliteDirectory

        async def open_directory() -> Any:
            return await SqliteDirectory.open(EmbeddedSettings(path=tmp_path / "dir" / "db"))
    else:
        from idsvc.directory.ldap import LdapDirectory

        slapd = request.getfixturevalue("slapd")
        base = slapd.new_subtree(f"st-{secrets.token_hex(4)}")

        async def open_directory() -> Any:
            return await LdapDirectory.open(slapd.settings(base))

    config = config.model_copy(
        update={"api": config.api.model_copy(update={"listen": "127.0.0.1:0"})}
    )
    live = LiveApi(config, open_directory).start()
    try:
        yield live
    finally:
        live.stop()


def _seed(live: LiveApi) -> None:
    assert live.runtime is not None
    prov = live.runtime.provisioner

    async def seed() -> None:
        await prov.create_domain("example.org", actor="test")
        await prov.create_user(
            "alice@example.org", actor="test", password=Secret("a seeded passphrase")
        )
        await prov.create_alias("team@example.org", ["alice@example.org"], actor="test")

    live.run(seed())


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def test_schemathesis_finds_no_server_error_or_schema_violation(live_api: LiveApi) -> None:
    _seed(live_api)
    schema = schemathesis.openapi.from_dict(document())
    headers = {"Authorization": f"Bearer {live_api.admin_token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:
        if operation.path == "/api/v1/auth/test":
            continue  # rate-limited per token by design; covered in test_crud/test_authz

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(), data=st.data())
        def run(case: Any, data: Any) -> None:
            response = case.call(base_url=live_api.url, headers=headers, timeout=10)
            case.validate_response(response, checks=CHECKS)

        run()
    # the run really exercised the API: successes and refusals of many kinds, no 5xx
    server = live_api.server
    assert server is not None
    assert server.app is not None
    counter = server.app.state.metrics.requests
    statuses: dict[str, float] = {}
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                code = sample.labels["status"]
                statuses[code] = statuses.get(code, 0) + sample.value
    assert not [code for code in statuses if code.startswith("5")], statuses
    assert statuses.get("200", 0) >= 20, statuses
    assert {"404", "422"} <= set(statuses), statuses
