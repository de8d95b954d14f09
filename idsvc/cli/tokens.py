"""``idsvc token create|list|revoke``: REST API tokens, managed on the host without a token.

``create`` prints the token once on stdout (it is stored only as a keyed hash); nothing else ever
shows it, and it never reaches a log line. Scopes: ``--admin`` (everything), ``--domain-admin D``
(repeatable, read and write inside those domains) or ``--read-only [--domain D …]``.
Creation and revocation are audited (actor ``cli:<login>``) in the state store.

How it fails: ``InvalidInput`` for a bad name/scope/domain, ``NotFound`` for an unknown token id,
``ConfigError`` when the state database cannot be opened.
"""

from __future__ import annotations

import argparse

from idsvc.audit import AuditEvent
from idsvc.cli.common import EXIT_OK, Table, actor, print_json
from idsvc.cli.context import Context
from idsvc.errors import InvalidInput


def _scope(args: argparse.Namespace) -> tuple[str, list[str]]:
    from idsvc.state import Scope

    if args.admin + bool(args.domain_admin) + args.read_only != 1:
        raise InvalidInput("give exactly one of --admin, --domain-admin DOMAIN, --read-only")
    if args.admin:
        if args.domain:
            raise InvalidInput("--domain narrows --read-only tokens only")
        return Scope.ADMIN.value, []
    if args.domain_admin:
        return Scope.DOMAIN_ADMIN.value, list(args.domain_admin) + list(args.domain or ())
    return Scope.READ_ONLY.value, list(args.domain or ())


async def token_cmd(ctx: Context, args: argparse.Namespace) -> int:
    from idsvc.state import create_token, token_view

    async with ctx.state() as state:
        who = actor()
        if args.action == "create":
            scope, domains = _scope(args)
            info, secret = await create_token(
                state,
                name=args.name,
                scope=scope,
                domains=domains,
                owner=args.owner,
                created_by=who,
            )
            if ctx.json:
                print_json({**token_view(info), "token": secret})
            else:
                print(secret)
            return EXIT_OK
        if args.action == "revoke":
            info = await state.revoke_token(args.id)
            state.audit_sink.emit(
                AuditEvent("token.revoke", "ok", actor=who, target=f"token:{info.id}")
            )
            if ctx.json:
                print_json(token_view(info))
            else:
                print(f"token {info.id} revoked")
            return EXIT_OK
        page = await state.list_tokens(
            cursor=args.cursor, limit=args.limit, include_revoked=args.revoked
        )
        if ctx.json:
            print_json(
                {"items": [token_view(t) for t in page.items], "next_cursor": page.next_cursor}
            )
            return EXIT_OK
        table = Table(("ID", "NAME", "SCOPE", "DOMAINS", "OWNER", "STATE"))
        table.rows(
            (
                t.id,
                t.name,
                t.scope.value,
                ",".join(t.domains) or "-",
                t.owner or "-",
                "active" if t.active else "revoked",
            )
            for t in page.items
        )
        table.finish()
        return EXIT_OK
