"""Sockets passed by systemd socket activation: taken only when LISTEN_PID is us, matched to
listeners by address, never unlinked."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from idsvc.activation import Activated, listen_fds


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"LISTEN_PID": "1", "LISTEN_FDS": "1"},  # for another process
        {"LISTEN_PID": "x", "LISTEN_FDS": "1"},
        {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "-1"},
    ],
)
def test_nothing_is_taken_unless_it_is_ours(env: dict[str, str]) -> None:
    given = dict(env)
    assert listen_fds(given) == []
    assert "LISTEN_PID" not in given  # never handed on to a child either


def test_sockets_match_listeners_by_address(tmp_path: Path) -> None:
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(tmp_path / "mux"))
    unix.listen(1)
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(1)
    port = tcp.getsockname()[1]
    activated = Activated.from_sockets([unix, tcp])
    try:
        assert activated
        assert activated.take_unix(tmp_path / "other") is None
        bound = activated.take_unix(tmp_path / "mux")
        assert bound is not None
        assert bound.sock is unix
        bound.remove_path()  # no file identity: the file stays (systemd owns it)
        assert (tmp_path / "mux").exists()
        assert activated.take_tcp(f"127.0.0.1:{port + 1 if port < 65535 else 1}") is None
        got = activated.take_tcp(f"127.0.0.1:{port}")
        assert got is not None
        assert got.port == port
        assert not activated  # each socket is taken once
    finally:
        unix.close()
        tcp.close()
