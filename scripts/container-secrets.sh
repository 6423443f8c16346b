#!/usr/bin/env bash
# Creates the files compose.yml mounts as Docker secrets under ./secrets, with fresh random
# passwords and a tokens.json template to edit. Never overwrites an existing file and never
# prints a secret value.
set -euo pipefail
cd "$(dirname "$0")/.."
umask 077
mkdir -p secrets

random_secret() {
  openssl rand -base64 32 | tr -d '\n/+=' | cut -c1-32
}

create() { # file, generator...
  local file="secrets/$1"
  shift
  if [ -e "$file" ]; then
    echo "container-secrets: $file exists, kept" >&2
    return
  fi
  "$@" >"$file"
  echo "container-secrets: created $file" >&2
}

tokens_template() {
  cat <<'JSON'
{
  "credentials": [
    {
      "name": "example",
      "dummy": "DUMMY_EXAMPLE_TOKEN_CHANGE_ME",
      "real": "replace-with-the-real-credential",
      "hosts": ["api.example.com"]
    }
  ]
}
JSON
}

create ca_password.txt random_secret
create grafana_admin_password.txt random_secret
create tokens.json tokens_template
create cloudflared_token.txt printf ''
echo "container-secrets: edit secrets/tokens.json (see docs/DEPLOY.md) and, for the tunnel profile, secrets/cloudflared_token.txt" >&2
