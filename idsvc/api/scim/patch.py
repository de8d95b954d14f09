"""SCIM PATCH (RFC 7644 §3.5.2) applied to a resource held as SCIM JSON (a plain dict).

What it does: :func:`parse_operations` checks a ``PatchOp`` body (bounded number of operations,
``op`` case-insensitive ``add`` / ``replace`` / ``remove``) and :func:`apply` runs the operations,
in order, on a copy of the resource, using the attribute tables of ``idsvc.api.scim.schemas`` to
resolve names case-insensitively and to type values. Paths: ``attr``, ``attr.sub``,
``urn:…:attr``, ``attr[filter]`` and ``attr[filter].sub``. Client quirks handled on purpose:

* ``"True"`` / ``"False"`` strings for boolean attributes (Entra ID) become booleans;
* an operation without ``path`` whose ``value`` is an object applies each key as a path, and the
  keys may be dotted (``name.givenName``) or URN-qualified (Entra ID);
* ``remove`` of a multi-valued attribute with a ``value`` list removes those elements, matched by
  their ``value`` sub-attribute (Entra ID removing group members);
* ``add`` / ``replace`` on ``attr[a eq "x"].sub`` with no matching element creates the element
  from the equalities (Entra ID ``emails[type eq "work"].value``);
* ``remove`` on a filter that matches nothing is a no-op (idempotent retries).

What it does not do: store anything, or check values beyond their types and sizes (the caller
validates mail addresses, membership and so on). Unknown attributes inside a value object are
ignored, like unknown attributes in POST/PUT; an explicit ``path`` naming an unknown attribute is
refused.

How it fails: :class:`PatchError` carrying the SCIM ``scimType`` (``invalidSyntax``,
``invalidPath``, ``invalidFilter``, ``invalidValue``, ``mutability``, ``noTarget``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from idsvc.api.scim import filter as scim_filter
from idsvc.api.scim.schemas import (
    MAX_MEMBERS,
    MAX_MULTI,
    MAX_STRING,
    PATCH_OP,
    Attr,
    ResourceSpec,
)
from idsvc.errors import InvalidInput

MAX_OPERATIONS = 100
MAX_PATH = 512
OPS = ("add", "replace", "remove")


class PatchError(InvalidInput):
    """A PATCH that cannot be applied; ``scim_type`` is the SCIM error ``scimType``."""

    def __init__(self, message: str, scim_type: str = "invalidValue") -> None:
        super().__init__(message)
        self.scim_type = scim_type


@dataclass(frozen=True, slots=True)
class PatchPath:
    attr: scim_filter.AttrPath  # its ``sub`` is set only when there is no filter
    filter: scim_filter.Filter | None = None
    sub: str | None = None  # the sub-attribute after ``[filter]``


@dataclass(frozen=True, slots=True)
class Operation:
    op: str
    path: PatchPath | None
    value: Any


def parse_path(text: str) -> PatchPath:
    if not isinstance(text, str) or not text or len(text) > MAX_PATH:
        raise PatchError("path must be a non-empty string", "invalidPath")
    try:
        if "[" not in text:
            return PatchPath(scim_filter.parse_attr_path(text))
        head, _, rest = text.partition("[")
        inner, close, tail = rest.rpartition("]")
        if not close:
            raise PatchError("unbalanced '[' in path", "invalidPath")
        attr = scim_filter.parse_attr_path(head)
        if attr.sub is not None:
            raise PatchError("a filter applies to an attribute, not a sub-attribute", "invalidPath")
        sub = None
        if tail:
            if not tail.startswith("."):
                raise PatchError("unexpected text after ']' in path", "invalidPath")
            sub = scim_filter.parse_attr_path(tail[1:]).attr
        return PatchPath(attr, scim_filter.parse(inner), sub)
    except scim_filter.FilterError as exc:
        raise PatchError(f"invalid path: {exc}", "invalidPath") from exc


def parse_operations(body: Any) -> list[Operation]:
    """Validate a PatchOp request body and return its operations."""
    if not isinstance(body, Mapping):
        raise PatchError("the body must be a PatchOp object", "invalidSyntax")
    schemas = body.get("schemas")
    if not isinstance(schemas, list) or PATCH_OP not in schemas:
        raise PatchError(f"schemas must contain {PATCH_OP}", "invalidSyntax")
    ops = body.get("Operations", body.get("operations"))
    if not isinstance(ops, list) or not ops:
        raise PatchError("Operations must be a non-empty list", "invalidSyntax")
    if len(ops) > MAX_OPERATIONS:
        raise PatchError(f"at most {MAX_OPERATIONS} operations per request", "invalidSyntax")
    out: list[Operation] = []
    for raw in ops:
        if not isinstance(raw, Mapping):
            raise PatchError("each operation must be an object", "invalidSyntax")
        fields = {str(k).lower(): v for k, v in raw.items()}
        op = fields.get("op")
        if not isinstance(op, str) or op.lower() not in OPS:
            raise PatchError("op must be add, replace or remove", "invalidSyntax")
        path = fields.get("path")
        parsed = None if path is None or path == "" else parse_path(path)
        if "value" not in fields and op.lower() != "remove":
            raise PatchError(f"{op.lower()} needs a value", "invalidValue")
        out.append(Operation(op.lower(), parsed, fields.get("value")))
    return out


# -- typing values ------------------------------------------------------------------------------


def _bool(attr: Attr, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise PatchError(f"{attr.name} must be a boolean")


def _scalar(attr: Attr, value: Any) -> Any:
    if attr.type == "boolean":
        return _bool(attr, value)
    if attr.type == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise PatchError(f"{attr.name} must be an integer")
        return value
    if not isinstance(value, str):
        raise PatchError(f"{attr.name} must be a string")
    if len(value) > MAX_STRING:
        raise PatchError(f"{attr.name} longer than {MAX_STRING} characters")
    return value


def _complex(attr: Attr, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise PatchError(f"{attr.name} must be an object")
    out: dict[str, Any] = {}
    for key, item in value.items():
        child = attr.child(str(key))
        if child is None or child.mutability == "readOnly" or item is None:
            continue  # unknown and read-only sub-attributes are ignored (RFC 7643 §2.2)
        out[child.name] = _scalar(child, item)
    return out


def _check_count(attr: Attr, count: int) -> None:
    """Bound a multi-valued attribute: group members have their own, higher limit."""
    limit = MAX_MEMBERS if attr.name == "members" else MAX_MULTI
    if count > limit:
        raise PatchError(f"too many values for {attr.name}")


def coerce(attr: Attr, value: Any) -> Any:
    """``value`` typed for ``attr`` (a list for multi-valued attributes)."""
    if attr.multi:
        items = value if isinstance(value, list) else [value]
        _check_count(attr, len(items))
        return [
            _complex(attr, item) if attr.type == "complex" else _scalar(attr, item)
            for item in items
        ]
    if attr.type == "complex":
        return _complex(attr, value)
    return _scalar(attr, value)


# -- applying -----------------------------------------------------------------------------------


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _resolve(
    spec: ResourceSpec, resource: dict[str, Any], path: scim_filter.AttrPath
) -> tuple[dict[str, Any], Attr]:
    found = spec.resolve(path.schema, path.attr)
    if found is None:
        if path.schema is None and spec.extension(path.attr) is not None:
            raise PatchError("name an attribute of the extension, not the extension", "invalidPath")
        raise PatchError(f"unknown attribute {str(path)[:80]!r}", "invalidPath")
    schema, attr = found
    if attr.mutability == "readOnly":
        raise PatchError(f"{attr.name} is read-only", "mutability")
    if schema is spec.core:
        return resource, attr
    ext = resource.get(schema.id)
    if not isinstance(ext, dict):
        ext = {}
        resource[schema.id] = ext
    return ext, attr


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict) and "value" in a and "value" in b:
        return bool(a["value"] == b["value"])
    return bool(a == b)


def _set_whole(op: str, container: dict[str, Any], attr: Attr, value: Any) -> None:
    typed = coerce(attr, value)
    if attr.multi:
        if op == "add":
            merged = list(container.get(attr.name) or [])
            for item in typed:
                match = next((i for i, old in enumerate(merged) if _same(old, item)), None)
                if match is None:
                    merged.append(item)
                elif isinstance(item, dict):
                    merged[match] = {**merged[match], **item}
            typed = merged
        _check_count(attr, len(typed))
        container[attr.name] = typed
    elif attr.type == "complex":  # add and replace both merge sub-attributes (§3.5.2.1/3)
        container[attr.name] = {**(container.get(attr.name) or {}), **typed}
    else:
        container[attr.name] = typed


def _remove_values(container: dict[str, Any], attr: Attr, value: Any) -> None:
    """Entra ID: ``remove`` on a multi-valued attribute with the elements to drop as value."""
    drop = coerce(attr, value)
    kept = [old for old in container.get(attr.name) or [] if not any(_same(old, d) for d in drop)]
    container[attr.name] = kept


def _equalities_only(node: scim_filter.Filter) -> dict[str, Any] | None:
    """``{attr: value}`` when a filter is a conjunction of ``attr eq value``, else None."""
    if isinstance(node, scim_filter.And):
        left = _equalities_only(node.left)
        right = _equalities_only(node.right)
        return None if left is None or right is None else {**left, **right}
    if (
        isinstance(node, scim_filter.Compare)
        and node.op == "eq"
        and node.path.sub is None
        and node.path.schema is None
    ):
        return {node.path.attr: node.value}
    return None


def _apply_filtered(
    op: str, container: dict[str, Any], attr: Attr, path: PatchPath, value: Any
) -> None:
    assert path.filter is not None
    if not attr.multi or attr.type != "complex":
        raise PatchError(f"{attr.name} is not a multi-valued complex attribute", "invalidFilter")
    child = None
    if path.sub is not None:
        child = attr.child(path.sub)
        if child is None:
            raise PatchError(f"unknown sub-attribute {path.sub[:40]!r}", "invalidPath")
        if child.mutability == "readOnly":
            raise PatchError(f"{attr.name}.{child.name} is read-only", "mutability")
    items: list[dict[str, Any]] = list(container.get(attr.name) or [])
    hits = [i for i, item in enumerate(items) if scim_filter.evaluate(path.filter, item)]
    if op == "remove":
        if child is None:
            items = [item for i, item in enumerate(items) if i not in hits]
        else:
            for i in hits:
                items[i] = {k: v for k, v in items[i].items() if k != child.name}
        container[attr.name] = items
        return
    if not hits:
        seed = _equalities_only(path.filter)
        if seed is None:
            raise PatchError("the filter matches no element", "noTarget")
        items.append(_complex(attr, seed))
        hits = [len(items) - 1]
    for i in hits:
        if child is not None:
            items[i] = {**items[i], child.name: _scalar(child, value)}
        else:
            items[i] = {**items[i], **_complex(attr, value)}
    _check_count(attr, len(items))
    container[attr.name] = items


def _apply_one(
    spec: ResourceSpec, resource: dict[str, Any], op: str, path: PatchPath, value: Any
) -> None:
    if path.filter is None and path.attr.sub is None:
        ext = spec.extension(str(path.attr))
        if ext is not None:  # the path names a whole extension: its attributes, one by one
            if op == "remove":
                resource.pop(ext.id, None)
            else:
                _apply_object(spec, resource, op, {ext.id: value})
            return
    container, attr = _resolve(spec, resource, path.attr)
    if path.filter is not None:
        _apply_filtered(op, container, attr, path, value)
    elif path.attr.sub is not None:
        child = attr.child(path.attr.sub) if attr.type == "complex" else None
        if child is None:
            raise PatchError(f"unknown attribute {str(path.attr)[:80]!r}", "invalidPath")
        if child.mutability == "readOnly":
            raise PatchError(f"{attr.name}.{child.name} is read-only", "mutability")
        targets = container.get(attr.name)
        elements = list(targets or []) if attr.multi else [dict(targets or {})]
        if op == "remove":
            elements = [{k: v for k, v in e.items() if k != child.name} for e in elements]
        else:
            typed = _scalar(child, value)
            elements = [{**e, child.name: typed} for e in elements]
        container[attr.name] = elements if attr.multi else elements[0]
    elif op == "remove":
        if value is not None and attr.multi and attr.type == "complex":
            _remove_values(container, attr, value)
        else:
            container.pop(attr.name, None)
    else:
        _set_whole(op, container, attr, value)
    _prune(container, attr.name)


def _prune(container: dict[str, Any], name: str) -> None:
    value = container.get(name)
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if not _empty(v)}
        container[name] = value
    elif isinstance(value, list):
        value = [
            {k: v for k, v in e.items() if not _empty(v)} if isinstance(e, dict) else e
            for e in value
        ]
        value = [e for e in value if not _empty(e)]
        container[name] = value
    if _empty(value):
        container.pop(name, None)


def _apply_object(spec: ResourceSpec, resource: dict[str, Any], op: str, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise PatchError(f"{op} without a path needs an object value", "invalidValue")
    for key, item in value.items():
        key = str(key)
        if key.lower() == "schemas":
            continue
        ext = spec.extension(key)
        if ext is not None:
            if not isinstance(item, Mapping):
                raise PatchError(f"{key[:80]} must be an object", "invalidValue")
            for sub_key, sub_item in item.items():
                if ext.attr(str(sub_key)) is not None:
                    attr_path = scim_filter.AttrPath(str(sub_key), schema=ext.id)
                    _apply_one(spec, resource, op, PatchPath(attr_path), sub_item)
            continue
        try:
            path = parse_path(key)
        except PatchError:
            continue  # not an attribute name of ours: ignored like in POST/PUT
        if spec.resolve(path.attr.schema, path.attr.attr) is None:
            continue
        _apply_one(spec, resource, op, path, item)


def apply(
    spec: ResourceSpec, resource: Mapping[str, Any], operations: list[Operation]
) -> dict[str, Any]:
    """Apply ``operations`` in order to a copy of ``resource``; the original is not touched."""
    out = copy.deepcopy(dict(resource))
    for operation in operations:
        if operation.path is None:
            if operation.op == "remove":
                raise PatchError("remove needs a path", "noTarget")
            _apply_object(spec, out, operation.op, operation.value)
        else:
            _apply_one(spec, out, operation.op, operation.path, operation.value)
    for ext in spec.extensions:
        if ext.id in out and _empty(out[ext.id]):
            del out[ext.id]
    return out
