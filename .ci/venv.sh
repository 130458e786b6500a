#!/usr/bin/env bash
# The tests' virtualenv, from a cache: .venv in this checkout becomes a copy (hard links) of
# ~/.cache/osmo-venv/KEY, KEY a digest of the Python version and pyproject.toml's dependency lists, built
# there once (~75 s: ~680 MB of packages, moto, botocore, kubernetes, selenium and the rest, byte-compiled).
# The test command's own `python3 -m venv .venv && pip install -e '.[test]'` then finds every package
# installed (~10 s) and points the editable install at this checkout. The copy's scripts and activate files
# are rewritten to name .venv (new files: the cache's stay as they are; pip and Python replace files rather
# than write into them, so the shared links are never changed through .venv). A .venv this script did not
# make (a person's own) is left alone; the cached virtualenvs of other keys are removed.
set -euo pipefail
cd "$(dirname "$0")/.."

key=$({ python3 -c 'import sys; print(sys.version)'
        awk '/^dependencies *= *\[/ { inside = 1 } inside { print } inside && /^\]/ { exit }' pyproject.toml
        awk '/^\[project.optional-dependencies\]/ { inside = 1; next } /^\[/ { inside = 0 } inside' pyproject.toml
      } | sha256sum | cut -c1-16)
MARK=.venv/.osmo-venv-key
if [ -e .venv ] && [ ! -f "$MARK" ]; then
    echo "venv: .venv was made by hand; left as it is"
    exit 0
fi
if [ -f "$MARK" ] && [ "$(cat "$MARK")" = "$key" ]; then
    echo "venv: .venv is up to date ($key)"
    exit 0
fi
root=${XDG_CACHE_HOME:-$HOME/.cache}/osmo-venv
cache=$root/$key
if [ ! -f "$cache/.complete" ]; then
    start=$(date +%s)
    rm -rf "$cache"
    mkdir -p "$root"
    python3 -m venv "$cache"
    "$cache/bin/pip" install -q -e '.[test]'
    touch "$cache/.complete"
    echo "venv: built $cache in $(( $(date +%s) - start )) s"
fi
for other in "$root"/*; do
    if [ -e "$other" ] && [ "$other" != "$cache" ]; then
        rm -rf "$other"
    fi
done
rm -rf .venv
cp -al "$cache" .venv 2>/dev/null || { rm -rf .venv; cp -a "$cache" .venv; }  # another file system: a copy
rm -f .venv/.complete
here=$(pwd -P)/.venv
grep -lIr --exclude-dir=__pycache__ -F "$cache" .venv/bin | while read -r file; do
    sed "s|$cache|$here|g" "$file" >"$file.relocated"
    chmod --reference="$file" "$file.relocated"
    mv -f "$file.relocated" "$file"
done
echo "$key" >"$MARK"
echo "venv: .venv copied from $cache"
