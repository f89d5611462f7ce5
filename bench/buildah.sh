#!/usr/bin/env bash
# One buildah build the way a CI job without a daemon would do it: pull the base into a fresh
# vfs store, copy the input, commit straight to the registry. Usage: buildah.sh HOST SRC TAG
set -euo pipefail
host=$1 src=$2 tag=$3
store=$(mktemp -d /tmp/artificer-bench-buildah-XXXXXX)
trap 'rm -rf "$store"' EXIT
b=(buildah --storage-driver vfs --root "$store/root" --runroot "$store/run")
ctr=$("${b[@]}" from --quiet --tls-verify=false "docker://$host/busybox:latest")
"${b[@]}" copy --quiet "$ctr" "$src" "/$(basename "$src")" >/dev/null
"${b[@]}" config --cmd /bin/sh "$ctr"
"${b[@]}" commit --quiet --tls-verify=false "$ctr" "docker://$host/bench:$tag" >/dev/null
