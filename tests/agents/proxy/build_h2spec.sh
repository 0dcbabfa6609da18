#!/usr/bin/env bash
# Builds h2spec (the HTTP/2 conformance tester, a Go program) at a pinned version from the Go
# module proxy and prints the path of the binary. Cached outside the checkout, one folder per
# version (${XDG_CACHE_HOME:-~/.cache}/sidecarkit/h2spec/VERSION), so only the first run builds.
set -euo pipefail
HOME=${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}
export HOME
version=v2.2.1+incompatible
root=${XDG_CACHE_HOME:-$HOME/.cache}/sidecarkit/h2spec/$version
if [ -x "$root/h2spec" ]; then
    echo "$root/h2spec"
    exit 0
fi
go=$(command -v go || echo /usr/local/go/bin/go)
if [ ! -x "$go" ]; then
    echo "build_h2spec.sh: Go is needed to build h2spec; install it (https://go.dev/dl/)" >&2
    exit 1
fi
mkdir -p "$root"
GOBIN=$root GOFLAGS=-mod=mod "$go" install "github.com/summerwind/h2spec/cmd/h2spec@$version" >&2
echo "$root/h2spec"
