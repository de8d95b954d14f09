"""The change feed of a corporate directory: what others change there reaches our caches at once.

What it does. ``ChangeFeed`` runs one persistent search on its own connection (the service
account's identity) in a dedicated thread and reports every changed entry to the event loop as a
:class:`Change` (its stable id, the mail addresses it now carries, whether it is a group or was
deleted); ``None`` in a batch means "flush everything" (after every (re)connect, since changes
may have been missed, and when the handoff overflowed). What the server offers decides the
mechanism, read from the root DSE's ``supportedControl``:

* ``syncrepl``: RFC 4533 content synchronisation in ``refreshAndPersist`` mode (OpenLDAP's
  syncprov overlay, 1.3.6.1.4.1.4203.1.9.1.1). The refresh phase is read and ignored (its
  entries are not changes; the cookie is kept so a reconnect refreshes only what changed);
  after ``refreshDone`` every add/modify carries the entry, every delete its ``entryUUID``.
* ``notification``: Active Directory's LDAP_SERVER_NOTIFICATION_OID (1.2.840.113556.1.4.528),
  also offered by Samba AD. AD allows it only with the filter ``(objectClass=*)`` and a subtree
  scope only at a naming context's root, so the search runs at the naming context that holds
  ``base_dn``, with the show-deleted control so a deletion arrives as the entry (``isDeleted``,
  same ``objectGUID``). Each notification carries the entry as it is now.
* neither offered, or the server refuses the search: logged once; the caches' TTLs apply.

How it fails. A lost connection is logged and retried with exponential back-off (``BACKOFF_MIN``
to ``BACKOFF_MAX`` s); every (re)connection that goes live reports a flush. The thread never
touches the caches: changes go through a bounded handoff (``MAX_QUEUE`` items; past that one
flush replaces them) to the loop, which applies them between requests, so the feed never blocks
an authentication and its failure never fails one. It has its own ``Servers`` marks: a feed
fault does not take a server out of the lookup pools' rotation. A server that stops answering
without closing the connection looks like a quiet directory (TCP keepalive is not tuned here).
Never logged: the service account's password.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal

import ldap
import ldap.syncrepl
from ldap.controls import LDAPControl

from idsvc.config import LdapSettings
from idsvc.directory.ldap.errors import describe
from idsvc.directory.ldap.pool import Identity, Servers, connect
from idsvc.directory.mapping import Entry
from idsvc.directory.profiles import MAX_ADDRESSES, ReadOnlyProfile
from idsvc.errors import InvalidInput, TemporaryFailure
from idsvc.model import Address

log = logging.getLogger("idsvc.directory.ldap.feed")

SYNC_OID = "1.3.6.1.4.1.4203.1.9.1.1"  # RFC 4533 sync request control (syncprov)
NOTIFICATION_OID = "1.2.840.113556.1.4.528"  # LDAP_SERVER_NOTIFICATION_OID (AD, Samba)
SHOW_DELETED_OID = "1.2.840.113556.1.4.417"  # LDAP_SERVER_SHOW_DELETED_OID
POLL = 0.25  # seconds the feed thread waits for a message before it checks for a stop
MAX_QUEUE = 1024  # changes waiting for the loop; past that one flush replaces them
BACKOFF_MIN, BACKOFF_MAX = 1.0, 60.0
GROUP_CLASSES = frozenset({"group", "groupofnames", "groupofuniquenames", "groupofurls"})

Mode = Literal["syncrepl", "notification"]
Batch = list["Change | None"]  # None: flush everything


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """One entry changed: its stable id ("" when unknown), the mail addresses it carries now
    (canonical), whether it is a group, whether it was deleted."""

    stable_id: str
    addresses: tuple[str, ...] = ()
    group: bool = False
    deleted: bool = False


def choose_mode(supported: Sequence[bytes | str]) -> Mode | None:
    """The feed a root DSE's ``supportedControl`` values allow (syncrepl first), or None."""
    oids = {v.decode("ascii", "replace") if isinstance(v, bytes) else v for v in supported}
    if SYNC_OID in oids:
        return "syncrepl"
    if NOTIFICATION_OID in oids:
        return "notification"
    return None


