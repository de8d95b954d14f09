"""``idsvc app-password add | list | revoke``: per-device passwords of one account.

``add`` prints the secret once (or ``{"secret": …}`` with ``--json``); it is never shown again.
Every change is audited (CLI actor, never the secret) and reaches the running server at once
through its control socket (a revoked app password fails on its next use).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

from idsvc.app_passwords import AppPasswords, app_password_view
from idsvc.cli.common import EXIT_OK, Table, actor, print_json
from idsvc.cli.context import Context
from idsvc.errors import ConfigError, InvalidInput

_UNITS = {"h": 3600, "d": 86400, "w": 7 * 86400}


def expiry(text: str | None, now: datetime | None = None) -> datetime | None:
    """``--expires``: ``30d`` / ``12h`` / ``2w`` from now, or an ISO 8601 time with a zone."""
    if text is None:
        return None
    now = now or datetime.now(UTC)
    unit = _UNITS.get(text[-1:].lower())
    if unit is not None and text[:-1].isdigit():
        return now + timedelta(seconds=int(text[:-1]) * unit)
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidInput(f"--expires: not a duration (30d, 12h) or ISO time: {text!r}") from exc
    if when.tzinfo is None:
        raise InvalidInput("--expires: an ISO time needs a zone (e.g. 2027-01-01T00:00:00+00:00)")
    return when


async def app_password_cmd(ctx: Context, args: argparse.Namespace) -> int:
    async with ctx.runtime(audited=args.action != "list") as runtime:
        apps: AppPasswords | None = runtime.app_passwords
        if apps is None:
            raise ConfigError("app passwords are disabled ([app_passwords] enabled = false)")
        if args.action == "add":
            app, secret = await apps.create(
                args.user, args.name, actor=actor(), services=args.service or (),
                networks=args.network or (), expires=expiry(args.expires),
            )  # fmt: skip
            if ctx.json:
                print_json({**app_password_view(app), "secret": secret})
            else:
                print(secret)
            return EXIT_OK
        if args.action == "revoke":
            app = await apps.revoke(args.user, args.id, actor=actor())
            if ctx.json:
                print_json(app_password_view(app))
            else:
                print(f"app password {app.id} ({app.name}) revoked")
            return EXIT_OK
        items = [app_password_view(a) for a in await apps.list_of(args.user)]
        if ctx.json:
            print_json({"items": items})
            return EXIT_OK
        table = Table(("ID", "NAME", "SERVICES", "NETWORKS", "EXPIRES", "LAST USED", "STATE"))
        table.rows(
            (
                a["id"], a["name"], ",".join(a["services"]) or "all",
                ",".join(a["networks"]) or "any", a["expires"] or "never",
                a["last_used"] or "never",
                "active" if a["active"] else ("revoked" if a["revoked"] else "expired"),
            )
            for a in items
        )  # fmt: skip
        table.finish()
        return EXIT_OK
