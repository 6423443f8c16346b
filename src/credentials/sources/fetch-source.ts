// Reading a source once: a file, a command's output, an OAuth token endpoint's answer. What it
// gives is a credential's real value — one token, or an AWS key set in the credential_process
// format (`{"Version":1,"AccessKeyId":…,"SecretAccessKey":…,"SessionToken":…,"Expiration":…}`)
// — with the time it expires when the source says. A failure is a SourceError whose message is
// log-safe: it names what went wrong (exit code, HTTP status, which field), never a value,
// never the command's output or the endpoint's body.

import { createHash } from "node:crypto";
import { open, readFile } from "node:fs/promises";
import { PATTERN_MAX_LENGTH, PATTERN_MIN_LENGTH } from "../../matcher/types.ts";
import { SecretValue } from "../secret-value.ts";
import { canonicalRequest, SIGV4_ALGORITHM, scopeOf, sigV4Signature } from "../sigv4.ts";
import type {
  AssumeRoleSource,
  CommandSource,
  FileSource,
  OAuthSource,
  SourceSpec,
} from "./source-spec.ts";

export class SourceError extends Error {
  override readonly name = "SourceError";
}

/** The parts a source fills: `real` for a token; the AWS parts for `kind: "aws"`. */
export type SourceShape = "token" | "aws";

export interface Fetched {
  /** By part: `real`, or `accessKeyId`, `secretAccessKey`, `sessionToken`. */
  readonly values: ReadonlyMap<string, SecretValue>;
  /** ms since the epoch; null when the source does not say. */
  readonly expiresAt: number | null;
}

export interface Fetcher {
  fetch(): Promise<Fetched>;
  dispose(): void;
}

const MAX_OUTPUT = 64 * 1024;

/** A value as a credential takes it (the secrets file's rule), or a SourceError naming `what`. */
function value(text: unknown, what: string): SecretValue {
  if (typeof text !== "string") throw new SourceError(`${what} is missing or not a string`);
  const length = Buffer.byteLength(text, "utf8");
  if (length < PATTERN_MIN_LENGTH || length > PATTERN_MAX_LENGTH) {
    throw new SourceError(
      `${what} is ${length} bytes; it must be ${PATTERN_MIN_LENGTH}..${PATTERN_MAX_LENGTH}`,
    );
  }
  if (!/^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/.test(text)) {
    throw new SourceError(`${what} is not printable ASCII without spaces at its ends`);
  }
  return SecretValue.fromText(text);
}

/** An endpoint's answer body, refused past 64 KiB (read no further). */
async function bodyText(res: Response, what: string): Promise<string> {
  const reader = res.body?.getReader();
  if (!reader) return "";
  const parts: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read().catch(() => ({ done: true, value: undefined }));
    if (done || !value) break;
    size += value.length;
    if (size > MAX_OUTPUT) {
      await reader.cancel().catch(() => {});
      throw new SourceError(`${what} answered with more than 64 KiB`);
    }
    parts.push(value);
  }
  const out = Buffer.concat(parts);
  try {
    return out.toString("utf8");
  } finally {
    out.fill(0);
    for (const p of parts) p.fill(0);
  }
}

/**
 * An HTTPS endpoint a source posts a form to (a token endpoint, STS): its answer's body, or a
 * SourceError naming `what` and what went wrong (unreachable, the status) — never the body.
 */
function endpoint(what: string, url: string, caFile: string | undefined, timeoutMs: number) {
  let ca: string | undefined;
  return async (headers: [string, string][], body: string): Promise<string> => {
    if (caFile !== undefined && ca === undefined) {
      try {
        ca = await readFile(caFile, "utf8");
      } catch {
        throw new SourceError(`cannot read the CA file ${caFile} of ${what}`);
      }
    }
    let res: Response;
    try {
      res = await fetch(url, {
        method: "POST",
        headers,
        body,
        redirect: "error",
        signal: AbortSignal.timeout(timeoutMs),
        ...(ca !== undefined ? { tls: { ca } } : {}),
      } as RequestInit);
    } catch {
      throw new SourceError(`${what} could not be reached`);
    }
    if (!res.ok) {
      await res.body?.cancel().catch(() => {});
      throw new SourceError(`${what} answered ${res.status}`);
    }
    return bodyText(res, what);
  };
}

