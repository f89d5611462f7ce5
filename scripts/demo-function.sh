#!/usr/bin/env bash
# The Cloud Function, locally: fake-gcs-server as Cloud Storage, docker-registry, the function in
# the functions-framework server (built dist/, as `npx functions-framework` serves it), an
# example artifact + spec uploaded, the Eventarc event delivered; prints the record and what the
# built container prints. Installs what it needs on a fresh machine (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PATH="$PWD/node_modules/.bin:$PATH"
npm run build --silent
exec node scripts/demo-function.ts
