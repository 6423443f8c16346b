#!/bin/sh
# ca-init: one-shot run in the smallstep/step-ca image after the CA is healthy. It writes, into
# one volume per consumer (the proxy, each agent), a fresh one-time enrollment token (JWK
# provisioner, single use, valid minutes), the root fingerprint the consumer pins; and for the
# proxy the interception CA: signed by the Step-CA root so agents trust intercepted TLS through
# the bootstrap they already do, but restricted (serverAuth only, path length 0, name
# constraints excluding the SLAPENIR identity namespaces) so nothing it signs can ever pass the
# proxy's agent check or impersonate the proxy.
# Must never print a token or a key, and never give one consumer's volume to another uid.
set -eu
umask 077

ca_url="${SLAPENIR_CA_URL:?SLAPENIR_CA_URL is not set}"
provisioner="${SLAPENIR_PROVISIONER:-enroll}"
password_file="${SLAPENIR_CA_PASSWORD_FILE:-/run/secrets/ca_password}"
ca_home="${SLAPENIR_CA_HOME:-/home/step}"
out="${SLAPENIR_ENROLL_DIR:-/enroll}"
agents="${SLAPENIR_AGENTS:-agent-1}"
proxy_uid="${SLAPENIR_PROXY_UID:-10001}"
agent_uid="${SLAPENIR_AGENT_UID:-1000}"
root="$ca_home/certs/root_ca.crt"

# step keeps its own config under STEPPATH; the CA's volume is mounted read-only.
STEPPATH="$(mktemp -d)"
export STEPPATH

log() { printf 'ca-init: %s\n' "$*" >&2; }

fingerprint="$(step certificate fingerprint "$root")"

# issue_token DIR SUBJECT SAN... : a fresh one-time token into DIR/token, written atomically.
issue_token() {
  dir="$1"
  subject="$2"
  shift 2
  set -- "$subject" "$@"
  sans=""
  for san in "$@"; do
    sans="$sans --san $san"
  done
  # shellcheck disable=SC2086 # $sans is a list of flags built from fixed, validated names.
  step ca token "$subject" $sans \
    --ca-url "$ca_url" --root "$root" \
    --provisioner "$provisioner" --password-file "$password_file" \
    >"$dir/token.new"
  mv -f "$dir/token.new" "$dir/token"
  printf '%s\n' "$fingerprint" >"$dir/root_fingerprint"
}

valid_name() {
  case "$1" in
    "" | *[!A-Za-z0-9._-]* | [._-]*) return 1 ;;
    *) return 0 ;;
  esac
}

# --- the proxy -------------------------------------------------------------------------------
mkdir -p "$out/proxy"
issue_token "$out/proxy" proxy.slapenir.internal proxy
log "issued the proxy's enrollment token"

icpt_crt="$out/proxy/interception-ca.crt"
icpt_key="$out/proxy/interception-ca.key"
if [ "${SLAPENIR_ROTATE_INTERCEPTION_CA:-0}" = "1" ] || [ ! -s "$icpt_key" ] ||
  ! step certificate verify "$icpt_crt" --roots "$root" >/dev/null 2>&1; then
  template="$STEPPATH/interception-ca.tpl"
  cat >"$template" <<'TPL'
{
  "subject": {"commonName": "SLAPENIR Interception CA"},
  "keyUsage": ["certSign", "crlSign"],
  "extKeyUsage": ["serverAuth"],
  "basicConstraints": {"isCA": true, "maxPathLen": 0},
  "nameConstraints": {
    "critical": true,
    "excludedDNSDomains": ["slapenir.internal"],
    "excludedURIDomains": ["slapenir"]
  }
}
TPL
  step certificate create "SLAPENIR Interception CA" "$icpt_crt.new" "$icpt_key.new" \
    --template "$template" \
    --ca "$root" --ca-key "$ca_home/secrets/root_ca_key" --ca-password-file "$password_file" \
    --kty EC --curve P-256 --not-after "${SLAPENIR_INTERCEPTION_CA_LIFETIME:-2160h}" \
    --no-password --insecure --force
  mv -f "$icpt_key.new" "$icpt_key"
  mv -f "$icpt_crt.new" "$icpt_crt"
  log "created the interception CA (serverAuth only, pathlen 0, name-constrained)"
fi
chown -R "$proxy_uid:$proxy_uid" "$out/proxy"
chmod 700 "$out/proxy"

# --- the agents ------------------------------------------------------------------------------
old_ifs="$IFS"
IFS=','
for name in $agents; do
  IFS="$old_ifs"
  if ! valid_name "$name"; then
    log "refusing agent name '$name' (letters, digits, . _ - only)"
    exit 1
  fi
  if [ ! -d "$out/$name" ]; then
    log "no volume mounted at $out/$name; add one for agent $name in compose.yml"
    exit 1
  fi
  issue_token "$out/$name" "$name" "spiffe://slapenir/agent/$name"
  chown -R "$agent_uid:$agent_uid" "$out/$name"
  chmod 700 "$out/$name"
  log "issued the enrollment token for agent $name"
done
IFS="$old_ifs"
rm -rf "$STEPPATH"
