#!/usr/bin/env bash
# Install what the tests need (Debian packages, the package and its dev extras), then run them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
need=()
for pair in docker-registry:/usr/bin/docker-registry softhsm2:/usr/bin/softhsm2-util \
            apache2-utils:/usr/bin/htpasswd openssl:/usr/bin/openssl \
            chromium:/usr/bin/chromium postgresql:/usr/lib/postgresql jq:/usr/bin/jq; do
  [ -e "${pair#*:}" ] || need+=("${pair%%:*}")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
MODELSEAL_EXTRAS=dev source "$ROOT/scripts/env.sh"
cd "$ROOT"
python -m pytest "$@"
