#!/usr/bin/env bash
# Make sure a PostgreSQL server binary is installed (Debian's package); tests start their own
# throwaway cluster from it, so nothing is configured or started here.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  exit 0
fi
echo "PostgreSQL server not found: installing Debian's postgresql package" >&2
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
$SUDO apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
