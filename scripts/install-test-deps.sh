#!/usr/bin/env bash
# Installs the Debian packages the test suite drives (real clients, servers, linters).
# Idempotent: packages already present are not touched; nothing is fetched when all are there.
# Without root (or without apt-get) it only reports what is missing; tests that need a missing
# tool then skip with a loud reason.
set -euo pipefail

packages=(curl openssl ca-certificates iproute2 socat stunnel4 git python3-requests python3-pip shellcheck s6 procps awscli python3-boto3 python3-websockets prometheus
  # the operator console's browser test (playwright-core drives it)
  chromium
  # the real Step-CA, built by test/stepca-real/build.ts from Debian's Go sources
  golang-go golang-github-smallstep-certificates-dev)
# The matcher benches' same-run baseline (bench/hyperscan-scan.c); Hyperscan is x86-64 only.
if [ "$(dpkg --print-architecture 2>/dev/null)" = amd64 ]; then packages+=(libhyperscan-dev); fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-deps: missing Debian packages (not root or no apt-get): ${missing[*]}" >&2
  exit 0
fi

echo "install-test-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
