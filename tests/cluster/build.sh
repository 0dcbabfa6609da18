#!/usr/bin/env bash
# Builds the control plane the cluster tests run against -- etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler -- from the pinned sources in this folder's go.mod,
# and prints the folder that holds them.
#
# The binaries go to a cache outside the checkout, one folder per content of go.mod and go.sum
# and of this script (${XDG_CACHE_HOME:-~/.cache}/sidecarkit/cluster/KEY, or under
# $SIDECARKIT_CLUSTER_CACHE), so only the first build is slow (see docs/testing.md). With
# SIDECARKIT_CLUSTER_ASSETS set to a folder that already holds the four binaries, nothing is built.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# Both the cache below and Go's own build cache live under the home folder.
HOME=${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}
export HOME
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler)

complete() {
    local dir=$1 name
    for name in "${binaries[@]}"; do
        [ -x "$dir/$name" ] || return 1
    done
}

if [ -n "${SIDECARKIT_CLUSTER_ASSETS:-}" ]; then
    if ! complete "$SIDECARKIT_CLUSTER_ASSETS"; then
        echo "build.sh: SIDECARKIT_CLUSTER_ASSETS=$SIDECARKIT_CLUSTER_ASSETS lacks one of" \
            "${binaries[*]}; unset it to build them here" >&2
        exit 1
    fi
    echo "$SIDECARKIT_CLUSTER_ASSETS"
    exit 0
fi

key=$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" | sha256sum | cut -c1-16)
root=${SIDECARKIT_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sidecarkit/cluster}
dest=$root/$key
if complete "$dest"; then
    echo "$dest"
    exit 0
fi

# The official Go install lives here; not every login shell has it on PATH.
command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
if ! command -v go >/dev/null; then
    echo "build.sh: the Go toolchain (go) is not on PATH; install Go 1.26 or newer, or point" \
        "SIDECARKIT_CLUSTER_ASSETS at a folder with ${binaries[*]}" >&2
    exit 1
fi

# The version the binaries report (/version, the emulation version, user agents) is stamped at
# link time, as Kubernetes' own build does; without it they would say v0.0.0-master.
version=$(awk '$1 == "k8s.io/kubernetes" { print $2 }' "$here/go.mod")
minor=${version#v1.}
minor=${minor%%.*}
stamp=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    stamp+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    stamp+=" -X $pkg.gitTreeState=clean"
done

# One `go build` for all four, so the packages they share are compiled once. The build goes to a
# private folder first and is renamed into place whole, so an interrupted build never leaves a
# folder that looks complete.
work=$(mktemp -d "$root.build.XXXXXX" 2>/dev/null || { mkdir -p "$root" && mktemp -d "$root.build.XXXXXX"; })
trap 'rm -rf "$work"' EXIT
echo "build.sh: building ${binaries[*]} into $dest (slow the first time)" >&2
started=$SECONDS
(
    cd "$here"
    CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags="-s -w$stamp" -o "$work/" \
        go.etcd.io/etcd/server/v3 \
        k8s.io/kubernetes/cmd/kube-apiserver \
        k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kube-scheduler
)
# go names the binary of a module path ending in a major version after the element before it.
mv "$work/server" "$work/etcd"
complete "$work"
chmod 755 "$work"
mkdir -p "$root"
rm -rf "$dest"
mv "$work" "$dest"
trap - EXIT
echo "build.sh: built in $((SECONDS - started)) s" >&2
echo "$dest"
