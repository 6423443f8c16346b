// The Hono app every decrypted (or plain absolute-form) request goes through:
//   audit → rate limit → egress policy → upgrade guard → swap + DLP → redact → forward.
// The socket layer (http-session.ts) parses the request and hands it here as `c.env.ex`; the
// app returns a web Response whose body streams back to the agent. Invariants: a request is
// never forwarded before policy allowed it; a dummy is swapped only for a destination its
// credential is bound to and never into plain http://; every response header and body byte
// passes the redactor; the audit line is written once per request with no value in it.

import { Hono, type MiddlewareHandler } from "hono";
import {
  type DecodeLimits,
  decodeBody,
  filterAcceptEncoding,
  parseContentEncoding,
} from "../body/content-coding.ts";
import { allocWithHeadroom, releaseHeld } from "../body/held-buffers.ts";
import type { InlineScanner } from "../body/inline-scanner.ts";
import {
  type BodyScanner,
  collectBounded,
  countBytes,
  outboundBody,
  primeStream,
  redactBody,
} from "../body/scan-pipelines.ts";
import { swapBasicAuth } from "../credentials/basic-auth.ts";
import { checkRequired } from "../credentials/bindings.ts";
import type { RequestPlan, SecretState } from "../credentials/secret-state.ts";
import type { ByteBudget } from "../guard/byte-budget.ts";
import type { RateLimiter } from "../guard/rate-limit.ts";
import { errorResponse, ProxyError, toProxyError } from "../http/proxy-error.ts";
import type { RequestHead } from "../http/request-parser.ts";
import type { ScanStream } from "../matcher/pool/pool.ts";
import type { PatternSpec } from "../matcher/types.ts";
import type { IncomingRequest } from "../net/agent/session.ts";
import type { UpstreamClient } from "../net/upstream/http1-client.ts";
import { type AuditLog, type Decision, loggablePath } from "../observe/audit.ts";
import type { ProxyMetrics } from "../observe/metrics.ts";
import type { EgressPolicy } from "../policy/egress-policy.ts";
import type { CanonicalAuthority } from "../policy/host.ts";
import { heldBody, heldResponse, onHeldSettled } from "./held-response.ts";

export interface ExchangeRecord {
  swaps: number;
  redactions: number;
  bytesIn: number;
  bytesOut: number;
  decision: Decision;
  reason: string;
  status: number;
}

/** One request on its way through the app. */
export interface Exchange {
  readonly conn: number;
  readonly agent: string;
  readonly req: IncomingRequest;
  readonly target: CanonicalAuthority;
  readonly scheme: "http" | "https";
  readonly started: number;
  readonly rec: ExchangeRecord;
  /** Aborted when the agent goes away; cancels the upstream exchange. */
  readonly abort: AbortController;
}

export interface ExchangeDeps {
  readonly policy: () => EgressPolicy;
  readonly secrets: () => SecretState;
  readonly scanner: BodyScanner;
  readonly upstream: UpstreamClient;
  readonly audit: AuditLog;
  readonly metrics: ProxyMetrics;
  readonly rateLimiter: RateLimiter | undefined;
  readonly maxHeldBodyBytes: number;
  /** Small bodies of known length are scanned whole on the main thread (undefined: never). */
  readonly inline?: InlineScanner;
  /** Process-wide budget for bodies the proxy holds whole (many parallel uploads). */
  readonly held: ByteBudget;
  readonly decodeLimits: DecodeLimits;
}

type Env = {
  Bindings: { ex: Exchange };
  Variables: { plan: RequestPlan; out: OutboundRequest; state: SecretState };
};

interface OutboundRequest {
  target: string;
  headers: [string, string][];
  /** A stream, or bytes held whole (sent with the head in one write). */
  body: ReadableStream<Uint8Array> | Uint8Array | null;
  bodyLength: number | null;
}

/** Methods the proxy refuses outright (TRACE echoes headers back: credentials included). */
export const REFUSED_METHODS: ReadonlySet<string> = new Set(["TRACE", "TRACK", "CONNECT"]);

