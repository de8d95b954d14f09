"""Settings: TOML + environment overrides, dotted-key errors, secrets from files, redaction."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from idsvc import config
from idsvc.cli.tools import to_toml
from idsvc.config import Settings, load_settings
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
