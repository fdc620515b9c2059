#!/bin/sh
# Entry point of the Inflow image: gives every process the same INFLOW_SECRET_KEY, then runs the command.
#
# INFLOW_SECRET_KEY set: used as it is. Otherwise, with INFLOW_SECRET_KEY_FILE set (docker-compose.yml mounts
# one volume holding it into every Inflow container), the key is read from that file, which is created with a
# fresh key (mode 0600) by the first container that finds it missing. The create is atomic (noclobber), so
# containers starting together agree on one key.
set -eu
if [ -z "${INFLOW_SECRET_KEY:-}" ] && [ -n "${INFLOW_SECRET_KEY_FILE:-}" ]; then
  if [ ! -s "$INFLOW_SECRET_KEY_FILE" ]; then
    mkdir -p "$(dirname "$INFLOW_SECRET_KEY_FILE")"
    key="$(inflow config new-secret-key)"
    tmp="$INFLOW_SECRET_KEY_FILE.$$"
    (umask 077 && printf '%s\n' "$key" > "$tmp")
    # A link fails when the file exists: the first container's key wins, the others read it.
    ln "$tmp" "$INFLOW_SECRET_KEY_FILE" 2>/dev/null || true
    rm -f "$tmp"
  fi
  INFLOW_SECRET_KEY="$(cat "$INFLOW_SECRET_KEY_FILE")"
  export INFLOW_SECRET_KEY
fi
unset INFLOW_SECRET_KEY_FILE
exec "$@"
