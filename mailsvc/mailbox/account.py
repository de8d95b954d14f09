"""One user's mail: the folders under their Maildir (Maildir++ layout), subscriptions and the
special-use folders, over a process-wide registry of open :class:`Folder` objects so every POP3
and IMAP session on the same folder shares one index.

New users get ``Sent``, ``Drafts``, ``Trash`` and ``Junk`` (RFC 6154 attributes) at their first
login; a marker file (``mailsvc-special-use``) records that, so a folder the user deleted later is
not created again. Subscriptions are kept one name per line in ``subscriptions`` (a format Dovecot
2.3 also reads). Synchronous: callers run these methods on a worker thread.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

from mailsvc.mailbox import names
from mailsvc.mailbox.folder import Folder, FolderError
from mailsvc.maildir import Maildir, MaildirStore, Quota, StoreError, Usage

SPECIAL_USE = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Junk": "\\Junk"}
MARKER = "mailsvc-special-use"
SUBSCRIPTIONS = "subscriptions"
MAX_FOLDERS = 2000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class NoSuchFolder(StoreError):
    pass


class FolderExists(StoreError):
    pass


class FolderRegistry:
    """Open folders of this process by path: weakly held, plus the ``keep`` most recently used
    ones held strongly so their index survives between sessions."""

    def __init__(self, *, fsync: bool = True, keep: int = 64) -> None:
        self.fsync = fsync
        self.keep = keep
        self._lock = threading.Lock()
        self._open: weakref.WeakValueDictionary[str, Folder] = weakref.WeakValueDictionary()
        self._recent: OrderedDict[str, Folder] = OrderedDict()

    def get(self, maildir: Maildir, root: Maildir, name: str) -> Folder:
        key = str(maildir.path)
        with self._lock:
            folder = self._open.get(key)
            if folder is None:
                folder = Folder(maildir, root, name, fsync=self.fsync)
                self._open[key] = folder
            # the last few folders stay indexed after their sessions end, so the next login
            # does not rescan a large folder (the index is in memory only)
            self._recent[key] = folder
            self._recent.move_to_end(key)
            while len(self._recent) > self.keep:
                self._recent.popitem(last=False)
            return folder

    def peek(self, path: str) -> Folder | None:
        with self._lock:
            return self._open.get(path)

    def poke(self, path: str) -> None:
        """Mail was delivered into the folder at ``path``: wake its watchers (IDLE), which
        re-read the directory."""
        folder = self.peek(path)
        if folder is not None:
            folder.poke()

    def forget(self, path: str) -> None:
        with self._lock:
            self._open.pop(path, None)
            self._recent.pop(path, None)


@dataclass(frozen=True)
class FolderInfo:
    name: str  # wire form (modified UTF-7), delimiter "."
    attributes: tuple[str, ...]


class Account:
    """A user's Maildir (``path`` relative to the vmail root, from the ``mailbox`` map)."""

    def __init__(
        self, store: MaildirStore, registry: FolderRegistry, path: str, quota: Quota
    ) -> None:
        self.store = store
        self.registry = registry
        self.root = store.mailbox(path, create=True)
        self.quota = quota

    # --- folders --------------------------------------------------------------------------

    def prepare(self) -> None:
        """Create the Maildir, and the special-use folders once."""
        with self.root.open_dir() as box:
            try:
                fd = os.open(MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                             dir_fd=box)  # fmt: skip
            except FileExistsError:
                return
            os.close(fd)
        for name in SPECIAL_USE:
            with contextlib.suppress(FolderExists):
                self.create(name)
            self.subscribe(name, True)

    def folder(self, name: str) -> Folder:
        """The folder called ``name`` (:class:`NoSuchFolder`, :class:`BadFolderName`)."""
        name = names.normalise(name)
        directory = names.directory(name)
        if directory and not self._is_folder(directory):
            raise NoSuchFolder(name)
        return self.registry.get(self.root.folder(directory), self.root, name)

    def _is_folder(self, directory: str) -> bool:
        with self.root.open_dir() as box:
            try:
                fd = os.open(f"{directory}/cur", _DIR_FLAGS, dir_fd=box)
            except OSError:
                return False
            os.close(fd)
            # no symlink for the folder itself either
            return not os.path.islink(os.path.join(self.root.path, directory))

    def exists(self, name: str) -> bool:
        try:
            self.folder(name)
        except (NoSuchFolder, names.BadFolderName):
            return False
        return True

    def folders(self) -> list[FolderInfo]:
        """Every folder, INBOX first, with LIST attributes (children, special use)."""
        with self.root.open_dir() as box:
            entries = os.listdir(box)
            found: list[str] = []
            for entry in entries:
                name = names.from_directory(entry)
                if name is None:
                    continue
                try:
                    info = os.stat(entry, dir_fd=box, follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(info.st_mode):
                    found.append(name)
                if len(found) >= MAX_FOLDERS:
                    break
        found.sort()
        everything = set(found)
        result = [FolderInfo("INBOX", ("\\HasNoChildren",))]
        for name in found:
            attrs: list[str] = []
            prefix = name + names.DELIMITER
            has_children = any(other.startswith(prefix) for other in everything)
            attrs.append("\\HasChildren" if has_children else "\\HasNoChildren")
            if name in SPECIAL_USE:
                attrs.append(SPECIAL_USE[name])
            result.append(FolderInfo(name, tuple(attrs)))
        return result

    def create(self, name: str) -> None:
        name = names.normalise(name).rstrip(names.DELIMITER)
        directory = names.directory(name)
        if not directory:
            raise FolderExists("INBOX")
        with self.root.open_dir() as box:
            try:
                os.mkdir(directory, 0o700, dir_fd=box)
            except FileExistsError:
                raise FolderExists(name) from None
            except OSError as exc:
                raise StoreError(f"cannot create folder: {exc.strerror}") from exc
            sub = os.open(directory, _DIR_FLAGS, dir_fd=box)
            try:
                for leaf in ("tmp", "new", "cur"):
                    os.mkdir(leaf, 0o700, dir_fd=sub)
                os.close(os.open("maildirfolder", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=sub))
            finally:
                os.close(sub)

    def delete(self, name: str) -> None:
        name = names.normalise(name)
        directory = names.directory(name)
        if not directory:
            raise StoreError("INBOX cannot be deleted")
        if not self._is_folder(directory):
            raise NoSuchFolder(name)
        trash = f"..deleted.{self.store.unique()}"
        with self.root.open_dir() as box:
            try:
                os.rename(directory, trash, src_dir_fd=box, dst_dir_fd=box)
            except OSError as exc:
                raise StoreError(f"cannot delete folder: {exc.strerror}") from exc
            shutil.rmtree(trash, dir_fd=box)  # fd-based, does not follow symlinks
        self.registry.forget(str(self.root.path / directory))
        self.subscribe(name, False)

    def rename(self, old: str, new: str) -> None:
        old, new = names.normalise(old), names.normalise(new).rstrip(names.DELIMITER)
        source, target = names.directory(old), names.directory(new)
        if not source:
            raise StoreError("renaming INBOX is not supported")
        if not target:
            raise FolderExists(new)
        if not self._is_folder(source):
            raise NoSuchFolder(old)
        with self.root.open_dir() as box:
            children = [e for e in os.listdir(box) if e.startswith(source + names.DELIMITER)]
            if any(os.path.lexists(os.path.join(self.root.path, d))
                   for d in [target] + [target + c[len(source):] for c in children]):  # fmt: skip
                raise FolderExists(new)
            for entry in [source, *children]:
                dest = target + entry[len(source) :]
                names.directory(dest[1:])  # the new names must be valid too
                os.rename(entry, dest, src_dir_fd=box, dst_dir_fd=box)
                self.registry.forget(str(self.root.path / entry))

    # --- subscriptions ------------------------------------------------------------------

    def subscriptions(self) -> list[str]:
        with self.root.open_dir() as box:
            try:
                fd = os.open(SUBSCRIPTIONS, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=box)
            except FileNotFoundError:
                return []
            try:
                data = os.read(fd, 1 << 20).decode("utf-8", "replace")
            finally:
                os.close(fd)
        out = []
        for line in data.splitlines():
            if not line or line.startswith("V\t"):
                continue
            out.append(line.replace("\t", names.DELIMITER))
        return out

    def subscribe(self, name: str, on: bool) -> None:
        name = names.normalise(name)
        current = self.subscriptions()
        if on and name not in current:
            current.append(name)
        elif not on and name in current:
            current.remove(name)
        else:
            return
        text = "".join(f"{n}\n" for n in current)
        with self.root.open_dir() as box:
            tmp = f"{SUBSCRIPTIONS}.{self.store.unique()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                         dir_fd=box)  # fmt: skip
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
            os.rename(tmp, SUBSCRIPTIONS, src_dir_fd=box, dst_dir_fd=box)

    # --- quota ------------------------------------------------------------------------

    def usage(self) -> Usage:
        return self.root.usage(self.quota)

    def over_quota(self, extra_bytes: int, extra_count: int = 1) -> bool:
        if self.quota.unlimited:
            return False
        return self.usage().exceeds(self.quota, extra_bytes, extra_count)


__all__ = ["Account", "Folder", "FolderError", "FolderExists", "FolderInfo", "FolderRegistry",
           "NoSuchFolder"]  # fmt: skip
