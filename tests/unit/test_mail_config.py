"""The [mail] section and the lookup listeners' sections: validation and the vmail owner."""

from __future__ import annotations

import pwd
from typing import Any

import pytest
from pydantic import ValidationError

from idsvc.config import MailSettings, PolicySettings, Settings, SocketmapSettings, TcpTableSettings
from idsvc.errors import ConfigError
from idsvc.lookups import vmail_ids


@pytest.mark.parametrize(
    "tcp", ["127.0.0.1:10027", "[::1]:10027", "localhost:10027", "127.0.0.2:1", None]
)
def test_loopback_tcp_is_accepted(tcp: str | None) -> None:
    assert SocketmapSettings(tcp=tcp).tcp == tcp


@pytest.mark.parametrize("tcp", ["0.0.0.0:10027", "192.0.2.1:10027", "[::]:1", "mx.example:25"])
def test_other_tcp_addresses_are_refused(tcp: str) -> None:
    with pytest.raises(ValidationError, match="loopback only"):
        PolicySettings(tcp=tcp)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("recipient_delimiter", "@"),
        ("recipient_delimiter", "."),
        ("recipient_delimiter", "+" * 9),
        ("home", "{root}/{nope}"),
        ("home", "{root"),
        ("quota_rule", "*:bytes={size}"),
        ("vmail_uid", 0),
        ("cache_ttl", -1),
        ("max_alias_depth", 0),
    ],
)
def test_bad_mail_settings(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        MailSettings(**{field: value})


def test_the_lookup_listeners_are_off_by_default() -> None:
    s = Settings()
    assert not s.socketmap.socket.enabled
    assert not s.policy.socket.enabled
    assert not s.dovecot_dict.socket.enabled
    assert s.tcp_table.tcp is None
    with pytest.raises(ValidationError):
        TcpTableSettings(map="virtual")  # type: ignore[arg-type]


def test_two_listeners_cannot_share_a_socket_path() -> None:
    with pytest.raises(ValidationError, match="same path"):
        Settings.model_validate(
            {
                "socketmap": {"socket": {"enabled": True, "path": "/run/x/s"}},
                "policy": {"socket": {"enabled": True, "path": "/run/x/s"}},
            }
        )


def test_vmail_owner_from_a_system_user() -> None:
    entry = pwd.getpwnam("nobody")
    assert vmail_ids(MailSettings(vmail_user="nobody")) == (entry.pw_uid, entry.pw_gid)
    assert vmail_ids(MailSettings(vmail_uid=5001, vmail_gid=5002)) == (5001, 5002)
    with pytest.raises(ConfigError, match="no such system user"):
        vmail_ids(MailSettings(vmail_user="no-such-user-here"))
    with pytest.raises(ConfigError, match="root"):
        vmail_ids(MailSettings(vmail_user="root"))
