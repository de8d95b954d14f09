#!/bin/sh
# Create the secret files docker-compose.yml hands to slapd and idsvc (random), once.
# They are never committed (docker/secrets/.gitignore).
set -eu
cd "$(dirname "$0")"
umask 077
for name in ldap_admin.pw ldap_reader.pw ldap_writer.pw; do
    [ -e "$name" ] || head -c 24 /dev/urandom | base64 | tr -d '/+=\n' > "$name"
done
# idsvc runs as uid 2501 / gid 2500 (idsvc-clients) and reads its two files through the group
chmod 0640 ldap_reader.pw ldap_writer.pw
chgrp 2500 ldap_reader.pw ldap_writer.pw 2>/dev/null \
    || echo "note: run as root (or chgrp 2500 ldap_reader.pw ldap_writer.pw) so idsvc can read them"
echo "secrets in $(pwd): ldap_admin.pw ldap_reader.pw ldap_writer.pw"