def naming_context(base_dn: str, contexts: Sequence[bytes | str]) -> str:
    """The naming context holding ``base_dn`` (the longest suffix match), else ``base_dn``."""
    base = _dn_key(base_dn)
    best = ""
    for raw in contexts:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        key = _dn_key(text)
        if key and (base == key or base.endswith("," + key)) and len(text) > len(best):
            best = text
    return best or base_dn


def _dn_key(dn: str) -> str:
    try:
        return str(ldap.dn.dn2str(ldap.dn.str2dn(dn))).lower()
    except ldap.DECODING_ERROR:
        return dn.lower()


def classify(
    profile: ReadOnlyProfile,
    dn: str,
    attrs: dict[str, list[bytes]],
    *,
    stable_id: str | None = None,
    deleted: bool = False,
) -> Change:
    """The :class:`Change` an entry of the feed describes (a pure function of the entry).

    ``stable_id`` is given by syncrepl (the sync state's ``entryUUID``), else read from the
    profile's attribute; an AD entry with ``isDeleted: TRUE`` counts as deleted. An entry whose
    addresses cannot be decoded carries none (the directory's record of it decides)."""
    entry = Entry(dn, attrs)
    if stable_id is None:
        stable_id = ""
        with contextlib.suppress(TemporaryFailure):
            if profile.stable_id and entry.has(profile.stable_id):
                stable_id = profile.entry_id(entry)
    classes = set()
    with contextlib.suppress(TemporaryFailure):
        classes = {c.lower() for c in entry.all("objectClass")}
    with contextlib.suppress(TemporaryFailure):
        deleted = deleted or any(v.upper() == b"TRUE" for v in entry.raw("isDeleted"))
    addresses = () if deleted else entry_addresses(profile, entry)
    return Change(stable_id.lower(), addresses, bool(classes & GROUP_CLASSES), deleted)


def address_attrs(profile: ReadOnlyProfile) -> list[str]:
    """The attributes whose values are names a login or a lookup may be cached under."""
    names = [profile.primary, profile.aliases]
    if profile.primary == "proxyAddresses":
        names += ["mail", "userPrincipalName"]
    return list(dict.fromkeys(n for n in names if n))


def entry_addresses(profile: ReadOnlyProfile, entry: Entry) -> tuple[str, ...]:
    """Every mail address an entry carries, canonical: each value of the primary and alias
    attributes (not only the first: an inetOrgPerson's second ``mail`` finds it too), the
    ``smtp:`` proxy addresses of either case, AD's ``mail`` and UPN. Never raises: a value
    that is no address is left out (a cache can hold nothing under it)."""
    found: dict[str, None] = {}
    for attr in address_attrs(profile):
        try:
            values = entry.all(attr)[:MAX_ADDRESSES]
        except TemporaryFailure:
            continue
        for value in values:
            if attr.lower() == "proxyaddresses":
                kind, sep, value = value.partition(":")
                if not sep or kind.lower() != "smtp":
                    continue
            with contextlib.suppress(InvalidInput):
                found[str(Address.parse(value))] = None
    return tuple(found)


def feed_attrs(profile: ReadOnlyProfile) -> list[str]:
    """What the feed asks for: the addresses, the stable id, the classes (and AD's isDeleted)."""
    names = [*address_attrs(profile), profile.stable_id, "objectClass"]
    if profile.primary == "proxyAddresses":
        names.append("isDeleted")
    return list(dict.fromkeys(n for n in names if n))