/** Methods whose lower- or mixed-case spelling is refused: upstreams disagree on case. */
export const KNOWN_METHODS: ReadonlySet<string> = new Set([
  "GET",
  "HEAD",
  "POST",
  "PUT",
  "DELETE",
  "OPTIONS",
  "PATCH",
  "TRACE",
  "TRACK",
  "CONNECT",
]);

export function createExchangeApp(deps: ExchangeDeps): Hono<Env> {
  const app = new Hono<Env>();
  app.use(audit(deps));
  app.use(rateLimit(deps));
  app.use(policy(deps));
  app.use(upgradeGuard());
  app.use(swap(deps));
  app.use(redact(deps));
  app.all("*", forward(deps));
  app.onError((err, c) => {
    // Hono merges the headers of the response already set into the one returned here: drop
    // it first, or an upstream's unredacted fields would ride along on the error answer.
    clearResponse(c);
    const pe = toProxyError(err);
    const rec = c.env.ex.rec;
    if (rec.decision === "allow") rec.decision = "error";
    if (rec.reason === "" || rec.decision !== "deny") rec.reason = pe.reason;
    return errorResponse(pe);
  });
  return app;
}

/**
 * Replace the context's response. Hono's `c.res` setter copies every header of the previous
 * response into the new one (so redacted fields would be overwritten by the originals): clear
 * it first so the new response carries exactly its own headers.
 */
function setResponse(c: import("hono").Context<Env>, res: Response): void {
  clearResponse(c);
  c.res = res;
}

function clearResponse(c: import("hono").Context<Env>): void {
  c.res = undefined as unknown as Response;
}

/** The URL Hono routes on; the real target string travels in the exchange, untouched. */
export function exchangeRequest(ex: Exchange): Request {
  const host = ex.target.kind === "ipv6" ? `[${ex.target.host}]` : ex.target.host;
  // A constant routing method: Hono treats HEAD specially (it swaps the response for a
  // bodiless copy, which would skip the audit wrapper); the real method travels in `ex`.
  return new Request(`${ex.scheme}://${host}:${ex.target.port}/`, { method: "POST" });
}

function audit(deps: ExchangeDeps): MiddlewareHandler<Env> {
  return async function auditRequest(c, next) {
    const ex = c.env.ex;
    await next();
    const rec = ex.rec;
    rec.status = c.res.status;
    // Agent-chosen text: a real value in it (a request DLP refused) must not reach the log.
    const redactor = (c.get("state") ?? deps.secrets()).redactInline;
    const finish = (ok: boolean) => {
      const durationMs = Math.round((performance.now() - ex.started) * 100) / 100;
      if (!ok && rec.decision === "allow") {
        rec.decision = "error";
        rec.reason = "response body failed";
      }
      deps.audit.request({
        conn: ex.conn,
        agent: ex.agent,
        method: ex.req.head.method,
        scheme: ex.scheme,
        host: redactor.applyLatin1(ex.target.host).value,
        port: ex.target.port,
        path: redactor.applyLatin1(loggablePath(ex.req.head.target)).value,
        status: rec.status,
        bytesIn: rec.bytesIn,
        bytesOut: rec.bytesOut,
        swaps: rec.swaps,
        redactions: rec.redactions,
        decision: rec.decision,
        reason: rec.reason,
        durationMs,
      });
      const m = deps.metrics;
      m.requests.inc({
        agent: ex.agent,
        decision: rec.decision,
        status: `${Math.floor(rec.status / 100)}xx`,
      });
      if (rec.swaps) m.swaps.inc({ agent: ex.agent }, rec.swaps);
      if (rec.redactions) m.redactions.inc({ agent: ex.agent }, rec.redactions);
      m.bytes.inc({ agent: ex.agent, direction: "in" }, rec.bytesIn);
      m.bytes.inc({ agent: ex.agent, direction: "out" }, rec.bytesOut);
      m.latency.observe({ agent: ex.agent }, durationMs / 1000);
    };
    const body = c.res.body;
    const status = c.res.status;
    const bodiless = ex.req.head.method === "HEAD" || status === 204 || status === 304;
    const held = heldBody(c.res);
    if (held && !bodiless) {
      // Held whole: logged once the session handed it to the agent's socket.
      onHeldSettled(c.res, (ok) => {
        rec.bytesOut = ok ? held.length : 0;
        finish(ok);
      });
      return;
    }
    if (!body || bodiless) {
      // The session writes no body for these: log now rather than wait for a read.
      await body?.cancel().catch(() => {});
      finish(true);
      return;
    }
    const res = c.res;
    setResponse(
      c,
      new Response(
        countBytes(body, (n, ok) => {
          rec.bytesOut = n;
          finish(ok);
        }),
        { status: res.status, statusText: res.statusText, headers: res.headers },
      ),
    );
  };
}

