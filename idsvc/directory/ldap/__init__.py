"""OpenLDAP backend: ``LdapDirectory`` implements ``Directory`` and ``BindVerifier``.

How it works:

* Three identities, each with its own connections. ``reader`` (``bind_dn``): lookups, ``ping``,
  ``search`` authentication and the DN search before a bind check; ``binder`` (anonymous until a
  user binds): user simple binds for ``auth_method = "bind"``, never used for lookups; ``writer``
  (``writer_dn``): provisioning writes and listings only. Reader and binder run on the event
  loop with python-ldap's asynchronous API (``aio.py``: ``pool_size`` connections each, up to
  128 requests in flight per reader connection, one per binder connection; only connecting runs
  in a thread). The writer runs python-ldap in a bounded thread pool (``pool.py``: at most 4
  threads, one connection each). At most ``max_pending`` requests wait at once; more fail at
  once with ``TemporaryFailure``.
* Connections go to the first ``uris`` entry not marked down; a server that failed to connect,
  dropped a connection or timed out is skipped for ``retry_after`` seconds (failover). A read
  that fails that way is retried once on a fresh connection (another server if there is one);
  writes are not retried. An idle connection the server closed is noticed before use and
  replaced. ``open()`` never fails because a server is down: connections are made lazily.
* TLS: ``ldaps://`` or ``starttls``, certificate verified against ``ca_file`` (or the system
  store) unless ``verify_tls`` is off; TLS ≥ 1.2. Referrals are never chased.
* Timeouts: ``connect_timeout`` (TCP connect) and ``timeout`` (each LDAP operation: a deadline
  per request on the event loop, after which its message id is abandoned; in libldap and again
  as an overall bound around each call on the thread pool).
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

Modules: ``directory`` (``LdapDirectory``), ``aio`` (the event-loop path), ``pool`` (servers,
connecting, the thread pool), ``search`` (blocking search helpers), ``listing`` (cursors, paged
scans), ``errors`` (the python-ldap → idsvc error table, see there). Never logged: passwords,
password hashes, bind credentials.
"""

from idsvc.directory.ldap.directory import LdapDirectory
from idsvc.directory.ldap.errors import map_error
from idsvc.directory.ldap.listing import decode_cursor, encode_cursor

__all__ = ["LdapDirectory", "decode_cursor", "encode_cursor", "map_error"]
