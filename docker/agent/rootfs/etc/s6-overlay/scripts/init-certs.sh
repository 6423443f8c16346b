#!/bin/sh
# init-certs: the agent's first-boot identity (s6-rc oneshot, runs before every other service).
# If no valid certificate is on the /home/agent/certs volume, it bootstraps trust in the Step-CA
# root (pinned by fingerprint) and exchanges the one-time enrollment token for a certificate,
# then writes the trust bundle every tool in the container uses.
# It must never print the token, never leave a half-written certificate or key behind, and
# never trust a CA whose root fingerprint it was not given.
set -eu
umask 077

cert_dir="${SLAPENIR_CERT_DIR:-/home/agent/certs}"
name="${SLAPENIR_AGENT_NAME:?SLAPENIR_AGENT_NAME is not set}"
ca_url="${SLAPENIR_CA_URL:?SLAPENIR_CA_URL is not set}"
token_file="${SLAPENIR_ENROLL_TOKEN_FILE:-/var/lib/slapenir/enroll/token}"
fingerprint_file="${SLAPENIR_CA_FINGERPRINT_FILE:-/var/lib/slapenir/enroll/root_fingerprint}"
system_bundle="${SLAPENIR_SYSTEM_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
export STEPPATH="${STEPPATH:-$cert_dir/step}"

crt="$cert_dir/agent.crt"
key="$cert_dir/agent.key"
root="$cert_dir/root_ca.crt"
bundle="$cert_dir/ca-bundle.pem"

log() { printf 'init-certs: %s\n' "$*" >&2; }

# The bundle holds the system roots plus the Step-CA root; the proxy's interception CA chains
# to the Step-CA root, so intercepted HTTPS verifies with this one file.
write_bundle() {
  tmp="$bundle.tmp.$$"
  : >"$tmp"
  if [ -r "$system_bundle" ]; then
    cat "$system_bundle" >>"$tmp"
  fi
  cat "$root" >>"$tmp"
  chmod 644 "$tmp"
  mv -f "$tmp" "$bundle"
}

mkdir -p "$cert_dir" "$STEPPATH"

if [ -s "$crt" ] && [ -s "$key" ] && [ -s "$root" ] &&
  step certificate verify "$crt" --roots "$root" >/dev/null 2>&1; then
  log "existing certificate for $name is valid; enrollment skipped"
  write_bundle
  exit 0
fi

if [ ! -s "$token_file" ]; then
  log "no valid certificate and no enrollment token at $token_file; run ca-init to issue one"
  exit 1
fi
if [ -n "${SLAPENIR_CA_FINGERPRINT:-}" ]; then
  fingerprint="$SLAPENIR_CA_FINGERPRINT"
elif [ -s "$fingerprint_file" ]; then
  fingerprint="$(tr -d ' \n\r\t' <"$fingerprint_file")"
else
  log "no root fingerprint (SLAPENIR_CA_FINGERPRINT or $fingerprint_file); refusing to trust the CA blindly"
  exit 1
fi

log "bootstrapping trust in $ca_url"
step ca bootstrap --ca-url "$ca_url" --fingerprint "$fingerprint" --force >/dev/null

token="$(cat "$token_file")"
log "requesting a certificate for $name with the one-time token"
step ca certificate "$name" "$crt.new" "$key.new" --token "$token" --force >/dev/null
token=""

# Move into place only after both files exist, key first, so a reader never pairs a new
# certificate with an old key.
cp "$STEPPATH/certs/root_ca.crt" "$root.new"
chmod 644 "$root.new" "$crt.new"
chmod 600 "$key.new"
mv -f "$root.new" "$root"
mv -f "$key.new" "$key"
mv -f "$crt.new" "$crt"
write_bundle
log "enrolled as $name"
