#!/usr/bin/env bash
# npm run bench [-- --runs 5 --peers --big]: see bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
for bin in /usr/bin/time pigz gzip tar; do
  command -v "$bin" >/dev/null || { echo "bench: $bin is missing (apt-get install time pigz)" >&2; exit 1; }
done
exec node_modules/.bin/node bench/run.ts "$@"