function rateLimit(deps: ExchangeDeps): MiddlewareHandler<Env> {
  return async function limitRate(c, next) {
    const ex = c.env.ex;
    if (deps.rateLimiter && !deps.rateLimiter.take(ex.agent)) {
      ex.rec.decision = "deny";
      ex.rec.reason = "rate limit exceeded";
      throw new ProxyError("rate-limited", "rate limit exceeded for this agent");
    }
    await next();
  };
}

function policy(deps: ExchangeDeps): MiddlewareHandler<Env> {
  return async function egressPolicy(c, next) {
    const ex = c.env.ex;
    const v = deps.policy().decide({
      agent: ex.agent,
      host: ex.target.host,
      port: ex.target.port,
      scheme: ex.scheme,
    });
    if (v.action !== "allow") {
      ex.rec.decision = "deny";
      ex.rec.reason = v.reason;
      throw new ProxyError("policy-denied", v.reason);
    }
    ex.rec.reason = v.rule ? `allowed by ${v.rule}` : v.reason;
    await next();
  };
}

function upgradeGuard(): MiddlewareHandler<Env> {
  return async function refuseUpgrades(c, next) {
    const head = c.env.ex.req.head;
    if (head.upgrade && head.upgrade.length > 0) {
      c.env.ex.rec.decision = "deny";
      const h2c = head.upgrade.some((p) => p.toLowerCase().startsWith("h2c"));
      c.env.ex.rec.reason = h2c ? "h2c upgrade refused" : "protocol upgrade refused";
      throw new ProxyError("upgrade-refused", c.env.ex.rec.reason);
    }
    await next();
  };
}

/** Header names the proxy owns on the upstream leg. */
const DROP_OUTBOUND = new Set([
  "content-length",
  "transfer-encoding",
  "expect",
  "accept-encoding",
  "proxy-authorization",
  "proxy-connection",
  "connection",
  "keep-alive",
  "te",
  "trailer",
  "upgrade",
]);

