// What the composition root and a Worker loop (workers/loop-worker.ts) say to each other.
// Secrets cross as the configuration the root built and checked (credentials/secrets.ts
// `toWire`: values as bytes, zeroed on both sides once used); a Worker reads no file of them.

import type { LivePolicy, ProxyConfig } from "../config/proxy-config.ts";
import type { SecretsWire } from "../credentials/secrets.ts";
import type { QuarantineEntry } from "../guard/quarantine.ts";
import type { ViolationKind } from "../guard/violations.ts";
import type { ProxyErrorCode } from "../http/proxy-error.ts";
import type { ServerCredentials } from "../net/agent/front-door.ts";
import type { RefusedConnectionRecord, RequestRecord } from "../observe/audit.ts";
import type { LeafMaterial } from "../pki/leaf-cache.ts";
import type { LoopStats, SharedGuards, SharedRates } from "./loop.ts";

/** Root → loop; those with an `id` are answered with a `reply` of the same id. */
export type ToLoop =
  | {
      op: "init";
      id: number;
      index: number;
      count: number;
      config: ProxyConfig;
      secrets: SecretsWire;
      /** The interception CA's certificate and the leaf key: leaves are asked of the root. */
      pki: { credentials: ServerCredentials; interceptionCertPem: string; leafKeyPem: string };
      port: number;
      workers: number | undefined;
      quarantine: QuarantineEntry[];
      /** Caps and rate buckets every loop counts in. */
      shared: SharedGuards;
      claims: SharedArrayBuffer;
      /** The only names this loop resolves (tests); each one asked for is told as `lookup`. */
      staticNames: Readonly<Record<string, string>> | undefined;
    }
  | { op: "install"; id: number; secrets: SecretsWire; cut: boolean }
  | { op: "olderDrained"; id: number }
  | { op: "cutOlder"; id: number }
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
  | { op: "reloadCredentials"; id: number; credentials: ServerCredentials }
  | { op: "selfPorts"; ports: number[] }
  | { op: "metrics"; id: number }
  | { op: "flush"; id: number }
  | { op: "close"; id: number; graceMs: number }
  /** The answer to a loop's `leaf`. */
  | { op: "leafIs"; ref: number; leaf: LeafMaterial | null; error?: WireError };

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
  | { op: "lookup"; host: string }
  /** A leaf this loop's cache lacks, from the proxy's one cache (answered `leafIs`). */
  | { op: "leaf"; ref: number; host: string; owner: string }
  | { op: "batch"; events: FromLoop[] }
  | { op: "refused"; of: "connection"; kind: string; who: string; record: RefusedConnectionRecord }
  | { op: "refused"; of: "request"; kind: string; who: string; record: RequestRecord };

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
