// Loads the credentials SLAPENIR swaps: from a secrets file (path in TOKENS_JSON, a Docker
// secret in production) and/or environment variables, validated as a whole before anything
// starts. Each credential has a log-safe view (`redacted()`, also what JSON.stringify,
// util.inspect and template strings show), like superfly/tokenizer's StripHazmat.
//
// It must never put a credential value, or a fragment of one, into an error, a log-safe view
// or a string a formatter produces. Errors name the entry (JSON path, credential name or
// variable) and the field.
//
// File format (TOKENS_JSON):
//   { "credentials": [ {
//       "name": "openai",                        // [A-Za-z0-9][A-Za-z0-9._-]{0,63}, unique
//       "dummy": "sk-dummy-…",                   // what the agent holds
//       "real": "sk-proj-…",                     // what bound hosts receive
//       "hosts": ["api.openai.com", "*.github.com", "localhost:8443"],
//       "agents": ["agent-a"],                   // optional: only these agents get the swap
//       "require": true,                         // optional (false): bound hosts only get
//                                                //   requests that carried the dummy
//       "in": ["header:x-api-key", "query:key"], // optional (["header:authorization"]): where
//                                                //   the dummy is swapped (surfaces.ts); elsewhere
//                                                //   it travels unchanged
//       "inUrl": "deny",                         // optional ("allow"): refuse the dummy in URLs
//       "sharedWildcard": true                   // optional (false): accept a host wildcard
//                                                //   spanning a public suffix (*.github.io)
//   }, {
//       "name": "aws", "kind": "aws",            // AWS keys: requests to its hosts must be
//       "accessKeyId": { "dummy": "AKIA…", "real": "AKIA…" },   // signed (SigV4) with the
//       "secretAccessKey": { "dummy": "…", "real": "…" },       // dummy keys; the proxy
//       "sessionToken": { "dummy": "…", "real": "…" },          // verifies and signs again
//       "hosts": ["s3.eu-west-3.amazonaws.com"], "agents": […]  // (sigv4.ts); optional token;
//       "regions": ["eu-west-3"], "services": ["s3"]            // optional: what it may sign
//   } ] }
// Environment (merged with the file; a name may not appear in both):
//   SLAPENIR_CRED_<NAME>_DUMMY, _REAL, _HOSTS (comma list) — required;
//   SLAPENIR_CRED_<NAME>_AGENTS (comma list), _REQUIRE (true|false), _IN (comma list of
//   surfaces), _IN_URL (allow|deny), _SHARED_WILDCARD (true|false).
//   <NAME> becomes the lower-case credential name (OPENAI → openai).
// Values: 8..512 bytes of printable ASCII without leading/trailing spaces (they go into
// header values and are matched in several encodings).

import { readFile } from "node:fs/promises";
import { inspect } from "node:util";
import { ConfigError, safeKey } from "../config/config-error.ts";
import { PATTERN_MAX_LENGTH, PATTERN_MIN_LENGTH } from "../matcher/types.ts";
import { AGENT_NAME_RE } from "../policy/agent-name.ts";
import type { HostPattern } from "../policy/host-pattern.ts";
import { sharedSuffixUnder } from "../policy/public-suffix.ts";
import {
  ANY_REQUEST,
  parseRequestRule,
  type RequestScope,
  ruleText,
} from "../policy/request-rule.ts";
import { SecretValue } from "./secret-value.ts";
import type { SourceShape } from "./sources/fetch-source.ts";
import {
  describeSource,
  disposeSource,
  parseSource,
  type SourceSpec,
} from "./sources/source-spec.ts";
import { DEFAULT_SURFACES, parseSurface, type Surface, surfaceText } from "./surfaces.ts";

export const CREDENTIAL_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const ENV_PREFIX = "SLAPENIR_CRED_";
const ENV_KEY_RE =
  /^SLAPENIR_CRED_([A-Z0-9][A-Z0-9_]*)_(DUMMY|REAL|HOSTS|AGENTS|REQUIRE|IN|IN_URL|SHARED_WILDCARD)$/;
