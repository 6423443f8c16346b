// Values the request path's unit tests are built from: compiled secrets from credential
// entries (the TOKENS_JSON format), and a request head parsed from its bytes. Test-only.

import { SecretState } from "../../src/credentials/secret-state.ts";
import { buildSecrets, parseSecretsJson } from "../../src/credentials/secrets.ts";
import { type RequestHead, RequestParser } from "../../src/http/request-parser.ts";

export interface CredentialEntry {
  readonly name: string;
  readonly dummy: string;
  readonly real: string;
  readonly hosts: readonly string[];
  readonly require?: boolean;
  readonly inUrl?: "allow" | "deny";
  /** Surfaces (`header:NAME`, `query:NAME`, `body`); default `header:authorization`. */
  readonly in?: readonly string[];
}

export function compiledSecrets(credentials: readonly CredentialEntry[]): SecretState {
  return SecretState.compile(
    buildSecrets(parseSecretsJson(JSON.stringify({ credentials }), "test credentials")),
  );
}

/** The head the proxy's parser makes of `raw` (which must hold one whole head). */
export function parsedHead(raw: string): RequestHead {
  const ev = new RequestParser().feed(new TextEncoder().encode(raw)).find((e) => e.type === "head");
  if (ev?.type !== "head")
    throw new Error(`no head parsed from ${JSON.stringify(raw.slice(0, 40))}`);
  return ev.head;
}
