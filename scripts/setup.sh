#!/usr/bin/env bash
# Installs, on a fresh Debian (bookworm) machine, every real part the tests and the local stack
# talk to: the distribution registry, skopeo/umoci/runc/busybox for running pushed images,
# crane and fake-gcs-server (go install, pinned), the Pub/Sub emulator, and Node 24 (npm ci).
#
# Idempotent: whatever is already present is left alone, so a second run takes seconds.
# Fails loudly: every step logs what it does, and the first failure stops the script with the
# line and command that failed. Needs root (or sudo) for apt-get.
#
# Environment:
#   GOBIN                  where Go tools go (default ~/go/bin; test/support/tools.ts looks there)
#   SETUP_SKIP_EMULATORS=1 skip gcloud / the Pub/Sub emulator (`npm run demo` and the unit and
#                          registry tests do without; `npm test`'s Cloud Function end-to-end and
#                          deploy-source tests need them)
set -Eeuo pipefail
cd "$(dirname "$0")/.."

# .ci/run stamps every line itself.
log() { if [[ -n "${CI:-}" ]]; then printf 'setup: %s\n' "$*"; else printf '%s setup: %s\n' "$(date -u +%H:%M:%S)" "$*"; fi >&2; }
die() { log "ERROR: $*"; exit 1; }
trap 'log "ERROR: failed (exit $?) at scripts/setup.sh:$LINENO: $BASH_COMMAND"' ERR

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || die "not root and no sudo: apt-get needs root"
  SUDO=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
apt_updated=false
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  if ! $apt_updated; then
    log "apt-get update"
    "${SUDO[@]}" apt-get update -qq
    apt_updated=true
  fi
  log "apt-get install ${missing[*]}"
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

[[ -r /etc/debian_version ]] || die "this script supports Debian (bookworm) only"

# --- Debian packages --------------------------------------------------------------------------
# docker-registry: distribution 2.8 (test/support/registry.ts); apache2-utils: htpasswd for its
# basic auth; skopeo/umoci/runc: pull, unpack and run pushed images (test/support/runc.ts);
# busybox-static: the bytes of every test base image (test/support/images.ts).
# libarchive-tools (bsdtar), zstd, xz-utils, bzip2, python3: bundles as other tools write them
# (test/unit/bundle-formats.test.ts).
apt_install ca-certificates curl git tar gzip pigz util-linux coreutils \
  docker-registry apache2-utils skopeo umoci runc busybox-static time \
  libarchive-tools zstd xz-utils bzip2 python3
! ldd /bin/busybox >/dev/null 2>&1 || die "/bin/busybox is not static (busybox-static replaced?)"

# --- Go test tools (pinned) -------------------------------------------------------------------
# crane and fake-gcs-server need Go >= 1.25. A Go >= 1.21 fetches a newer toolchain itself from
# the Go module proxy (GOTOOLCHAIN=auto). Debian bookworm only ships Go 1.19, so with that we
# fetch the toolchain module (golang.org/toolchain) through the same proxy by hand.
GO_BOOTSTRAP=go1.25.0
export GOBIN="${GOBIN:-$HOME/go/bin}"
mkdir -p "$GOBIN"
declare -A go_tools=(
  [crane]=github.com/google/go-containerregistry/cmd/crane@v0.22.1
  [fake-gcs-server]=github.com/fsouza/fake-gcs-server@v1.55.1
)
go_minor() { "$1" env GOVERSION 2>/dev/null | sed -n 's/^go1\.\([0-9]*\).*/\1/p'; }
find_go() {
  local g
  for g in "$(command -v go || true)" /usr/local/go/bin/go /usr/lib/go/bin/go; do
    if [[ -n "$g" && -x "$g" ]] && (($(go_minor "$g" || echo 0) >= 21)); then echo "$g"; return 0; fi
  done
  return 1
}
# True when $GOBIN/<bin> exists and was built from the pinned module version.
go_tool_current() {
  [[ -x "$GOBIN/$1" ]] || return 1
  local g
  g=$(command -v go || { [[ -x /usr/local/go/bin/go ]] && echo /usr/local/go/bin/go; }) || return 0 # cannot tell: keep it
  [[ "$("$g" version -m "$GOBIN/$1" 2>/dev/null | awk '$1 == "mod" { print $3; exit }')" == "$2" ]]
}
need_go=false
for bin in "${!go_tools[@]}"; do
  go_tool_current "$bin" "${go_tools[$bin]#*@}" || need_go=true