/** One token (surrounding whitespace dropped), or an AWS key set in the process format. */
function parseOutput(text: string, shape: SourceShape, what: string): Fetched {
  if (shape === "token") {
    return { values: new Map([["real", value(text.trim(), what)]]), expiresAt: null };
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new SourceError(`${what} is not JSON in the credential_process format`);
  }
  if (typeof doc !== "object" || doc === null || (doc as { Version?: unknown }).Version !== 1) {
    throw new SourceError(`${what} is not the credential_process format (Version 1)`);
  }
  const d = doc as Record<string, unknown>;
  const values = new Map<string, SecretValue>([
    ["accessKeyId", value(d.AccessKeyId, `${what} AccessKeyId`)],
    ["secretAccessKey", value(d.SecretAccessKey, `${what} SecretAccessKey`)],
  ]);
  if (d.SessionToken !== undefined) {
    values.set("sessionToken", value(d.SessionToken, `${what} SessionToken`));
  }
  let expiresAt: number | null = null;
  if (d.Expiration !== undefined) {
    expiresAt = typeof d.Expiration === "string" ? Date.parse(d.Expiration) : Number.NaN;
    if (!Number.isFinite(expiresAt)) throw new SourceError(`${what} Expiration is not a date`);
  }
  return { values, expiresAt };
}

function fileFetcher(spec: FileSource, shape: SourceShape): Fetcher {
  return {
    async fetch() {
      let text: string;
      try {
        // At most one byte past the cap is read: a huge file is refused, not loaded.
        const f = await open(spec.path, "r");
        try {
          const buf = Buffer.alloc(MAX_OUTPUT + 1);
          const { bytesRead } = await f.read(buf, 0, buf.length, 0);
          text = buf.subarray(0, bytesRead).toString("utf8");
          buf.fill(0);
        } finally {
          await f.close();
        }
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code ?? "error";
        throw new SourceError(`cannot read ${spec.path} (${code})`);
      }
      if (Buffer.byteLength(text) > MAX_OUTPUT) {
        throw new SourceError(`${spec.path} is larger than 64 KiB`);
      }
      return parseOutput(text, shape, `the content of ${spec.path}`);
    },
    dispose() {},
  };
}

function commandFetcher(spec: CommandSource, shape: SourceShape): Fetcher {
  const name = spec.argv[0]!;
  return {
    async fetch() {
      let proc: ReturnType<typeof Bun.spawn>;
      try {
        proc = Bun.spawn([...spec.argv], { stdin: "ignore", stdout: "pipe", stderr: "ignore" });
      } catch {
        throw new SourceError(`command ${name} could not be started`);
      }
      const reader = (proc.stdout as ReadableStream<Uint8Array>).getReader();
      const chunks: Uint8Array[] = [];
      let timer: ReturnType<typeof setTimeout> | undefined;
      // The deadline ends the reading too: a child the command left behind may hold its stdout.
      const late = new Promise<never>((_, fail) => {
        timer = setTimeout(() => {
          proc.kill("SIGKILL");
          reader.cancel().catch(() => {});
          fail(new SourceError(`command ${name} did not finish within ${spec.timeoutMs} ms`));
        }, spec.timeoutMs);
      });
      const read = async (): Promise<number> => {
        let size = 0;
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          size += value.length;
          if (size > MAX_OUTPUT) {
            proc.kill("SIGKILL");
            throw new SourceError(`command ${name} wrote more than 64 KiB`);
          }
          chunks.push(value);
        }
        return await proc.exited;
      };
      try {
        const code = await Promise.race([read(), late]);
        if (code !== 0) throw new SourceError(`command ${name} exited with ${code}`);
        const out = Buffer.concat(chunks);
        try {
          return parseOutput(out.toString("utf8"), shape, `the output of ${name}`);
        } finally {
          out.fill(0);
        }
      } finally {
        clearTimeout(timer);
        for (const c of chunks) c.fill(0);
      }
    },
    dispose() {},
  };
}

