// The one configuration file (SLAPENIR_CONFIG): JSON or YAML, checked against the published
// schema (config.schema.json, which editors use to complete and validate it), then handed to
// the same parsers the environment goes through. A setting is the variable it stands for
// (`limits.maxHeaderBytes` is SLAPENIR_MAX_HEADER_BYTES); a variable that is set overrides
// it, and an error in a value the file gave names the file and the field, not the variable.
//
// Parse errors never quote the input: a YAML or JSON parser's message can hold a credential.

import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import Ajv, { type ErrorObject } from "ajv";
import schema from "./config.schema.json" with { type: "json" };
import { ConfigError, safeKey, showableName } from "./config-error.ts";

type Env = Readonly<Record<string, string | undefined>>;

type Kind = "text" | "path" | "list";

/** Each setting of the file and the variable it stands for. */
export const FILE_SETTINGS: readonly (readonly [string, string, Kind])[] = [
  ["listen", "SLAPENIR_LISTEN", "text"],
  ["adminListen", "SLAPENIR_ADMIN_LISTEN", "text"],
  ["home", "SLAPENIR_HOME", "path"],
  ["serverNames", "SLAPENIR_SERVER_NAMES", "list"],
  ["certPath", "CERT_PATH", "path"],
  ["upstreamCa", "SLAPENIR_UPSTREAM_CA", "path"],
  ["allowPrivate", "SLAPENIR_ALLOW_PRIVATE", "text"],
  ["revokedFile", "SLAPENIR_REVOKED_FILE", "path"],
  ["rateLimit", "SLAPENIR_RATE_LIMIT", "text"],
  ["handshakeRate", "SLAPENIR_HANDSHAKE_RATE", "text"],
  ["mintRate", "SLAPENIR_MINT_RATE", "text"],
  ["quarantine", "SLAPENIR_QUARANTINE", "text"],
  ["quarantineOn", "SLAPENIR_QUARANTINE_ON", "list"],
  ["quarantineFile", "SLAPENIR_QUARANTINE_FILE", "path"],
  ["memoryLimit", "SLAPENIR_MEMORY_LIMIT", "text"],
  ["memoryShedPercent", "SLAPENIR_MEMORY_SHED_PERCENT", "text"],
  ["logLevel", "SLAPENIR_LOG_LEVEL", "text"],
  ["loops", "SLAPENIR_LOOPS", "text"],
  ["limits.maxHeaderBytes", "SLAPENIR_MAX_HEADER_BYTES", "text"],
  ["limits.maxHeaderCount", "SLAPENIR_MAX_HEADER_COUNT", "text"],
  ["limits.headerTimeoutMs", "SLAPENIR_HEADER_TIMEOUT_MS", "text"],
  ["limits.idleTimeoutMs", "SLAPENIR_IDLE_TIMEOUT_MS", "text"],
  ["limits.bodyIdleTimeoutMs", "SLAPENIR_BODY_IDLE_TIMEOUT_MS", "text"],
  ["limits.upstreamConnectTimeoutMs", "SLAPENIR_UPSTREAM_CONNECT_TIMEOUT_MS", "text"],
  ["limits.upstreamResponseTimeoutMs", "SLAPENIR_UPSTREAM_RESPONSE_TIMEOUT_MS", "text"],
  ["limits.maxHeldBodyBytes", "SLAPENIR_MAX_HELD_BODY_BYTES", "text"],
  ["limits.heldBodyBudgetBytes", "SLAPENIR_HELD_BODY_BUDGET_BYTES", "text"],
  ["limits.maxConnections", "SLAPENIR_MAX_CONNECTIONS", "text"],
  ["limits.maxAgentConnections", "SLAPENIR_MAX_AGENT_CONNECTIONS", "text"],
  ["limits.maxHandshakesPerAddress", "SLAPENIR_MAX_HANDSHAKES_PER_ADDRESS", "text"],
  ["limits.shutdownGraceMs", "SLAPENIR_SHUTDOWN_GRACE_MS", "text"],
  ["limits.wsMaxMessageBytes", "SLAPENIR_WS_MAX_MESSAGE_BYTES", "text"],
  ["limits.wsPingMs", "SLAPENIR_WS_PING_MS", "text"],
  ["limits.wsIdleTimeoutMs", "SLAPENIR_WS_IDLE_TIMEOUT_MS", "text"],
  ["console.tokenFile", "SLAPENIR_ADMIN_TOKEN_FILE", "path"],
];

/** The policy part, in the policy file's own shape (SLAPENIR_POLICY holds the same fields). */
export interface PolicyDoc {
  readonly allow?: unknown;
  readonly agents?: unknown;
  readonly denyAgents?: unknown;
  readonly denyCertificates?: unknown;
}

