// What the composition root and a Worker loop (workers/loop-worker.ts) say to each other, and
// how secrets cross: a Worker reads the credentials' template again from the same environment
// and configuration file, and receives only the sources' values, as bytes. A digest of the
// whole configuration — names, dummies and real values — tells the Worker it built what the
// root checked (a secrets file rewritten between the two reads refuses the reload, and the
// file's watcher reloads again).

import { createHash } from "node:crypto";
import type { ConfigFile } from "../config/config-file.ts";
import type { LivePolicy, ProxyConfig } from "../config/proxy-config.ts";
import { SecretValue } from "../credentials/secret-value.ts";
import type { CredentialEntry, SourceValues } from "../credentials/secrets.ts";
import type { QuarantineEntry } from "../guard/quarantine.ts";
import type { ViolationKind } from "../guard/violations.ts";
import type { ProxyErrorCode } from "../http/proxy-error.ts";
import type { ServerCredentials } from "../net/agent/front-door.ts";
import type { RequestRecord } from "../observe/audit.ts";
import type { LoopPki, LoopStats, SharedGuards, SharedRates } from "./loop.ts";

/** A source's values as bytes (zeroed by whoever holds them once used). */
export type WireValues = [
  name: string,
  current: [part: string, bytes: Uint8Array][] | null,
  redactOnly: Uint8Array[],
][];

export interface WireSecrets {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly file: ConfigFile | undefined;
  readonly values: WireValues;
  readonly digest: string;
}

/** Root → loop; those with an `id` are answered with a `reply` of the same id. */
export type ToLoop =
  | {
      op: "init";
      id: number;
      index: number;
      count: number;
      config: ProxyConfig;
      secrets: WireSecrets;
      pki: LoopPki;
      port: number;
      workers: number | undefined;
      quarantine: QuarantineEntry[];
      /** Caps and rate buckets every loop counts in. */
      shared: SharedGuards;
      /** The only names this loop resolves (tests); each one asked for is told as `lookup`. */
      staticNames: Readonly<Record<string, string>> | undefined;
    }
  | { op: "install"; id: number; secrets: WireSecrets }
  | { op: "olderDrained"; id: number }
  | { op: "cutOlder" }
  | { op: "applyPolicy"; id: number; policy: LivePolicy }
  | {
      op: "prepare";
      id: number;
      config: ProxyConfig;
      applied: string[];
      credentials: ServerCredentials | undefined;
    }
  | { op: "commit"; prepared: number }
  | { op: "abort"; prepared: number }
  | { op: "configure"; config: ProxyConfig; ratesChanged: boolean; rates: SharedRates }
  | { op: "quarantined"; agent: string; entry: QuarantineEntry | null }
  | { op: "reloadCredentials"; credentials: ServerCredentials }
  | { op: "selfPorts"; ports: number[] }
  | { op: "metrics"; id: number }
  | { op: "close"; id: number; graceMs: number };

/** Loop → root. */
export type FromLoop =
  | { op: "reply"; id: number; ok: true; value?: unknown; stats: LoopStats }
  | { op: "reply"; id: number; ok: false; error: WireError }
  | { op: "audit"; text: string }
  | {
      op: "violated";
      agent: string;
      host: string;
      port: number;
      kinds: ViolationKind[];
      redactions: number;
    }
  | { op: "identified"; name: string; serial: string; notAfterMs: number; atMs: number }
  | {
      op: "exchanged";
      record: RequestRecord;
      code: ProxyErrorCode | undefined;
      atMs: number;
      swapped: string[];
    }
  | { op: "stats"; stats: LoopStats }
  | { op: "lookup"; host: string };

/** An error as it crosses: its class's name, message, and what a ConfigError or errno adds. */
export interface WireError {
  readonly name: string;
  readonly message: string;
  readonly code?: string;
  /** A ConfigError's what and where. */
  readonly detail?: string;
  readonly where?: string;
}

export function toWireError(e: unknown): WireError {
  const err = e as {
    name?: unknown;
    message?: unknown;
    code?: unknown;
    detail?: unknown;
    where?: unknown;
  };
  return {
    name: typeof err?.name === "string" ? err.name : "Error",
    message: typeof err?.message === "string" ? err.message : String(e),
    ...(typeof err?.code === "string" ? { code: err.code } : {}),
    ...(typeof err?.detail === "string" ? { detail: err.detail } : {}),
    ...(typeof err?.where === "string" ? { where: err.where } : {}),
  };
}

/** Sources' values as bytes to post; the caller zeroes them (`wipeValues`) once posted. */
export function valuesToWire(values: ReadonlyMap<string, SourceValues>): WireValues {
  return [...values].map(([name, v]) => [
    name,
    v.current ? [...v.current].map(([part, s]) => [part, s.revealBytes()]) : null,
    v.redactOnly.map((s) => s.revealBytes()),
  ]);
}

/** The values a Worker received, as secrets again; the received bytes are zeroed. */
export function valuesFromWire(wire: WireValues): Map<string, SourceValues> {
  const take = (b: Uint8Array) => {
    const s = SecretValue.fromBytes(b);
    b.fill(0);
    return s;
  };
  return new Map(
    wire.map(([name, current, redactOnly]) => [
      name,
      {
        current: current ? new Map(current.map(([p, b]) => [p, take(b)])) : null,
        redactOnly: redactOnly.map(take),
      },
    ]),
  );
}

export function wipeValues(wire: WireValues): void {
  for (const [, current, redactOnly] of wire) {
    for (const [, b] of current ?? []) b.fill(0);
    for (const b of redactOnly) b.fill(0);
  }
}

/** A digest of every credential with its values, to compare two builds (never shown). */
export function secretsDigest(entries: readonly CredentialEntry[]): string {
  const h = createHash("sha256");
  const bytes = (s: SecretValue | null) => {
    if (s === null) {
      h.update("\0none\0");
      return;
    }
    const b = s.revealBytes();
    h.update(`${b.length}:`);
    h.update(b);
    b.fill(0);
  };
  for (const e of entries) {
    h.update(`${e.name}\0${JSON.stringify(e.view)}\0`);
    bytes(e.dummy);
    bytes(e.real);
  }
  return h.digest("hex");
}
