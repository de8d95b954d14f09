"""The ``idsvc`` command line: argument tables, dispatch, and where errors become exit codes.

Sub-commands: ``domain``, ``user``, ``alias`` (provisioning, ``idsvc.cli.admin``), ``auth test``,
``pw``, ``config check``, ``healthcheck`` (``idsvc.cli.tools``), ``token`` (REST API tokens,
``idsvc.cli.tokens``) and ``serve`` (``idsvc.serve``).
Global options ``--config FILE``, ``--json`` and ``--verbose`` are accepted before or after the
sub-command. With no configuration at all the embedded default store is used.

Exit codes: 0 ok; 1 not found or authentication failed; 2 usage error, invalid input or invalid
configuration; 3 conflict (exists already, stale revision, domain not empty); 70 internal error;
75 temporary failure (directory down, store locked) — retry later. Errors are one line on
stderr, never a traceback (``--verbose`` adds the traceback of an internal error).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from idsvc.cli.common import (
    EXIT_SOFTWARE,
    EXIT_USAGE,
    exit_code_for,
    one_line,
)
from idsvc.cli.context import Context
from idsvc.config import load_settings
from idsvc.errors import ConfigError, IdsvcError

__all__ = ["build_parser", "main"]

log = logging.getLogger("idsvc.cli")

EPILOG = """exit codes: 0 ok, 1 not found / authentication failed, 2 usage or invalid input,
3 conflict / exists, 70 internal error, 75 temporary failure (retry later)"""


def _globals(defaults: bool) -> argparse.ArgumentParser:
    """The global options; the copy attached to sub-commands must not override earlier values."""
    p = argparse.ArgumentParser(add_help=False)
    d = (lambda v: v) if defaults else (lambda v: argparse.SUPPRESS)
    p.add_argument("--config", metavar="FILE", default=d(None), help="settings file (TOML)")
    p.add_argument("--json", action="store_true", default=d(False), help="machine-readable output")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=d(False),
        help="log to stderr (INFO, audit events included)",
    )
    return p


def _password_opts(p: argparse.ArgumentParser, *, hashes: bool = False) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first stdin line"
    )
    g.add_argument("--password-file", metavar="FILE", help="read the password from FILE")
    if hashes:
        g.add_argument(
            "--password-hash-stdin",
            action="store_true",
            help="read an existing {SCHEME} hash from stdin (import)",
        )


def _paging(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prefix", default="", help="only keys starting with this")
    p.add_argument("--limit", type=int, default=100, help="rows per page (max 1000)")
    p.add_argument("--cursor", help="continue after this cursor (from a previous page)")
    p.add_argument("--all", action="store_true", help="walk every page, streaming the rows")


def build_parser() -> argparse.ArgumentParser:
    common = _globals(defaults=False)
    parser = argparse.ArgumentParser(
        prog="idsvc",
        description="Identity and authentication service for mail systems.",
        epilog=EPILOG,
        parents=[_globals(defaults=True)],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def cmd(
        group: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str
    ) -> argparse.ArgumentParser:
        return group.add_parser(name, help=text, description=text, parents=[common])

    # domain
    domain = cmd(sub, "domain", "manage mail domains").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = cmd(domain, "add", "create a domain")
    p.add_argument("name")
    p.add_argument("--default-quota", metavar="SIZE", help="quota for new users (1G, 500M, bytes)")
    p.add_argument("--alias-domain", action="append", metavar="DOMAIN", help="repeatable")
    p.add_argument("--description")
    p.add_argument("--disable", action="store_true", help="create it disabled")
    p = cmd(domain, "set", "change a domain")
    p.add_argument("name")
    p.add_argument("--default-quota", metavar="SIZE")
    p.add_argument(
        "--alias-domain", action="append", metavar="DOMAIN", help="replaces the list; repeatable"
    )
    p.add_argument("--description")
    p.add_argument("--enable", action="store_true")
    p.add_argument("--disable", action="store_true")
    p = cmd(domain, "list", "list domains")
    _paging(p)
    p = cmd(domain, "show", "show one domain")
    p.add_argument("name")
    p = cmd(domain, "del", "delete a domain")
    p.add_argument("name")
    p.add_argument("--cascade", action="store_true", help="also delete its users and aliases")

    # user
    user = cmd(sub, "user", "manage mail accounts").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = cmd(user, "add", "create an account (password prompted twice, or from stdin/file)")
    p.add_argument("address")
    p.add_argument("--name", help="display name")
    p.add_argument("--quota", metavar="SIZE", help="1G, 500M, bytes; default: the domain's")
    p.add_argument("--services", metavar="LIST", help="e.g. smtp,imap (default: all)")
    p.add_argument("--disable", action="store_true", help="create it disabled")
    _password_opts(p, hashes=True)
    p = cmd(user, "set", "change display name, quota or services")
    p.add_argument("address")
    p.add_argument("--name", help="display name")
    p.add_argument("--quota", metavar="SIZE")
    p.add_argument("--services", metavar="LIST", help="e.g. smtp,imap (replaces the set)")
    p = cmd(user, "passwd", "set a new password")
    p.add_argument("address")
    _password_opts(p, hashes=True)
    for name, text in (("disable", "disable an account"), ("enable", "enable an account")):
        cmd(user, name, text).add_argument("address")
    p = cmd(user, "list", "list accounts")
    p.add_argument("domain", nargs="?", help="only this domain")
    _paging(p)
    cmd(user, "show", "show one account").add_argument("address")
    cmd(user, "del", "delete an account").add_argument("address")

    # alias
    alias = cmd(sub, "alias", "manage aliases").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = cmd(alias, "add", "create an alias (source local@domain, or @domain for a catch-all)")
    p.add_argument("source")
    p.add_argument("destinations", nargs="+", metavar="DESTINATION")
    p.add_argument("--disable", action="store_true")
    p = cmd(alias, "list", "list aliases")
    p.add_argument("domain", nargs="?", help="only this domain")
    _paging(p)
    cmd(alias, "show", "show one alias").add_argument("source")
    cmd(alias, "del", "delete an alias").add_argument("source")

    # auth test
    auth = cmd(sub, "auth", "authentication diagnostics").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = cmd(auth, "test", "check a password through the auth core (like doveadm auth test)")
    p.add_argument("user")
    p.add_argument("--service", default="imap", help="smtp, submission, imap, pop3 (imap)")
    p.add_argument("--remote-ip", metavar="IP")
    p.add_argument("--realm", help="saslauthd-style realm joined as user@realm")
    _password_opts(p)
    p = cmd(auth, "flush", "drop the running server's auth cache (like doveadm auth cache flush)")
    p.add_argument("user", nargs="?", help="only this user (default: everything)")
    p.add_argument("--domain", help="only the users of this domain")

    # tokens of the REST API
    token = cmd(sub, "token", "REST API tokens").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = cmd(token, "create", "create a token and print it once")
    p.add_argument("name", help="what the token is for")
    p.add_argument("--admin", action="store_true", help="global admin")
    p.add_argument("--domain-admin", action="append", metavar="DOMAIN", help="repeatable")
    p.add_argument("--read-only", action="store_true", help="read only (all or --domain)")
    p.add_argument("--domain", action="append", metavar="DOMAIN", help="narrow --read-only")
    p.add_argument("--owner", metavar="ADDRESS", help="mailbox of the person holding it")
    p = cmd(token, "list", "list tokens (never their secrets)")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--cursor")
    p.add_argument("--revoked", action="store_true", help="include revoked tokens")
    cmd(token, "revoke", "revoke a token").add_argument("id")

    # app passwords
    app = cmd(sub, "app-password", "per-device app passwords of an account").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = cmd(app, "add", "create an app password and print it once")
    p.add_argument("user")
    p.add_argument("name", help="what it is for, e.g. 'phone' or 'scanner'")
    p.add_argument(
        "--service",
        action="append",
        metavar="SERVICE",
        help="only this service (smtp, submission, imap, pop3); repeatable",
    )
    p.add_argument("--network", action="append", metavar="CIDR", help="only from here; repeatable")
    p.add_argument("--expires", metavar="WHEN", help="30d, 12h, 2w or an ISO 8601 time")
    cmd(app, "list", "list an account's app passwords (never their secrets)").add_argument("user")
    p = cmd(app, "revoke", "revoke an app password at once")
    p.add_argument("user")
    p.add_argument("id")

    # pw
    p = cmd(sub, "pw", "hash a password, or test one against a hash (like doveadm pw)")
    p.add_argument("-s", "--scheme", help="scheme for the new hash (default from settings)")
    p.add_argument("-t", "--test", metavar="HASH", help="verify the password against HASH")
    p.add_argument("-l", "--list", action="store_true", help="list the known schemes")
    _password_opts(p)

    # config
    config = cmd(sub, "config", "configuration").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    cmd(config, "check", "validate and print the effective configuration (secrets redacted)")

    p = cmd(sub, "serve", "run the listeners (control, saslauthd, dovecot-auth, api) until SIGTERM")
    p.add_argument(
        "-w",
        "--workers",
        type=int,
        metavar="N",
        help="worker processes sharing the sockets (default: serve.workers, else the number "
        "of cores capped at 4; 1: one process, no supervisor)",
    )
    p.add_argument(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        help="event loop (default: serve.loop, auto = uvloop when installed)",
    )
    cmd(sub, "healthcheck", "exit 0 if the directory answers")
    return parser


async def _provision(ctx: Context, args: argparse.Namespace) -> int:
    from idsvc.cli import admin

    handler = {"domain": admin.domain_cmd, "user": admin.user_cmd, "alias": admin.alias_cmd}
    read_only = args.action in ("list", "show")
    async with ctx.runtime(audited=not read_only) as runtime:
        return await handler[args.command](ctx, args, runtime.provisioner)


def _auth(ctx: Context, args: argparse.Namespace) -> int:
    from idsvc.cli.tools import auth_flush, auth_test

    if args.action == "flush":
        return auth_flush(ctx, args)
    return asyncio.run(auth_test(ctx, args))


def _token(ctx: Context, args: argparse.Namespace) -> int:
    from idsvc.cli.tokens import token_cmd

    return asyncio.run(token_cmd(ctx, args))


def _app_password(ctx: Context, args: argparse.Namespace) -> int:
    from idsvc.cli.app_passwords import app_password_cmd

    return asyncio.run(app_password_cmd(ctx, args))


def _pw(ctx: Context, args: argparse.Namespace) -> int:
    from idsvc.cli.tools import pw

    return pw(ctx, args)


def _config(ctx: Context, args: argparse.Namespace) -> int:
    from idsvc.cli.tools import config_check

    return config_check(ctx, args)


def _health(ctx: Context, args: argparse.Namespace) -> int:
    from idsvc.cli.tools import healthcheck

    return asyncio.run(healthcheck(ctx, args))


# sub-command -> handler (``serve`` is handled before logging is set up, see ``main``)
COMMANDS: dict[str, Callable[[Context, argparse.Namespace], int]] = {
    "domain": lambda ctx, args: asyncio.run(_provision(ctx, args)),
    "user": lambda ctx, args: asyncio.run(_provision(ctx, args)),
    "alias": lambda ctx, args: asyncio.run(_provision(ctx, args)),
    "auth": _auth,
    "token": _token,
    "app-password": _app_password,
    "pw": _pw,
    "config": _config,
    "healthcheck": _health,
}


def _error(message: str) -> None:
    sys.stderr.write(f"idsvc: {one_line(message)}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``idsvc`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        settings, path = load_settings(Path(args.config) if args.config else None)
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_USAGE
    if args.command == "serve":
        from idsvc.serve import run

        overrides: dict[str, object] = {}
        if args.workers is not None:
            if not 1 <= args.workers <= 64:
                _error("--workers must be between 1 and 64")
                return EXIT_USAGE
            overrides["workers"] = args.workers
        if args.loop is not None:
            overrides["loop"] = args.loop
        if overrides:
            serve = settings.serve.model_copy(update=overrides)
            settings = settings.model_copy(update={"serve": serve})
        return run(settings, path)

    from idsvc.logs import setup_logging

    verbose = "DEBUG" if settings.logging.level == "DEBUG" else "INFO"
    setup_logging(settings.logging, level=verbose if args.verbose else "ERROR")
    ctx = Context(settings, path, json=args.json, verbose=args.verbose)
    try:
        return COMMANDS[args.command](ctx, args)
    except IdsvcError as exc:
        _error(str(exc))
        return exit_code_for(exc)
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130
    except BrokenPipeError:  # e.g. `idsvc user list --all | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as exc:  # a bug: one line by default, the traceback with --verbose
        if args.verbose:
            log.error("internal error", exc_info=True)
        _error(f"internal error: {type(exc).__name__}: {exc} (rerun with --verbose for details)")
        return EXIT_SOFTWARE
