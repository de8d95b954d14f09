"""The Authenticator: the single place that decides "who is this, and may they in".

Every protocol adapter (saslauthd, Dovecot auth, HTTP, our own SMTP/IMAP/POP3) builds an
``AuthRequest`` and awaits :meth:`Authenticator.authenticate`. The pipeline, in order:

1. **Input**: empty, NUL-bearing, over-long or control-character logins/realms/authzids and empty,
   NUL-bearing or over-long passwords are REJECTED before any directory call (reliability.md #3).
   Cleartext policy: with ``allow_cleartext_remote`` off, PLAIN/LOGIN over an unsecured channel
   from anything but loopback is REJECTED (an unknown peer counts as remote: fail closed).
2. **Canonicalisation**: ``login@realm`` joined when a realm is given, the login has no ``@`` and
   ``realm_join`` is on (else ``default_domain`` applies), then ``Address.parse``. An invalid or
   look-alike login is REJECTED after a dummy verify, so its work matches a wrong password's.
3. **Cache** (cache.py) of OK / MISMATCH / UNKNOWN_USER keyed by an HMAC of the password.
4. **Lookup**: ``find_account`` (and the account's domain, from a 30 s domain cache that
   provisioning invalidates); when absent, the alias-domain mapping (``bob@alias.org`` logs in
   as ``bob@example.org`` when example.org lists alias.org). Unknown user → dummy verify, of the
   kind of stored hash real verifies met most lately (``_VerifyMix``).
5. **Verify** the stored hash (cheap schemes inline, others in a bounded thread pool) or, for
   bind-only directories (hash None), ``bind_check``. Only then, and only for the right password,
   account/domain/service state is checked → DISABLED: a wrong password on a disabled account is
   a plain MISMATCH, so the state of an account is never revealed to someone without its password.
6. **authzid**: only for ``master_users``; the target must exist and be enabled, else REJECTED.
7. **Failure deadline** (penalty.py for the penalty): every definite failure is answered no
   sooner than ``failure_delay`` plus the escalating per-network / per-account penalty it earned,
   counted from the start of the request — the pad is what is left of that deadline after the
   work, so every failure class (unknown user, wrong password of any scheme, cached mismatch,
   malformed or refused input, disabled) answers at the same wall time whatever its work cost.
   Awaited per request (concurrent requests never stall each other). Successes are never
   delayed, so an attacker cannot slow a user down by failing on their account; ``elapsed``
   excludes the pad. TEMPFAIL is not delayed.
8. **Audit**: one ``AuditEvent`` per attempt, never with the password (not even built when the
   sink's ``enabled`` is False, e.g. ``LogAuditSink`` with its logger above INFO, nor when no
   sink records that outcome: ``audit.wants_auth``, e.g. a success under the failures-only
   default).

How it fails: any directory error (``TemporaryFailure``, ``AmbiguousEntry``, anything
unexpected), a corrupt stored hash (``PasswordError``, logged loudly), an overall timeout, more
than ``max_pending`` requests in progress, or a closed authenticator → TEMPFAIL, never a wrong
password and never a success. This module imports no database, LDAP or hashing library.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, Protocol

from idsvc.audit import AuditEvent, AuditSink, wants_auth
from idsvc.auth.app_password import AppCheck, AppPassword
from idsvc.auth.cache import AuthCache, CachedDecision, TtlCache
from idsvc.auth.inputs import MAX_SERVICE_LENGTH, request_problem, sanitize
from idsvc.auth.penalty import PenaltyTracker
from idsvc.auth.rehash import Rehasher, RehashHasher
from idsvc.auth.request import AuthRequest, AuthResult, Outcome
from idsvc.config import AuthSettings
from idsvc.directory.base import (
    AccountLookup,
    BindResult,
    BindVerifier,
    DomainLookup,
    LoginLookup,
    Provisioning,
)
from idsvc.errors import ConfigError, DirectoryError, InvalidInput, PasswordError
from idsvc.model import Account, Address, Domain, Service, canonical_address, canonical_domain

log = logging.getLogger(__name__)

DOMAIN_CACHE_SIZE = 10_000
DOMAIN_CACHE_TTL = 30.0  # a domain change made outside idsvc shows within 30 s
DEFAULT_TIMEOUT = 30.0  # a request that takes longer than this is a TEMPFAIL
MIX_WINDOW = 1024  # real verifies after which the scheme counts are halved (recent mix wins)
CHEAP = "cheap"  # the kind of every µs-cost stored hash ({SSHA} …): verified inline
WORK_WINDOW = 128  # failures: the failure deadline follows the slowest work among this many
WORK_CEILING = 10.0  # seconds: how far beyond failure_delay slow failure work may push the deadline

_NO_TIMER = contextlib.nullcontext()  # reusable: ``async with`` on it does nothing

_BIND_OUTCOMES = {
    BindResult.OK: Outcome.OK,
    BindResult.INVALID_CREDENTIALS: Outcome.MISMATCH,
    BindResult.EXPIRED: Outcome.EXPIRED,
    BindResult.DISABLED: Outcome.DISABLED,
}


class Hasher(RehashHasher, Protocol):
    """What the engine needs from ``idsvc.passwords.PasswordHasher`` (and passes to the
    ``Rehasher``)."""

    def verify(self, password: str, stored: str) -> bool: ...

    def dummy_verify(self, password: str) -> None: ...

    def verify_if_cheap(self, password: str, stored: str) -> bool | None: ...

    def scheme_of(self, stored: str) -> str: ...


class AppPasswordCheck(Protocol):
    """What the engine asks the local overlay (``idsvc.overlay.OverlayStore``)."""

    def may_be_app_password(self, presented: str) -> bool:
        """Whether ``presented`` has the shape of an app password (no I/O): only then is
        :meth:`check` (a database read in a thread) awaited."""
        ...

    async def check(
        self, subject: str, presented: str, service: Service | None, remote_ip: str | None
    ) -> tuple[AppCheck, AppPassword | None]: ...


class AuthDirectory(AccountLookup, DomainLookup, Protocol):
    """The least a directory must offer the engine (BindVerifier / Provisioning are optional)."""


class _Decision(NamedTuple):
    """What the pipeline decided (internal; a tuple because one is built per request)."""

    outcome: Outcome
    user: str | None = None  # canonical account, when known
    actor: str = ""  # who proved their identity (the master user for authzid)
    names: tuple[str, ...] = ()  # canonical accounts concerned (penalties)
    cached: bool = False
    detail: str = ""


class _VerifyMix:
    """Which kinds of stored hash real verifies met lately (decayed counts), and one stored hash
    of each slow kind to replay. The dummy verify of an unknown user imitates the most frequent
    kind, so with ``failure_delay = 0`` (no pad) or when the work outlasts the pad, an unknown
    user still costs what a wrong password of a typical account costs — including the queue
    for the hashing threads, since a slow dummy runs on the same pool."""

    __slots__ = ("_counts", "_samples", "_seen")

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._samples: dict[str, str] = {}
        self._seen = 0

    def note(self, kind: str, stored: str | None = None) -> None:
        counts = self._counts
        counts[kind] = counts.get(kind, 0) + 1
        if stored is not None:
            self._samples[kind] = stored
        self._seen += 1
        if self._seen >= MIX_WINDOW:  # decay: the last few thousand verifies decide
            self._seen //= 2
            for name in counts:
                counts[name] //= 2

    def dominant(self) -> tuple[str, str | None] | None:
        """The most frequent recent kind and its stored hash (None for CHEAP), or None before
        the first real verify."""
        if not self._counts:
            return None
        kind = max(self._counts, key=self._counts.__getitem__)
        return kind, self._samples.get(kind)


class _FailureWork:
    """The slowest work among the last ``WORK_WINDOW`` failures. Under load — the hashing
    threads queued, a slow directory — some failures' work outlasts ``failure_delay``; padding
    every failure to this figure keeps the classes alike while the load lasts, and it falls
    back within ``WORK_WINDOW`` failures of the load ending (the failures themselves move it,
    so a probe cannot lower it without sending failures that are padded alike)."""

    __slots__ = ("_recent",)

    def __init__(self) -> None:
        self._recent: collections.deque[float] = collections.deque(maxlen=WORK_WINDOW)

    def note(self, seconds: float) -> float:
        """Record one failure's work; returns the slowest of the window."""
        self._recent.append(seconds)
        return max(self._recent)


