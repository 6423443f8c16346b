// Where a credential's real value comes from when it is not written in the secrets file
// (issue 16, item 2): a file the proxy re-reads when it changes (Vault agent, Kubernetes
// projected secrets), a command run again before its value expires (`gh auth token`,
// `aws configure export-credentials --format process`), or an OAuth 2.0 token endpoint
// (client_credentials or refresh_token grant, refreshed ahead of expiry). Pure: the `source`
// field of a credential in, a spec or a ConfigError naming the field out. A spec's log-safe
// description never holds a secret (client secrets and refresh tokens are SecretValues).
//
//   "source": { "file": "/run/secrets/github-token", "pollSeconds": 2 }
//   "source": { "command": ["gh", "auth", "token"], "refreshSeconds": 900, "timeoutSeconds": 10 }
//   "source": { "oauth": { "tokenUrl": "https://idp.example/oauth/token",
//               "grant": "client_credentials", "clientId": "…", "clientSecret": "…",
//               "scope": "…", "caFile": "/path/ca.pem" } }
//   "source": { "oauth": { …, "grant": "refresh_token", "refreshToken": "…" } }
//   "source": { "assumeRole": { "roleArn": "arn:aws:iam::…:role/…", "accessKeyId": "…",
//               "secretAccessKey": "…", "durationSeconds": 3600, "region": "us-east-1" } }
//               (kind aws: STS temporary keys for the role, signed for with the base keys)
//
// Common: "retainRetiredSeconds" (3600): how long a replaced value stays in the redaction set.

import { ConfigError } from "../../config/config-error.ts";
import { SecretValue } from "../secret-value.ts";

export type SourceSpec = FileSource | CommandSource | OAuthSource | AssumeRoleSource;

interface Common {
  /** How long a replaced value is still redacted and blocked. */
  readonly retainRetiredMs: number;
}

export interface FileSource extends Common {
  readonly type: "file";
  readonly path: string;
  readonly pollMs: number;
}

export interface CommandSource extends Common {
  readonly type: "command";
  readonly argv: readonly string[];
  /** Run again this often, or sooner when its value says it expires (AWS process format). */
  readonly refreshMs: number;
  readonly timeoutMs: number;
}

export interface OAuthSource extends Common {
  readonly type: "oauth";
  readonly tokenUrl: string;
  readonly grant: "client_credentials" | "refresh_token";
  readonly clientId: string;
  readonly clientSecret?: SecretValue;
  readonly refreshToken?: SecretValue;
  readonly scope?: string;
  /** PEM file of CAs to trust for the token endpoint (besides the system's). */
  readonly caFile?: string;
  readonly timeoutMs: number;
}

/** AWS STS AssumeRole: temporary keys for a role, signed for with base keys (kind aws only). */
export interface AssumeRoleSource extends Common {
  readonly type: "assumeRole";
  readonly roleArn: string;
  readonly sessionName: string;
  readonly durationSeconds: number;
  readonly externalId?: string;
  /** The STS endpoint (default the global one) and the region its signature is scoped to. */
  readonly stsUrl: string;
  readonly region: string;
  readonly accessKeyId: SecretValue;
  readonly secretAccessKey: SecretValue;
  readonly sessionToken?: SecretValue;
  readonly caFile?: string;
  readonly timeoutMs: number;
}

const COMMON = ["retainRetiredSeconds"];

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function fieldsOnly(o: Record<string, unknown>, allowed: readonly string[], where: string): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) {
      const shown = /^[A-Za-z_][A-Za-z0-9_]{0,31}$/.test(k) ? `'${k}'` : "(a field not shown)";
      throw new ConfigError("bad-shape", `unknown field ${shown}`, where);
    }
  }
}

function seconds(
  o: Record<string, unknown>,
  key: string,
  fallback: number,
  min: number,
  max: number,
  where: string,
): number {
  const v = o[key];
  if (v === undefined) return fallback * 1000;
  if (typeof v !== "number" || !Number.isFinite(v) || v < min || v > max) {
    throw new ConfigError(
      "bad-value",
      `must be a number of seconds, ${min}..${max}`,
      `${where}.${key}`,
    );
  }
  return Math.round(v * 1000);
}

function text(o: Record<string, unknown>, key: string, where: string, max = 4096): string {
  const v = o[key];
  if (typeof v !== "string" || v === "" || v.length > max) {
    throw new ConfigError(
      "bad-value",
      `must be a non-empty string (at most ${max} characters)`,
      `${where}.${key}`,
    );
  }
  return v;
}