const AWS_FIELDS = new Set([
  "name",
  "source",
  "kind",
  "regions",
  "services",
  "accessKeyId",
  "secretAccessKey",
  "sessionToken",
  "hosts",
  "agents",
  "sharedWildcard",
]);
/** The parts of an AWS credential, each loaded as a credential of its own (`NAME.part`). */
export const SIGV4_PARTS = ["accessKeyId", "secretAccessKey", "sessionToken"] as const;
export type SigV4Part = (typeof SIGV4_PARTS)[number];
const FILE_FIELDS = new Set([
  "name",
  "dummy",
  "real",
  "source",
  "hosts",
  "agents",
  "require",
  "in",
  "inUrl",
  "sharedWildcard",
]);

export type InUrlRule = "allow" | "deny";

/** The log-safe view of a credential. */
export interface RedactedCredential {
  readonly name: string;
  /** `token` (swapped where presented) or `aws` (a part of an AWS key set: signed again). */
  readonly kind: "token" | "aws";
  readonly source: string;
  readonly dummyLength: number;
  /** Null: the value comes from a source that has none now. */
  readonly realLength: number | null;
  /** Where the real value comes from: `value` (written in), or the source (never a secret). */
  readonly from: string;
  readonly hosts: readonly string[];
  readonly agents: readonly string[] | "any";
  readonly require: boolean;
  /** Where its dummy is swapped (`header:authorization`, `query:key`, `body`). */
  readonly in: readonly string[];
  readonly inUrl: InUrlRule;
}

/** The log-safe view of a credential, or of a draft of one with no value now: names and lengths. */
function redactedView(
  c: Pick<
    CredentialDraft,
    | "name"
    | "sigv4"
    | "source"
    | "dummy"
    | "real"
    | "hosts"
    | "scopes"
    | "agents"
    | "require"
    | "surfaces"
    | "inUrl"
  >,
): RedactedCredential {
  return {
    name: c.name,
    kind: c.sigv4 ? "aws" : "token",
    source: c.source,
    dummyLength: c.dummy.length,
    realLength: c.real?.length ?? null,
    from: "value",
    hosts: c.hosts.map((h, i) => ruleText(h, c.scopes[i] ?? ANY_REQUEST, true)),
    agents: c.agents ?? "any",
    require: c.require,
    in: c.surfaces.map(surfaceText),
    inUrl: c.inUrl,
  };
}

export class Credential {
  constructor(
    readonly name: string,
    /** Where it was defined: `TOKENS_JSON credentials[0]` or `environment`. */
    readonly source: string,
    readonly dummy: SecretValue,
    readonly real: SecretValue,
    readonly hosts: readonly HostPattern[],
    /** `undefined`: every agent may use it. */
    readonly agents: readonly string[] | undefined,
    readonly require: boolean,
    readonly inUrl: InUrlRule,
    /** Where the dummy is swapped; anywhere else it travels unchanged. */
    readonly surfaces: readonly Surface[] = DEFAULT_SURFACES,
    /** Per host pattern (same index): the methods and paths it is bound to. */
    readonly scopes: readonly RequestScope[] = hosts.map(() => ANY_REQUEST),
    /** Part of an AWS credential (`kind: "aws"`): which, the credential's name, its limits. */
    readonly sigv4?: SigV4Marker,
  ) {
    Object.freeze(this);
  }

  redacted(): RedactedCredential {
    return redactedView(this);
  }

  toJSON(): RedactedCredential {
    return this.redacted();
  }

  toString(): string {
    const r = this.redacted();
    return `Credential(${r.name}: dummy ${r.dummyLength} B, real ${r.realLength} B, hosts ${r.hosts.join(",")})`;
  }

  [inspect.custom](): string {
    return this.toString();
  }
}

export interface SecretsConfig {
  /** The credentials with a real value: swapped, signed, redacted. */
  readonly credentials: readonly Credential[];
  /**
   * Credentials whose source has no current value (not fetched yet, failed past its expiry):
   * a request carrying one's dummy to its hosts is refused 503 naming it.
   */
  readonly unavailable: readonly UnavailableCredential[];
  /** Values no longer (or not yet) swapped that are still redacted and blocked. */
  readonly retired: readonly { readonly name: string; readonly value: SecretValue }[];
  /** The sources to read, one per credential that has one (an AWS credential's parts share it). */
  readonly sources: readonly SourcedCredential[];
  /**
   * The same configuration with the sources' values: `current` swapped (absent or null: the
   * credential is unavailable), `redactOnly` redacted and blocked. The values are copied.
   * Throws ConfigError when a value conflicts with another credential's.
   */
  withValues(values: ReadonlyMap<string, SourceValues>): SecretsConfig;
  /** Log-safe summary of every credential. */
  redacted(): readonly RedactedCredential[];
  /** Every credential with its values, to compare two configurations (never to show). */
  entries(): readonly CredentialEntry[];
  /** Zero every value (on reload or shutdown). */
  dispose(): void;
  /**
   * The credentials as data for another thread (an event loop in a Worker): values as bytes
   * (copies: the caller zeroes them once sent), no sources (a loop reads none).
   */
  toWire(): SecretsWire;
}