WEB_SERVICE = "web"  # the web pages' own login (idsvc.web): no mail service, no app passwords


def _refusal(
    account: Account, domain: Domain | None, service: Service | None, *, web: bool = False
) -> str | None:
    """Why an account that proved its password may still not log in (DISABLED), or None.
    The web login (``web``) needs the account and domain enabled, no mail service."""
    if not account.enabled:
        return "account disabled"
    if domain is None or not domain.enabled:
        return "domain disabled"
    if web:
        return None
    if service is None or service not in account.services:
        return "service not enabled"
    return None


class Authenticator:
    """See the module docstring. One instance per process, shared by every adapter."""

    def __init__(
        self,
        directory: AuthDirectory,
        hasher: Hasher,
        settings: AuthSettings,
        *,
        audit: AuditSink,
        rehash: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        hash_workers: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        app_passwords: AppPasswordCheck | None = None,
        app_required: frozenset[Service] = frozenset(),
    ) -> None:
        self._dir = directory
        self._hasher = hasher
        self._settings = settings
        self._audit = audit
        self._sleep = sleep
        self._timeout = timeout
        self._apps = app_passwords
        self._app_required = app_required if app_passwords is not None else frozenset()
        self._binder = directory if isinstance(directory, BindVerifier) else None
        # the cheap read of an account where the directory has one (only what a decision needs)
        self._find_login: Callable[[Address], Awaitable[Account | None]] = (
            directory.find_login if isinstance(directory, LoginLookup) else directory.find_account
        )
        # A directory whose every read ends within its own deadline (``bounds_reads``) needs no
        # per-request timer around its lookups: only the awaits it does not own are timed.
        self._reads_bounded = getattr(directory, "bounds_reads", False) is True
        self._default_domain = (
            canonical_domain(settings.default_domain) if settings.default_domain else None
        )
        try:
            self._masters = frozenset(canonical_address(u) for u in settings.master_users)
        except InvalidInput as exc:
            raise ConfigError(f"auth.master_users: {exc}") from exc
        workers = hash_workers or min(4, os.cpu_count() or 1)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="idsvc-hash")
        self._rehasher: Rehasher | None = None
        if rehash and isinstance(directory, Provisioning):
            self._rehasher = Rehasher(directory, hasher, self._executor)
        elif rehash:
            log.warning("rehash on login requested but the directory cannot write; disabled")
        use_cache = settings.cache and settings.cache_size > 0
        self._cache = AuthCache(
            max_entries=settings.cache_size if use_cache else 0,
            ttl=settings.cache_ttl,
            negative_ttl=settings.cache_negative_ttl,
            clock=clock,
        )
        # Domain records are cached even with the decision cache off: they are not
        # credentials, change rarely, and provisioning invalidates them at once.
        self._domains: TtlCache[Domain] = TtlCache(
            max_entries=DOMAIN_CACHE_SIZE, ttl=DOMAIN_CACHE_TTL, clock=clock
        )
        self._penalty = PenaltyTracker(
            enabled=settings.penalty,
            maximum=settings.penalty_max,
            window=settings.penalty_window,
            clock=clock,
        )
        self._mix = _VerifyMix()
        self._work = _FailureWork()
        # a µs-cost hash to imitate cheap stored hashes with (SSHA: the usual legacy scheme)
        self._cheap_dummy = hasher.hash(os.urandom(12).hex(), "SSHA")
        self._pending = 0
        self._closed = False

    # -- public API ------------------------------------------------------------------------

    @property
    def cache(self) -> AuthCache:
        return self._cache

    @property
    def penalties(self) -> PenaltyTracker:
        return self._penalty

    @property
    def pending(self) -> int:
        """Requests currently being decided (not counting those sleeping off a failure delay)."""
        return self._pending

    async def authenticate(self, request: AuthRequest) -> AuthResult:
        """Decide one request. Never raises for anything a client or the directory does."""
        started = time.perf_counter()
        if self._closed:
            decision = _Decision(Outcome.TEMPFAIL, detail="authenticator closed")
        elif self._pending >= self._settings.max_pending:
            decision = _Decision(Outcome.TEMPFAIL, detail="too many pending authentications")
        else:
            self._pending += 1
            try:
                decision = await self._decide(request)
            except TimeoutError:
                log.warning("authentication timed out after %.1f s", self._timeout)
                decision = _Decision(Outcome.TEMPFAIL, detail="timeout")
            except DirectoryError as exc:
                log.warning("directory failure during authentication: %s", exc)
                decision = _Decision(Outcome.TEMPFAIL, detail=f"directory: {type(exc).__name__}")
            except PasswordError as exc:
                log.error("UNUSABLE STORED PASSWORD HASH for %s: %s", sanitize(request.login), exc)
                decision = _Decision(Outcome.TEMPFAIL, detail="unusable stored password hash")
            except Exception:
                log.exception("unexpected error during authentication")
                decision = _Decision(Outcome.TEMPFAIL, detail="internal error")
            finally:
                self._pending -= 1
        elapsed = time.perf_counter() - started

        delay = 0.0
        outcome = decision.outcome
        if outcome in (Outcome.MISMATCH, Outcome.UNKNOWN_USER):
            delay = self._penalty.record_failure(request.remote_ip, decision.names)
        elif outcome is Outcome.REJECTED:
            delay = self._penalty.record_failure(request.remote_ip)
        elif outcome is Outcome.OK:
            self._penalty.record_success(decision.names)
        self._emit(request, decision, elapsed)
        if outcome.is_failure:
            # pad to a deadline counted from the start: the work is inside the delay, not
            # before it, so what the work cost never shows. When work outlasts failure_delay
            # (queued hashing threads, a slow directory) the deadline follows the slowest recent
            # failure work instead, so the classes stay alike under load too (docs/auth.md).
            floor = self._settings.failure_delay
            if floor > 0:
                floor = max(floor, min(self._work.note(elapsed), floor + WORK_CEILING))
            pad = started + floor + delay - time.perf_counter()
            if pad > 0:
                await self._sleep(pad)
        return AuthResult(
            outcome=outcome,
            user=decision.user,
            elapsed=elapsed,
            cached=decision.cached,
            detail=decision.detail,
        )

    def invalidate(self, user: str | None = None) -> None:
        """Forget cached decisions about one canonical user, or everything."""
        if user is None:
            self._cache.invalidate()
            self._domains.discard()
            return
        # a name that does not canonicalise cannot have been cached under its canonical form
        with contextlib.suppress(InvalidInput):
            user = canonical_address(user)
        self._cache.invalidate(user)

    def invalidate_domain(self, domain: str) -> None:
        """Forget cached decisions about every account in ``domain`` and every cached domain
        (alias-domain mappings may have changed with it)."""
        with contextlib.suppress(InvalidInput):
            domain = canonical_domain(domain)
        self._cache.invalidate_domain(domain)
        self._domains.discard()

    async def close(self) -> None:
        """Refuse new requests (TEMPFAIL), let running rehash writes finish (5 s at most), and
        stop the hashing threads."""
        self._closed = True
        if self._rehasher is not None:
            await self._rehasher.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- the pipeline ----------------------------------------------------------------------

    def _joined_login(self, request: AuthRequest) -> str:
        login = request.login
        if "@" not in login and request.realm and self._settings.realm_join:
            return f"{login}@{request.realm}"
        return login

    async def _decide(self, request: AuthRequest) -> _Decision:
        problem = request_problem(request, self._settings)
        if problem is not None:
            return _Decision(Outcome.REJECTED, detail=problem)
        password = request.password.reveal()
        try:
            address = Address.parse(
                self._joined_login(request), default_domain=self._default_domain
            )
            authzid = (
                Address.parse(request.authzid, default_domain=self._default_domain)
                if request.authzid
                else None
            )
        except InvalidInput as exc:
            await self._dummy_verify(password)
            return _Decision(Outcome.REJECTED, detail=f"invalid login: {exc}")

        decision = await self._check_credentials(address, request, password)
        if decision.outcome is not Outcome.OK or authzid is None:
            return decision
        if authzid == address or decision.user == str(authzid):
            return decision  # acting as oneself (by the login typed, or the canonical name)
        async with asyncio.timeout(self._timeout):
            return await self._authorize(decision, authzid, request)

    async def _check_credentials(
        self, address: Address, request: AuthRequest, password: str
    ) -> _Decision:
        """The cache, then (on a miss, under the overall timeout) the directory and the hash."""
        login = str(address)
        service = Service.parse(request.service)
        key: bytes | None = None
        if self._cache.enabled and service is not None:
            key = self._cache.key(login, service.value, password)
            hit = self._cache.get(key)
            if hit is not None:
                names = (login,) if not hit.user or hit.user == login else (login, hit.user)
                return _Decision(
                    hit.outcome,
                    user=hit.user,
                    actor=(hit.user or "") if hit.outcome is Outcome.OK else "",
                    names=names,
                    cached=True,
                    detail="cached",
                )
        web = request.service == WEB_SERVICE
        if self._reads_bounded:  # the directory owns the deadline of every read
            return await self._fetch_and_verify(
                address, login, service, password, key, request.remote_ip, web=web
            )
        async with asyncio.timeout(self._timeout):
            return await self._fetch_and_verify(
                address, login, service, password, key, request.remote_ip, web=web
            )

    def _timer(self) -> contextlib.AbstractAsyncContextManager[object]:
        """The overall timeout for an await no lower layer bounds (the hashing pool, the
        overlay): a timer of its own when the directory owns the read deadlines (no outer
        timer runs then), else nothing (the outer one covers it)."""
        return asyncio.timeout(self._timeout) if self._reads_bounded else _NO_TIMER

    async def _fetch_and_verify(
        self,
        address: Address,
        login: str,
        service: Service | None,
        password: str,
        key: bytes | None,
        remote_ip: str | None = None,
        *,
        web: bool = False,
    ) -> _Decision:
        account, names = await self._resolve(address, login)
        if account is None:
            await self._dummy_verify(password)
            self._remember(key, Outcome.UNKNOWN_USER, None, names)
            return _Decision(Outcome.UNKNOWN_USER, names=names, detail="no such account")

        user = str(account.address)
        if user in names:
            user = names[names.index(user)]  # one string object for user and names (cache)
        else:
            names = (*names, user)
        found, domain = self._domains.get(account.address.domain)
        if not found:
            domain = await self._domain(account.address.domain)
        app = AppCheck.NO_MATCH
        # an app password never opens the web pages (web); only app-password-shaped ones cost a read
        if self._apps is not None and not web and self._apps.may_be_app_password(password):
            async with self._timer():
                app, app_info = await self._apps.check(
                    account.subject, password, service, remote_ip
                )
        if app is AppCheck.OK:
            verdict = Outcome.OK
            if app_info is not None and (app_info.networks or app_info.expires is not None):
                key = None  # valid only from some networks or until a time: never cached
        elif app is AppCheck.REFUSED or (not web and service in self._app_required):
            # an app password used where it may not be, or the account's own password where
            # only app passwords may log in: a plain failure (nothing is said about why)
            verdict = Outcome.MISMATCH
        else:
            stored = account.password_hash
            cheap = None if stored is None else self._hasher.verify_if_cheap(password, stored)
            if cheap is not None:  # a µs-cost scheme, verified inline with one parse
                self._mix.note(CHEAP)
                verdict = Outcome.OK if cheap else Outcome.MISMATCH
            else:
                verdict = await self._verify(account, password)
        if verdict is not Outcome.OK:
            if verdict is Outcome.MISMATCH:
                self._remember(key, Outcome.MISMATCH, user, names)
            return _Decision(verdict, user=user, names=names, detail=verdict.value)
        refusal = _refusal(account, domain, service, web=web)
        if refusal is not None:
            return _Decision(Outcome.DISABLED, user=user, names=names, detail=refusal)
        self._remember(key, Outcome.OK, user, names)
        if app is AppCheck.OK:
            detail = f"app password {app_info.id}" if app_info is not None else "app password"
            return _Decision(Outcome.OK, user=user, actor=user, names=names, detail=detail)
        if self._rehasher is not None:
            self._rehasher.consider(account, password)
        return _Decision(Outcome.OK, user=user, actor=user, names=names)

    async def _authorize(
        self,
        decision: _Decision,
        authzid: Address,
        request: AuthRequest,
    ) -> _Decision:
        """The authenticated user asks to act as ``authzid``: only master users may."""
        master = decision.user or ""
        if master not in self._masters:
            return _Decision(
                Outcome.REJECTED, user=master, names=decision.names, detail="authzid not allowed"
            )
        target, _names = await self._resolve(authzid, str(authzid))
        if target is None:
            return _Decision(
                Outcome.REJECTED, user=master, names=decision.names, detail="authzid unknown"
            )
        domain = await self._domain(target.address.domain)
        if _refusal(target, domain, Service.parse(request.service)) is not None:
            return _Decision(
                Outcome.REJECTED, user=master, names=decision.names, detail="authzid disabled"
            )
        return _Decision(
            Outcome.OK,
            user=str(target.address),
            actor=master,
            names=decision.names,
            cached=decision.cached,
            detail=f"master user {master}",
        )

    async def _resolve(
        self, address: Address, login: str
    ) -> tuple[Account | None, tuple[str, ...]]:
        """The account for a canonical login (``login`` is ``str(address)``), following alias
        domains; plus the names tried."""
        account = await self._find_login(address)
        if account is not None:
            return account, (login,)
        domain = await self._domain(address.domain)
        if domain is None or domain.name == address.domain:
            return None, (login,)
        target = Address(address.local, domain.name)
        return await self._find_login(target), (login, str(target))

    async def _domain(self, name: str) -> Domain | None:
        found, domain = self._domains.get(name)
        if found:
            return domain
        domain = await self._dir.find_domain(name)
        self._domains.put(name, domain)
        return domain

    async def _verify(self, account: Account, password: str) -> Outcome:
        """A bind check, or a slow-scheme verify in the pool (cheap schemes never get here)."""
        stored = account.password_hash
        if stored is None:
            if self._binder is not None:
                return _BIND_OUTCOMES[await self._binder.bind_check(account, password)]
            await self._dummy_verify(password)
            return Outcome.MISMATCH  # no password and no way to check one: it cannot match
        loop = asyncio.get_running_loop()
        async with self._timer():
            ok = await loop.run_in_executor(self._executor, self._hasher.verify, password, stored)
        self._mix.note(self._hasher.scheme_of(stored), stored)  # parsed fine: verify did not raise
        return Outcome.OK if ok else Outcome.MISMATCH

    async def _dummy_verify(self, password: str) -> None:
        """Spend what a real verify of the dominant kind of stored hash costs (``_VerifyMix``):
        a µs-cost hash inline, or a slow one replayed in the pool — the stored hash of a real
        account of that scheme, so its parameters (rounds, memory) are the directory's own; the
        verdict is thrown away. Before any real verify: a configured-scheme hash (slow)."""
        kind = self._mix.dominant()
        if kind is not None and kind[0] == CHEAP:
            self._hasher.verify_if_cheap(password or "-", self._cheap_dummy)
            return
        loop = asyncio.get_running_loop()
        async with self._timer():
            if kind is None or kind[1] is None:
                await loop.run_in_executor(self._executor, self._hasher.dummy_verify, password)
                return
            with contextlib.suppress(PasswordError):  # it verified before; never fail a request
                await loop.run_in_executor(
                    self._executor, self._hasher.verify, password or "-", kind[1]
                )

    def _remember(
        self, key: bytes | None, outcome: Outcome, user: str | None, names: tuple[str, ...]
    ) -> None:
        if key is not None:
            self._cache.put(key, CachedDecision(outcome, user), names)

    # -- audit -----------------------------------------------------------------------------

    def _emit(self, request: AuthRequest, decision: _Decision, elapsed: float) -> None:
        if getattr(self._audit, "enabled", True) is False:
            return  # the sink would drop the event (e.g. its logger is above INFO): skip it
        if not wants_auth(self._audit, decision.outcome.value):
            return  # nobody records this outcome (failures-only default: a success)
        event = AuditEvent(
            action="auth",
            outcome=decision.outcome.value,
            actor=decision.actor,
            target=decision.user or sanitize(request.login),
            remote=sanitize(request.remote_ip, 64) or None,
            service=sanitize(request.service, MAX_SERVICE_LENGTH),
            detail={
                "mechanism": sanitize(request.mechanism, 32),
                "protocol": sanitize(request.protocol, 32),
                "cached": decision.cached,
                "elapsed_ms": round(elapsed * 1000, 3),
                "reason": decision.detail,
            },
        )
        try:
            self._audit.emit(event)
        except Exception:  # an audit sink must never break authentication
            log.exception("audit sink failed")
