"""The ``mailsvc`` command: ``mailsvc serve [--config FILE]`` and ``mailsvc check-config``.

The configuration file defaults to ``$MAILSVC_CONFIG`` or, when it exists,
``/etc/mailsvc/mailsvc.toml``; without one the defaults and ``MAILSVC_*`` variables apply.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from mailsvc import config as cfg

DEFAULT_CONFIG = Path("/etc/mailsvc/mailsvc.toml")


def _config_path(given: str | None) -> Path | None:
    if given:
        return Path(given)
    env = os.environ.get("MAILSVC_CONFIG")
    if env:
        return Path(env)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None


def run(main: Coroutine[Any, Any, int], loop: str) -> int:
    """Run ``main`` on the loop ``serve.loop`` names: ``auto`` is uvloop when it imports, else
    asyncio's own; ``uvloop`` without uvloop installed is a configuration error."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                main.close()
                raise cfg.ConfigError("serve.loop = uvloop but uvloop is not installed") from None
        else:
            factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mailsvc", description="mailsvc SMTP front end")
    parser.add_argument("--config", help="TOML configuration file")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the SMTP listeners until SIGTERM")
    sub.add_parser("check-config", help="validate the configuration and exit")
    args = parser.parse_args(argv)
    path = _config_path(args.config)
    try:
        settings = cfg.load(path)
    except cfg.ConfigError as exc:
        print(f"mailsvc: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.logging.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-command chatter
    if args.command == "check-config":
        from mailsvc.proxy.upstream import check_upstreams

        try:
            check_upstreams(settings)
        except cfg.ConfigError as exc:
            print(f"mailsvc: {exc}", file=sys.stderr)
            return 2
        print(f"mailsvc: configuration OK ({path or 'defaults'})")
        return 0
    from mailsvc.serve import serve

    try:
        return run(serve(settings), settings.serve.loop)
    except cfg.ConfigError as exc:
        logging.getLogger("mailsvc").error("invalid configuration: %s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