/** A built configuration as it crosses to a Worker: `secretsFromWire` builds it again there. */
export interface SecretsWire {
  readonly drafts: readonly (Omit<CredentialDraft, "dummy" | "real" | "sourced"> & {
    readonly dummy: Uint8Array;
    readonly real: Uint8Array | null;
  })[];
  readonly retired: readonly { readonly name: string; readonly value: Uint8Array }[];
}

/** The configuration `w` describes, checked again; the received bytes are zeroed. */
export function secretsFromWire(w: SecretsWire): SecretsConfig {
  const take = (b: Uint8Array) => {
    const s = SecretValue.fromBytes(b);
    b.fill(0);
    return s;
  };
  const drafts = w.drafts.map(
    (d): CredentialDraft => ({ ...d, dummy: take(d.dummy), real: d.real ? take(d.real) : null }),
  );
  return buildOrDispose(
    drafts,
    w.retired.map((r) => ({ name: r.name, value: take(r.value) })),
  );
}

/** `buildSecrets` on values this caller made: zeroed when they are refused. */
function buildOrDispose(
  drafts: readonly CredentialDraft[],
  retired: readonly { readonly name: string; readonly value: SecretValue }[],
): SecretsConfig {
  try {
    return buildSecrets(drafts, retired);
  } catch (e) {
    for (const d of drafts) {
      d.dummy.dispose();
      d.real?.dispose();
    }
    for (const r of retired) r.value.dispose();
    throw e;
  }
}

/** Zeroes the bytes of a wire form (the sender's copies, once posted). */
export function wipeSecretsWire(w: SecretsWire): void {
  for (const d of w.drafts) {
    d.dummy.fill(0);
    d.real?.fill(0);
  }
  for (const r of w.retired) r.value.fill(0);
}

export interface CredentialEntry {
  readonly name: string;
  readonly dummy: SecretValue;
  /** Null while its source has none. */
  readonly real: SecretValue | null;
  readonly view: RedactedCredential;
}

/** A source's values for one credential, by part (`real`, or the AWS parts). */
export interface SourceValues {
  readonly current: ReadonlyMap<string, SecretValue> | null;
  readonly redactOnly: readonly SecretValue[];
}

export interface SourcedCredential {
  /** The credential's name (an AWS credential's, not its parts'). */
  readonly name: string;
  readonly where: string;
  readonly spec: SourceSpec;
  readonly shape: SourceShape;
  /** The parts the configuration declares a dummy for. */
  readonly parts: readonly string[];
}

/** A credential without a real value now: its dummy and where it is bound. */
export interface UnavailableCredential {
  readonly name: string;
  readonly dummy: SecretValue;
  readonly hosts: readonly HostPattern[];
  readonly scopes: readonly RequestScope[];
  readonly agents: readonly string[] | undefined;
  readonly surfaces: readonly Surface[];
}

/** One credential before cross-validation. */
export interface CredentialDraft {
  readonly name: string;
  readonly where: string;
  readonly source: string;
  readonly dummy: SecretValue;
  /** Null: the value comes from `sourced`, and there is none now. */
  readonly real: SecretValue | null;
  readonly sourced?: {
    readonly group: string;
    readonly part: string;
    readonly spec: SourceSpec;
    readonly shape: SourceShape;
  };
  readonly hosts: readonly HostPattern[];
  readonly agents: readonly string[] | undefined;
  readonly require: boolean;
  readonly inUrl: InUrlRule;
  readonly surfaces: readonly Surface[];
  readonly scopes: readonly RequestScope[];
  readonly sigv4?: SigV4Marker;
}

/** Where a credential sits in an AWS credential, and the regions and services it may sign for. */
export interface SigV4Marker {
  readonly group: string;
  readonly part: SigV4Part;
  /** Absent: any. */
  readonly regions?: readonly string[];
  readonly services?: readonly string[];
}

