#!/bin/sh
# Container start: render the templates into /etc/dovecot, make a self-signed certificate when
# none is mounted, run Dovecot in the foreground.
set -eu
render-templates /etc/dovecot/templates /etc/dovecot
if [ ! -e "$TLS_CERT" ]; then
    mkdir -p "$(dirname "$TLS_CERT")"
    openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=${POSTMASTER#*@}" \
        -keyout "$TLS_KEY" -out "$TLS_CERT" 2>/dev/null
    chmod 600 "$TLS_KEY"
fi
exec dovecot -F
