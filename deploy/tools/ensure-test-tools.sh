#!/usr/bin/env bash
# Installs the system tools some tests drive, when they are missing and this machine can:
#   promtool + prometheus  (Debian's prometheus package): the alert rule tests and the alert test
#                          against a real Prometheus
#   chromium               (Debian's chromium package): the dashboards' browser test (playwright
#                          drives this binary; it never downloads a browser of its own)
# Called by `make test` (and so by .ci/run). Without root or apt-get it only says what is missing:
# those tests then skip with the reason, except in CI (CI=true), where a missing tool fails them.
set -uo pipefail

missing=()
command -v promtool > /dev/null 2>&1 || missing+=(prometheus)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get > /dev/null 2>&1; then
    echo "note: ${missing[*]} not installed (needs root and apt-get): the tests that drive them" \
         "will skip (fail with CI=true); install with: apt-get install ${missing[*]}" >&2
    exit 0
fi
echo "installing ${missing[*]} for the tests (Debian packages)…" >&2
apt-get update -qq || echo "apt-get update reported errors; trying the install anyway" >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    || echo "could not install ${missing[*]}; the tests that need them will say so" >&2
exit 0