type Env = Readonly<Record<string, string | undefined>>;

/**
 * Loads credentials from `TOKENS_JSON` (if set) and the environment. Zero credentials is
 * valid (the proxy then only forwards); an error names what is wrong and where.
 */
export async function loadSecrets(
  env: Env = process.env,
  config:
    | { readonly path: string; readonly credentials: readonly unknown[] }
    | undefined = undefined,
): Promise<SecretsConfig> {
  const drafts: CredentialDraft[] = [];
  if (config) drafts.push(...credentialDrafts(config.credentials, config.path));
  const file = env.TOKENS_JSON;
  if (file !== undefined && file !== "") drafts.push(...(await readSecretsFile(file)));
  drafts.push(...parseSecretsEnv(env));
  return buildSecrets(drafts);
}

/** Reads and validates one secrets file on its own (the CLI `secrets check`). */
export async function loadSecretsFile(path: string): Promise<SecretsConfig> {
  return buildSecrets(await readSecretsFile(path));
}

async function readSecretsFile(path: string): Promise<CredentialDraft[]> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "error";
    throw new ConfigError(
      "file-unreadable",
      `secrets file ${path} cannot be read (${code})`,
      "TOKENS_JSON",
    );
  }
  return parseSecretsJson(text, `secrets file ${path}`);
}

/** Parses the file format; `label` names the file in the error and the `source` field. */
export function parseSecretsJson(text: string, label: string): CredentialDraft[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    // The parser's own message may quote the input (a secret): never pass it on.
    throw new ConfigError("bad-json", `${label} is not valid JSON`);
  }
  if (!isPlainObject(doc) || !Array.isArray(doc.credentials)) {
    throw new ConfigError("bad-shape", `${label} must be an object with a "credentials" array`);
  }
  for (const key of Object.keys(doc)) {
    if (key !== "credentials")
      throw new ConfigError("bad-shape", `unknown field ${safeKey(key)}`, label);
  }
  return credentialDrafts(doc.credentials, label);
}

/** The entries of a `credentials` list (a secrets file's, or the configuration file's). */
export function credentialDrafts(list: readonly unknown[], label: string): CredentialDraft[] {
  return list.flatMap((entry: unknown, i: number) => {
    const where = `${label}: credentials[${i}]`;
    if (!isPlainObject(entry)) throw new ConfigError("bad-shape", "must be an object", where);
    if (entry.kind !== undefined && entry.kind !== "aws") {
      throw new ConfigError("bad-value", 'must be "aws" (or absent)', `${where}.kind`);
    }
    const fields = entry.kind === "aws" ? AWS_FIELDS : FILE_FIELDS;
    for (const key of Object.keys(entry)) {
      if (!fields.has(key))
        throw new ConfigError("bad-shape", `unknown field ${safeKey(key)}`, where);
    }
    const name = entry.name;
    if (typeof name !== "string" || !CREDENTIAL_NAME_RE.test(name)) {
      throw new ConfigError(
        "bad-value",
        `name must match ${CREDENTIAL_NAME_RE.source}`,
        `${where}.name`,
      );
    }
    const named = `${where} (${name})`;
    const hostsRaw = entry.hosts;
    if (!Array.isArray(hostsRaw))
      throw new ConfigError("bad-shape", "must be an array of host patterns", `${named}.hosts`);
    const agents = entry.agents;
    if (agents !== undefined && !Array.isArray(agents)) {
      throw new ConfigError("bad-shape", "must be an array of agent names", `${named}.agents`);
    }
    for (const flag of ["require", "sharedWildcard"]) {
      if (entry[flag] !== undefined && typeof entry[flag] !== "boolean") {
        throw new ConfigError("bad-value", "must be true or false", `${named}.${flag}`);
      }
    }
    const spec = sourceOf(entry, named);
    if (entry.kind === "aws") {
      return awsDrafts(entry, name, named, `${label} credentials[${i}]`, spec);
    }
    const d = draft({
      name,
      where: named,
      source: `${label} credentials[${i}]`,
      dummy: entry.dummy,
      real: spec ? null : entry.real,
      hosts: hostsRaw,
      agents: agents as unknown[] | undefined,
      require: entry.require === true,
      sharedWildcard: entry.sharedWildcard === true,
      in: entry.in,
      inUrl: entry.inUrl,
      fieldPath: (f) => `${named}.${f}`,
    });
    return [spec ? { ...d, sourced: { group: name, part: "real", spec, shape: "token" } } : d];
  });
}

