"""Wiring: build the directory, hasher, authenticator and provisioner from Settings.

This is where the core's concrete classes are chosen (the listeners are chosen in
``idsvc.serve``); everything else receives its collaborators. ``Runtime`` owns them and closes
them in reverse order, after the listeners it was given. Listeners (control, saslauthd, Dovecot
auth, REST) all satisfy the small ``Listener`` protocol so ``idsvc serve`` can start and stop them
alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from idsvc.app_passwords import AppPasswords
from idsvc.audit import AuditSink, LogAuditSink, QueuedAuditSink
from idsvc.auth.engine import Authenticator
from idsvc.config import DirectorySettings, Settings
from idsvc.control import FanoutInvalidator, RemoteInvalidator
from idsvc.directory.base import Directory
from idsvc.lookups import MailLookups
from idsvc.model import Service
from idsvc.overlay import OverlayStore
from idsvc.password_policy import PasswordPolicy
from idsvc.passwords import PasswordHasher
from idsvc.provisioning import Invalidator, Provisioner


class Listener(Protocol):
    """A network surface started by ``idsvc serve``."""

    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...


async def open_directory(settings: DirectorySettings) -> Directory:
    """Open the configured backend (imports only the backend that is used)."""
    if settings.backend == "ldap" and settings.ldap.profile != "idsvc":
        from idsvc.directory.ldap.corporate import CorporateDirectory

        return await CorporateDirectory.open(settings.ldap)  # read-only
    if settings.backend == "ldap":
        from idsvc.directory.ldap import LdapDirectory

        return await LdapDirectory.open(settings.ldap)
    from idsvc.directory.sqlite import SqliteDirectory

    return await SqliteDirectory.open(settings.embedded)


@dataclass
class Runtime:
    settings: Settings
    directory: Directory
    hasher: PasswordHasher
    authenticator: Authenticator
    provisioner: Provisioner
    audit: AuditSink
    lookups: MailLookups | None = None  # set by build_runtime; None only in hand-built runtimes
    listeners: list[Listener] = field(default_factory=list)
    app_passwords: AppPasswords | None = None  # None: [app_passwords] enabled = false
    overlay: OverlayStore | None = None
    # every process's count under ``serve --workers N`` (set by idsvc.serve), else this one's
    dropped_counter: Callable[[], int] | None = None

    @property
    def audit_dropped(self) -> int:
        """Audit events dropped because the queue was full (0 when the sink is not queued)."""
        if self.dropped_counter is not None:
            return self.dropped_counter()
        return self.audit.dropped if isinstance(self.audit, QueuedAuditSink) else 0

    @property
    def mail(self) -> MailLookups:
        """The mail lookups (built on first use for runtimes made without them)."""
        if self.lookups is None:
            self.lookups = MailLookups(self.directory, self.settings.mail)
        return self.lookups

    @property
    def invalidator(self) -> Invalidator:
        """Everything that caches directory data in this process (auth cache, mail lookups):
        what the control socket drops when the CLI changes something."""
        return FanoutInvalidator((self.authenticator, self.mail))

    def start_change_feed(self) -> bool:
        """``idsvc serve``: follow a read-only corporate directory's changes (``directory.ldap.
        change_feed``) and drop this process's cached entries for each changed account. Each
        serving process runs its own feed (its caches are its own). False when not applicable
        or off; the CLI never calls this."""
        ldap_settings = self.settings.directory.ldap
        if self.settings.directory.backend != "ldap" or ldap_settings.profile == "idsvc":
            return False
        from idsvc.directory.ldap.corporate import CorporateDirectory

        if not isinstance(self.directory, CorporateDirectory):
            return False
        return self.directory.start_change_feed(self.invalidator) is not None

    async def close(self) -> None:
        for listener in reversed(self.listeners):
            await listener.close()
        self.listeners.clear()
        await self.authenticator.close()
        self.provisioner.close()
        if self.overlay is not None:
            await self.overlay.close()
        await self.directory.close()
        if isinstance(self.audit, QueuedAuditSink):
            # after the listeners and the core: every event of the run is queued by now
            await asyncio.get_running_loop().run_in_executor(None, self.audit.close)


def log_sink(settings: Settings) -> LogAuditSink:
    """The audit log-line sink with the configured choice of authentication lines."""
    return LogAuditSink(auth=settings.logging.auth_log)


def overlay_path(settings: Settings) -> Path:
    """``app_passwords.path``, else ``overlay.db`` next to the embedded store's file."""
    if settings.app_passwords.path is not None:
        return settings.app_passwords.path
    return settings.directory.embedded.path.parent / "overlay.db"


async def build_runtime(
    settings: Settings,
    *,
    audit: AuditSink | None = None,
    notify_server: bool = False,
    queued: bool = False,
    peers: Invalidator | None = None,
    publish_dropped: Callable[[int], None] | None = None,
) -> Runtime:
    """Open the directory and build the core objects (no listeners are started here).

    ``notify_server``: this process (the CLI) is not the server; its provisioning changes are
    also sent to the running server's control socket so its auth cache drops them at once.
    ``queued`` (``idsvc serve``): the sinks sit behind a bounded :class:`QueuedAuditSink`
    drained by one writer thread, so auditing costs an authentication one queue append.
    ``peers``: the other worker processes of ``idsvc serve --workers N``; provisioning changes
    made here are forwarded to them as well; ``publish_dropped`` receives this process's count
    of dropped audit events (the workers' shared counters).
    """
    audit = audit or log_sink(settings)
    directory = await open_directory(settings.directory)
    if queued:
        audit = QueuedAuditSink(
            audit, max_queue=settings.logging.audit_queue, publish=publish_dropped
        )
    hasher = PasswordHasher(settings.passwords)
    rehash = settings.auth.rehash_on_login
    if rehash is None:  # default: rehash where we own the store, not in a shared LDAP
        rehash = settings.directory.backend == "embedded"
    overlay = None
    if settings.app_passwords.enabled:
        try:
            overlay = await OverlayStore.open(overlay_path(settings))
        except BaseException:
            await directory.close()
            raise
    required = frozenset(Service(s) for s in settings.app_passwords.required_for)
    authenticator = Authenticator(
        directory, hasher, settings.auth, audit=audit, rehash=rehash,
        app_passwords=overlay, app_required=required,
    )  # fmt: skip
    lookups = MailLookups(directory, settings.mail)
    invalidator: Invalidator = FanoutInvalidator((authenticator, lookups))
    if notify_server:
        remote = RemoteInvalidator(settings.control.socket.path)
        invalidator = FanoutInvalidator((authenticator, lookups, remote))
    elif peers is not None:
        invalidator = FanoutInvalidator((authenticator, lookups, peers))
    policy = PasswordPolicy.from_settings(settings)
    policy.load()  # a missing blocklist file fails here, not on the first password change
    provisioner = Provisioner(
        directory, hasher, audit=audit, invalidator=invalidator, policy=policy
    )
    apps = None
    if overlay is not None:
        apps = AppPasswords(directory, overlay, audit=audit, invalidator=invalidator)
    return Runtime(
        settings, directory, hasher, authenticator, provisioner, audit,
        lookups=lookups, app_passwords=apps, overlay=overlay,
    )  # fmt: skip
