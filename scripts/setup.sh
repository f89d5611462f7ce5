#!/usr/bin/env bash
# Installs, on a fresh Debian machine, every real part the tests and the local stack talk to.
# Idempotent: anything already present is left alone. Needs root (apt) and Go (go install).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*" >&2; }

apt_pkgs=(docker-registry skopeo umoci runc busybox-static pigz apache2-utils)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Go programs used only as test tools, pinned.
export GOBIN="${GOBIN:-$HOME/go/bin}"
mkdir -p "$GOBIN"
declare -A go_tools=(
  [crane]=github.com/google/go-containerregistry/cmd/crane@v0.22.1
  [fake-gcs-server]=github.com/fsouza/fake-gcs-server@v1.55.1
)
for bin in "${!go_tools[@]}"; do
  if [[ ! -x "$GOBIN/$bin" ]]; then
    log "go install ${go_tools[$bin]}"
    PATH="/usr/local/go/bin:$PATH" go install "${go_tools[$bin]}"
  fi
done

# Node 24 comes from the `node` devDependency; npm ci brings it.
if [[ ! -x node_modules/.bin/node ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  log "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
log "ready ($(node_modules/.bin/node --version))"