/** A credential's `source`, when it has one instead of a `real` value. */
function sourceOf(entry: Record<string, unknown>, named: string): SourceSpec | undefined {
  if (entry.source === undefined) return undefined;
  const realFields =
    entry.kind === "aws"
      ? SIGV4_PARTS.filter((p) => isPlainObject(entry[p]) && entry[p].real !== undefined)
      : entry.real !== undefined
        ? ["real"]
        : [];
  if (realFields.length > 0) {
    throw new ConfigError(
      "conflict",
      `has a source; drop ${realFields.join(", ")} (the source gives the real value)`,
      named,
    );
  }
  const spec = parseSource(entry.source, `${named}.source`);
  const aws = entry.kind === "aws";
  if (spec.type === "assumeRole" && !aws) {
    throw new ConfigError(
      "conflict",
      'an assumeRole source gives AWS keys: use it with "kind": "aws"',
      `${named}.source`,
    );
  }
  if (spec.type === "oauth" && aws) {
    throw new ConfigError(
      "conflict",
      "an OAuth source gives a token, not AWS keys",
      `${named}.source`,
    );
  }
  return spec;
}

/**
 * An AWS credential as its parts, each a credential of its own named `NAME.part`: never
 * swapped where it is presented (`in` is empty: the sign stage verifies and signs instead),
 * redacted and blocked like any real value.
 */
function awsDrafts(
  entry: Record<string, unknown>,
  name: string,
  named: string,
  source: string,
  spec: SourceSpec | undefined,
): CredentialDraft[] {
  if (!Array.isArray(entry.hosts)) {
    throw new ConfigError("bad-shape", "must be an array of host patterns", `${named}.hosts`);
  }
  for (const part of ["accessKeyId", "secretAccessKey"]) {
    if (entry[part] === undefined)
      throw new ConfigError("missing", "is required", `${named}.${part}`);
  }
  const limits: { regions?: readonly string[]; services?: readonly string[] } = {};
  for (const field of ["regions", "services"] as const) {
    const v = entry[field];
    if (v === undefined) continue;
    if (
      !Array.isArray(v) ||
      v.length === 0 ||
      !v.every((x) => typeof x === "string" && /^[a-z0-9-]{1,64}$/.test(x))
    ) {
      throw new ConfigError(
        "bad-value",
        "must be a non-empty list of lower-case names (eu-west-3, s3)",
        `${named}.${field}`,
      );
    }
    limits[field] = Object.freeze([...v]);
  }
  const out: CredentialDraft[] = [];
  for (const part of SIGV4_PARTS) {
    const value = entry[part];
    if (value === undefined && part === "sessionToken") continue;
    const where = `${named}.${part}`;
    if (!isPlainObject(value) || Object.keys(value).some((k) => k !== "dummy" && k !== "real")) {
      throw new ConfigError("bad-shape", 'must be an object { "dummy": …, "real": … }', where);
    }
    const d = draft({
      name: `${name}.${part}`,
      where,
      source,
      dummy: value.dummy,
      real: spec ? null : value.real,
      hosts: entry.hosts as unknown[],
      agents: entry.agents as unknown[] | undefined,
      require: false,
      sharedWildcard: entry.sharedWildcard === true,
      in: undefined,
      inUrl: undefined,
      fieldPath: (f) => (f === "dummy" || f === "real" ? `${where}.${f}` : `${named}.${f}`),
    });
    out.push({
      ...d,
      surfaces: NO_SURFACES,
      sigv4: { group: name, part, ...limits },
      ...(spec ? { sourced: { group: name, part, spec, shape: "aws" as const } } : {}),
    });
  }
  return out;
}

const NO_SURFACES: readonly Surface[] = Object.freeze([]);

