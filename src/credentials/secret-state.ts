// The compiled, immutable view of the configured credentials that the request path uses:
// host bindings, the inline replacers for headers and targets, and the pattern sets the worker
// pool scans bodies with. Built once per secrets (re)load. It must never expose a value except
// as bytes handed to a replacer or a pattern set, and `dispose()` zeroes every copy it made.

import { urlDecodings } from "../http/percent.ts";
import { type InlinePattern, InlineReplacer } from "../matcher/inline.ts";
import { type CompileOptions, PATTERN_MIN_LENGTH, type PatternSpec } from "../matcher/types.ts";
import type { RequestRoute } from "../policy/request-rule.ts";
import type { BytePair } from "./basic-auth.ts";
import { CredentialBindings, type SwapPair } from "./bindings.ts";
import { redactionVariants, swapVariants, toPatternSpecs } from "./secret-variants.ts";
import type { SecretsConfig, SigV4Marker, SigV4Part } from "./secrets.ts";
import type { SigV4Keys } from "./sigv4.ts";

/** What one (agent, destination) may have swapped, compiled for the request path. */
export interface RequestPlan {
  /** Stable id of the swap set: the sorted credential names ("" when none). */
  readonly key: string;
  readonly swaps: readonly SwapPair[];
  /** Credentials whose `require` flag binds them to this destination. */
  readonly required: readonly string[];
  /**
   * The credentials presented in each header field, by lower-case field name: a value that is
   * the dummy (in Authorization also after Bearer or token) becomes its real value. Other
   * fields are not touched.
   */
  readonly headerSwap: ReadonlyMap<string, readonly SwapPair[]>;
  /** Likewise for query parameters (`query:NAME`), by parameter name. */
  readonly querySwap: ReadonlyMap<string, readonly SwapPair[]>;
  /** Pairs for `Authorization: Basic`, swapped inside the decoded credentials. */
  readonly basicPairs: readonly BytePair[];
  /** Likewise for the fields of a form body (`form:NAME`), by field name. */
  readonly formSwap: ReadonlyMap<string, readonly SwapPair[]>;
  /** Likewise for JSON strings at pointers (`json:/POINTER`), by pointer. */
  readonly jsonSwap: ReadonlyMap<string, readonly SwapPair[]>;
  /** JSON pointers in the agent's text WebSocket messages (`frame:`), on a handshake to this endpoint. */
  readonly frameSwap: ReadonlyMap<string, readonly SwapPair[]>;
  /** The most a field swap can lengthen a body, as a factor (1: never). */
  readonly fieldGrowth: number;
  /** Pattern set for request bodies: credentials with a `body` surface (null: none). */
  readonly bodySpecs: readonly PatternSpec[] | null;
  /** True when every body swap keeps the body's length (Content-Length stays valid). */
  readonly lengthPreserving: boolean;
}

let nextGeneration = 1;

/** One AWS credential's keys for a request: the agent's (dummy) and the real ones. */
export interface SigV4Pair {
  readonly name: string;
  /** Absent: any. */
  readonly regions?: readonly string[];
  readonly services?: readonly string[];
  readonly dummy: SigV4Keys;
  readonly real: SigV4Keys;
}

interface Foreign {
  readonly replacer: InlineReplacer;
  readonly specs: readonly PatternSpec[] | null;
}

/** How the redaction set (redactSpecs) is compiled: real values are also found in decoded views. */
export const REDACT_COMPILE: CompileOptions = { views: true };

export class SecretState {
  /** Distinguishes this state's pattern sets from those of earlier or later reloads. */
  readonly generation = nextGeneration++;
  readonly bindings: CredentialBindings;
  /** Every encoding of every real value → its redaction (responses; DLP detection on requests). */
  readonly redactInline: InlineReplacer;
  /**
   * The same encodings lower-cased: what a real value looks like once a host name, or a header
   * name, has been case-folded (a DNS label keeps the value less one bit per letter).
   */
  readonly redactFolded: InlineReplacer;
  readonly redactSpecs: readonly PatternSpec[];
  /** Dummies that policy refuses in URLs (`inUrl: "deny"`), any text encoding. */
  readonly urlDenied: InlineReplacer;
  readonly credentialCount: number;
  /**
   * What real values become in the combined outbound pass (one pool stream for DLP and swap):
   * random per secrets generation, never a credential; seeing it in the output is a DLP hit.
   */
  readonly dlpMarker: Uint8Array = crypto.getRandomValues(new Uint8Array(32));
  readonly #outbound = new Map<string, readonly PatternSpec[]>();
  /** Exchanges using this state now, and what to do once none does (see whenUnused). */
  #users = 0;
  #onUnused: (() => void) | null = null;
  readonly #replaced = new AbortController();
  readonly #plans = new Map<string, RequestPlan>();
  readonly #foreign = new Map<string, Foreign | null>();
  /** Credential name → its place in an AWS credential. */
  readonly #sigv4 = new Map<string, SigV4Marker>();
  readonly #owned: Uint8Array[] = [];
  /** Credentials whose source has no value now, bound as they would be. */
  readonly #unavailable: CredentialBindings;

