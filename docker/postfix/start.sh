#!/bin/sh
# Container start: render the templates into /etc/postfix, make a self-signed certificate when
# none is mounted, run Postfix in the foreground.
set -eu
render-templates /etc/postfix/templates /etc/postfix
if [ ! -e "$TLS_CERT" ]; then
    mkdir -p "$(dirname "$TLS_CERT")"
    openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=$MYHOSTNAME" \
        -keyout "$TLS_KEY" -out "$TLS_CERT" 2>/dev/null
    chmod 600 "$TLS_KEY"
fi
exec postfix start-fg
