"""OpenLDAP backend: ``LdapDirectory`` implements ``Directory`` and ``BindVerifier``.

How it works:

* python-ldap (≥ 3.4.5) runs in bounded thread pools, never on the event loop. Each pool is one
  identity: ``reader`` (``bind_dn``: lookups, ``search`` authentication, ``pool_size`` threads),
  ``writer`` (``writer_dn``: provisioning writes and listings only) and ``binder`` (user simple
  binds for ``auth_method = "bind"``; its connections are never used for lookups). Every worker
  thread owns at most one connection (thread-local), so a pool never has more connections than
  threads; at most ``max_pending`` requests wait at once, more fail with ``TemporaryFailure``.
* Connections go to the first ``uris`` entry not marked down; a server that failed to connect,
  dropped a connection or timed out is skipped for ``retry_after`` seconds (failover). A read
  that fails that way is retried once on a fresh connection (another server if there is one);
  writes are not retried. An idle connection the server closed is noticed before use and
  replaced. ``open()`` never fails because a server is down: connections are made lazily.
* TLS: ``ldaps://`` or ``starttls``, certificate verified against ``ca_file`` (or the system
  store) unless ``verify_tls`` is off; TLS ≥ 1.2. Referrals are never chased.
* Timeouts: ``connect_timeout`` (TCP connect) and ``timeout`` (each LDAP operation, in libldap and
  again as an overall bound around each call).
* Listings use RFC 2696 paged results. Order and cursor: the cursor is the last key returned
  (opaque, base64url). The next page searches ``(&(key>=cursor)(!(key=cursor)))`` under the key's
  ORDERING rule, streams the matches page by page and keeps only the ``limit + 1`` smallest keys
  (memory O(limit)); the extra one says whether there is a next page. A listing therefore costs
  one scan of the entries after the cursor in its scope (a domain's subtree when ``domain`` is
  given); no server-side sort control is needed.
* ``if_revision`` is a compare-and-swap inside one modify: ``delete: idsvcRevision <old>`` +
  ``add: idsvcRevision <old+1>``; if another writer got there first the delete fails
  (noSuchAttribute) → ``Conflict``. Unconditional writes bump the revision with the RFC 4525
  ``increment`` modification, atomic in the server. Writes return the entry as the server
  stored it (RFC 4527 post-read control).

Error mapping (python-ldap → idsvc.errors), at this boundary only:

=========================================================  ===================================
SERVER_DOWN, CONNECT_ERROR, TIMEOUT, BUSY, UNAVAILABLE,    TemporaryFailure (never None)
TIMELIMIT/ADMINLIMIT_EXCEEDED, UNWILLING_TO_PERFORM,
LOCAL_ERROR, OTHER, service bind refused, TLS failure,
any other unexpected error on a read
two entries for one key, SIZELIMIT_EXCEEDED (point query)  AmbiguousEntry
REFERRAL result or search continuation reference           TemporaryFailure — never followed,
                                                           never "not found", never success
ALREADY_EXISTS                                             AlreadyExists
NO_SUCH_OBJECT on a write                                  NotFound
NO_SUCH_ATTRIBUTE on the revision CAS, ASSERTION_FAILED,   Conflict
NOT_ALLOWED_ON_NONLEAF, TYPE_OR_VALUE_EXISTS
NO_SUCH_OBJECT on a lookup's search base                   TemporaryFailure (misconfigured base)
schema/ACL refusals of a write                             DirectoryError
=========================================================  ===================================

Never logged: passwords, password hashes, bind credentials.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import logging
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import ldap
import ldap.controls
import ldap.controls.readentry
import ldap.dn

from idsvc.config import LdapSettings
from idsvc.directory import filters, mapping
from idsvc.directory.base import (
    MAX_PAGE,
    AccountChanges,
    AliasChanges,
    BindResult,
    DomainChanges,
)
from idsvc.directory.filters import Filter
from idsvc.directory.mapping import IDSVC, AttributeProfile, Entry, Mod
from idsvc.errors import (
    AlreadyExists,
    AmbiguousEntry,
    ConfigError,
    Conflict,
    DirectoryError,
    InvalidInput,
    NotFound,
    TemporaryFailure,
)
from idsvc.model import Account, Address, Alias, Domain, Page, utcnow

log = logging.getLogger("idsvc.directory.ldap")

T = TypeVar("T")

SCOPE_BASE, SCOPE_ONELEVEL, SCOPE_SUBTREE = ldap.SCOPE_BASE, ldap.SCOPE_ONELEVEL, ldap.SCOPE_SUBTREE
NO_ATTRS = ["1.1"]  # RFC 4511 §4.5.1.8: return no attributes
MAX_CURSOR = 1400
MAX_SCAN = 10_000_000  # entries one listing call may stream before giving up
CAS_ATTEMPTS = 5
WRITER_THREADS = 4

# Errors after which the server is skipped for retry_after and the connection dropped.
_FAILOVER = (ldap.SERVER_DOWN, ldap.CONNECT_ERROR, ldap.TIMEOUT, ldap.BUSY, ldap.UNAVAILABLE)
# Errors that say "not now" on any operation, read or write.
_TRANSIENT = (
    *_FAILOVER,
    ldap.TIMELIMIT_EXCEEDED,
    ldap.ADMINLIMIT_EXCEEDED,
    ldap.UNWILLING_TO_PERFORM,
    ldap.LOCAL_ERROR,
    ldap.OTHER,
)
_AD_SUBCODE = re.compile(r"data ([0-9a-f]{3})", re.IGNORECASE)
_AD_EXPIRED = {"532", "773"}
_AD_DISABLED = {"533", "701", "775"}


class _ReferralSeen(Exception):
    """A search returned a continuation reference (not followed)."""


def _desc(exc: BaseException) -> str:
    """A short, secret-free description of a python-ldap error."""
    info = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    text = str(info.get("desc") or type(exc).__name__)
    extra = info.get("info")
    return f"{text} ({extra})" if extra else text


def map_error(exc: BaseException, *, write: bool = False, point: bool = False) -> DirectoryError:
    """Translate a python-ldap exception (or a referral) into an idsvc DirectoryError."""
    if isinstance(exc, DirectoryError):
        return exc
    if isinstance(exc, (_ReferralSeen, ldap.REFERRAL)):
        return TemporaryFailure("LDAP server returned a referral (not followed)")
    if isinstance(exc, ldap.ALREADY_EXISTS):
        return AlreadyExists("entry already exists")
    if isinstance(exc, ldap.NO_SUCH_OBJECT):
        if write:
            return NotFound("no such entry (or parent entry)")
        return TemporaryFailure("LDAP search base does not exist")
    if isinstance(
        exc,
        (
            ldap.NO_SUCH_ATTRIBUTE,
            ldap.ASSERTION_FAILED,
            ldap.NOT_ALLOWED_ON_NONLEAF,
            ldap.TYPE_OR_VALUE_EXISTS,
        ),
    ):
        return Conflict(f"conflicting change: {_desc(exc)}")
    if isinstance(exc, ldap.SIZELIMIT_EXCEEDED):
        if point:
            return AmbiguousEntry("more than one LDAP entry matches")
        return TemporaryFailure(
            "LDAP size limit exceeded (a paged listing needs size.prtotal=unlimited for the "
            "writer identity: see docs/ldap.md)"
        )
    if isinstance(exc, _TRANSIENT):
        return TemporaryFailure(f"LDAP error: {_desc(exc)}")
    if isinstance(exc, ldap.LDAPError):
        if write:
            return DirectoryError(f"LDAP server refused the change: {_desc(exc)}")
        return TemporaryFailure(f"LDAP error: {_desc(exc)}")
    return TemporaryFailure(f"LDAP client error: {type(exc).__name__}")


# -- servers and connections -------------------------------------------------------------------


class _Servers:
    """The configured URIs in priority order, with a 'skip until' mark per failed server."""

    def __init__(self, uris: tuple[str, ...], retry_after: float) -> None:
        self._uris = uris
        self._retry_after = retry_after
        self._down: dict[str, float] = {}
        self._lock = threading.Lock()

    def candidates(self) -> list[str]:
        now = time.monotonic()
        with self._lock:
            return [u for u in self._uris if self._down.get(u, 0.0) <= now]

    def mark_down(self, uri: str, why: str) -> None:
        with self._lock:
            first = self._down.get(uri, 0.0) <= time.monotonic()
            self._down[uri] = time.monotonic() + self._retry_after
        if first:
            log.warning("LDAP server %s marked down for %.1fs: %s", uri, self._retry_after, why)

    def mark_up(self, uri: str) -> None:
        with self._lock:
            self._down.pop(uri, None)


@dataclass(eq=False)
class _Conn:
    ldo: Any
    uri: str
    uses: int = 0


@dataclass(frozen=True)
class _Identity:
    name: str
    dn: str
    password: str | None = field(repr=False)


def _closed_by_peer(ldo: Any) -> bool:
    """True when an idle connection's socket shows EOF/reset (the server closed it)."""
    try:
        fd = ldo.get_option(ldap.OPT_DESC)
    except ldap.LDAPError:
        return True
    if not isinstance(fd, int) or fd < 0:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], 0)
        if not readable:
            return False
        with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as sock:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class _Pool:
    """One identity's connections: a bounded executor whose threads each own one connection."""

    def __init__(
        self, identity: _Identity, settings: LdapSettings, servers: _Servers, size: int
    ) -> None:
        self.identity = identity
        self._settings = settings
        self._servers = servers
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=size, thread_name_prefix=f"ldap-{identity.name}"
        )
        self._local = threading.local()
        self._conns: set[_Conn] = set()
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[[Any], T], *, retry: bool) -> concurrent.futures.Future[T]:
        return self._executor.submit(self._call, fn, retry)

    def _call(self, fn: Callable[[Any], T], retry: bool) -> T:
        for attempt in (1, 2):
            conn = self._get()
            try:
                result = fn(conn.ldo)
            except _FAILOVER as exc:
                self._drop(conn)
                self._servers.mark_down(conn.uri, _desc(exc))
                if not retry or attempt == 2:
                    raise
                continue
            conn.uses += 1
            return result
        raise AssertionError("unreachable")

    def _get(self) -> _Conn:
        if self._closed:
            raise TemporaryFailure("LDAP directory is closed")
        conn: _Conn | None = getattr(self._local, "conn", None)
        if conn is not None and conn.uses and _closed_by_peer(conn.ldo):
            self._drop(conn)
            conn = None
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._conns.add(conn)
        return conn

    def _connect(self) -> _Conn:
        candidates = self._servers.candidates()
        if not candidates:
            raise TemporaryFailure("no LDAP server available (all marked down)")
        last = "no server tried"
        for uri in candidates:
            try:
                return _Conn(self._open(uri), uri)
            except ldap.INVALID_CREDENTIALS as exc:
                log.error("LDAP %s identity was refused by %s", self.identity.name, uri)
                raise TemporaryFailure(f"LDAP {self.identity.name} bind refused") from exc
            except ldap.LDAPError as exc:
                last = _desc(exc)
                self._servers.mark_down(uri, last)
        raise TemporaryFailure(f"no LDAP server reachable: {last}")

    def _open(self, uri: str) -> Any:
        s = self._settings
        ldo = ldap.initialize(uri)
        try:
            ldo.set_option(ldap.OPT_PROTOCOL_VERSION, ldap.VERSION3)
            ldo.set_option(ldap.OPT_REFERRALS, 0)
            ldo.set_option(ldap.OPT_NETWORK_TIMEOUT, s.connect_timeout)
            ldo.set_option(ldap.OPT_TIMEOUT, s.timeout)
            ldo.timeout = s.timeout  # python-ldap's *_s methods pass it to result()
            if s.starttls or uri.startswith("ldaps://"):
                require = ldap.OPT_X_TLS_DEMAND if s.verify_tls else ldap.OPT_X_TLS_NEVER
                ldo.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, require)
                ldo.set_option(ldap.OPT_X_TLS_PROTOCOL_MIN, 0x303)  # TLS 1.2
                if s.ca_file is not None:
                    ldo.set_option(ldap.OPT_X_TLS_CACERTFILE, str(s.ca_file))
                ldo.set_option(ldap.OPT_X_TLS_NEWCTX, 0)  # must come after the TLS options
            if s.starttls and uri.startswith("ldap://"):
                ldo.start_tls_s()
            if self.identity.dn:  # never with an empty password (checked in __init__)
                ldo.simple_bind_s(self.identity.dn, self.identity.password)
            # without a DN the connection stays anonymous (the binder: its first operation is
            # a user's bind, and a failure there is handled like any other)
        except BaseException:
            with contextlib.suppress(ldap.LDAPError):
                ldo.unbind_ext_s()
            raise
        self._servers.mark_up(uri)
        return ldo

    def _drop(self, conn: _Conn) -> None:
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._lock:
            self._conns.discard(conn)
        with contextlib.suppress(ldap.LDAPError):
            conn.ldo.unbind_ext_s()

    def close(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            conns = list(self._conns)
            self._conns.clear()
        for conn in conns:
            with contextlib.suppress(ldap.LDAPError):
                conn.ldo.unbind_ext_s()


# -- cursors -------------------------------------------------------------------------------------


def encode_cursor(kind: str, key: str) -> str:
    raw = f"v1:{kind}:{key}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(kind: str, cursor: str) -> str:
    """The key a cursor of listing ``kind`` resumes after; InvalidInput if it is not one."""
    if not isinstance(cursor, str) or not cursor or len(cursor) > MAX_CURSOR:
        raise InvalidInput("invalid cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput("invalid cursor") from exc
    tag = f"v1:{kind}:"
    if not text.startswith(tag) or len(text) == len(tag) or "\x00" in text:
        raise InvalidInput("invalid cursor (not from this listing)")
    return text[len(tag) :]


# -- the directory -------------------------------------------------------------------------------


class LdapDirectory:
    """OpenLDAP with our schema (read-write), through an ``AttributeProfile``."""

    def __init__(self, settings: LdapSettings, profile: AttributeProfile = IDSVC) -> None:
        try:
            self._base = filters.parse_dn(settings.base_dn)
        except InvalidInput as exc:
            raise ConfigError(f"directory.ldap.base_dn: {exc}") from exc
        for what, dn, secret in (
            ("bind", settings.bind_dn, settings.bind_password),
            ("writer", settings.writer_dn, settings.writer_password),
        ):
            if dn and (secret is None or not secret.get_secret_value()):
                # a DN with an empty password is an unauthenticated bind (RFC 4513 §5.1.2)
                raise ConfigError(f"directory.ldap.{what}_dn is set but its password is empty")
        self._settings = settings
        self._profile = profile
        self._domains = profile.domains_dn(self._base)
        self._with_hash = settings.auth_method == "search"
        servers = _Servers(settings.uris, settings.retry_after)
        reader_pw = settings.bind_password.get_secret_value() if settings.bind_password else None
        writer_pw = (
            settings.writer_password.get_secret_value() if settings.writer_password else None
        )
        size = settings.pool_size
        self._reader = _Pool(
            _Identity("reader", settings.bind_dn, reader_pw), settings, servers, size
        )
        self._writer = _Pool(
            _Identity("writer", settings.writer_dn, writer_pw),
            settings,
            servers,
            min(size, WRITER_THREADS),
        )
        self._binder = _Pool(_Identity("binder", "", None), settings, servers, size)
        self._pending = 0
        self._closed = False
        # one call may connect to every server, then run its operation (twice for a read retry)
        self._budget = settings.connect_timeout * len(settings.uris) * 2 + settings.timeout * 2 + 1

    @classmethod
    async def open(
        cls, settings: LdapSettings, *, profile: AttributeProfile = IDSVC
    ) -> LdapDirectory:
        """Create the directory. Never fails because LDAP is down (a warning is logged and
        connections are made when needed); raises ConfigError for an invalid base DN or a
        service DN without a password."""
        directory = cls(settings, profile)
        try:
            await directory.ping()
        except TemporaryFailure as exc:
            log.warning("LDAP directory not reachable at start (will retry on use): %s", exc)
        return directory

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for pool in (self._reader, self._writer, self._binder):
            await asyncio.to_thread(pool.close)

    async def _run(
        self,
        pool: _Pool,
        fn: Callable[[Any], T],
        *,
        retry: bool,
        write: bool = False,
        budget: float | None = None,
    ) -> T:
        """Run ``fn(connection)`` on ``pool`` with the pending bound and an overall timeout;
        python-ldap errors come back mapped (``write`` selects the write-side mapping)."""
        if self._closed:
            raise TemporaryFailure("LDAP directory is closed")
        if self._pending >= self._settings.max_pending:
            raise TemporaryFailure("too many pending LDAP requests")
        self._pending += 1
        try:
            future = pool.submit(fn, retry=retry)
            return await asyncio.wait_for(asyncio.wrap_future(future), budget or self._budget)
        except TimeoutError as exc:
            raise TemporaryFailure("LDAP request timed out") from exc
        except (ldap.LDAPError, _ReferralSeen) as exc:
            raise map_error(exc, write=write) from exc
        except RuntimeError as exc:  # executor shut down under us
            if self._closed:
                raise TemporaryFailure("LDAP directory is closed") from exc
            raise
        finally:
            self._pending -= 1

    # -- blocking helpers (run in pool threads) ----------------------------------------------

    def _search(
        self, ldo: Any, base: str, scope: int, filt: Filter, attrs: list[str], sizelimit: int = 0
    ) -> list[Entry]:
        results = ldo.search_ext_s(
            base, scope, filt, attrlist=attrs, timeout=self._settings.timeout, sizelimit=sizelimit
        )
        entries = []
        for dn, data in results:
            if dn is None:  # continuation reference (RFC 4511 §4.5.3)
                raise _ReferralSeen
            entries.append(Entry(dn, data))
        return entries

    def _point(self, ldo: Any, base: str, filt: Filter, attrs: list[str]) -> Entry | None:
        """At most one entry for a key: two (or a size limit) is AmbiguousEntry."""
        try:
            entries = self._search(ldo, base, SCOPE_SUBTREE, filt, attrs, sizelimit=2)
        except (ldap.LDAPError, _ReferralSeen) as exc:
            if isinstance(exc, _FAILOVER):
                raise
            raise map_error(exc, point=True) from exc
        if len(entries) > 1:
            raise AmbiguousEntry("more than one LDAP entry for one key")
        return entries[0] if entries else None

    def _paged(
        self, ldo: Any, base: str, scope: int, filt: Filter, attrs: list[str]
    ) -> Iterator[Entry]:
        """Yield entries of a search, RFC 2696 page by page."""
        page = ldap.controls.SimplePagedResultsControl(
            True, size=self._settings.page_size, cookie=b""
        )
        scanned = 0
        while True:
            msgid = ldo.search_ext(
                base, scope, filt, attrlist=attrs, serverctrls=[page],
                timeout=self._settings.timeout,
            )  # fmt: skip
            _, data, _, ctrls = ldo.result3(msgid, all=1, timeout=self._settings.timeout)
            for dn, values in data:
                if dn is None:
                    raise _ReferralSeen
                scanned += 1
                if scanned > MAX_SCAN:
                    raise TemporaryFailure("listing scanned too many entries")
                yield Entry(dn, values)
            cookie = b""
            for ctrl in ctrls:
                if ctrl.controlType == ldap.controls.SimplePagedResultsControl.controlType:
                    cookie = ctrl.cookie
            if not cookie:
                return
            page.cookie = cookie

    def _first_page(self, ldo: Any, base: str, scope: int, filt: Filter, size: int) -> list[str]:
        """DNs of the first ``size`` matches (no attributes)."""
        page = ldap.controls.SimplePagedResultsControl(True, size=size, cookie=b"")
        msgid = ldo.search_ext(
            base, scope, filt, attrlist=NO_ATTRS, serverctrls=[page],
            timeout=self._settings.timeout,
        )  # fmt: skip
        _, data, _, _ = ldo.result3(msgid, all=1, timeout=self._settings.timeout)
        dns = []
        for dn, _values in data:
            if dn is None:
                raise _ReferralSeen
            dns.append(dn)
        return dns

    def _post_read(self, attrs: list[str]) -> Any:
        return ldap.controls.readentry.PostReadControl(criticality=True, attrList=attrs)

    @staticmethod
    def _read_back(response: Any) -> Entry:
        for ctrl in response[3]:
            if isinstance(ctrl, ldap.controls.readentry.PostReadControl) and ctrl.entry:
                return Entry(ctrl.dn, ctrl.entry)
        raise TemporaryFailure("LDAP server did not return the post-read entry")

    # -- lookups -------------------------------------------------------------------------------

    async def ping(self) -> None:
        """Raise TemporaryFailure unless the reader can read the base entry now."""

        def op(ldo: Any) -> None:
            ldo.search_ext_s(
                self._base, SCOPE_BASE, "(objectClass=*)", attrlist=NO_ATTRS,
                timeout=self._settings.timeout,
            )  # fmt: skip

        await self._run(self._reader, op, retry=True)

    async def find_domain(self, name: str) -> Domain | None:
        filt = self._profile.domain_filter(name)
        attrs = self._profile.domain_attrs()

        def op(ldo: Any) -> Domain | None:
            entry = self._point(ldo, self._domains, filt, attrs)
            return None if entry is None else self._profile.domain_from_entry(entry)

        return await self._run(self._reader, op, retry=True)

    async def find_account(self, address: Address) -> Account | None:
        filt = self._profile.account_filter(address)
        attrs = self._profile.account_attrs(with_hash=self._with_hash)

        def op(ldo: Any) -> Account | None:
            entry = self._point(ldo, self._domains, filt, attrs)
            if entry is None:
                return None
            return self._profile.account_from_entry(entry, with_hash=self._with_hash)

        return await self._run(self._reader, op, retry=True)

    async def find_alias(self, source: str) -> Alias | None:
        filt = self._profile.alias_filter(source)
        attrs = self._profile.alias_attrs()

        def op(ldo: Any) -> Alias | None:
            entry = self._point(ldo, self._domains, filt, attrs)
            return None if entry is None else self._profile.alias_from_entry(entry)

        return await self._run(self._reader, op, retry=True)

    async def bind_check(self, account: Account, password: str) -> BindResult:
        """Verify ``password`` with a simple bind as the account's DN, on a binder connection
        (never used for lookups). Empty or NUL-bearing passwords never reach a bind (RFC 4513
        §5.1.2: DN + empty password is an unauthenticated bind that "succeeds")."""
        if not isinstance(password, str) or not password or "\x00" in password:
            return BindResult.INVALID_CREDENTIALS
        filt = self._profile.account_filter(account.address)

        def find(ldo: Any) -> str | None:
            entry = self._point(ldo, self._domains, filt, NO_ATTRS)
            return None if entry is None else entry.dn

        dn = await self._run(self._reader, find, retry=True)
        if dn is None:
            return BindResult.INVALID_CREDENTIALS

        def bind(ldo: Any) -> BindResult:
            try:
                ldo.simple_bind_s(dn, password)
            except ldap.INVALID_CREDENTIALS as exc:
                return _bind_failure(exc)
            return BindResult.OK

        return await self._run(self._binder, bind, retry=True)

    # -- writes --------------------------------------------------------------------------------

    async def _write(self, fn: Callable[[Any], T]) -> T:
        return await self._run(self._writer, fn, retry=False, write=True)

    def _add(self, ldo: Any, dn: str, attrs: dict[str, list[bytes]], read: list[str]) -> Entry:
        response = ldo.add_ext_s(dn, list(attrs.items()), serverctrls=[self._post_read(read)])
        return self._read_back(response)

    def _cas_modify(
        self,
        ldo: Any,
        filt: Filter,
        attrs: list[str],
        mods: list[Mod],
        if_revision: int | None,
    ) -> Entry:
        """Find the one entry matching ``filt`` and apply ``mods`` plus a revision CAS."""
        for _ in range(CAS_ATTEMPTS):
            entry = self._point(ldo, self._domains, filt, attrs)
            if entry is None:
                raise NotFound("no such entry")
            stored = entry.first(self._profile.revision)
            try:
                current = int(stored) if stored is not None else None
            except ValueError as exc:
                raise TemporaryFailure(f"entry {entry.dn!r}: invalid revision") from exc
            effective = current if current is not None else 1
            if if_revision is not None and if_revision != effective:
                raise Conflict(f"stale revision {if_revision} (current {effective})")
            if if_revision is None and current is not None:
                changes = mods + self._profile.increment_mods(utcnow())
            else:
                changes = mods + self._profile.revision_mods(current, effective + 1, utcnow())
            try:
                response = ldo.modify_ext_s(entry.dn, changes, serverctrls=[self._post_read(attrs)])
            except (ldap.NO_SUCH_ATTRIBUTE, ldap.TYPE_OR_VALUE_EXISTS) as exc:
                if if_revision is not None:
                    raise Conflict("the entry was changed concurrently") from exc
                continue  # someone else bumped it: read again and retry
            return self._read_back(response)
        raise Conflict("the entry keeps changing concurrently")

    def _exact_domain(self, name: str) -> Filter:
        return filters.and_(
            filters.object_class(self._profile.domain_class),
            filters.eq(self._profile.domain_name, name),
        )

    def _require_writable(self) -> None:
        if not self._profile.writable:
            raise DirectoryError(f"the {self._profile.name} profile is read-only")

    def _domain_names_taken(
        self, ldo: Any, names: tuple[str, ...], *, except_dn: str | None = None
    ) -> None:
        """AlreadyExists if a domain other than ``except_dn`` uses one of ``names`` as its name
        or as an alias domain (one namespace). Check-then-write: see docs/ldap.md."""
        if not names:
            return
        p = self._profile
        taken = filters.and_(
            filters.object_class(p.domain_class),
            filters.or_(
                *(filters.eq(p.domain_name, n) for n in names),
                *(filters.eq(p.alias_domain, n) for n in names),
            ),
        )
        for entry in self._search(ldo, self._domains, SCOPE_SUBTREE, taken, NO_ATTRS):
            if except_dn is None or entry.dn.lower() != except_dn.lower():
                raise AlreadyExists("a domain name or alias domain is already in use")

    async def add_domain(self, domain: Domain) -> Domain:
        self._require_writable()
        p = self._profile
        domain = mapping.new_domain(domain)
        dn = p.domain_dn(domain.name, self._base)
        attrs = p.domain_attrs()

        def op(ldo: Any) -> Domain:
            self._domain_names_taken(ldo, (domain.name, *domain.alias_domains))
            return p.domain_from_entry(self._add(ldo, dn, p.domain_to_attrs(domain), attrs))

        return await self._write(op)

    async def update_domain(
        self, name: str, changes: DomainChanges, *, if_revision: int | None = None
    ) -> Domain:
        self._require_writable()
        p = self._profile
        changes = mapping.checked_domain_changes(name, changes)
        filt, attrs, mods = self._exact_domain(name), p.domain_attrs(), p.domain_mods(changes)

        def op(ldo: Any) -> Domain:
            if changes.alias_domains:
                entry = self._point(ldo, self._domains, filt, NO_ATTRS)
                if entry is None:
                    raise NotFound(f"no domain {name}")
                self._domain_names_taken(ldo, changes.alias_domains, except_dn=entry.dn)
            return p.domain_from_entry(self._cas_modify(ldo, filt, attrs, mods, if_revision))

        return await self._write(op)

    async def delete_domain(self, name: str, *, cascade: bool = False) -> None:
        self._require_writable()
        filt = self._exact_domain(name)
        batch = self._settings.page_size

        def op(ldo: Any) -> None:
            entry = self._point(ldo, self._domains, filt, NO_ATTRS)
            if entry is None:
                raise NotFound(f"no domain {name}")
            if cascade:
                for _ in range(MAX_SCAN // batch):
                    below = [
                        dn
                        for dn in self._first_page(
                            ldo, entry.dn, SCOPE_SUBTREE, Filter("(objectClass=*)"), batch + 1
                        )
                        if dn.lower() != entry.dn.lower()
                    ]
                    if not below:
                        break
                    for dn in sorted(below, key=lambda d: -len(ldap.dn.str2dn(d))):
                        with contextlib.suppress(ldap.NO_SUCH_OBJECT):
                            ldo.delete_ext_s(dn)
            try:
                ldo.delete_ext_s(entry.dn)
            except ldap.NOT_ALLOWED_ON_NONLEAF as exc:
                raise Conflict(f"domain {name} still has accounts or aliases") from exc

        await self._write(op)

    async def add_account(self, account: Account) -> Account:
        self._require_writable()
        p = self._profile
        account = mapping.new_account(account)
        dn = p.account_dn(account.address, self._base)
        attrs = p.account_attrs(with_hash=self._with_hash)

        def op(ldo: Any) -> Account:
            entry = self._add(ldo, dn, p.account_to_attrs(account), attrs)
            return p.account_from_entry(entry, with_hash=self._with_hash)

        return await self._write(op)

    async def update_account(
        self, address: Address, changes: AccountChanges, *, if_revision: int | None = None
    ) -> Account:
        self._require_writable()
        p = self._profile
        changes = mapping.checked_account_changes(changes)
        filt, mods = p.account_filter(address), p.account_mods(changes)
        attrs = p.account_attrs(with_hash=self._with_hash)

        def op(ldo: Any) -> Account:
            entry = self._cas_modify(ldo, filt, attrs, mods, if_revision)
            return p.account_from_entry(entry, with_hash=self._with_hash)

        return await self._write(op)

    async def delete_account(self, address: Address) -> None:
        self._require_writable()
        await self._delete(self._profile.account_filter(address), f"no account {address}")

    async def _delete(self, filt: Filter, missing: str) -> None:
        def op(ldo: Any) -> None:
            entry = self._point(ldo, self._domains, filt, NO_ATTRS)
            if entry is None:
                raise NotFound(missing)
            ldo.delete_ext_s(entry.dn)

        await self._write(op)

    async def add_alias(self, alias: Alias) -> Alias:
        self._require_writable()
        p = self._profile
        alias = mapping.new_alias(alias)
        dn = p.alias_dn(alias.source, self._base)

        def op(ldo: Any) -> Alias:
            return p.alias_from_entry(self._add(ldo, dn, p.alias_to_attrs(alias), p.alias_attrs()))

        return await self._write(op)

    async def update_alias(
        self, source: str, changes: AliasChanges, *, if_revision: int | None = None
    ) -> Alias:
        self._require_writable()
        p = self._profile
        changes = mapping.checked_alias_changes(changes)
        filt, attrs, mods = p.alias_filter(source), p.alias_attrs(), p.alias_mods(changes)

        def op(ldo: Any) -> Alias:
            return p.alias_from_entry(self._cas_modify(ldo, filt, attrs, mods, if_revision))

        return await self._write(op)

    async def delete_alias(self, source: str) -> None:
        self._require_writable()
        await self._delete(self._profile.alias_filter(source), f"no alias {source}")

    # -- listings ------------------------------------------------------------------------------

    async def _list(
        self,
        kind: str,
        domain: str | None,
        scope: int,
        attrs: list[str],
        convert: Callable[[Entry], T],
        key: Callable[[T], str],
        prefix: str,
        cursor: str | None,
        limit: int,
    ) -> Page[T]:
        """Two searches: a paged scan of the keys only (counts ``total``, keeps the ``limit+1``
        smallest keys after the cursor), then one search for those entries in full."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidInput("limit must be a positive integer")
        if not isinstance(prefix, str) or len(prefix) > 254 or "\x00" in prefix:
            raise InvalidInput("prefix must be a string of at most 254 characters without NUL")
        limit = min(limit, MAX_PAGE)
        after = decode_cursor(kind, cursor) if cursor is not None else None
        p = self._profile
        object_class, key_attr = p.kind(kind)
        base = self._domains if domain is None else p.domain_dn(domain, self._base)
        scan = p.listing_filter(kind, prefix=prefix, after=None)
        keep = limit + 1

        def op(ldo: Any) -> tuple[int, list[T]]:
            total = 0
            best: list[tuple[str, str]] = []  # (comparison key, stored value)
            try:
                for entry in self._paged(ldo, base, scope, scan, [key_attr]):
                    stored = entry.first(key_attr)
                    if stored is None or not stored.lower().startswith(prefix):
                        continue
                    total += 1
                    if after is not None and stored.lower() <= after:
                        continue
                    best.append((stored.lower(), stored))
                    if len(best) >= 2 * keep:
                        best.sort()
                        del best[keep:]
            except ldap.NO_SUCH_OBJECT as exc:
                if domain is not None:
                    raise NotFound(f"domain {domain} does not exist") from exc
                raise
            best.sort()
            del best[keep:]
            if not best:
                return total, []
            wanted = filters.and_(
                filters.object_class(object_class),
                filters.or_(*(filters.eq(key_attr, stored) for _, stored in best)),
            )
            entries = self._search(ldo, base, scope, wanted, attrs)
            return total, sorted((convert(e) for e in entries), key=key)

        total, items = await self._run(
            self._writer, op, retry=True, budget=self._budget + 4 * self._settings.timeout
        )
        more = len(items) > limit
        items = items[:limit]
        next_cursor = encode_cursor(kind, key(items[-1])) if more and items else None
        return Page(items=items, next_cursor=next_cursor, total=total)

    async def list_domains(
        self, *, prefix: str = "", cursor: str | None = None, limit: int = 100
    ) -> Page[Domain]:
        p = self._profile
        return await self._list(
            "domain", None, SCOPE_ONELEVEL, p.domain_attrs(), p.domain_from_entry,
            lambda d: d.name, prefix, cursor, limit,
        )  # fmt: skip

    async def list_accounts(
        self,
        domain: str | None = None,
        *,
        prefix: str = "",
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[Account]:
        p = self._profile

        def convert(entry: Entry) -> Account:
            return p.account_from_entry(entry, with_hash=self._with_hash)

        return await self._list(
            "account", domain, SCOPE_SUBTREE, p.account_attrs(with_hash=self._with_hash), convert,
            lambda a: str(a.address), prefix, cursor, limit,
        )  # fmt: skip

    async def list_aliases(
        self,
        domain: str | None = None,
        *,
        prefix: str = "",
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[Alias]:
        p = self._profile
        return await self._list(
            "alias", domain, SCOPE_SUBTREE, p.alias_attrs(), p.alias_from_entry,
            lambda a: a.source, prefix, cursor, limit,
        )  # fmt: skip


def _bind_failure(exc: BaseException) -> BindResult:
    """invalidCredentials, refined by Active Directory's ``data NNN`` sub-code when present."""
    info = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    match = _AD_SUBCODE.search(str(info.get("info", "")))
    if match and match.group(1).lower() in _AD_EXPIRED:
        return BindResult.EXPIRED
    if match and match.group(1).lower() in _AD_DISABLED:
        return BindResult.DISABLED
    return BindResult.INVALID_CREDENTIALS


__all__ = ["LdapDirectory", "decode_cursor", "encode_cursor", "map_error"]