  private constructor(secrets: SecretsConfig) {
    const creds = secrets.credentials;
    this.credentialCount = creds.length;
    for (const c of creds) if (c.sigv4) this.#sigv4.set(c.name, c.sigv4);
    const inputs = creds.map((c) => {
      const dummy = c.dummy.revealBytes();
      const real = c.real.revealBytes();
      this.#owned.push(dummy, real);
      return {
        name: c.name,
        dummy,
        real,
        hosts: c.hosts,
        ...(c.agents ? { agents: c.agents } : {}),
        require: c.require,
        inUrl: c.inUrl,
        surfaces: c.surfaces,
        scopes: c.scopes,
      };
    });
    this.bindings = CredentialBindings.compile(inputs);
    const redact: InlinePattern[] = [];
    const variantSets = inputs.map((c) => {
      const set = redactionVariants(c.real);
      for (const v of set.variants) {
        this.#owned.push(v.pattern);
        redact.push({ name: c.name, from: v.pattern, to: v.replacement });
      }
      return set;
    });
    // Values a source replaced (or gave but not yet swapped): redacted and blocked the same way.
    for (const r of secrets.retired) {
      const real = r.value.revealBytes();
      this.#owned.push(real);
      const set = redactionVariants(real);
      for (const v of set.variants) {
        this.#owned.push(v.pattern);
        redact.push({ name: r.name, from: v.pattern, to: v.replacement });
      }
      variantSets.push(set);
    }
    this.#unavailable = CredentialBindings.compile(
      secrets.unavailable.map((c) => {
        const dummy = c.dummy.revealBytes();
        this.#owned.push(dummy);
        return {
          name: c.name,
          dummy,
          // Never sent: these bindings only say where the dummy would have been swapped.
          real: new Uint8Array([0]),
          hosts: c.hosts,
          ...(c.agents ? { agents: c.agents } : {}),
          scopes: c.scopes,
        };
      }),
    );
    this.redactInline = new InlineReplacer(redact, { views: true });
    const folded = new Map<string, InlinePattern>();
    for (const r of redact) {
      const from = Buffer.from(Buffer.from(r.from).toString("latin1").toLowerCase(), "latin1");
      const key = from.toString("latin1");
      if (folded.has(key)) from.fill(0);
      else {
        this.#owned.push(from);
        folded.set(key, { name: r.name, from, to: r.to });
      }
    }
    this.redactFolded = new InlineReplacer([...folded.values()]);
    this.redactSpecs = toPatternSpecs(variantSets);
    const denied: InlinePattern[] = [];
    for (const c of inputs) {
      if (c.inUrl !== "deny") continue;
      for (const v of swapVariants(c.dummy, c.real, "url").variants) {
        this.#owned.push(v.pattern, v.replacement);
        denied.push({ name: c.name, from: v.pattern, to: v.pattern });
      }
    }
    this.urlDenied = new InlineReplacer(denied);
  }

  /**
   * The credentials without a value now (their source failed or has not answered) whose dummy
   * `text` (a request's target and field values) carries to a host they are bound to for
   * `agent` — as written, percent-decoded, or in Basic credentials: such a request is refused
   * 503 naming them rather than sent with the dummy. (A dummy in a body is not looked for.)
   */
  unavailableIn(
    agent: string,
    host: string,
    port: number,
    route: RequestRoute | undefined,
    text: string,
  ): string[] {
    const swaps = this.#unavailable.swapPlan(agent, host, port, route).swaps;
    if (swaps.length === 0) return [];
    // As written, percent- or form-decoded (a query), and inside Basic credentials.
    const texts = [text, ...urlDecodings(text)];
    for (const m of text.matchAll(/\bBasic\s+([A-Za-z0-9+/=_-]+)/gi)) {
      texts.push(Buffer.from(m[1]!, "base64").toString("latin1"));
    }
    return swaps
      .filter((p) => {
        const dummy = Buffer.from(p.dummy).toString("latin1");
        return texts.some((t) => t.includes(dummy));
      })
      .map((p) => p.name);
  }

  static compile(secrets: SecretsConfig): SecretState {
    return new SecretState(secrets);
  }

  /**
   * Whether agent-chosen text carries a real value: as written, in any case (a name that was or
   * will be case-folded), or once percent- or form-decoded.
   */
  carriesReal(text: string): boolean {
    const found = (t: string) =>
      this.redactInline.applyLatin1(t).count > 0 ||
      this.redactFolded.applyLatin1(t.toLowerCase()).count > 0;
    if (found(text)) return true;
    return (text.includes("%") || text.includes("+")) && urlDecodings(text).some(found);
  }

  /** Agent- or upstream-chosen text with every real value redacted, as written or case-folded. */
  scrub(text: string): string {
    const once = this.redactInline.applyLatin1(text).value;
    return this.redactFolded.empty ? once : this.redactFolded.applyLatin1(once).value;
  }

  /** Told when a reload replaces this state (see `replace`). */
  get replaced(): AbortSignal {
    return this.#replaced.signal;
  }

  /**
   * A reload put another state in force. Exchanges still running on this one cannot know the
   * new real values, so an answer of theirs must not go on streaming (stages/inbound.ts).
   */
  replace(): void {
    this.#replaced.abort();
  }

  /**
   * The scanner-side name of one of this state's pattern sets. Names carry the generation, so
   * a request still running on the previous secrets can never fill (or use) a set under the
   * name the new secrets use.
   */
  setName(kind: string): string {
    return `${kind}#${this.generation}`;
  }

  /** True for set names made by `setName` of this state. */
  ownsSet(name: string): boolean {
    return name.endsWith(`#${this.generation}`);
  }

  /**
   * The compiled plan for a request from `agent` to `host:port` (cached per swap set); with
   * `route`, bindings narrowed to methods and paths apply only where they cover it.
   */
  plan(agent: string, host: string, port: number, route?: RequestRoute): RequestPlan {
    return this.#compile(this.bindings.swapPlan(agent, host, port, route));
  }

  /**
   * The AWS credentials (`kind: "aws"`) bound for this agent and request, by their dummy
   * access key id: the keys the agent signs with and the real ones to sign again with.
   */
  sigv4Keys(
    agent: string,
    host: string,
    port: number,
    route?: RequestRoute,
  ): Map<string, SigV4Pair> {
    const out = new Map<string, SigV4Pair>();
    if (this.#sigv4.size === 0) return out;
    const groups = new Map<string, Map<SigV4Part, SwapPair>>();
    const limits = new Map<string, SigV4Marker>();
    for (const pair of this.bindings.swapPlan(agent, host, port, route).swaps) {
      const at = this.#sigv4.get(pair.name);
      if (!at) continue;
      const g = groups.get(at.group) ?? new Map<SigV4Part, SwapPair>();
      g.set(at.part, pair);
      groups.set(at.group, g);
      limits.set(at.group, at);
    }
    const text = (b: Uint8Array) => Buffer.from(b).toString("latin1");
    for (const [name, g] of groups) {
      const id = g.get("accessKeyId");
      const secret = g.get("secretAccessKey");
      if (!id || !secret) continue;
      const token = g.get("sessionToken");
      const at = limits.get(name)!;
      out.set(text(id.dummy), {
        name,
        ...(at.regions ? { regions: at.regions } : {}),
        ...(at.services ? { services: at.services } : {}),
        dummy: {
          accessKeyId: text(id.dummy),
          secretAccessKey: secret.dummy,
          ...(token ? { sessionToken: text(token.dummy) } : {}),
        },
        real: {
          accessKeyId: text(id.real),
          secretAccessKey: secret.real,
          ...(token ? { sessionToken: text(token.real) } : {}),
        },
      });
    }
    return out;
  }

  /**
   * The dummies (any text encoding) of credentials restricted to other agents: seen in this
   * agent's request, they are a violation (it read them somewhere it shares with them). The
   * replacer counts them in a head; the specs (each kept as itself) in a held body.
   */
  foreignDummies(agent: string): InlineReplacer | null {
    return this.#foreignOf(agent)?.replacer ?? null;
  }

  foreignSpecs(agent: string): readonly PatternSpec[] | null {
    return this.#foreignOf(agent)?.specs ?? null;
  }

  #foreignOf(agent: string): Foreign | null {
    const hit = this.#foreign.get(agent);
    if (hit !== undefined) return hit;
    const patterns: InlinePattern[] = [];
    const seen = new Set<string>();
    const specs: PatternSpec[] = [];
    for (const c of this.bindings.foreignTo(agent)) {
      for (const v of swapVariants(c.dummy, c.real, "text").variants) {
        this.#owned.push(v.pattern, v.replacement);
        patterns.push({ name: c.name, from: v.pattern, to: v.pattern });
        const key = Buffer.from(v.pattern).toString("latin1");
        if (v.pattern.length >= PATTERN_MIN_LENGTH && !seen.has(key)) {
          seen.add(key);
          specs.push({ pattern: v.pattern, replacement: v.pattern });
        }
      }
    }
    const r =
      patterns.length > 0
        ? { replacer: new InlineReplacer(patterns), specs: specs.length > 0 ? specs : null }
        : null;
    if (this.#foreign.size < 1024) this.#foreign.set(agent, r);
    return r;
  }

  /** The plan for a request that may have nothing swapped (plain http://): DLP only. */
  noSwapPlan(): RequestPlan {
    return this.#compile({ swaps: [], required: [] });
  }

  #compile(p: {
    readonly swaps: readonly SwapPair[];
    readonly required: readonly string[];
  }): RequestPlan {
    const key = p.swaps
      .map((s) => s.name)
      .sort()
      .join("\u0000");
    const cacheKey = `${key}\u0001${p.required.join("\u0000")}`;
    const hit = this.#plans.get(cacheKey);
    if (hit) return hit;
    const headers = new Map<string, SwapPair[]>();
    const queries = new Map<string, SwapPair[]>();
    const forms = new Map<string, SwapPair[]>();
    const jsons = new Map<string, SwapPair[]>();
    const frames = new Map<string, SwapPair[]>();
    let fieldGrowth = 1;
    const bodySets = [];
    const basicPairs: SwapPair[] = [];
    let lengthPreserving = true;
    const into = (m: Map<string, SwapPair[]>, k: string, pair: SwapPair) =>
      m.set(k, [...(m.get(k) ?? []), pair]);
    for (const s of p.swaps) {
      for (const surface of s.surfaces) {
        if (surface.kind === "header") {
          into(headers, surface.name, s);
          if (surface.name === "authorization") basicPairs.push(s);
        } else if (surface.kind === "query") {
          into(queries, surface.name, s);
        } else if (surface.kind === "form" || surface.kind === "json") {
          into(surface.kind === "form" ? forms : jsons, surface.name, s);
          // Percent-encoded, a printable byte takes at most three (JSON escapes take two).
          fieldGrowth = Math.max(fieldGrowth, (3 * s.real.length) / s.dummy.length);
        } else if (surface.kind === "frame") {
          into(frames, surface.name, s);
        } else {
          const text = swapVariants(s.dummy, s.real, "text");
          for (const v of text.variants) this.#owned.push(v.pattern, v.replacement);
          bodySets.push(text);
          for (const v of text.variants) {
            if (v.pattern.length !== v.replacement.length) lengthPreserving = false;
          }
        }
      }
    }
    const plan: RequestPlan = {
      key,
      swaps: p.swaps,
      required: p.required,
      headerSwap: headers,
      querySwap: queries,
      basicPairs,
      formSwap: forms,
      jsonSwap: jsons,
      frameSwap: frames,
      fieldGrowth,
      bodySpecs: bodySets.length > 0 ? toPatternSpecs(bodySets) : null,
      lengthPreserving,
    };
    this.#plans.set(cacheKey, plan);
    return plan;
  }

  /** The combined outbound set for a plan: reals → marker (DLP) first, then dummy → real. */
  outboundSpecs(plan: RequestPlan): readonly PatternSpec[] {
    const hit = this.#outbound.get(plan.key);
    if (hit) return hit;
    const seen = new Set<string>();
    const specs: PatternSpec[] = [];
    const add = (pattern: Uint8Array, replacement: Uint8Array) => {
      const k = Buffer.from(pattern).toString("latin1");
      if (seen.has(k)) return;
      seen.add(k);
      specs.push({ pattern, replacement });
    };
    for (const s of this.redactSpecs) add(s.pattern, this.dlpMarker);
    for (const s of plan.bodySpecs ?? []) add(s.pattern, s.replacement);
    this.#outbound.set(plan.key, specs);
    return specs;
  }

  /**
   * An exchange starts using this state: it swaps with it and must redact with it until its
   * answer is over, however long that takes. Call the returned function once, when it is over.
   */
  use(): () => void {
    this.#users++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.#users--;
      if (this.#users === 0) this.#unused();
    };
  }

  /**
   * Run `fn` once no exchange uses this state: at once if none does. A reload retires the old
   * state this way (its copies are zeroed then), so an answer that arrives long after the
   * reload is still redacted of the value its request was swapped with.
   */
  whenUnused(fn: () => void): void {
    this.#onUnused = fn;
    if (this.#users === 0) this.#unused();
  }

  #unused(): void {
    const fn = this.#onUnused;
    this.#onUnused = null;
    fn?.();
  }

  /** Zero every byte this state copied out of the configuration. */
  dispose(): void {
    for (const b of this.#owned) b.fill(0);
    this.#owned.length = 0;
    this.#plans.clear();
    this.#outbound.clear();
    this.#foreign.clear();
    this.dlpMarker.fill(0);
  }
}
