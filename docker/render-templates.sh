#!/bin/sh
# render-templates.sh SRC DEST: write every SRC/NAME.tmpl to DEST/NAME with each placeholder
# (VAR between double at-signs) replaced by the environment variable VAR (unset: an error).
# Other files are left alone. The containers run it at start; tests/fixtures/mailstack.py does
# the same substitution in Python on the same files.
set -eu
src=$1
dest=$2
mkdir -p "$dest"
for file in "$src"/*.tmpl; do
    [ -f "$file" ] || continue
    name=$(basename "$file")
    out="$dest/${name%.tmpl}"
    cp "$file" "$out.new"
    for var in $(grep -o '@@[A-Z0-9_]*@@' "$file" | tr -d @ | sort -u); do
        eval "value=\${$var-}; isset=\${$var+x}"
        if [ -z "$isset" ]; then
            echo "render-templates: $file needs \$$var" >&2
            rm -f "$out.new"
            exit 1
        fi
        escaped=$(printf '%s' "$value" | sed -e 's/[\\|&]/\\&/g')
        sed -i "s|@@$var@@|$escaped|g" "$out.new"
    done
    mv "$out.new" "$out"
done
