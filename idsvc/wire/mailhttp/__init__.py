"""Small HTTP/1.x listeners for local mail daemons: nginx ``auth_http``, Dovecot auth-policy and
the Dovecot Lua passdb/userdb script (contrib/dovecot/idsvc.lua)."""