function swap(deps: ExchangeDeps): MiddlewareHandler<Env> {
  return async function swapCredentials(c, next) {
    const ex = c.env.ex;
    const state = deps.secrets();
    const head = ex.req.head;
    // Never inject into plain http: the plan is empty, only DLP and redaction apply.
    const plan =
      ex.scheme === "https"
        ? state.plan(ex.agent, ex.target.host, ex.target.port)
        : state.plan("", "invalid.invalid", 0);
    const swapped = new Set<string>();
    let swaps = 0;

    // Outbound DLP on the head: a real value, in any encoding, anywhere, blocks the request.
    const targetText = originForm(head);
    if (state.redactInline.applyLatin1(targetText).count > 0) return dlpBlocked(ex);
    // A URL is usually percent-encoded on top of whatever the value was (base64 with %2B,
    // JSON with %22 …): look at the decoded form too, once as percent, once as a form.
    if (targetText.includes("%") || targetText.includes("+")) {
      for (const decoded of urlDecodings(targetText)) {
        if (state.redactInline.applyLatin1(decoded).count > 0) return dlpBlocked(ex);
      }
    }
    for (const [name, value] of head.headers.fields) {
      if (state.redactInline.applyLatin1(value).count > 0) return dlpBlocked(ex);
      if (value.includes("%")) {
        for (const decoded of urlDecodings(value)) {
          if (state.redactInline.applyLatin1(decoded).count > 0) return dlpBlocked(ex);
        }
      }
      if (state.redactInline.applyLatin1(name).count > 0) return dlpBlocked(ex);
    }
    // The destination itself (a real value as a DNS label would leak through resolution).
    if (state.redactInline.applyLatin1(ex.target.host).count > 0) return dlpBlocked(ex);
    if (!state.urlDenied.empty && state.urlDenied.applyLatin1(targetText).count > 0) {
      ex.rec.decision = "deny";
      ex.rec.reason = "credential not allowed in URLs";
      throw new ProxyError("policy-denied", "credential not allowed in URLs");
    }

    const t = plan.urlSwap.applyLatin1(targetText);
    swaps += t.count;
    for (const n of t.names) swapped.add(n);
    const headers: [string, string][] = [];
    for (const [name, value] of stripConnectionNamed(head)) {
      const lower = name.toLowerCase();
      if (DROP_OUTBOUND.has(lower)) continue;
      let v = value;
      if (lower === "authorization" && plan.basicPairs.length > 0) {
        const b = swapBasicAuth(v, plan.basicPairs);
        if (b.swapped.length > 0) {
          swaps += b.swapped.length;
          for (const n of b.swapped) swapped.add(n);
          v = b.value;
        }
      }
      const r = plan.headerSwap.applyLatin1(v);
      if (r.count > 0) {
        swaps += r.count;
        for (const n of r.names) swapped.add(n);
        v = r.value;
      }
      headers.push([name, v]);
    }
    headers.push(["accept-encoding", filterAcceptEncoding(head.headers.get("accept-encoding"))]);
    // The upstream leg is HTTP/1.1, which requires Host; an HTTP/1.0 agent may have sent none.
    if (!head.headers.has("host")) headers.unshift(["host", hostField(ex)]);

    let body: ReadableStream<Uint8Array> | Uint8Array | null = null;
    let bodyLength: number | null = null;
    let bodySwapResult: Promise<number> | null = null;
    // A body held whole keeps its share of the process-wide budget for as long as it is held
    // (until the upstream exchange is over), so the budget bounds the memory held bodies take.
    // The share is what the body may become: a swap can make it longer.
    let budget = 0;
    const growth = growthOf(plan.bodySpecs);
    const releaseBody = (b: Uint8Array) => {
      releaseHeld(b);
      deps.held.release(budget, ex.agent);
      budget = 0;
    };
    const reqBody = ex.req.body;
    const declaredIn = head.framing.kind === "length" ? head.framing.length : null;
    const inline = deps.inline;
    if (reqBody && inline && declaredIn !== null && declaredIn <= inline.maxBytes) {
      // Small body of known length: held whole (bounded) and scanned in one engine call each
      // for DLP and the swap — a real value blocks the request before any byte leaves.
      const charge = Math.ceil(declaredIn * growth);
      const whole = await holdWhole(deps, ex.agent, reqBody, charge, inline.maxBytes);
      budget = charge;
      ex.rec.bytesIn = whole.length;
      let out = whole;
      try {
        if (state.redactSpecs.length > 0) {
          if (inline.count(state.setName("redact"), state.redactSpecs, whole) > 0) {
            ex.rec.decision = "deny";
            ex.rec.reason = "real credential in request body";
            throw new ProxyError(
              "dlp-blocked",
              "request body carries a real credential; use the dummy",
            );
          }
        }
        if (plan.bodySpecs) {
          const r = inline.rewrite(
            state.setName(`swap:${plan.key}`),
            plan.bodySpecs,
            whole,
            allocWithHeadroom,
          );
          if (r.output !== whole) releaseHeld(whole);
          out = r.output;
          swaps += r.replacements;
          // Like the streamed path: a body swap counts for the host's required credentials.
          if (r.replacements > 0) for (const n of plan.required) swapped.add(n);
        }
      } catch (e) {
        // Blocked, or the scan failed: the agent's body (it may hold a real value) is wiped.
        releaseBody(whole);
        throw e;
      }
      body = out;
      bodyLength = out.length;
    } else if (reqBody) {
      const counted = countBytes(reqBody, (n) => {
        ex.rec.bytesIn = n;
      });
      // One pool pass does both jobs when the host has bound credentials: real values are
      // replaced by the state's DLP marker (found in the output, it fails the request), bound
      // dummies by their real values. Without bindings the pass is DLP alone.
      const bodySpecs = plan.bodySpecs;
      const hasReals = state.redactSpecs.length > 0;
      let dlp: ScanStream | null = null;
      let sw: ScanStream | null = null;
      let marker: Uint8Array | undefined;
      if (bodySpecs && hasReals) {
        sw = await deps.scanner.open(state.setName(`out:${plan.key}`), () =>
          state.outboundSpecs(plan),
        );
        marker = state.dlpMarker;
      } else if (hasReals) {
        dlp = await deps.scanner.open(state.setName("redact"), () => state.redactSpecs);
      } else if (bodySpecs) {
        sw = await deps.scanner.open(state.setName(`swap:${plan.key}`), () => bodySpecs);
      }
      let settle!: (n: number) => void;
      bodySwapResult = new Promise<number>((r) => {
        settle = r;
      });
      // `require` with a body: if the head carried no required dummy, the body must; the
      // pipeline fails the stream at its end otherwise (the upstream never gets it whole).
      const headSwapped = new Set(swapped);
      const requireInBody =
        plan.required.length > 0 &&
        checkRequired({ swaps: plan.swaps, required: plan.required, reals: [] }, headSwapped)
          .action !== "allow";
      const scanned = outboundBody(
        counted,
        dlp,
        sw,
        (r) => {
          if (r.dlpHits > 0) {
            ex.rec.decision = "deny";
            ex.rec.reason = "real credential in request body";
          } else if (requireInBody && r.swaps === 0) {
            ex.rec.decision = "deny";
            ex.rec.reason = "required dummy missing";
          }
          settle(r.swaps);
        },
        requireInBody,
        marker,
      );
      const declared = head.framing.kind === "length" ? head.framing.length : null;
      if (declared !== null && !plan.lengthPreserving && plan.bodySpecs) {
        // A swap may change the length: hold the (bounded) body to send a correct
        // Content-Length. A body that the swap could make larger than the cap goes chunked
        // instead (so one the agent sent within the cap is never refused for what the swap
        // made of it).
        const most = Math.ceil(declared * growth);
        if (most <= deps.maxHeldBodyBytes) {
          const whole = await holdWhole(deps, ex.agent, scanned, most, deps.maxHeldBodyBytes);
          budget = most;
          bodyLength = whole.length;
          body = whole;
        } else {
          body = scanned;
          bodyLength = null;
        }
      } else {
        body = scanned;
        bodyLength = declared;
      }
    }

    // `require`: a bound host only receives requests that carried the dummy (header/URL
    // swaps are known now; a body-only dummy counts once the body was scanned, see docs).
    if (plan.required.length > 0 && !bodySwapResult) {
      const v = checkRequired({ swaps: plan.swaps, required: plan.required, reals: [] }, swapped);
      if (v.action !== "allow") {
        if (body instanceof Uint8Array) releaseBody(body);
        else await body?.cancel().catch(() => {});
        ex.rec.decision = "deny";
        ex.rec.reason = v.reason;
        throw new ProxyError(
          "required-dummy-missing",
          "this host only accepts the agent's dummy credential",
        );
      }
    }

    ex.rec.swaps = swaps;
    bodySwapResult?.then((n) => {
      ex.rec.swaps += n;
    });
    c.set("plan", plan);
    c.set("state", state);
    c.set("out", { target: t.value, headers, body, bodyLength });
    try {
      await next();
    } finally {
      // The upstream exchange is over (sent, or failed): a held body, which may carry the real
      // values just swapped in, is wiped and its buffer reused once no write refers to it, and
      // its share of the budget goes back.
      if (body instanceof Uint8Array) releaseBody(body);
    }
  };
}

