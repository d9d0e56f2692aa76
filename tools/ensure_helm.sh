#!/usr/bin/env bash
# Make sure the helm CLI the chart tests use is installed in .peers/helm/bin (git-ignored). It is built from the
# Go module proxy (`go install helm.sh/helm/v3/cmd/helm@VERSION`): a few minutes the first time, instant after.
set -euo pipefail
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/.peers/helm/bin"
STAMP="$BIN/.helm-$HELM_VERSION"

if [ -x "$BIN/helm" ] && [ -f "$STAMP" ]; then
  exit 0
fi
# Go's default install location, for shells whose PATH does not include it.
[ -x /usr/local/go/bin/go ] && ! command -v go >/dev/null 2>&1 && PATH="/usr/local/go/bin:$PATH"
if ! command -v go >/dev/null 2>&1; then
  echo "ensure_helm: Go is needed to build helm $HELM_VERSION from the Go module proxy; install Go 1.24+" >&2
  exit 2
fi
echo "ensure_helm: building helm $HELM_VERSION into $BIN (one-off, takes a few minutes)" >&2
mkdir -p "$BIN"
rm -f "$BIN"/.helm-*
# CGO off: a static binary that does not depend on this machine's C toolchain.
CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOBIN="$BIN" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
"$BIN/helm" version --short >/dev/null
touch "$STAMP"
echo "ensure_helm: $("$BIN/helm" version --short) ready at $BIN/helm" >&2