/** A secret field of a source (a client secret, a refresh token): printable ASCII. */
function secret(o: Record<string, unknown>, key: string, where: string): SecretValue {
  const v = o[key];
  if (typeof v !== "string" || !/^[\x21-\x7e]{1,4096}$/.test(v)) {
    throw new ConfigError(
      "bad-value",
      "must be 1..4096 printable ASCII characters, no spaces",
      `${where}.${key}`,
    );
  }
  return SecretValue.fromText(v);
}

/** The `source` field of a credential, validated; `where` names it in errors. */
export function parseSource(value: unknown, where: string): SourceSpec {
  if (!isObject(value)) {
    throw new ConfigError(
      "bad-shape",
      'must be an object: { "file": … }, { "command": [...] } or { "oauth": {...} }',
      where,
    );
  }
  const kinds = ["file", "command", "oauth", "assumeRole"].filter((k) => value[k] !== undefined);
  if (kinds.length !== 1) {
    throw new ConfigError(
      "bad-shape",
      'needs exactly one of "file", "command", "oauth", "assumeRole"',
      where,
    );
  }
  // At least a minute: a replaced value an upstream echoes must still be redacted.
  const retainRetiredMs = seconds(value, "retainRetiredSeconds", 3600, 60, 7 * 86400, where);
  if (kinds[0] === "file") {
    fieldsOnly(value, ["file", "pollSeconds", ...COMMON], where);
    const path = text(value, "file", where);
    if (!path.startsWith("/"))
      throw new ConfigError("bad-value", "must be an absolute path", `${where}.file`);
    return {
      type: "file",
      path,
      pollMs: seconds(value, "pollSeconds", 2, 0.05, 3600, where),
      retainRetiredMs,
    };
  }
  if (kinds[0] === "command") {
    fieldsOnly(value, ["command", "refreshSeconds", "timeoutSeconds", ...COMMON], where);
    const argv = value.command;
    if (
      !Array.isArray(argv) ||
      argv.length === 0 ||
      argv.length > 64 ||
      !argv.every((a) => typeof a === "string" && a.length <= 4096 && !a.includes("\0"))
    ) {
      throw new ConfigError(
        "bad-value",
        "must be a non-empty list of arguments (the program first; no shell)",
        `${where}.command`,
      );
    }
    if (argv[0] === "") throw new ConfigError("bad-value", "names no program", `${where}.command`);
    return {
      type: "command",
      argv: Object.freeze([...argv]) as readonly string[],
      refreshMs: seconds(value, "refreshSeconds", 300, 1, 86400, where),
      timeoutMs: seconds(value, "timeoutSeconds", 10, 0.1, 300, where),
      retainRetiredMs,
    };
  }
  if (kinds[0] === "assumeRole") return assumeRole(value, where, retainRetiredMs);
  fieldsOnly(value, ["oauth", ...COMMON], where);
  const o = value.oauth;
  const at = `${where}.oauth`;
  if (!isObject(o)) throw new ConfigError("bad-shape", "must be an object", at);
  fieldsOnly(
    o,
    [
      "tokenUrl",
      "grant",
      "clientId",
      "clientSecret",
      "refreshToken",
      "scope",
      "caFile",
      "timeoutSeconds",
    ],
    at,
  );
  const url = httpsUrl(o, "tokenUrl", at);
  const grant = o.grant;
  if (grant !== "client_credentials" && grant !== "refresh_token") {
    throw new ConfigError(
      "bad-value",
      'must be "client_credentials" or "refresh_token"',
      `${at}.grant`,
    );
  }
  if (grant === "client_credentials" && o.clientSecret === undefined) {
    throw new ConfigError(
      "missing",
      "is required for the client_credentials grant",
      `${at}.clientSecret`,
    );
  }
  if (grant === "refresh_token" && o.refreshToken === undefined) {
    throw new ConfigError(
      "missing",
      "is required for the refresh_token grant",
      `${at}.refreshToken`,
    );
  }
  const caFile = o.caFile === undefined ? undefined : text(o, "caFile", at);
  if (caFile !== undefined && !caFile.startsWith("/")) {
    throw new ConfigError("bad-value", "must be an absolute path", `${at}.caFile`);
  }
  return {
    type: "oauth",
    tokenUrl: url.href,
    grant,
    clientId: text(o, "clientId", at, 512),
    ...(o.clientSecret !== undefined ? { clientSecret: secret(o, "clientSecret", at) } : {}),
    ...(o.refreshToken !== undefined ? { refreshToken: secret(o, "refreshToken", at) } : {}),
    ...(o.scope !== undefined ? { scope: text(o, "scope", at, 1024) } : {}),
    ...(caFile !== undefined ? { caFile } : {}),
    timeoutMs: seconds(o, "timeoutSeconds", 10, 0.1, 300, at),
    retainRetiredMs,
  };
}