done
if $need_go; then
  if ! GO=$(find_go); then
    apt_install golang-go
    arch=$(dpkg --print-architecture)
    log "fetching Go toolchain $GO_BOOTSTRAP from the Go module proxy (Debian's Go is too old)"
    dir=$(GOFLAGS=-modcacherw GOTOOLCHAIN=local /usr/lib/go/bin/go mod download -json "golang.org/toolchain@v0.0.1-$GO_BOOTSTRAP.linux-$arch" |
      sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [[ -d "$dir" ]] || die "could not download golang.org/toolchain@v0.0.1-$GO_BOOTSTRAP.linux-$arch"
    chmod -R a+x "$dir/bin" "$dir/pkg/tool" # module zips do not keep the executable bits
    GO="$dir/bin/go"
  fi
  log "using $("$GO" version) from $GO"
  for bin in "${!go_tools[@]}"; do
    log "go install ${go_tools[$bin]}"
    GOTOOLCHAIN=auto GOFLAGS=-buildvcs=false "$GO" install "${go_tools[$bin]}"
  done
fi
for bin in "${!go_tools[@]}"; do
  [[ -x "$GOBIN/$bin" ]] || die "$GOBIN/$bin missing after go install"
done

# --- Pub/Sub emulator -------------------------------------------------------------------------
# `gcloud beta emulators pubsub start` runs offline when two things are installed:
#  - the `beta` command group, which the google-cloud-cli Debian package itself ships
#    (<sdk>/.install/beta.manifest);
#  - the emulator jar, Debian package google-cloud-cli-pubsub-emulator
#    (<sdk>/platform/pubsub-emulator/lib/cloud-pubsub-emulator-*.jar), which needs a Java
#    runtime (openjdk-17-jre-headless, from Debian).
# `gcloud components install` is disabled for apt-installed SDKs, so apt is the only route; the
# packages come from Google's apt repository (packages.cloud.google.com), not Debian's.
if [[ "${SETUP_SKIP_EMULATORS:-}" != 1 ]]; then
  apt_install openjdk-17-jre-headless
  if ! dpkg-query -W -f='${Status}' google-cloud-cli-pubsub-emulator 2>/dev/null | grep -q 'install ok installed'; then
    if ! apt-cache policy google-cloud-cli-pubsub-emulator 2>/dev/null | grep -q 'Candidate: [0-9]'; then
      log "adding Google's apt repository for google-cloud-cli"
      apt_install gnupg
      curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg |
        "${SUDO[@]}" gpg --batch --yes --dearmor -o /usr/share/keyrings/cloud.google.gpg
      echo 'deb [signed-by=/usr/share/keyrings/cloud.google.gpg] https://packages.cloud.google.com/apt cloud-sdk main' |
        "${SUDO[@]}" tee /etc/apt/sources.list.d/google-cloud-sdk.list >/dev/null
      apt_updated=false
    fi
    apt_install google-cloud-cli google-cloud-cli-pubsub-emulator
  fi
  # Verify offline, with a throw-away gcloud config that never checks for updates or reports usage.
  sdk_root=$(dirname "$(dirname "$(readlink -f "$(command -v gcloud)")")") # = gcloud info's installation.sdk_root
  gcloud_config=$(mktemp -d)
  local_components=$(CLOUDSDK_CONFIG=$gcloud_config CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK=true \
    CLOUDSDK_CORE_DISABLE_USAGE_REPORTING=true gcloud components list --only-local-state --format='value(id)' 2>/dev/null)
  rm -rf "$gcloud_config"
  for c in beta pubsub-emulator; do
    grep -qx "$c" <<<"$local_components" || die "gcloud component '$c' is not installed under $sdk_root"
  done
  compgen -G "$sdk_root/platform/pubsub-emulator/lib/cloud-pubsub-emulator-*.jar" >/dev/null ||
    die "Pub/Sub emulator jar missing under $sdk_root/platform/pubsub-emulator"
  command -v java >/dev/null || die "java not on PATH (the Pub/Sub emulator needs it)"
  log "pubsub emulator: $(basename "$sdk_root"/platform/pubsub-emulator/lib/cloud-pubsub-emulator-*.jar) in $sdk_root"
fi

# --- Node 24 and the npm dependencies ---------------------------------------------------------
# Node 24 comes from the `node` devDependency; any npm can bring it (npm ci).
command -v npm >/dev/null || apt_install nodejs npm
if [[ ! -x node_modules/.bin/node ]] || [[ ! -f node_modules/.package-lock.json ]] ||
  [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  log "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
node_major=$(node_modules/.bin/node -p 'process.versions.node.split(".")[0]')
((node_major >= 24)) || die "node_modules/.bin/node is $(node_modules/.bin/node --version), need >= 24"

log "ready: node $(node_modules/.bin/node --version), $("$GOBIN/crane" version 2>/dev/null | sed 's/^/crane /'), $(skopeo --version), $(runc --version | head -1), $(docker-registry --version 2>/dev/null | head -1)"