/** Collects `SLAPENIR_CRED_<NAME>_<FIELD>` variables into credentials. */
export function parseSecretsEnv(env: Env): CredentialDraft[] {
  const groups = new Map<string, Map<string, string>>();
  for (const [key, value] of Object.entries(env)) {
    if (!key.startsWith(ENV_PREFIX) || value === undefined) continue;
    const m = ENV_KEY_RE.exec(key);
    if (!m) {
      throw new ConfigError(
        "bad-shape",
        "unrecognised credential variable; expected SLAPENIR_CRED_<NAME>_{DUMMY,REAL,HOSTS,AGENTS,REQUIRE,IN,IN_URL,SHARED_WILDCARD}",
        key,
      );
    }
    const group = groups.get(m[1]!) ?? new Map<string, string>();
    group.set(m[2]!, value);
    groups.set(m[1]!, group);
  }
  const drafts: CredentialDraft[] = [];
  for (const [envName, fields] of [...groups].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const v = (f: string) => `${ENV_PREFIX}${envName}_${f}`;
    for (const required of ["DUMMY", "REAL", "HOSTS"]) {
      if (!fields.has(required))
        throw new ConfigError(
          "missing",
          "is not set but other variables of this credential are",
          v(required),
        );
    }
    const flag = (f: string) => {
      const text = fields.get(f);
      if (text === undefined) return false;
      if (!/^(true|false|1|0)$/i.test(text))
        throw new ConfigError("bad-value", "must be true or false", v(f));
      return /^(true|1)$/i.test(text);
    };
    const require = flag("REQUIRE");
    const sharedWildcard = flag("SHARED_WILDCARD");
    drafts.push(
      draft({
        name: envName.toLowerCase(),
        where: `environment (${envName.toLowerCase()})`,
        source: "environment",
        dummy: fields.get("DUMMY"),
        real: fields.get("REAL"),
        hosts: splitList(fields.get("HOSTS")!),
        agents: fields.has("AGENTS") ? splitList(fields.get("AGENTS")!) : undefined,
        require,
        sharedWildcard,
        in: fields.has("IN") ? splitList(fields.get("IN")!) : undefined,
        inUrl: fields.get("IN_URL"),
        fieldPath: (f) => v(ENV_FIELD[f] ?? f.toUpperCase()),
      }),
    );
  }
  return drafts;
}

const ENV_FIELD: Record<string, string> = {
  dummy: "DUMMY",
  real: "REAL",
  hosts: "HOSTS",
  agents: "AGENTS",
  require: "REQUIRE",
  in: "IN",
  inUrl: "IN_URL",
  sharedWildcard: "SHARED_WILDCARD",
};

function draft(d: {
  name: string;
  where: string;
  source: string;
  dummy: unknown;
  real: unknown;
  hosts: readonly unknown[];
  agents: readonly unknown[] | undefined;
  require: boolean;
  sharedWildcard: boolean;
  in: unknown;
  inUrl: unknown;
  fieldPath: (field: string) => string;
}): CredentialDraft {
  const dummy = secretField(d.dummy, d.fieldPath("dummy"));
  const real = d.real === null ? null : secretField(d.real, d.fieldPath("real"));
  if (real && dummy.equals(real))
    throw new ConfigError("conflict", "dummy and real are the same value", d.where);
  if (d.hosts.length === 0) {
    throw new ConfigError(
      "missing",
      "needs at least one host (a credential bound nowhere is useless)",
      d.fieldPath("hosts"),
    );
  }
  const scopes: RequestScope[] = [];
  const hosts = d.hosts.map((h, i) => {
    const where = `${d.fieldPath("hosts")}[${i}]`;
    const rule = parseRequestRule(h, { allowAny: false });
    if (!rule.ok) throw new ConfigError("bad-host-pattern", rule.reason, where);
    const p = rule.value.host;
    scopes.push(rule.value.scope);
    const shared = p.kind === "wildcard" ? sharedSuffixUnder(p.host) : undefined;
    if (shared !== undefined && !d.sharedWildcard) {
      throw new ConfigError(
        "conflict",
        `${p.pattern} spans the public suffix ${shared}: names under it belong to other owners, who would receive the real value; bind exact hosts, or accept it with ${d.fieldPath("sharedWildcard")} = true`,
        where,
      );
    }
    return p;
  });
  let agents: string[] | undefined;
  if (d.agents !== undefined) {
    if (d.agents.length === 0) {
      throw new ConfigError(
        "bad-value",
        "is empty; omit it to allow every agent",
        d.fieldPath("agents"),
      );
    }
    agents = d.agents.map((a, i) => {
      if (typeof a !== "string" || !AGENT_NAME_RE.test(a)) {
        throw new ConfigError(
          "bad-value",
          `agent names must match ${AGENT_NAME_RE.source}`,
          `${d.fieldPath("agents")}[${i}]`,
        );
      }
      return a;
    });
  }
  const inUrl = d.inUrl ?? "allow";
  if (inUrl !== "allow" && inUrl !== "deny") {
    throw new ConfigError("bad-value", 'must be "allow" or "deny"', d.fieldPath("inUrl"));
  }
  const surfaces = surfacesField(d.in, d.fieldPath("in"));
  // A field of a body or a message is a surface only on endpoints: a form or JSON field named
  // anywhere on a host would swap into whatever the agent posts there (a gist, a prompt).
  const field = surfaces.find((s) => s.kind === "form" || s.kind === "json" || s.kind === "frame");
  // `**` covers any path below it: that is a host, not an endpoint.
  const open = scopes.findIndex((s) => s.path === null || s.path.includes("**"));
  if (field && open >= 0) {
    throw new ConfigError(
      "conflict",
      `${surfaceText(field)} needs every host narrowed to its endpoints (METHOD host/path, no **)`,
      `${d.fieldPath("hosts")}[${open}]`,
    );
  }
  if (inUrl === "deny" && surfaces.some((s) => s.kind === "query")) {
    throw new ConfigError(
      "conflict",
      'inUrl is "deny" but in names a query parameter',
      d.fieldPath("inUrl"),
    );
  }
  return {
    name: d.name,
    where: d.where,
    source: d.source,
    dummy,
    real,
    hosts: Object.freeze(hosts),
    agents: agents && Object.freeze(agents),
    require: d.require,
    inUrl,
    surfaces,
    scopes: Object.freeze(scopes),
  };
}