function httpsUrl(o: Record<string, unknown>, key: string, at: string): URL {
  let url: URL;
  try {
    url = new URL(text(o, key, at));
  } catch {
    throw new ConfigError("bad-value", "must be an https URL", `${at}.${key}`);
  }
  if (url.protocol !== "https:" || url.username || url.password) {
    throw new ConfigError(
      "bad-value",
      "must be an https URL without credentials in it",
      `${at}.${key}`,
    );
  }
  return url;
}

function assumeRole(
  value: Record<string, unknown>,
  where: string,
  retainRetiredMs: number,
): AssumeRoleSource {
  fieldsOnly(value, ["assumeRole", ...COMMON], where);
  const o = value.assumeRole;
  const at = `${where}.assumeRole`;
  if (!isObject(o)) throw new ConfigError("bad-shape", "must be an object", at);
  fieldsOnly(
    o,
    [
      "roleArn",
      "sessionName",
      "durationSeconds",
      "externalId",
      "stsUrl",
      "region",
      "accessKeyId",
      "secretAccessKey",
      "sessionToken",
      "caFile",
      "timeoutSeconds",
    ],
    at,
  );
  const roleArn = text(o, "roleArn", at, 2048);
  if (!/^arn:aws[a-z-]*:iam::\d{12}:role\/[\w+=,.@/-]{1,512}$/.test(roleArn)) {
    throw new ConfigError(
      "bad-value",
      "must be a role ARN (arn:aws:iam::123456789012:role/NAME)",
      `${at}.roleArn`,
    );
  }
  const sessionName = o.sessionName === undefined ? "slapenir" : text(o, "sessionName", at, 64);
  if (!/^[\w+=,.@-]{2,64}$/.test(sessionName)) {
    throw new ConfigError(
      "bad-value",
      "must be 2..64 of letters, digits and +=,.@_-",
      `${at}.sessionName`,
    );
  }
  const duration = o.durationSeconds ?? 3600;
  if (
    typeof duration !== "number" ||
    !Number.isInteger(duration) ||
    duration < 900 ||
    duration > 43200
  ) {
    throw new ConfigError(
      "bad-value",
      "must be whole seconds, 900..43200",
      `${at}.durationSeconds`,
    );
  }
  const region = o.region === undefined ? "us-east-1" : text(o, "region", at, 64);
  if (!/^[a-z0-9-]{1,64}$/.test(region)) {
    throw new ConfigError("bad-value", "must be a region name (us-east-1)", `${at}.region`);
  }
  const caFile = o.caFile === undefined ? undefined : text(o, "caFile", at);
  if (caFile !== undefined && !caFile.startsWith("/")) {
    throw new ConfigError("bad-value", "must be an absolute path", `${at}.caFile`);
  }
  return {
    type: "assumeRole",
    roleArn,
    sessionName,
    durationSeconds: duration,
    ...(o.externalId !== undefined ? { externalId: text(o, "externalId", at, 1224) } : {}),
    stsUrl: (o.stsUrl === undefined
      ? new URL("https://sts.amazonaws.com/")
      : httpsUrl(o, "stsUrl", at)
    ).href,
    region,
    accessKeyId: secret(o, "accessKeyId", at),
    secretAccessKey: secret(o, "secretAccessKey", at),
    ...(o.sessionToken !== undefined ? { sessionToken: secret(o, "sessionToken", at) } : {}),
    ...(caFile !== undefined ? { caFile } : {}),
    timeoutMs: seconds(o, "timeoutSeconds", 10, 0.1, 300, at),
    retainRetiredMs,
  };
}

/** What a source is, for logs and `secrets check`: never a secret. */
export function describeSource(spec: SourceSpec): string {
  switch (spec.type) {
    case "file":
      return `file ${spec.path}`;
    case "command":
      return `command ${spec.argv[0]} (${spec.argv.length - 1} arguments)`;
    case "oauth":
      // Without its query: a misconfigured URL may carry a secret there.
      return `oauth ${spec.grant} ${spec.tokenUrl.replace(/[?#].*$/s, "")}`;
    case "assumeRole":
      return `assumeRole ${spec.roleArn} via ${spec.stsUrl}`;
  }
}

/** Zeroes a spec's own secrets (a client secret, a refresh token). */
export function disposeSource(spec: SourceSpec): void {
  if (spec.type === "oauth") {
    spec.clientSecret?.dispose();
    spec.refreshToken?.dispose();
  } else if (spec.type === "assumeRole") {
    spec.accessKeyId.dispose();
    spec.secretAccessKey.dispose();
    spec.sessionToken?.dispose();
  }
}