class Handoff:
    """Thread → loop: a bounded queue of changes, drained by one scheduled loop callback."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, deliver: Callable[[Batch], None], limit: int
    ) -> None:
        self._loop = loop
        self._deliver = deliver
        self._limit = limit
        self._items: collections.deque[Change | None] = collections.deque()
        self._overflow = False
        self._lock = threading.Lock()

    def put(self, item: Change | None) -> None:
        """Queue one change (None: flush everything); called from the feed thread."""
        with self._lock:
            schedule = not self._items and not self._overflow
            if self._overflow:
                return  # a flush is already due: it covers this change
            if len(self._items) >= self._limit:
                self._items.clear()
                self._overflow = True
            else:
                self._items.append(item)
        if schedule:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            batch: Batch = [None] if self._overflow else list(self._items)
            self._items.clear()
            self._overflow = False
        if batch:
            try:
                self._deliver(batch)
            except Exception:  # a feed fault never reaches a request
                log.exception("change feed: applying %d change(s) failed", len(batch))


class ChangeFeed:
    """One persistent search in one thread (see the module docstring)."""

    def __init__(
        self,
        settings: LdapSettings,
        profile: ReadOnlyProfile,
        deliver: Callable[[Batch], None],
    ) -> None:
        self._settings = settings
        self._profile = profile
        self._deliver = deliver
        self._servers = Servers(settings.uris, settings.retry_after)
        secret = settings.bind_password.get_secret_value() if settings.bind_password else None
        self._identity = Identity("change feed", settings.bind_dn, secret)
        self._attrs = feed_attrs(profile)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handoff: Handoff | None = None
        self._cookie: str | None = None
        self.mode: Mode | None = None  # what the server offered (set once connected)
        self.live = False  # the persistent search is running now

    def start(self) -> None:
        """Start the feed thread (call from the event loop)."""
        if self._thread is not None:
            return
        self._handoff = Handoff(asyncio.get_running_loop(), self._deliver, MAX_QUEUE)
        self._thread = threading.Thread(target=self._run, name="ldap-change-feed", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            # the thread polls every POLL s; a connect in progress ends within connect_timeout
            limit = POLL + self._settings.connect_timeout + self._settings.timeout
            await asyncio.to_thread(thread.join, limit)

    # -- the feed thread -----------------------------------------------------------------------

    def _put(self, item: Change | None) -> None:
        assert self._handoff is not None
        self._handoff.put(item)

    def _run(self) -> None:
        backoff = BACKOFF_MIN
        while not self._stop.is_set():
            try:
                conn = connect(self._servers, self._settings, self._identity)
            except TemporaryFailure as exc:
                log.warning("change feed: cannot connect (%s); retrying in %.0f s", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            try:
                if not self._follow(conn.ldo, conn.uri):
                    return  # nothing offered or refused: the TTLs apply
                backoff = BACKOFF_MIN  # it was live: a later loss starts the back-off anew
            except ldap.LDAPError as exc:
                if self.live:
                    backoff = BACKOFF_MIN
                if not self._stop.is_set():
                    log.warning(
                        "change feed: lost the connection to %s (%s); reconnecting in %.0f s, "
                        "then every cache is flushed",
                        conn.uri, describe(exc), backoff,
                    )  # fmt: skip
                    self._servers.mark_down(conn.uri, describe(exc))
            except Exception:  # e.g. an undecodable control: start over, never die silently
                log.exception("change feed: unexpected error; reconnecting in %.0f s", backoff)
            finally:
                self.live = False
                with contextlib.suppress(ldap.LDAPError):
                    conn.ldo.unbind_ext_s()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _follow(self, ldo: Any, uri: str) -> bool:
        """Run the persistent search until stopped (True) or lost (raises); False when the
        server offers no feed or refuses it (logged once: the feed ends)."""
        dse = ldo.search_ext_s(
            "", ldap.SCOPE_BASE, "(objectClass=*)", ["supportedControl", "namingContexts"],
            timeout=self._settings.timeout,
        )  # fmt: skip
        attrs = {k.lower(): v for k, v in (dse[0][1] if dse else {}).items()}
        self.mode = choose_mode(attrs.get("supportedcontrol", []))
        if self.mode is None:
            log.warning(
                "change feed: %s offers neither syncrepl nor change notification; changes made "
                "in the directory show within the cache TTLs", uri,
            )  # fmt: skip
            return False
        try:
            if self.mode == "syncrepl":
                self._syncrepl(ldo, uri)
            else:
                base = naming_context(self._settings.base_dn, attrs.get("namingcontexts", []))
                self._notification(ldo, uri, base)
        except (
            ldap.UNWILLING_TO_PERFORM,
            ldap.UNAVAILABLE_CRITICAL_EXTENSION,
            ldap.INSUFFICIENT_ACCESS,
            ldap.PROTOCOL_ERROR,
            ldap.ADMINLIMIT_EXCEEDED,
        ) as exc:
            if self.live:
                raise
            log.warning(
                "change feed: %s refused the %s search (%s); changes made in the directory "
                "show within the cache TTLs", uri, self.mode, describe(exc),
            )  # fmt: skip
            return False
        return True

    def _went_live(self, uri: str) -> None:
        self.live = True
        log.info("change feed: %s live on %s; flushing the caches", self.mode, uri)
        self._put(None)  # anything cached before now may have missed a change

    def _poll(self, ldo: Any, msgid: int) -> tuple[Any, ...] | None:
        """One message of ``msgid``, or None after POLL seconds without one."""
        try:
            result: tuple[Any, ...] = ldo.result4(
                msgid, all=0, timeout=POLL, add_ctrls=1, add_intermediates=1
            )
        except ldap.TIMEOUT:
            return None
        return result

    def _syncrepl(self, ldo: Any, uri: str) -> None:
        control = ldap.syncrepl.SyncRequestControl(
            criticality=True, cookie=self._cookie, mode="refreshAndPersist"
        )
        msgid = ldo.search_ext(
            self._settings.base_dn, ldap.SCOPE_SUBTREE, "(objectClass=*)", self._attrs,
            serverctrls=[control],
        )  # fmt: skip
        refreshing = True
        while not self._stop.is_set():
            message = self._poll(ldo, msgid)
            if message is None:
                continue
            kind, data = message[0], message[1]
            if kind == ldap.RES_SEARCH_ENTRY:
                for dn, attrs, controls in data:
                    self._sync_entry(dn, attrs, controls, refreshing)
            elif kind == ldap.RES_INTERMEDIATE:
                infos = [v for n, v, _c in data if n == ldap.syncrepl.SyncInfoMessage.responseName]
                for value in infos:
                    if self._sync_info(ldap.syncrepl.SyncInfoMessage(value), refreshing):
                        refreshing = False
                        self._went_live(uri)
            elif kind == ldap.RES_SEARCH_RESULT:
                raise ldap.SERVER_DOWN({"desc": "the server ended the sync search"})

    def _sync_entry(self, dn: str, attrs: Any, controls: Any, refreshing: bool) -> None:
        for control in controls:
            if not isinstance(control, ldap.syncrepl.SyncStateControl):
                continue
            if control.cookie is not None:
                self._cookie = control.cookie
            if refreshing or control.state == "present":
                return
            deleted = control.state == "delete"
            self._put(
                classify(
                    self._profile, dn, attrs or {}, stable_id=control.entryUUID, deleted=deleted
                )
            )
            return

    def _sync_info(self, info: Any, refreshing: bool) -> bool:
        """Note a sync info message; True when it ends the refresh phase."""
        if info.newcookie is not None:
            self._cookie = info.newcookie
            return False
        for phase in (info.refreshPresent, info.refreshDelete):
            if phase is not None:
                if phase.get("cookie") is not None:
                    self._cookie = phase["cookie"]
                return bool(refreshing and phase.get("refreshDone"))
        ids = info.syncIdSet
        if ids is not None:
            if ids.get("cookie") is not None:
                self._cookie = ids["cookie"]
            if not refreshing and ids.get("refreshDeletes"):
                for uuid in ids.get("syncUUIDs", ()):
                    self._put(Change(str(uuid).lower(), deleted=True))
        return False

    def _notification(self, ldo: Any, uri: str, base: str) -> None:
        controls = [
            LDAPControl(NOTIFICATION_OID, True, None),
            LDAPControl(SHOW_DELETED_OID, False, None),
        ]
        msgid = ldo.search_ext(
            base, ldap.SCOPE_SUBTREE, "(objectClass=*)", self._attrs, serverctrls=controls
        )
        while not self._stop.is_set():
            message = self._poll(ldo, msgid)
            if message is None:
                if not self.live:  # no refusal within one poll: the search runs
                    self._went_live(uri)
                continue
            kind, data = message[0], message[1]
            if kind == ldap.RES_SEARCH_ENTRY:
                if not self.live:
                    self._went_live(uri)
                for dn, attrs, _controls in data:
                    self._put(classify(self._profile, dn, attrs or {}))
            elif kind == ldap.RES_SEARCH_RESULT:
                raise ldap.SERVER_DOWN({"desc": "the server ended the notification search"})


__all__ = [
    "Batch",
    "Change",
    "ChangeFeed",
    "choose_mode",
    "classify",
    "entry_addresses",
    "naming_context",
]