export interface ConfigFile {
  readonly path: string;
  /** The settings as the variables they stand for; paths made absolute. */
  readonly settings: Env;
  /** Variable → the field that set it, for errors: `/etc/slapenir.yaml: limits.maxHeaderBytes`. */
  readonly origin: ReadonlyMap<string, string>;
  readonly policy: PolicyDoc;
  /** The `credentials` entries as written (TOKENS_JSON's entries), checked by secrets.ts. */
  readonly credentials: readonly unknown[];
}

const validate = new Ajv({ allErrors: false, strict: false }).compile(schema);

/** The file SLAPENIR_CONFIG names, read and checked; undefined when none is named. */
export function configFileFromEnv(env: Env, cwd: string): ConfigFile | undefined {
  const named = env.SLAPENIR_CONFIG;
  return named ? readConfigFile(resolve(cwd, named)) : undefined;
}

export function readConfigFile(path: string): ConfigFile {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "error";
    throw new ConfigError("file-unreadable", `${path} cannot be read (${code})`, "SLAPENIR_CONFIG");
  }
  return parseConfigFile(text, path);
}

/** Parses and checks a configuration file's text; `path` names it and anchors relative paths. */
export function parseConfigFile(text: string, path: string): ConfigFile {
  const yaml = /\.ya?ml$/i.test(path);
  let doc: unknown;
  try {
    doc = yaml ? Bun.YAML.parse(text) : JSON.parse(text);
  } catch {
    throw new ConfigError("bad-json", `is not valid ${yaml ? "YAML" : "JSON"}`, path);
  }
  if (doc === null || doc === undefined) doc = {};
  if (!validate(doc)) throw schemaError(validate.errors?.[0], path);
  const d = doc as Record<string, unknown>;
  const dir = dirname(path);
  const settings: Record<string, string> = {};
  const origin = new Map<string, string>();
  for (const [field, variable, kind] of FILE_SETTINGS) {
    const value = field
      .split(".")
      .reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], d);
    if (value === undefined) continue;
    settings[variable] =
      kind === "list"
        ? (value as unknown[]).join(",")
        : kind === "path"
          ? resolve(dir, String(value))
          : String(value);
    origin.set(variable, `${path}: ${field}`);
  }
  return Object.freeze({
    path,
    settings: Object.freeze(settings),
    origin,
    policy: Object.freeze({
      allow: d.allow,
      agents: d.agents,
      denyAgents: d.denyAgents,
      denyCertificates: d.denyCertificates,
    }),
    credentials: Object.freeze((d.credentials as unknown[] | undefined) ?? []),
  });
}

/** The environment as the proxy reads it: the file's settings under the variables that are set. */
export function overlay(env: Env, file: ConfigFile | undefined): Env {
  if (!file) return env;
  const out: Record<string, string | undefined> = { ...file.settings };
  for (const [k, v] of Object.entries(env)) if (v !== undefined && v !== "") out[k] = v;
  return out;
}

/**
 * An error about a variable the file set (and the environment did not) names the file's
 * field instead: `SLAPENIR_ALLOW_PRIVATE: must be true or false` becomes
 * `/etc/slapenir.yaml: allowPrivate: must be true or false`.
 */
export function inFileTerms(e: unknown, env: Env, file: ConfigFile | undefined): unknown {
  if (!file || !(e instanceof ConfigError) || e.where === undefined) return e;
  const m = /^([A-Z][A-Z0-9_]*)(.*)$/.exec(e.where);
  const at = m ? file.origin.get(m[1]!) : undefined;
  if (!m || at === undefined || (env[m[1]!] ?? "") !== "") return e;
  return new ConfigError(e.code, e.detail, `${at}${m[2]}`);
}

function schemaError(err: ErrorObject | undefined, path: string): ConfigError {
  if (!err) return new ConfigError("bad-shape", "does not match the schema", path);
  const at = err.instancePath
    .split("/")
    .slice(1)
    .map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"))
    .reduce((s, p) => {
      const name = showableName(p) ? p : "(a name not shown)";
      return /^[0-9]+$/.test(p) ? `${s}[${p}]` : s ? `${s}.${name}` : name;
    }, "");
  // ajv's messages name types, patterns and allowed values of the schema, never the input;
  // an unknown field is named (shortened), as the policy and secrets files do.
  const extra = (err.params as { additionalProperty?: string }).additionalProperty;
  const message =
    extra !== undefined
      ? `unknown field ${safeKey(extra)}`
      : err.propertyName !== undefined
        ? "has a key that is not a valid agent name"
        : (err.message ?? "does not match the schema");
  return new ConfigError(
    err.keyword === "type" || extra !== undefined ? "bad-shape" : "bad-value",
    message,
    at ? `${path}: ${at}` : path,
  );
}
