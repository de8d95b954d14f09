"""``idsvc auth test``, ``idsvc pw``, ``idsvc config check``, ``idsvc healthcheck``.

* ``auth flush [USER | --domain D]`` asks the running server, over its control socket, to drop
  cached decisions (exit 75 when no server answers).
* ``auth test USER`` runs one request through the real Authenticator (like ``doveadm auth
  test``) and prints outcome, canonical user, elapsed time and whether the cache answered.
  Exit 0 on OK, 1 on a definite failure, 75 on a temporary failure.
* ``pw`` hashes a password with the configured or given scheme (like ``doveadm pw -s``); ``-t``
  tests a password against a stored hash; ``-l`` lists the schemes.
* ``config check`` prints the effective configuration (file + environment + defaults) as TOML
  with every secret replaced by ``**********``; an invalid configuration never gets this far
  (``idsvc.cli`` exits 2 with the problem and its dotted key).
* ``healthcheck`` opens the directory and pings it: exit 0 if it answers, 75 if not.

Passwords are read by ``idsvc.cli.common.get_password`` only (never from argv).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from idsvc.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TEMPFAIL,
    get_password,
    print_json,
    print_record,
)
from idsvc.cli.context import Context
from idsvc.errors import InvalidInput


async def auth_test(ctx: Context, args: argparse.Namespace) -> int:
    from idsvc.auth.request import AuthRequest, Outcome

    password = get_password(args, confirm=False)
    request = AuthRequest(
        login=args.user,
        password=password,
        service=args.service,
        remote_ip=args.remote_ip,
        secured=True,  # an administrator on this host, not a network client
        realm=args.realm,
        protocol="cli",
    )
    async with ctx.runtime(audited=True) as runtime:  # every attempt is audited, also this one
        result = await runtime.authenticator.authenticate(request)
    data: dict[str, Any] = {
        "outcome": result.outcome.value,
        "user": result.user,
        "elapsed": round(result.elapsed, 6),
        "cached": result.cached,
        "detail": result.detail,
    }
    if ctx.json:
        print_json(data)
    else:
        data["user"] = data["user"] or "-"
        data["elapsed"] = f"{result.elapsed * 1000:.1f} ms"
        data["detail"] = data["detail"] or "-"
        print_record(data)
    if result.outcome is Outcome.OK:
        return EXIT_OK
    return EXIT_TEMPFAIL if result.outcome is Outcome.TEMPFAIL else EXIT_FAILED


def auth_flush(ctx: Context, args: argparse.Namespace) -> int:
    """Ask the running server (its control socket) to drop cached decisions."""
    from idsvc.control import send_request
    from idsvc.model import canonical_address, canonical_domain

    if args.user and args.domain:
        raise InvalidInput("give a user or --domain, not both")
    scope, name = "all", None
    if args.user:
        scope, name = "user", canonical_address(args.user)
    elif args.domain:
        scope, name = "domain", canonical_domain(args.domain)
    path = ctx.settings.control.socket.path
    try:
        reply = send_request(path, scope, name)
    except OSError as exc:
        print(f"idsvc: no server answers on {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_TEMPFAIL
    if reply != "OK":
        print(f"idsvc: the server refused: {reply}", file=sys.stderr)
        return EXIT_FAILED
    print(f"flushed: {scope} {name or ''}".rstrip())
    return EXIT_OK


def pw(ctx: Context, args: argparse.Namespace) -> int:
    from idsvc.passwords import SCHEMES, PasswordHasher, identify

    hasher = PasswordHasher(ctx.settings.passwords)
    if args.list:
        if ctx.json:
            print_json(list(SCHEMES))
        else:
            print(" ".join(SCHEMES))
        return EXIT_OK
    if args.test is not None:
        scheme = identify(args.test)  # PasswordError (exit 2) for an unknown or corrupt hash
        ok = hasher.verify(get_password(args, confirm=False).reveal(), args.test)
        if ctx.json:
            print_json({"scheme": scheme, "verified": ok})
        else:
            print(f"{args.test} ({'verified' if ok else 'verification FAILED'})")
        return EXIT_OK if ok else EXIT_FAILED
    wanted: str | None = args.scheme.upper() if args.scheme else None
    if wanted is not None and wanted not in SCHEMES:
        raise InvalidInput(f"unknown scheme {wanted[:40]!r}; idsvc pw -l lists them")
    stored = hasher.hash(get_password(args, confirm=True).reveal(), wanted)
    if ctx.json:
        print_json({"scheme": identify(stored), "hash": stored})
    else:
        print(stored)
    return EXIT_OK


# -- config check -----------------------------------------------------------------------------


def _toml_value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and key == "mode":
        return f"0o{value:03o}"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value("", v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """Render nested settings as TOML (unset values as comments; TOML has no null)."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif value is None:
            lines.append(f"# {key} is not set")
        else:
            lines.append(f"{key} = {_toml_value(key, value)}")
    out = []
    if prefix and lines:
        out.append(f"[{prefix}]")
    out.extend(lines)
    text = "\n".join(out)
    for key, table in tables:
        sub = to_toml(table, f"{prefix}.{key}" if prefix else key)
        if sub:
            text += ("\n\n" if text else "") + sub
    return text


def config_check(ctx: Context, args: argparse.Namespace) -> int:
    from idsvc.password_policy import PasswordPolicy

    # what start-up also checks: import allow-lists (no weak scheme) and the blocklist file
    PasswordPolicy.from_settings(ctx.settings).load()
    data = ctx.settings.model_dump(mode="json")  # SecretStr dumps as "**********"
    source = str(ctx.config_path) if ctx.config_path else None
    mapping = _effective_mapping(ctx)  # ConfigError (exit 2) for a bad profile override
    if ctx.json:
        extra = {} if mapping is None else {"effective_mapping": mapping}
        print_json({"valid": True, "file": source, "settings": data, **extra})
        return EXIT_OK
    print(f"# configuration is valid; file: {source or '(none: defaults + environment)'}")
    print(to_toml(data))
    if mapping is not None:
        print(f"\n# effective mapping of the read-only profile {mapping['name']!r}:")
        for key, value in mapping.items():
            print(f"#   {key} = {json.dumps(value)}")
    return EXIT_OK


def _effective_mapping(ctx: Context) -> dict[str, object] | None:
    """The read-only profile as it will be used (built-in defaults + overrides), or None."""
    ldap = ctx.settings.directory.ldap
    if ctx.settings.directory.backend != "ldap" or ldap.profile == "idsvc":
        return None
    from idsvc.directory.profiles import describe, profile_for

    return describe(profile_for(ldap.profile, ldap.mapping))


# -- healthcheck ------------------------------------------------------------------------------


async def healthcheck(ctx: Context, args: argparse.Namespace) -> int:
    from idsvc.runtime import open_directory

    directory = await open_directory(ctx.settings.directory)
    try:
        await directory.ping()  # TemporaryFailure → exit 75 in idsvc.cli
    finally:
        await directory.close()
    if ctx.json:
        print_json({"ok": True, "directory": ctx.settings.directory.describe()})
    else:
        print(f"ok: directory answers ({ctx.settings.directory.describe()})")
    return EXIT_OK
