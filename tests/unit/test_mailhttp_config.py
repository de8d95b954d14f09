"""Settings of the mail HTTP listeners ([nginx_auth], [dovecot_policy], [dovecot_lua])."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from idsvc.config import DovecotLuaSettings, NginxAuthSettings, Settings


def _settings(**sections: Any) -> Settings:
    return Settings.model_validate(sections)


def test_defaults_are_off_and_local() -> None:
    settings = _settings()
    for section in (settings.nginx_auth, settings.dovecot_policy, settings.dovecot_lua):
        assert section.enabled is False
        assert section.secret is None
    assert settings.dovecot_policy.listen == "127.0.0.1:8091"
    assert settings.nginx_auth.unix_path is not None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"listen": "0.0.0.0:8093"}, "not loopback"),
        ({"listen": "[2001:db8::1]:8093"}, "not loopback"),
        ({"listen": "unix:relative/path"}, "absolute"),
        ({"listen": "127.0.0.1"}, "host:port"),
        ({"listen": "127.0.0.1:99999"}, "host:port"),
        ({"listen": "127.0.0.1:1", "secret": ""}, "must not be empty"),
        ({"listen": "127.0.0.1:1", "secret_header": "X Bad"}, "header name"),
        ({"listen": "127.0.0.1:1", "max_connections": 4}, "reserved_connections"),
        ({"listen": "127.0.0.1:1", "secret": "a", "secret_file": "/x"}, "not both"),
    ],
)
def test_invalid_listener_settings(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DovecotLuaSettings(**values)


def test_non_loopback_needs_a_secret(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n", encoding="utf-8")
    settings = NginxAuthSettings(listen="0.0.0.0:8093", secret_file=secret)
    assert settings.secret is not None
    assert settings.secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert NginxAuthSettings(listen="localhost:8093").unix_path is None
    assert NginxAuthSettings(listen="[::1]:8093").secret is None


def test_two_listeners_cannot_share_a_socket_or_an_address() -> None:
    with pytest.raises(ValidationError, match="same path"):
        _settings(
            nginx_auth={"enabled": True, "listen": "unix:/run/x/sock"},
            dovecot_lua={"enabled": True, "listen": "unix:/run/x/sock"},
        )
    with pytest.raises(ValidationError, match="same address"):
        _settings(
            nginx_auth={"enabled": True, "listen": "127.0.0.1:8093"},
            dovecot_policy={"enabled": True, "listen": "127.0.0.1:8093"},
        )
    with pytest.raises(ValidationError, match="same path"):
        _settings(
            saslauthd={"socket": {"path": "/run/x/mux"}},
            dovecot_lua={"enabled": True, "listen": "unix:/run/x/mux"},
        )
    # disabled listeners do not clash
    _settings(nginx_auth={"listen": "unix:/run/x/a"}, dovecot_lua={"listen": "unix:/run/x/a"})
