"""The embedded store: the zero-setup default directory backend, one SQLite file (stdlib sqlite3).

Modules: ``schema`` (file, connections, schema and migrations), ``runner`` (bounded thread pool,
one connection per thread, transactions), ``errors`` (sqlite3 → idsvc errors), ``codec`` (rows,
cursors, checks) and ``store`` (``SqliteDirectory``, the ``Directory`` implementation).
"""

from idsvc.directory.sqlite.store import SqliteDirectory

__all__ = ["SqliteDirectory"]
