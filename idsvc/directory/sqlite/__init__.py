"""The embedded store: the zero-setup default directory backend, one SQLite file (stdlib sqlite3).

Modules: ``schema`` (file, connections, schema and migrations), ``runner`` (bounded thread pool,
one connection per thread, transactions), ``errors`` (sqlite3 → idsvc errors), ``codec`` (rows,
cursors, checks), ``queries`` (SQL and in-transaction steps) and ``store`` (``SqliteDirectory``,
the ``Directory`` implementation).

Operating notes: the store is the file at ``directory.embedded.path`` plus, while it is open, its
``-wal`` and ``-shm`` companions (same mode, 0600). Copying the main file alone while idsvc runs
can miss committed writes that are still in the WAL; take a consistent copy online with
``sqlite3 idsvc.db ".backup /path/to/copy.db"`` (or stop idsvc first). Several idsvc processes may
share one file on a local filesystem (SQLite locking); never put it on NFS.
"""

from idsvc.directory.sqlite.store import SqliteDirectory

__all__ = ["SqliteDirectory"]
