"""What this SCIM service provider serves: the attribute model of User (with the optional
enterprise extension) and Group, and the discovery documents built from it (``/Schemas``,
``/ResourceTypes``, ``/ServiceProviderConfig``).

The same :class:`Attr` tables drive the discovery documents, the PATCH applier
(``idsvc.api.scim.patch``: name resolution, booleans, multi-valued attributes) and the input
checks of the routes, so what we advertise is what we accept.

Pure data and functions: no I/O. Nothing here fails at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SCIM_JSON = "application/scim+json"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SEARCH_REQUEST = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
SPC_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
RT_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
SCHEMA_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Schema"

MAX_COUNT = 200  # largest page a list returns, whatever ``count`` asks for
DEFAULT_COUNT = 100
MAX_STRING = 1024  # any stored SCIM string attribute
MAX_MULTI = 20  # elements of a stored multi-valued attribute (emails)
MAX_MEMBERS = 1000  # members of one group (= alias destinations)


@dataclass(frozen=True, slots=True)
class Attr:
    """One attribute (RFC 7643 §7). ``common`` attributes (externalId) are accepted everywhere
    but are not listed in a schema document."""

    name: str
    type: str = "string"  # string | boolean | complex | reference | dateTime | integer
    multi: bool = False
    required: bool = False
    case_exact: bool = False
    mutability: str = "readWrite"  # readOnly | readWrite | immutable | writeOnly
    returned: str = "default"  # always | never | default | request
    uniqueness: str = "none"
    description: str = ""
    sub: tuple[Attr, ...] = ()
    canonical: tuple[str, ...] = ()
    reference_types: tuple[str, ...] = ()
    common: bool = False

    def child(self, name: str) -> Attr | None:
        low = name.lower()
        return next((a for a in self.sub if a.name.lower() == low), None)

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "multiValued": self.multi,
            "description": self.description,
            "required": self.required,
            "caseExact": self.case_exact,
            "mutability": self.mutability,
            "returned": self.returned,
            "uniqueness": self.uniqueness,
        }
        if self.sub:
            doc["subAttributes"] = [a.document() for a in self.sub]
        if self.canonical:
            doc["canonicalValues"] = list(self.canonical)
        if self.reference_types:
            doc["referenceTypes"] = list(self.reference_types)
        return doc


@dataclass(frozen=True, slots=True)
class Schema:
    id: str
    name: str
    description: str
    attrs: tuple[Attr, ...]

    def attr(self, name: str) -> Attr | None:
        low = name.lower()
        return next((a for a in self.attrs if a.name.lower() == low), None)

    def document(self, base: str) -> dict[str, Any]:
        return {
            "schemas": [SCHEMA_SCHEMA],
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "attributes": [a.document() for a in self.attrs if not a.common],
            "meta": {"resourceType": "Schema", "location": f"{base}/Schemas/{self.id}"},
        }


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    """A resource type: its core schema and the extension schemas it may carry."""

    name: str
    endpoint: str
    core: Schema
    extensions: tuple[Schema, ...] = field(default=())

    def extension(self, urn: str) -> Schema | None:
        low = urn.lower()
        return next((s for s in self.extensions if s.id.lower() == low), None)

    def resolve(self, schema: str | None, name: str) -> tuple[Schema, Attr] | None:
        """The schema and attribute ``[schema:]name`` designates, or None."""
        owner = self.core if schema is None or schema.lower() == self.core.id.lower() else None
        if owner is None and schema is not None:
            owner = self.extension(schema)
        if owner is None:
            return None
        attr = owner.attr(name)
        return None if attr is None else (owner, attr)

    def document(self, base: str) -> dict[str, Any]:
        return {
            "schemas": [RT_SCHEMA],
            "id": self.name,
            "name": self.name,
            "endpoint": f"/{self.endpoint}",
            "description": self.core.description,
            "schema": self.core.id,
            "schemaExtensions": [{"schema": s.id, "required": False} for s in self.extensions],
            "meta": {
                "resourceType": "ResourceType",
                "location": f"{base}/ResourceTypes/{self.name}",
            },
        }


EXTERNAL_ID = Attr(
    "externalId",
    case_exact=True,
    common=True,
    description="Identifier of the resource in the provisioning client",
)

_NAME = Attr(
    "name",
    type="complex",
    description="The components of the user's name",
    sub=tuple(
        Attr(n, description=d)
        for n, d in (
            ("formatted", "The full name"),
            ("familyName", "Family name"),
            ("givenName", "Given name"),
            ("middleName", "Middle name"),
            ("honorificPrefix", "Honorific prefix"),
            ("honorificSuffix", "Honorific suffix"),
        )
    ),
)

_EMAILS = Attr(
    "emails",
    multi=True,
    type="complex",
    description="Contact e-mail addresses (mail is routed by userName, not by these)",
    sub=(
        Attr("value", description="An e-mail address"),
        Attr("display", description="A label for the address"),
        Attr("type", description="work, home or other", canonical=("work", "home", "other")),
        Attr("primary", type="boolean", description="The preferred address"),
    ),
)

USER_CORE = Schema(
    USER_SCHEMA,
    "User",
    "A mail account; userName is its canonical mail address",
    (
        Attr(
            "userName",
            required=True,
            mutability="immutable",
            uniqueness="server",
            description="The mail address of the account (canonicalised: lower case, A-labels)",
        ),
        _NAME,
        Attr("displayName", description="Name shown to people"),
        Attr("active", type="boolean", description="false disables every login at once"),
        Attr(
            "password",
            mutability="writeOnly",
            returned="never",
            description="New password; hashed with the configured scheme, never returned",
        ),
        _EMAILS,
        EXTERNAL_ID,
    ),
)

ENTERPRISE_USER = Schema(
    ENTERPRISE,
    "EnterpriseUser",
    "Enterprise User (stored for the client, not used by mail delivery)",
    tuple(
        Attr(n, description=d)
        for n, d in (
            ("employeeNumber", "Employee number"),
            ("costCenter", "Cost center"),
            ("organization", "Organization"),
            ("division", "Division"),
            ("department", "Department"),
        )
    ),
)

GROUP_CORE = Schema(
    GROUP_SCHEMA,
    "Group",
    "A distribution list: an alias whose address is displayName",
    (
        Attr(
            "displayName",
            required=True,
            mutability="immutable",
            uniqueness="server",
            description="The alias address (local@domain, or @domain for a catch-all)",
        ),
        Attr(
            "members",
            type="complex",
            multi=True,
            description="Users of this service the alias delivers to",
            sub=(
                Attr("value", mutability="immutable", description="id of the member User"),
                Attr(
                    "$ref",
                    type="reference",
                    mutability="immutable",
                    reference_types=("User",),
                    description="URI of the member User",
                ),
                Attr(
                    "type",
                    mutability="immutable",
                    canonical=("User",),
                    description="Always User",
                ),
            ),
        ),
        EXTERNAL_ID,
    ),
)

USER = ResourceSpec("User", "Users", USER_CORE, (ENTERPRISE_USER,))
GROUP = ResourceSpec("Group", "Groups", GROUP_CORE)
RESOURCES: Mapping[str, ResourceSpec] = {"User": USER, "Group": GROUP}
SCHEMAS: Mapping[str, Schema] = {s.id: s for s in (USER_CORE, ENTERPRISE_USER, GROUP_CORE)}


def service_provider_config(base: str) -> dict[str, Any]:
    return {
        "schemas": [SPC_SCHEMA],
        "documentationUri": "https://idsvc.invalid/docs/scim",
        "patch": {"supported": True},
        "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": True, "maxResults": MAX_COUNT},
        "changePassword": {"supported": True},
        "sort": {"supported": False},
        "etag": {"supported": True},
        "authenticationSchemes": [
            {
                "type": "oauthbearertoken",
                "name": "Bearer token",
                "description": "An idsvc API token (idsvc_<id>_<secret>) in Authorization: Bearer",
                "primary": True,
            }
        ],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": f"{base}/ServiceProviderConfig",
        },
    }
