"""Settings: TOML + environment overrides, dotted-key errors, secrets from files, redaction,
cross-field checks, and the logging settings as ``idsvc.logs`` applies them."""

from __future__ import annotations

import io
import json
import logging
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from idsvc import config, logs
from idsvc.cli.tools import to_toml
from idsvc.config import LoggingSettings, Settings, load_settings
from idsvc.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "idsvc.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file_use_the_embedded_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "DEFAULT_CONFIG_FILE", tmp_path / "absent.toml")
    settings, used = load_settings(None, env={})
    assert used is None
    assert settings.directory.backend == "embedded"
    assert settings.directory.embedded.path.name == "idsvc.db"
    assert settings.directory.embedded.path.parent == config.default_state_dir()


def test_toml_values_are_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [directory]
        backend = "ldap"
        [directory.ldap]
        uris = ["ldap://127.0.0.1:3890", "ldaps://ldap.example.org"]
        base_dn = "o=mail"
        [auth]
        failure_delay = 0.5
        [saslauthd.socket]
        path = "/tmp/x/mux"
        mode = 0o600
        """,
    )
    settings, used = load_settings(path, env={})
    assert used == path
    assert settings.directory.backend == "ldap"
    assert settings.directory.ldap.uris == ("ldap://127.0.0.1:3890", "ldaps://ldap.example.org")
    assert settings.directory.ldap.base_dn == "o=mail"
    assert settings.auth.failure_delay == 0.5
    assert settings.saslauthd.socket.path == Path("/tmp/x/mux")
    assert settings.saslauthd.socket.mode == 0o600


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[auth]\nfailure_delay = 0.5\ncache = true\n")
    env = {
        "IDSVC_AUTH__FAILURE_DELAY": "1.25",
        "IDSVC_AUTH__CACHE": "false",
        "IDSVC_DIRECTORY__LDAP__URIS": '["ldap://a:1","ldap://b:2"]',
        "IDSVC_LOGGING__FORMAT": "json",  # not JSON: taken as a string
        "OTHER_VARIABLE": "ignored",
    }
    settings, _ = load_settings(path, env=env)
    assert settings.auth.failure_delay == 1.25
    assert settings.auth.cache is False
    assert settings.directory.ldap.uris == ("ldap://a:1", "ldap://b:2")
    assert settings.logging.format == "json"


def test_idsvc_config_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[logging]\nlevel = "DEBUG"\n')
    settings, used = load_settings(None, env={"IDSVC_CONFIG": str(path)})
    assert used == path
    assert settings.logging.level == "DEBUG"


def test_idsvc_native_is_not_a_setting(tmp_path: Path) -> None:
    """IDSVC_NATIVE switches the compiled hot path (idsvc/_native.py), read before any config."""
    settings, _ = load_settings(None, env={"IDSVC_NATIVE": "off"})
    assert settings == load_settings(None, env={})[0]


@pytest.mark.parametrize(
    ("toml", "env", "expected"),
    [
        ("[auth]\nfailure_delay = -1\n", {}, "auth.failure_delay"),
        ("[auth]\nno_such_option = 1\n", {}, "auth.no_such_option"),
        ('[directory]\nbackend = "mysql"\n', {}, "directory.backend"),
        ('[directory.ldap]\nuris = ["http://x"]\n', {}, "unsupported LDAP URI scheme"),
        ("", {"IDSVC_DIRECTORY__EMBEDDED__WORKERS": "0"}, "directory.embedded.workers"),
        ("", {"IDSVC_LOGGING__LEVEL": "LOUD"}, "logging.level"),
        ("", {"IDSVC_API__MAX_BODY": "12"}, "api.max_body"),
    ],
)
def test_invalid_values_name_their_dotted_key(
    tmp_path: Path, toml: str, env: dict[str, str], expected: str
) -> None:
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError, match="invalid configuration") as info:
        load_settings(path, env=env)
    assert expected in str(info.value)


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "[auth]\nfailure_delay = -1\ncache_size = -5\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert "auth.failure_delay" in str(info.value)
    assert "auth.cache_size" in str(info.value)


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[auth\nfailure_delay = 1\n")
    with pytest.raises(ConfigError, match=str(path)):
        load_settings(path, env={})


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read .*nope\.toml"):
        load_settings(tmp_path / "nope.toml", env={})


@pytest.mark.parametrize(
    "env",
    [
        {"IDSVC_AUTH____CACHE": "1"},  # empty path component
        {"IDSVC_AUTH__CACHE__DEEPER": "1", "IDSVC_AUTH__CACHE": "true"},  # scalar vs table
    ],
)
def test_malformed_environment_overrides(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(tmp_path, "[auth]\ncache = true\n")
    with pytest.raises(ConfigError):
        load_settings(path, env=env)


def test_secrets_come_from_files_and_lose_the_newline(tmp_path: Path) -> None:
    secret = tmp_path / "bind.pw"
    secret.write_text("s3cret-from-file\n", encoding="utf-8")
    path = write(
        tmp_path,
        f"""
        [directory.ldap]
        bind_dn = "cn=reader,o=mail"
        bind_password_file = "{secret}"
        writer_dn = "cn=writer,o=mail"
        writer_password = "inline-writer"
        """,
    )
    settings, _ = load_settings(path, env={})
    ldap = settings.directory.ldap
    assert ldap.bind_password is not None
    assert ldap.bind_password.get_secret_value() == "s3cret-from-file"
    assert ldap.writer_password is not None
    assert ldap.writer_password.get_secret_value() == "inline-writer"
    assert ldap.bind_password_file is None  # consumed: the path does not linger


def test_secret_and_secret_file_together_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "bind.pw"
    secret.write_text("x", encoding="utf-8")
    path = write(
        tmp_path,
        f'[directory.ldap]\nbind_password = "y"\nbind_password_file = "{secret}"\n',
    )
    with pytest.raises(ConfigError, match="not both"):
        load_settings(path, env={})


def test_unreadable_secret_file_is_a_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path, f'[directory.ldap]\nbind_password_file = "{tmp_path / "absent"}"\n')
    with pytest.raises(ConfigError, match="cannot read bind_password_file"):
        load_settings(path, env={})


def test_secrets_never_show_in_repr_or_dumps(tmp_path: Path) -> None:
    path = write(tmp_path, '[directory.ldap]\nbind_password = "hunter2-very-secret"\n')
    settings, _ = load_settings(
        path, env={"IDSVC_DIRECTORY__LDAP__WRITER_PASSWORD": "writer-very-secret"}
    )
    for text in (
        repr(settings),
        str(settings),
        repr(settings.directory.ldap),
        str(settings.model_dump(mode="json")),
        to_toml(settings.model_dump(mode="json")),
    ):
        assert "hunter2-very-secret" not in text
        assert "writer-very-secret" not in text
    assert settings.model_dump(mode="json")["directory"]["ldap"]["bind_password"] == "**********"


def test_effective_config_dump_is_valid_toml_that_loads_back(tmp_path: Path) -> None:
    path = write(tmp_path, '[auth]\nmaster_users = ["admin@example.org"]\nfailure_delay = 0\n')
    settings, _ = load_settings(path, env={})
    text = to_toml(settings.model_dump(mode="json"))
    parsed = tomllib.loads(text)
    assert parsed["auth"]["master_users"] == ["admin@example.org"]
    assert parsed["saslauthd"]["socket"]["mode"] == 0o660
    reloaded = Settings.model_validate(parsed)  # no secrets set, so the dump is lossless
    assert reloaded == settings


def test_settings_are_immutable() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.auth.cache = False  # type: ignore[misc]


# -- cross-field checks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[directory.ldap]\nbind_dn = "cn=r,o=m"\n', "directory.ldap: bind_dn is set but"),
        ('[directory.ldap]\nwriter_dn = "cn=w,o=m"\n', "directory.ldap: writer_dn is set but"),
        ('[directory.ldap]\nbase_dn = " "\n', "base_dn must not be empty"),
        (
            '[directory.ldap]\nuris = ["ldaps://ldap.example.org"]\nstarttls = true\n',
            "starttls cannot be combined with ldaps://",
        ),
        ('[api]\ntls_cert = "/etc/ssl/cert.pem"\n', "api: tls_cert and tls_key must be given"),
        ('[api]\nlisten = "8080"\n', "api: listen: expected host:port"),
        ('[api]\nlisten = "unix:relative.sock"\n', "must be absolute"),
        ('[auth]\ndefault_domain = "bad_domain!"\n', "auth.default_domain"),
        ('[auth]\nmaster_users = ["not an address"]\n', "auth.master_users"),
        (
            '[saslauthd.socket]\npath = "/run/x/s"\n[dovecot_auth.socket]\npath = "/run/x/s"\n',
            "dovecot_auth.socket.path is the same path as saslauthd.socket.path",
        ),
    ],
)
def test_cross_field_checks(tmp_path: Path, toml: str, expected: str) -> None:
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert expected in str(info.value)
    assert "Value error," not in str(info.value)


def test_cross_field_checks_accept_good_combinations(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [directory.ldap]
        uris = ["ldap://127.0.0.1:389"]
        starttls = true
        bind_dn = "cn=reader,o=mail"
        bind_password = "x"
        [auth]
        default_domain = "Example.ORG"
        master_users = ["Admin@Example.org"]
        [dovecot_auth.socket]
        path = "/run/x/sock"
        enabled = false
        [saslauthd.socket]
        path = "/run/x/sock"
        [api]
        listen = "unix:/run/x/api.sock"
        """,
    )
    settings, _ = load_settings(path, env={})
    assert settings.auth.default_domain == "example.org"  # canonical once, at start-up
    assert settings.auth.master_users == ("admin@example.org",)


