"""``idsvc domain|user|alias …``: provisioning from the command line, through the Provisioner.

Every write goes through ``idsvc.provisioning.Provisioner`` (validation, hashing, cache
invalidation, audit with actor ``cli:<login>``). Listings are paged: one page by default
(``--limit``/``--cursor``/``--prefix``), or ``--all`` to walk every page and stream the rows —
never the whole directory in memory.

How it fails: errors propagate as ``IdsvcError``; ``idsvc.cli`` maps them to exit codes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from idsvc.cli.common import (
    EXIT_OK,
    Table,
    actor,
    format_size,
    get_password,
    parse_services,
    parse_size,
    print_json,
    print_record,
    read_stdin_secret,
)
from idsvc.cli.context import Context
from idsvc.errors import InvalidInput
from idsvc.model import Account, Address, Alias, Domain, Page
from idsvc.password_policy import Role
from idsvc.provisioning import Provisioner, account_view, alias_view, domain_view

T = TypeVar("T")
Fetch = Callable[[str | None, int], Awaitable[Page[T]]]


# -- listings ---------------------------------------------------------------------------------


async def _list(
    ctx: Context,
    args: argparse.Namespace,
    fetch: Fetch[T],
    view: Callable[[T], dict[str, Any]],
    headers: Sequence[str],
    row: Callable[[T], Sequence[str]],
) -> int:
    """Print one page, or with ``--all`` every page as it arrives."""
    out = sys.stdout
    cursor: str | None = args.cursor
    table = Table(headers, out)
    count = 0
    first = True
    if ctx.json and args.all:
        out.write('{"items":[')
    while True:
        page = await fetch(cursor, args.limit)
        if ctx.json and not args.all:
            print_json(
                {
                    "items": [view(item) for item in page.items],
                    "next_cursor": page.next_cursor,
                    "total": page.total,
                }
            )
        elif ctx.json:
            for item in page.items:
                out.write(("" if first else ",") + "\n")
                first = False
                out.write(json.dumps(view(item), ensure_ascii=False, default=str))
        else:
            table.rows(row(item) for item in page.items)
        count += len(page.items)
        out.flush()
        cursor = page.next_cursor
        if not args.all or cursor is None or not page.items:
            break
    if ctx.json and args.all:
        out.write(f'\n],"next_cursor":null,"total":{count}}}\n')
    elif not ctx.json:
        table.finish()
        if cursor is not None and not args.all:
            sys.stderr.write(f"(more results: --cursor {cursor}, or --all)\n")
    return EXIT_OK


def _quota_arg(value: str | None) -> int | None:
    return None if value is None else parse_size(value)


def _enabled_arg(args: argparse.Namespace) -> bool | None:
    if getattr(args, "enable", False) and getattr(args, "disable", False):
        raise InvalidInput("give --enable or --disable, not both")
    if getattr(args, "enable", False):
        return True
    if getattr(args, "disable", False):
        return False
    return None


def _show(ctx: Context, data: dict[str, Any], sizes: Sequence[str] = ()) -> None:
    if ctx.json:
        print_json(data)
        return
    human = dict(data)
    for key in sizes:
        human[key] = f"{format_size(int(human[key]))} ({human[key]} bytes)"
    print_record(human)


def _done(ctx: Context, message: str, data: dict[str, Any] | None = None) -> int:
    if ctx.json:
        print_json(data if data is not None else {"ok": True, "message": message})
    else:
        print(message)
    return EXIT_OK


# -- domains ----------------------------------------------------------------------------------


async def domain_cmd(ctx: Context, args: argparse.Namespace, prov: Provisioner) -> int:
    who = actor()
    if args.action == "add":
        domain = await prov.create_domain(
            args.name,
            actor=who,
            enabled=not args.disable,
            default_quota=parse_size(args.default_quota or "0"),
            alias_domains=args.alias_domain or (),
            description=args.description or "",
        )
        return _done(ctx, f"domain {domain.name} created", domain_view(domain))
    if args.action == "set":
        domain = await prov.update_domain(
            args.name,
            actor=who,
            enabled=_enabled_arg(args),
            default_quota=_quota_arg(args.default_quota),
            alias_domains=None if args.alias_domain is None else args.alias_domain,
            description=args.description,
        )
        return _done(ctx, f"domain {domain.name} updated", domain_view(domain))
    if args.action == "show":
        _show(ctx, domain_view(await prov.get_domain(args.name)), ("default_quota",))
        return EXIT_OK
    if args.action == "del":
        await prov.delete_domain(args.name, actor=who, cascade=args.cascade)
        return _done(ctx, f"domain {args.name} deleted")

    def row(d: Domain) -> Sequence[str]:
        aliases = ",".join(d.alias_domains) or "-"
        state = "enabled" if d.enabled else "disabled"
        return (d.name, state, format_size(d.default_quota), aliases)

    return await _list(
        ctx,
        args,
        lambda cursor, limit: prov.list_domains(prefix=args.prefix, cursor=cursor, limit=limit),
        domain_view,
        ("DOMAIN", "STATE", "DEFAULT QUOTA", "ALIAS DOMAINS"),
        row,
    )


# -- users ------------------------------------------------------------------------------------


async def user_cmd(ctx: Context, args: argparse.Namespace, prov: Provisioner) -> int:
    who = actor()
    action = args.action
    if action in ("add", "passwd"):
        Address.parse(args.address)  # refuse a bad address before asking for a password
    if action == "add":
        services = None if args.services is None else parse_services(args.services)
        if args.password_hash_stdin:
            stored = read_stdin_secret(what="password hash")
            account = await prov.create_user(
                args.address,
                actor=who,
                password_hash=stored,
                role=Role.ADMIN,  # the local operator is a global admin
                display_name=args.name or "",
                enabled=not args.disable,
                quota=_quota_arg(args.quota),
                services=services,
            )
        else:
            account = await prov.create_user(
                args.address,
                actor=who,
                password=get_password(args, confirm=True),
                display_name=args.name or "",
                enabled=not args.disable,
                quota=_quota_arg(args.quota),
                services=services,
            )
        return _done(ctx, f"user {account.address} created", account_view(account))
    if action == "set":
        if args.name is None and args.quota is None and args.services is None:
            raise InvalidInput("nothing to change: give --name, --quota or --services")
        account = await prov.update_user(
            args.address,
            actor=who,
            display_name=args.name,
            quota=_quota_arg(args.quota),
            services=None if args.services is None else parse_services(args.services),
        )
        return _done(ctx, f"user {account.address} updated", account_view(account))
    if action == "passwd":
        if args.password_hash_stdin:
            stored = read_stdin_secret(what="password hash")
            account = await prov.import_password_hash(
                args.address, stored, actor=who, role=Role.ADMIN
            )
        else:
            password = get_password(args, confirm=True)
            account = await prov.set_password(args.address, password, actor=who)
        return _done(ctx, f"password of {account.address} changed", account_view(account))
    if action in ("enable", "disable"):
        account = await prov.set_enabled(args.address, action == "enable", actor=who)
        return _done(ctx, f"user {account.address} {action}d", account_view(account))
    if action == "show":
        _show(ctx, account_view(await prov.get_user(args.address)), ("quota",))
        return EXIT_OK
    if action == "del":
        await prov.delete_user(args.address, actor=who)
        return _done(ctx, f"user {args.address} deleted")

    def row(a: Account) -> Sequence[str]:
        services = ",".join(sorted(s.value for s in a.services)) or "-"
        state = "enabled" if a.enabled else "disabled"
        return (str(a.address), state, format_size(a.quota), services, a.display_name or "-")

    return await _list(
        ctx,
        args,
        lambda cursor, limit: prov.list_users(
            args.domain, prefix=args.prefix, cursor=cursor, limit=limit
        ),
        account_view,
        ("ADDRESS", "STATE", "QUOTA", "SERVICES", "NAME"),
        row,
    )


# -- aliases ----------------------------------------------------------------------------------


async def alias_cmd(ctx: Context, args: argparse.Namespace, prov: Provisioner) -> int:
    who = actor()
    if args.action == "add":
        alias = await prov.create_alias(
            args.source, args.destinations, actor=who, enabled=not args.disable
        )
        return _done(ctx, f"alias {alias.source} created", alias_view(alias))
    if args.action == "show":
        _show(ctx, alias_view(await prov.get_alias(args.source)))
        return EXIT_OK
    if args.action == "del":
        await prov.delete_alias(args.source, actor=who)
        return _done(ctx, f"alias {args.source} deleted")

    def row(a: Alias) -> Sequence[str]:
        state = "enabled" if a.enabled else "disabled"
        return (a.source, state, ",".join(a.destinations))

    return await _list(
        ctx,
        args,
        lambda cursor, limit: prov.list_aliases(
            args.domain, prefix=args.prefix, cursor=cursor, limit=limit
        ),
        alias_view,
        ("SOURCE", "STATE", "DESTINATIONS"),
        row,
    )
