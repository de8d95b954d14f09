"""Mapping between idsvc objects and SCIM JSON resources, and the response projection.

* A **User** is an ``Account``: ``id`` and ``userName`` are the canonical address, ``displayName``
  the account's display name, ``active`` its ``enabled`` flag; ``externalId``, ``name``,
  ``emails`` and the enterprise extension come from the SCIM mapping table
  (``idsvc.api.scim.store``).
* A **Group** is an ``Alias``: ``id`` and ``displayName`` are its source address, ``members`` the
  destinations that are accounts of this service (other destinations, e.g. external forwards,
  are kept but not shown). A group without members exists only in the mapping table.
* ``meta.version`` is a weak ETag of the directory revision and the mapping-row revision.

:func:`split_user` turns a client document into typed parts by running it through the PATCH
applier (one place for name resolution and value typing). :func:`project` applies
``attributes`` / ``excludedAttributes``.

Pure functions; errors are ``PatchError`` / ``FilterError`` / ``InvalidInput``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from idsvc.api.scim import filter as scim_filter
from idsvc.api.scim import patch
from idsvc.api.scim.schemas import (
    ENTERPRISE,
    GROUP,
    GROUP_SCHEMA,
    USER,
    USER_SCHEMA,
    ResourceSpec,
)
from idsvc.api.scim.store import GroupRow, UserRow
from idsvc.errors import InvalidInput
from idsvc.model import Account, Alias

MAX_ATTRIBUTE_LIST = 50
USER_SCIM_ONLY = ("name", "emails", ENTERPRISE)  # kept in the mapping table
ALWAYS = frozenset({"id", "schemas"})


def ref(base: str, endpoint: str, key: str) -> str:
    return f"{base}/{endpoint}/{quote(key, safe='@')}"


def version(directory_rev: int, row_rev: int) -> str:
    return f'W/"{directory_rev}.{row_rev}"'


def _meta(
    kind: str, created: datetime | str, updated: datetime | str, loc: str, ver: str
) -> dict[str, Any]:
    def iso(value: datetime | str) -> str:
        return value if isinstance(value, str) else value.isoformat()

    return {
        "resourceType": kind,
        "created": iso(created),
        "lastModified": iso(updated),
        "location": loc,
        "version": ver,
    }


def user_resource(account: Account, row: UserRow | None, base: str) -> dict[str, Any]:
    key = str(account.address)
    data = row.data if row is not None else {}
    out: dict[str, Any] = {"schemas": [USER_SCHEMA], "id": key}
    if row is not None and row.external_id is not None:
        out["externalId"] = row.external_id
    out["userName"] = key
    if data.get("name"):
        out["name"] = data["name"]
    if account.display_name:
        out["displayName"] = account.display_name
    out["active"] = account.enabled
    if data.get("emails"):
        out["emails"] = data["emails"]
    if data.get(ENTERPRISE):
        out["schemas"].append(ENTERPRISE)
        out[ENTERPRISE] = data[ENTERPRISE]
    out["meta"] = _meta(
        "User",
        account.created,
        account.updated,
        ref(base, "Users", key),
        version(account.revision, row.rev if row else 0),
    )
    return out


def group_resource(
    source: str,
    alias: Alias | None,
    members: Iterable[str],
    row: GroupRow | None,
    base: str,
) -> dict[str, Any]:
    out: dict[str, Any] = {"schemas": [GROUP_SCHEMA], "id": source}
    if row is not None and row.external_id is not None:
        out["externalId"] = row.external_id
    out["displayName"] = source
    listed = [{"value": m, "$ref": ref(base, "Users", m), "type": "User"} for m in members]
    if listed:
        out["members"] = listed
    created: datetime | str = alias.created if alias is not None else (row.created if row else "")
    updated: datetime | str = alias.updated if alias is not None else created
    out["meta"] = _meta(
        "Group",
        created,
        updated,
        ref(base, "Groups", source),
        version(alias.revision if alias else 0, row.rev if row else 0),
    )
    return out


def normalise(spec: ResourceSpec, document: Any) -> dict[str, Any]:
    """A client's resource document typed and keyed by our canonical attribute names; unknown
    attributes are dropped, read-only ones (``id``, ``meta``) ignored."""
    if not isinstance(document, Mapping):
        raise patch.PatchError("the body must be a JSON object", "invalidSyntax")
    schemas = document.get("schemas")
    if schemas is not None and (not isinstance(schemas, list) or spec.core.id not in schemas):
        raise patch.PatchError(f"schemas must contain {spec.core.id}", "invalidSyntax")
    body = {
        k: v
        for k, v in document.items()
        if str(k).lower() not in ("schemas", "id", "meta") and v is not None
    }
    op = patch.Operation("replace", None, body)
    return patch.apply(spec, {}, [op])


@dataclass(frozen=True, slots=True)
class UserParts:
    user_name: str | None
    display_name: str
    active: bool | None
    password: str | None
    external_id: str | None
    data: dict[str, Any]  # SCIM-only attributes for the mapping table

    @property
    def emails(self) -> list[str]:
        return [str(e["value"]) for e in self.data.get("emails", []) if e.get("value")]


def split_user(resource: Mapping[str, Any]) -> UserParts:
    """Split a normalised User resource into directory fields and mapping-table data."""
    data = {k: resource[k] for k in USER_SCIM_ONLY if k in resource}
    user_name = resource.get("userName")
    return UserParts(
        user_name=user_name if isinstance(user_name, str) else None,
        display_name=str(resource.get("displayName") or ""),
        active=resource.get("active"),
        password=resource.get("password"),
        external_id=resource.get("externalId"),
        data=data,
    )


def user_state(resource: Mapping[str, Any]) -> dict[str, Any]:
    """The patchable view of a served User (drops id, meta, schemas)."""
    return {k: v for k, v in resource.items() if k not in ("id", "meta", "schemas")}


def normalise_user(document: Any) -> dict[str, Any]:
    return normalise(USER, document)


def normalise_group(document: Any) -> dict[str, Any]:
    return normalise(GROUP, document)


# -- attributes / excludedAttributes ------------------------------------------------------------


def attribute_list(text: str | None) -> list[scim_filter.AttrPath] | None:
    """Parse a comma-separated ``attributes`` parameter (None when absent or empty)."""
    if text is None or not text.strip():
        return None
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if len(parts) > MAX_ATTRIBUTE_LIST:
        raise InvalidInput(f"at most {MAX_ATTRIBUTE_LIST} attribute names")
    try:
        return [scim_filter.parse_attr_path(p) for p in parts]
    except scim_filter.FilterError as exc:
        raise patch.PatchError(str(exc), "invalidPath") from exc


def shows(
    include: list[scim_filter.AttrPath] | None,
    exclude: list[scim_filter.AttrPath] | None,
    name: str,
) -> bool:
    """Will :func:`project` keep the top-level attribute ``name``?"""
    low = name.lower()
    if include:
        return any(p.attr.lower() == low for p in include)
    return not any(p.attr.lower() == low and p.sub is None for p in exclude or ())


def _target(resource: dict[str, Any], path: scim_filter.AttrPath) -> tuple[dict[str, Any], str]:
    """The object holding ``path``'s attribute and that attribute's key in it (or "")."""
    holder = resource
    if path.schema is not None:
        ext = next((k for k in resource if k.lower() == path.schema.lower()), None)
        if ext is not None and isinstance(resource[ext], dict):
            holder = resource[ext]
        elif path.schema.lower() not in (USER_SCHEMA.lower(), GROUP_SCHEMA.lower()):
            return {}, ""
    key = next((k for k in holder if k.lower() == path.attr.lower()), "")
    return holder, key


def project(
    resource: dict[str, Any],
    include: list[scim_filter.AttrPath] | None,
    exclude: list[scim_filter.AttrPath] | None,
) -> dict[str, Any]:
    """Apply RFC 7644 §3.4.2.5: ``id`` and ``schemas`` are always returned."""
    if include:
        out: dict[str, Any] = {k: v for k, v in resource.items() if k in ALWAYS}
        for path in include:
            holder, key = _target(resource, path)
            if not key:
                if path.schema is None:
                    ext = next((k for k in resource if k.lower() == path.attr.lower()), None)
                    if ext is not None:  # the whole extension by its URN
                        out[ext] = resource[ext]
                continue
            value = holder[key]
            if path.sub is not None and isinstance(value, dict):
                sub = next((k for k in value if k.lower() == path.sub.lower()), None)
                if sub is None:
                    continue
                value = {sub: value[sub]}
            elif path.sub is not None and isinstance(value, list):
                sub_low = path.sub.lower()
                value = [{k: v for k, v in e.items() if k.lower() == sub_low} for e in value]
            dest = out
            if holder is not resource:
                ext_key = next(k for k in resource if resource[k] is holder)
                dest = out.setdefault(ext_key, {})
            if isinstance(value, dict) and isinstance(dest.get(key), dict):
                dest[key] = {**dest[key], **value}
            else:
                dest[key] = value
        return out
    out = dict(resource)
    for path in exclude or ():
        holder, key = _target(out, path)
        if not key or key in ALWAYS:
            continue
        if holder is out:
            if path.sub is None:
                del out[key]
            elif isinstance(out[key], dict):
                out[key] = {k: v for k, v in out[key].items() if k.lower() != path.sub.lower()}
        else:
            ext_key = next(k for k in out if out[k] is holder)
            out[ext_key] = {k: v for k, v in holder.items() if k != key}
    return out