# -- logging settings in use (idsvc.logs) --------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "secret"),
    [
        ("AUTH\t1\tPLAIN\tservice=smtp\tresp=AGFsaWNlAHMzY3JldA==", "AGFsaWNlAHMzY3JldA=="),
        ("login failed password=hunter2 user=bob", "hunter2"),
        ('{"user": "bob", "password": "hunter2"}', "hunter2"),
        ("token idsvc_abc123_SECRETSECRETSECRET presented", "SECRETSECRETSECRET"),
    ],
)
def test_log_lines_mask_secret_looking_values(message: str, secret: str) -> None:
    masked = logs.mask_secrets(message)
    assert secret not in masked
    assert "***" in masked


def test_json_log_lines_embed_audit_events() -> None:
    stream = io.StringIO()
    handler = logs.setup_logging(LoggingSettings(format="json", level="INFO"), stream=stream)
    try:
        logging.getLogger("idsvc.audit").info('{"action":"auth","outcome":"ok"}')
        logging.getLogger("idsvc.test").warning("bind failed password=%s", "hunter2")
        logging.getLogger("idsvc.test").debug("not shown at INFO")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    assert lines[0]["audit"] == {"action": "auth", "outcome": "ok"}
    assert lines[0]["logger"] == "idsvc.audit"
    assert lines[1]["level"] == "WARNING"
    assert "hunter2" not in lines[1]["message"]