function surfacesField(value: unknown, where: string): readonly Surface[] {
  if (value === undefined) return DEFAULT_SURFACES;
  if (!Array.isArray(value) || value.length === 0) {
    throw new ConfigError(
      "bad-value",
      'must be a non-empty list of surfaces ("header:NAME", "query:NAME", "form:NAME", "json:/POINTER", "body")',
      where,
    );
  }
  const seen = new Set<string>();
  const out: Surface[] = [];
  value.forEach((v, i) => {
    const p = parseSurface(v);
    if (!p.ok) throw new ConfigError("bad-value", p.reason, `${where}[${i}]`);
    const key = surfaceText(p.value);
    if (seen.has(key))
      throw new ConfigError("duplicate", `${key} is listed twice`, `${where}[${i}]`);
    seen.add(key);
    out.push(Object.freeze(p.value));
  });
  return Object.freeze(out);
}

function secretField(value: unknown, where: string): SecretValue {
  if (typeof value !== "string") throw new ConfigError("bad-value", "must be a string", where);
  const length = Buffer.byteLength(value, "utf8");
  if (length < PATTERN_MIN_LENGTH || length > PATTERN_MAX_LENGTH) {
    throw new ConfigError(
      "bad-value",
      `is ${length} bytes; it must be ${PATTERN_MIN_LENGTH}..${PATTERN_MAX_LENGTH} bytes`,
      where,
    );
  }
  // Printable ASCII: the value goes into header values, where CR/LF/NUL would be injection and
  // non-ASCII is not portable; spaces at the ends would be stripped by HTTP header parsing.
  if (!/^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/.test(value)) {
    throw new ConfigError(
      "bad-value",
      "must be printable ASCII (0x20-0x7E) without leading or trailing spaces",
      where,
    );
  }
  return SecretValue.fromText(value);
}

/**
 * Cross-checks: unique names, unique dummies and reals, no dummy holding a real value. A draft
 * without a real value (its source has none now) is unavailable; `retired` values are redacted.
 */
