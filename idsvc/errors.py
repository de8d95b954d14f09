"""The exception tree of idsvc.

Foreign errors (sqlite3, python-ldap, hashing libraries) are mapped to these at the boundary of the
module that imports the foreign library; nothing above ``idsvc.directory`` or ``idsvc.passwords``
ever sees a foreign exception.

    IdsvcError
     ├── ConfigError              invalid or inconsistent settings (found at start-up)
     ├── InvalidInput             a value from outside failed validation (address, domain, field)
     │    ├── InvalidAddress
     │    └── InvalidDomain
     ├── PasswordError            unknown scheme, corrupt stored hash
     └── DirectoryError           anything the directory said
          ├── TemporaryFailure    unreachable, timeout, busy, locked: retry later (never "no user")
          ├── AmbiguousEntry      more than one entry for one login: refused, never guessed
          ├── NotFound            the object does not exist
          ├── AlreadyExists       create of an object that exists
          ├── Conflict            stale revision, dangling reference, non-empty domain …
          └── ReadOnlyDirectory   a write to a directory idsvc may only read (corporate LDAP)
"""

from __future__ import annotations


class IdsvcError(Exception):
    """Base of every error idsvc raises on purpose."""


class ConfigError(IdsvcError):
    """The configuration is invalid; raised at start-up, before any listener opens."""


class InvalidInput(IdsvcError, ValueError):
    """A value from outside failed validation; the message says which and why (no secrets)."""


class InvalidAddress(InvalidInput):
    """Not an acceptable mail address or login."""


class InvalidDomain(InvalidInput):
    """Not an acceptable domain name."""


class PasswordError(IdsvcError):
    """A stored password hash is unusable (unknown scheme, corrupt data) or a scheme is unknown."""


class DirectoryError(IdsvcError):
    """Base of the errors a directory backend raises."""


class TemporaryFailure(DirectoryError):
    """The directory cannot answer now (down, timeout, busy, locked). Callers fail *temporarily*."""


class AmbiguousEntry(DirectoryError):
    """More than one entry matches one login or address; the request is refused."""


class NotFound(DirectoryError):
    """The object does not exist."""


class AlreadyExists(DirectoryError):
    """The object already exists."""


class Conflict(DirectoryError):
    """The change conflicts with the stored state (stale revision, dependants, references)."""


class ReadOnlyDirectory(DirectoryError):
    """A provisioning write against a read-only (corporate) directory; the message names it."""