def test_text_logs_and_replacing_the_handler() -> None:
    stream = io.StringIO()
    first = logs.setup_logging(LoggingSettings(), stream=io.StringIO())
    second = logs.setup_logging(LoggingSettings(level="WARNING"), stream=stream)
    try:
        assert first not in logging.getLogger().handlers  # replaced, not stacked
        logging.getLogger("idsvc.test").info("quiet")
        logging.getLogger("idsvc.test").warning("loud")
    finally:
        logging.getLogger().removeHandler(second)
    assert stream.getvalue().count("\n") == 1
    assert "WARNING idsvc.test: loud" in stream.getvalue()


# -- the shipped example -------------------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parents[2] / "idsvc.toml.example"


def _field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.extend(_field_paths(annotation, f"{prefix}{name}."))
        else:
            out.append(prefix + name)
    return out


def _without_system_paths(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _without_system_paths(v) for k, v in data.items()}
    if isinstance(data, str) and data.startswith(("/var/lib/idsvc", "/run/idsvc")):
        return "<system path>"
    return data


def test_example_config_is_valid_and_shows_the_defaults() -> None:
    settings, _ = load_settings(EXAMPLE, env={})
    defaults = Settings().model_dump(mode="json")
    if os.geteuid() != 0:  # non-root defaults live in XDG dirs; the example shows root's paths
        defaults = _without_system_paths(
            json.loads(
                json.dumps(defaults).replace(str(config.default_state_dir()), "/var/lib/idsvc")
            )
        )
        defaults = _without_system_paths(
            json.loads(
                json.dumps(defaults).replace(str(config.default_runtime_dir()), "/run/idsvc")
            )
        )
    assert _without_system_paths(settings.model_dump(mode="json")) == _without_system_paths(
        defaults
    )


def test_example_config_documents_every_setting() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    tables = {line.strip("[] ") for line in text.splitlines() if line.startswith("[")}
    missing = []
    for dotted in _field_paths(Settings):
        table, _, key = dotted.rpartition(".")
        if table not in tables or f"{key} =" not in text:
            missing.append(dotted)
    assert missing == []