export function buildSecrets(
  drafts: readonly CredentialDraft[],
  retired: readonly { readonly name: string; readonly value: SecretValue }[] = [],
): SecretsConfig {
  const byName = new Map<string, CredentialDraft>();
  for (const d of drafts) {
    const key = d.name.toLowerCase();
    const prior = byName.get(key);
    if (prior)
      throw new ConfigError(
        "duplicate",
        `credential name '${d.name}' is also used by ${prior.where}`,
        d.where,
      );
    byName.set(key, d);
  }
  for (let i = 0; i < drafts.length; i++) {
    const a = drafts[i]!;
    for (let j = 0; j < drafts.length; j++) {
      const b = drafts[j]!;
      if (j > i) {
        if (a.dummy.equals(b.dummy))
          throw new ConfigError("duplicate", `has the same dummy as ${a.where}`, b.where);
        if (a.real && b.real && a.real.equals(b.real))
          throw new ConfigError("duplicate", `has the same real value as ${a.where}`, b.where);
      }
      // A dummy that holds a real value would be blocked by outbound DLP and could never be
      // used; equal is the worst case (the agent would hold a real secret).
      if (b.real && a.dummy.contains(b.real)) {
        const whose = i === j ? "its own real value" : `the real value of ${b.where}`;
        throw new ConfigError("conflict", `dummy contains ${whose}`, a.where);
      }
    }
    // Likewise a value a source gave (pending or replaced), still redacted and blocked.
    const held = retired.find((r) => a.dummy.contains(r.value));
    if (held) {
      throw new ConfigError(
        "conflict",
        `dummy contains a value the source of ${held.name.replace(/~retired$/, "")} gave`,
        a.where,
      );
    }
  }
  const credentials = Object.freeze(
    drafts
      .filter((d) => d.real !== null)
      .map(
        (d) =>
          new Credential(
            d.name,
            d.source,
            d.dummy,
            d.real!,
            d.hosts,
            d.agents,
            d.require,
            d.inUrl,
            d.surfaces,
            d.scopes,
            d.sigv4,
          ),
      ),
  );
  const unavailable: UnavailableCredential[] = drafts
    .filter((d) => d.real === null)
    .map((d) => ({
      name: d.name,
      dummy: d.dummy,
      hosts: d.hosts,
      scopes: d.scopes,
      agents: d.agents,
      surfaces: d.surfaces,
    }));
  const sources = new Map<string, SourcedCredential>();
  for (const d of drafts) {
    if (!d.sourced) continue;
    const prior = sources.get(d.sourced.group);
    sources.set(d.sourced.group, {
      name: d.sourced.group,
      where: d.where.replace(/\.[A-Za-z]+$/, ""),
      spec: d.sourced.spec,
      shape: d.sourced.shape,
      parts: [...(prior?.parts ?? []), d.sourced.part],
    });
  }
  const summary = (d: CredentialDraft): RedactedCredential => {
    const built = credentials.find((c) => c.name === d.name);
    const view = built?.redacted() ?? redactedView({ ...d, real: null });
    return d.sourced ? { ...view, from: describeSource(d.sourced.spec) } : view;
  };
  return Object.freeze({
    credentials,
    unavailable: Object.freeze(unavailable),
    retired: Object.freeze([...retired]),
    sources: Object.freeze([...sources.values()]),
    withValues: (values: ReadonlyMap<string, SourceValues>) => {
      const next = drafts.map((d): CredentialDraft => {
        const v = d.sourced ? values.get(d.sourced.group) : undefined;
        const real = d.sourced ? (v?.current?.get(d.sourced.part) ?? null) : d.real;
        return { ...d, dummy: d.dummy.copy(), real: real?.copy() ?? null };
      });
      const redactOnly = [...values.entries()].flatMap(([name, v]) =>
        v.redactOnly.map((value) => ({ name: `${name}~retired`, value: value.copy() })),
      );
      return buildOrDispose(next, redactOnly);
    },
    redacted: () => drafts.map(summary),
    toWire: () => ({
      drafts: drafts.map(({ sourced: _sourced, ...d }) => ({
        ...d,
        dummy: d.dummy.revealBytes(),
        real: d.real?.revealBytes() ?? null,
      })),
      retired: retired.map((r) => ({ name: r.name, value: r.value.revealBytes() })),
    }),
    entries: () =>
      drafts.map((d) => ({ name: d.name, dummy: d.dummy, real: d.real, view: summary(d) })),
    dispose: () => {
      for (const d of drafts) {
        d.dummy.dispose();
        d.real?.dispose();
      }
      for (const r of retired) r.value.dispose();
    },
  });
}

/** Zeroes the secrets the sources of a configuration hold (client secrets, refresh tokens). */
export function disposeSources(config: SecretsConfig): void {
  for (const s of config.sources) disposeSource(s.spec);
}

function splitList(text: string): string[] {
  return text
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A field name is shown only if it looks like a field name (a pasted secret would not). */
