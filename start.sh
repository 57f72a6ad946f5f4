#!/usr/bin/env bash
# start.sh NAME [flags]: build appnode if needed, then run node NAME@<host>
# in the foreground with its console. Works from any directory.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  PATH="/usr/local/go/bin:$PATH"
fi
if [ $# -lt 1 ]; then
  echo "usage: $0 NAME [flags]    (e.g. $0 app_node1; $0 --help for flags)" >&2
  exit 2
fi
# go build is the staleness check: it rebuilds only what changed and takes
# well under a second when nothing did.
(cd "$here" && go build -o "$here/bin/appnode" ./cmd/appnode)
if [ "$1" = "--help" ] || [ "$1" = "-h" ]; then
  exec "$here/bin/appnode" -h
fi
name="$1"
shift
exec "$here/bin/appnode" "$@" "$name"
