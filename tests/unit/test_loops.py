"""The event loop choice of ``idsvc serve`` and the number of workers it starts."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from idsvc import loops
from idsvc.config import MAX_DEFAULT_WORKERS, Settings, default_workers, load_settings
from idsvc.errors import ConfigError
from idsvc.serve import worker_count


async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_and_uvloop_run_on_uvloop() -> None:
    assert loops.loop_factory("auto")[0] == "uvloop"
    assert loops.run(loop_module, "auto").startswith("uvloop")
    assert loops.run(loop_module, "uvloop").startswith("uvloop")


def test_asyncio_forces_the_stdlib_loop() -> None:
    assert loops.loop_factory("asyncio") == ("asyncio", None)
    assert loops.run(loop_module, "asyncio").startswith("asyncio")


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert loops.loop_factory("auto") == ("asyncio", None)
    with pytest.raises(ConfigError, match="not installed"):
        loops.run(loop_module, "uvloop")  # and no coroutine is left un-awaited


def test_loop_and_workers_come_from_settings_and_environment() -> None:
    settings, _ = load_settings(env={"IDSVC_SERVE__LOOP": "uvloop", "IDSVC_SERVE__WORKERS": "3"})
    assert settings.serve.loop == "uvloop"
    assert settings.serve.worker_count() == 3
    with pytest.raises(ConfigError, match=r"serve\.workers"):
        load_settings(env={"IDSVC_SERVE__WORKERS": "0"})


def test_default_workers_is_the_cores_capped() -> None:
    assert 1 <= default_workers() <= MAX_DEFAULT_WORKERS
    assert Settings().serve.worker_count() == default_workers()


def test_one_process_when_no_shared_listener_is_enabled(tmp_path: Path) -> None:
    on = Settings.model_validate({"serve": {"workers": 3}})
    assert worker_count(on) == 3
    off = Settings.model_validate(
        {
            "serve": {"workers": 3},
            "saslauthd": {"socket": {"path": str(tmp_path / "mux"), "enabled": False}},
            "dovecot_auth": {"socket": {"path": str(tmp_path / "auth"), "enabled": False}},
        }
    )
    assert worker_count(off) == 1  # only the API/control: nothing for workers to share
