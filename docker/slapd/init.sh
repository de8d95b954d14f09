#!/bin/sh
# First start of the idsvc OpenLDAP image: build cn=config and the base entries offline
# (slapadd), then run slapd in the foreground. Later starts only run slapd.
# Every path can be moved with the environment (CI runs this script in a temp dir with
# SLAPD_INIT_ONLY=1 and starts slapd itself).
set -eu
: "${LDAP_SUFFIX:?}" "${LDAP_ORG:=idsvc}"
CONF_DIR=${SLAPD_CONF_DIR:-/etc/ldap/slapd.d}
LDAP_DATA_DIR=${SLAPD_DATA_DIR:-/var/lib/ldap}
LDAP_RUN_DIR=${SLAPD_RUN_DIR:-/var/run/slapd}
SECRETS=${SLAPD_SECRETS_DIR:-/run/secrets}
TEMPLATES=$(dirname "$0")
IDSVC_SCHEMA=${IDSVC_SCHEMA:-/etc/ldap/schema/idsvc.ldif}
SLAPADD=${SLAPADD:-slapadd}
SLAPPASSWD=${SLAPPASSWD:-slappasswd}
RENDER=${RENDER:-render-templates}

hash_of() {  # the {SSHA} hash of the password in file $1 (without its trailing newline)
    tr -d '\n' < "$1" > "$work/pw"
    "$SLAPPASSWD" -T "$work/pw"
}

if [ ! -e "$CONF_DIR/cn=config.ldif" ]; then
    work=$(mktemp -d)
    LDAP_ADMIN_HASH=$(hash_of "$SECRETS/ldap_admin.pw")
    LDAP_READER_HASH=$(hash_of "$SECRETS/ldap_reader.pw")
    LDAP_WRITER_HASH=$(hash_of "$SECRETS/ldap_writer.pw")
    LDAP_DC=$(printf '%s' "$LDAP_SUFFIX" | sed -e 's/^dc=\([^,]*\).*/\1/')
    export LDAP_SUFFIX LDAP_ORG LDAP_DC LDAP_DATA_DIR LDAP_RUN_DIR IDSVC_SCHEMA \
        LDAP_ADMIN_HASH LDAP_READER_HASH LDAP_WRITER_HASH
    mkdir -p "$work/ldif" "$CONF_DIR" "$LDAP_DATA_DIR" "$LDAP_RUN_DIR"
    for name in config.ldif.tmpl base.ldif.tmpl; do cp "$TEMPLATES/$name" "$work/$name"; done
    sh "$(command -v "$RENDER" || echo "$RENDER")" "$work" "$work/ldif"
    "$SLAPADD" -n0 -F "$CONF_DIR" -l "$work/ldif/config.ldif"
    "$SLAPADD" -q -n1 -F "$CONF_DIR" -l "$work/ldif/base.ldif"
    rm -rf "$work"
    if id openldap >/dev/null 2>&1 && [ -z "${SLAPD_INIT_ONLY:-}" ]; then
        chown -R openldap:openldap "$CONF_DIR" "$LDAP_DATA_DIR" "$LDAP_RUN_DIR"
    fi
fi
[ -n "${SLAPD_INIT_ONLY:-}" ] && exit 0
exec slapd -d 0 -u openldap -g openldap -F "$CONF_DIR" -h "ldap:/// ldapi:///"