function oauthFetcher(spec: OAuthSource, shape: SourceShape, now: () => number): Fetcher {
  if (shape !== "token") throw new SourceError("an OAuth source gives a token, not AWS keys");
  // The refresh token the endpoint gave last (it may rotate it at each use).
  let refresh: SecretValue | null = spec.refreshToken ? spec.refreshToken.copy() : null;
  const post = endpoint(
    `token endpoint ${spec.tokenUrl}`,
    spec.tokenUrl,
    spec.caFile,
    spec.timeoutMs,
  );
  return {
    async fetch() {
      const form = new URLSearchParams({ grant_type: spec.grant, client_id: spec.clientId });
      if (spec.clientSecret) form.set("client_secret", spec.clientSecret.revealText());
      if (spec.grant === "refresh_token" && refresh)
        form.set("refresh_token", refresh.revealText());
      if (spec.scope) form.set("scope", spec.scope);
      const body = await post(
        [
          ["content-type", "application/x-www-form-urlencoded"],
          ["accept", "application/json"],
        ],
        form.toString(),
      );
      let doc: Record<string, unknown>;
      try {
        doc = JSON.parse(body);
      } catch {
        throw new SourceError(
          `token endpoint ${spec.tokenUrl} answered with something other than JSON`,
        );
      }
      const token = value(doc.access_token, "the endpoint's access_token");
      if (typeof doc.refresh_token === "string" && spec.grant === "refresh_token") {
        const next = value(doc.refresh_token, "the endpoint's refresh_token");
        refresh?.dispose();
        refresh = next;
      }
      const life = typeof doc.expires_in === "number" && doc.expires_in > 0 ? doc.expires_in : null;
      return {
        values: new Map([["real", token]]),
        expiresAt: life === null ? null : now() + life * 1000,
      };
    },
    dispose() {
      refresh?.dispose();
      refresh = null;
    },
  };
}

/** The text of `<name>…</name>` in an STS answer (its values are base64 and ids: no entities). */
function xmlField(xml: string, name: string): string | undefined {
  return new RegExp(`<${name}>([^<]*)</${name}>`).exec(xml)?.[1];
}

function assumeRoleFetcher(spec: AssumeRoleSource, shape: SourceShape, now: () => number): Fetcher {
  if (shape !== "aws") throw new SourceError("an assumeRole source gives AWS keys (kind aws only)");
  const post = endpoint(`STS endpoint ${spec.stsUrl}`, spec.stsUrl, spec.caFile, spec.timeoutMs);
  return {
    async fetch() {
      const url = new URL(spec.stsUrl);
      const form = new URLSearchParams({
        Action: "AssumeRole",
        Version: "2011-06-15",
        RoleArn: spec.roleArn,
        RoleSessionName: spec.sessionName,
        DurationSeconds: String(spec.durationSeconds),
        ...(spec.externalId !== undefined ? { ExternalId: spec.externalId } : {}),
      }).toString();
      const when = new Date(now())
        .toISOString()
        .replace(/[-:]/g, "")
        .replace(/\.\d{3}/, "");
      const headers: [string, string][] = [
        ["content-type", "application/x-www-form-urlencoded; charset=utf-8"],
        ["host", url.host],
        ["x-amz-date", when],
      ];
      if (spec.sessionToken) headers.push(["x-amz-security-token", spec.sessionToken.revealText()]);
      const auth = {
        accessKeyId: spec.accessKeyId.revealText(),
        date: when.slice(0, 8),
        region: spec.region,
        service: "sts",
        signedHeaders: headers.map(([k]) => k),
        signature: "",
      };
      const payloadHash = createHash("sha256").update(form).digest("hex");
      const canonical = canonicalRequest(
        { method: "POST", target: `${url.pathname}${url.search}`, headers },
        auth,
        payloadHash,
      );
      if (!canonical.ok) throw new SourceError("the STS request could not be signed");
      const secret = spec.secretAccessKey.revealBytes();
      let signature: string;
      try {
        signature = sigV4Signature(secret, auth, when, canonical.value);
      } finally {
        secret.fill(0);
      }
      const xml = await post(
        [
          ...headers.filter(([k]) => k !== "host"),
          [
            "authorization",
            `${SIGV4_ALGORITHM} Credential=${auth.accessKeyId}/${scopeOf(auth)}, SignedHeaders=${auth.signedHeaders.join(";")}, Signature=${signature}`,
          ],
        ],
        form,
      );
      const expiration = Date.parse(xmlField(xml, "Expiration") ?? "");
      if (!Number.isFinite(expiration)) throw new SourceError("the STS answer has no Expiration");
      return {
        values: new Map([
          ["accessKeyId", value(xmlField(xml, "AccessKeyId"), "the STS answer's AccessKeyId")],
          [
            "secretAccessKey",
            value(xmlField(xml, "SecretAccessKey"), "the STS answer's SecretAccessKey"),
          ],
          ["sessionToken", value(xmlField(xml, "SessionToken"), "the STS answer's SessionToken")],
        ]),
        expiresAt: expiration,
      };
    },
    dispose() {},
  };
}

export function fetcherFor(
  spec: SourceSpec,
  shape: SourceShape,
  now: () => number = Date.now,
): Fetcher {
  switch (spec.type) {
    case "file":
      return fileFetcher(spec, shape);
    case "command":
      return commandFetcher(spec, shape);
    case "oauth":
      return oauthFetcher(spec, shape, now);
    case "assumeRole":
      return assumeRoleFetcher(spec, shape, now);
  }
}