function dlpBlocked(ex: Exchange): never {
  ex.rec.decision = "deny";
  ex.rec.reason = "real credential in request";
  ex.req.body?.cancel().catch(() => {});
  throw new ProxyError("dlp-blocked", "request carries a real credential; use the dummy");
}

/** Percent-decoded (and form-decoded) views of a URL, byte for byte (latin1), lenient. */
function urlDecodings(text: string): string[] {
  const pct = (t: string) =>
    t.replace(/%([0-9a-fA-F]{2})/g, (_, h: string) => String.fromCharCode(Number.parseInt(h, 16)));
  const once = pct(text);
  return [once, pct(text.replaceAll("+", " ")), pct(once)];
}

function originForm(head: RequestHead): string {
  if (head.targetForm !== "absolute") return head.target;
  // absolute-form: keep path and query only (the authority was checked separately).
  const m = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/[^/?#]*/.exec(head.target);
  const rest = m ? head.target.slice(m[0].length) : head.target;
  return rest === "" ? "/" : rest.startsWith("?") ? `/${rest}` : rest;
}

function stripConnectionNamed(head: RequestHead): [string, string][] {
  const named = new Set(head.connection);
  for (const p of ["host", "content-length", "content-type", "content-encoding"]) named.delete(p);
  return head.headers.fields.filter(([n]) => !named.has(n.toLowerCase())).map(([n, v]) => [n, v]);
}

const DROP_INBOUND = new Set([
  "content-length",
  "transfer-encoding",
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "trailer",
  "upgrade",
  "te",
]);

function redact(deps: ExchangeDeps): MiddlewareHandler<Env> {
  return async function redactResponse(c, next) {
    await next();
    const ex = c.env.ex;
    const res = c.res;
    if (res.headers.get("x-slapenir-error") !== null && !res.headers.has("x-slapenir-upstream")) {
      return; // the proxy's own error answer: nothing of the upstream's in it
    }
    // The secrets this exchange's request was swapped with: a reload while the response is on
    // its way must not leave the value that was just injected unredacted.
    const state = c.get("state") ?? deps.secrets();
    let redactions = 0;
    const headers = new Headers();
    const isHead = ex.req.head.method === "HEAD";
    let codings: ReturnType<typeof parseContentEncoding>;
    try {
      codings = parseContentEncoding(
        res.headers.get("content-encoding") ? [res.headers.get("content-encoding")!] : [],
      );
    } catch (e) {
      await res.body?.cancel().catch(() => {});
      throw e;
    }
    const decode = codings.length > 0 && res.body !== null;
    res.headers.forEach((value, name) => {
      if (name === "set-cookie") return;
      if (DROP_INBOUND.has(name) && !(isHead && name === "content-length")) return;
      if (name === "x-slapenir-upstream") return;
      if (decode && name === "content-encoding") return;
      // A field *named* after a secret (any token-shaped value can be a name) is dropped whole.
      if (state.redactInline.applyLatin1(name).count > 0) {
        redactions++;
        return;
      }
      const r = state.redactInline.applyLatin1(value);
      redactions += r.count;
      headers.append(name, r.value);
    });
    for (const cookie of res.headers.getSetCookie()) {
      const r = state.redactInline.applyLatin1(cookie);
      redactions += r.count;
      headers.append("set-cookie", r.value);
    }
    ex.rec.redactions += redactions;
    let body = res.body;
    /** The redacted body when it was held whole (written with its head in one write). */
    let held: Uint8Array | null = null;
    const inline = deps.inline;
    const length = res.headers.get("content-length");
    const heldBytes = length !== null && /^[0-9]{1,9}$/.test(length) ? Number(length) : null;
    if (
      body &&
      !decode &&
      inline &&
      state.redactSpecs.length > 0 &&
      heldBytes !== null &&
      heldBytes <= inline.maxBytes &&
      // Holding is the fast path, not a requirement: with the budget spent (held request
      // bodies), the answer streams instead of being refused after the upstream acted.
      deps.held.acquire(heldBytes, ex.agent)
    ) {
      // Small response of known length: held whole and redacted in one engine call. An
      // upstream that dies before the end gets the agent a 502 here, not a cut body (a
      // streamed answer is cut: the agent's connection is destroyed).
      let whole: Uint8Array;
      let r: { output: Uint8Array; replacements: number };
      try {
        whole = await collectBounded(body, inline.maxBytes, allocWithHeadroom);
        try {
          r = inline.rewrite(state.setName("redact"), state.redactSpecs, whole, allocWithHeadroom);
        } catch (e) {
          releaseHeld(whole);
          throw e;
        }
      } finally {
        deps.held.release(heldBytes, ex.agent);
      }
      // A shorter output (the usual case: "[REDACTED]" is shorter than a credential) is
      // another held buffer; the upstream's plaintext it came from is wiped.
      if (r.output !== whole) releaseHeld(whole);
      ex.rec.redactions += r.replacements;
      held = r.output;
    } else if (body) {
      // Decode the first chunk before answering: a body that is not what its label says
      // (mislabelled, corrupt) becomes a 502 instead of a 200 head and a broken connection.
      if (decode) body = await primeStream(decodeBody(body, codings, deps.decodeLimits));
      if (state.redactSpecs.length > 0) {
        let scan: Awaited<ReturnType<BodyScanner["open"]>>;
        try {
          scan = await deps.scanner.open(state.setName("redact"), () => state.redactSpecs);
        } catch (e) {
          await body.cancel().catch(() => {});
          throw e;
        }
        body = redactBody(body, scan, (r) => {
          ex.rec.redactions += r.replacements;
        });
      }
    }
    // The reason phrase is upstream text too.
    const reason = state.redactInline.applyLatin1(res.statusText);
    ex.rec.redactions += reason.count;
    const init = { status: res.status, statusText: reason.value, headers };
    setResponse(c, held ? heldResponse(held, init) : new Response(body, init));
  };
}

function forward(deps: ExchangeDeps) {
  return async function forwardUpstream(c: import("hono").Context<Env>): Promise<Response> {
    const ex = c.env.ex;
    const out = c.get("out");
    const head = ex.req.head;
    const upstream = await deps.upstream.send(
      {
        host: ex.target.host,
        port: ex.target.port,
        tls: ex.scheme === "https",
        isIp: ex.target.kind !== "dns",
      },
      {
        method: head.method,
        target: out.target,
        headers: out.headers,
        body: out.body,
        bodyLength: out.bodyLength,
      },
      ex.abort.signal,
    );
    const h = upstream.head;
    if (h.status < 200 || h.status > 599) {
      await upstream.body?.cancel().catch(() => {});
      throw new ProxyError("upstream-protocol", "upstream answered with an unusable status");
    }
    const headers = new Headers();
    for (const [name, value] of h.headers.fields) {
      try {
        headers.append(name, value);
      } catch {
        throw new ProxyError("upstream-protocol", "upstream sent an unusable header");
      }
    }
    headers.set("x-slapenir-upstream", "1");
    const nullBody = h.status === 204 || h.status === 304 || head.method === "HEAD";
    const body = nullBody ? null : upstream.body;
    if (nullBody) await upstream.body?.cancel().catch(() => {});
    return new Response(body ?? null, { status: h.status, statusText: h.reason, headers });
  };
}

/** The most a swap with `specs` can lengthen a body, as a factor (1: never longer). */
function growthOf(specs: readonly PatternSpec[] | null): number {
  let g = 1;
  for (const s of specs ?? []) {
    if (s.pattern.length > 0) g = Math.max(g, s.replacement.length / s.pattern.length);
  }
  return g;
}

/**
 * Hold a body whole (at most `max` bytes), charging `charge` bytes to `agent`'s share of the
 * process-wide budget: over it → 503 (the body is cancelled). The caller releases `charge` once
 * it no longer holds the bytes.
 */
async function holdWhole(
  deps: ExchangeDeps,
  agent: string,
  body: ReadableStream<Uint8Array>,
  charge: number,
  max: number,
): Promise<Uint8Array> {
  if (!deps.held.acquire(charge, agent)) {
    await body.cancel().catch(() => {});
    throw new ProxyError("overloaded", "proxy is holding too many bodies; retry shortly");
  }
  try {
    // Held bodies leave with a head in front of them: room for it is kept (headroom.ts).
    return await collectBounded(body, max, allocWithHeadroom);
  } catch (e) {
    deps.held.release(charge, agent);
    throw e;
  }
}

/** `Host` for the dialled destination: the port only when it is not the scheme's default. */
function hostField(ex: Exchange): string {
  const h = ex.target.kind === "ipv6" ? `[${ex.target.host}]` : ex.target.host;
  const dflt = ex.scheme === "https" ? 443 : 80;
  return ex.target.port === dflt ? h : `${h}:${ex.target.port}`;
}
