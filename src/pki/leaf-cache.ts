// Per-host leaf certificates for TLS interception, minted on first use and cached.
// One P-256 leaf key is generated at start and reused for every leaf (as mitmproxy does): a
// mint is then one ECDSA signature over a DER template (leaf-der.ts), not a key generation. Leaves are short-lived, backdated a
// few minutes, carry exactly one SAN (the host) and EKU serverAuth, and are signed by the
// interception CA. The cache is an LRU with a cap; concurrent requests for one host share one
// in-flight mint; a leaf close to expiry is re-minted. Each leaf is charged to the agent whose
// CONNECT minted it, and one agent holds at most a share of the cache: past it, its own least
// recently used leaf goes, so an agent asking for ever-new names churns only its own leaves.
// With several event loops the proxy keeps one such cache in the main thread, signing; each
// loop's cache asks it for what it lacks (a `LeafSource`), so a host's leaf is minted once for
// the proxy and the interception CA's key stays in the main thread.
//
// It must never decide whether a host is allowed (policy does that before asking for a
// leaf), never canonicalise hosts itself beyond rejecting what cannot be a SAN, and never
// mint for the agent identity namespace or with clientAuth.

import { isIP } from "node:net";
import { createSecureContext, type SecureContext } from "node:tls";
import { derToPem, LeafTemplate } from "./leaf-der.ts";
import { PkiError } from "./pki-error.ts";
import {
  DAY_MS,
  exportPrivateKeyPem,
  generateP256KeyPair,
  importPrivateKeyPem,
  x509,
} from "./x509.ts";

/** What the leaf cache needs from the interception CA. */
export interface InterceptionIssuer {
  readonly cert: x509.X509Certificate;
  readonly certPem: string;
  readonly key: CryptoKey;
}

/** The interception CA as the leaf cache needs it, from its certificate and PKCS#8 key (PEM). */
export async function interceptionIssuer(
  certPem: string,
  keyPem: string,
): Promise<InterceptionIssuer> {
  return {
    cert: new x509.X509Certificate(certPem),
    certPem,
    key: await importPrivateKeyPem(keyPem),
  };
}

export interface LeafCacheOptions {
  /** Most leaves kept; the least recently used is dropped first. Default 1000. */
  readonly capacity?: number;
  /** Most leaves one owner's mints may hold. Default the capacity (no share). */
  readonly ownerCapacity?: number;
  /** Leaf lifetime from now. Default 24 h. */
  readonly validityMs?: number;
  /** notBefore = now − backdate, for peers with slow clocks. Default 5 min. */
  readonly backdateMs?: number;
  /** A cached leaf with less than this left is re-minted. Default 1 h. */
  readonly renewBeforeMs?: number;
  /** Build a node:tls SecureContext with each leaf. Default true. */
  readonly secureContext?: boolean;
  /** Clock, for tests. */
  readonly now?: () => number;
}

export interface MintedLeaf {
  readonly host: string;
  /** Leaf then interception CA, PEM: what node:tls `cert` takes. */
  readonly certChainPem: string;
  /** The shared leaf key, PKCS#8 PEM. */
  readonly keyPem: string;
  readonly notAfter: Date;
  readonly serial: string;
  /** Ready for `tls.TLSSocket`/`SNICallback`, when enabled. */
  readonly secureContext: SecureContext | undefined;
}

/** A leaf as a source hands it over: the SecureContext is built where it is used. */
export interface LeafMaterial {
  readonly certChainPem: string;
  readonly notAfter: Date;
  readonly serial: string;
  /** Signed for this request (false: the source had it cached). */
  readonly minted: boolean;
}

/** Where a cache gets the leaves it lacks: its own signature, or the proxy's shared cache. */
export interface LeafSource {
  /** The one key every leaf it hands out certifies, PKCS#8 PEM. */
  readonly keyPem: string;
  leaf(host: string, owner: string): Promise<LeafMaterial>;
}

export interface LeafCacheStats {
  readonly hits: number;
  readonly misses: number;
  /** Requests that joined a mint already in flight for the same host. */
  readonly joined: number;
  readonly mints: number;
  readonly evictions: number;
  readonly size: number;
  readonly inFlight: number;
}

const DNS_LABEL = "[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?";
const DNS_NAME_RE = new RegExp(`^(?=.{1,253}$)${DNS_LABEL}(\\.${DNS_LABEL})*$`);

interface Entry {
  readonly leaf: MintedLeaf;
  readonly owner: string;
}

export class LeafCache {
  private readonly cache = new Map<string, Entry>();
  /** How many cached leaves each owner's mints hold. */
  private readonly owned = new Map<string, number>();
  private readonly ownerCapacity: number;
  private readonly inFlight = new Map<string, Promise<MintedLeaf>>();
  private readonly capacity: number;
  private readonly renewBeforeMs: number;
  private readonly withContext: boolean;
  private readonly now: () => number;
  private counters = { hits: 0, misses: 0, joined: 0, mints: 0, evictions: 0 };
  readonly keyPem: string;

  /** A cache over `source`; `LeafCache.create` is one that signs its own. */
  constructor(
    private readonly source: LeafSource,
    options: LeafCacheOptions = {},
  ) {
    this.keyPem = source.keyPem;
    this.capacity = options.capacity ?? 1000;
    this.ownerCapacity = options.ownerCapacity ?? this.capacity;
    this.renewBeforeMs = options.renewBeforeMs ?? 60 * 60_000;
    this.withContext = options.secureContext ?? true;
    this.now = options.now ?? Date.now;
    if (!Number.isInteger(this.capacity) || this.capacity < 1) {
      throw new PkiError("bad-argument", "leaf cache capacity must be a positive integer");
    }
    if (!Number.isInteger(this.ownerCapacity) || this.ownerCapacity < 1) {
      throw new PkiError("bad-argument", "leaf cache ownerCapacity must be a positive integer");
    }
    if (this.renewBeforeMs >= (options.validityMs ?? DAY_MS)) {
      throw new PkiError("bad-argument", "leaf renewBeforeMs must be shorter than validityMs");
    }
  }

  /** Generates the shared leaf key and returns an empty cache that signs its own leaves. */
  static async create(
    issuer: InterceptionIssuer,
    options: LeafCacheOptions = {},
  ): Promise<LeafCache> {
    return new LeafCache(await LeafSigner.create(issuer, options), options);
  }

  /** The cache as a source for another's (a Worker loop's): its leaves without contexts. */
  asSource(): LeafSource {
    return {
      keyPem: this.keyPem,
      leaf: async (host, owner) => {
        // What `get` does next is decided now: a leaf cached or in flight is not minted for it.
        const minted = !this.has(host);
        const l = await this.get(host, owner);
        return { certChainPem: l.certChainPem, notAfter: l.notAfter, serial: l.serial, minted };
      },
    };
  }

  /** Whether `host` has a leaf without a mint: cached and fresh, or one in flight. */
  has(host: string): boolean {
    return this.fresh(host) !== undefined || this.inFlight.has(host);
  }

  /**
   * The leaf for `host` (a canonical host: lower-case DNS name without trailing dot, dotted
   * IPv4, or IPv6 without brackets); a mint is charged to `owner`.
   */
  get(host: string, owner = ""): Promise<MintedLeaf> {
    const cached = this.fresh(host);
    if (cached) {
      this.counters.hits++;
      // Re-insert: Map order is the LRU order.
      this.cache.delete(host);
      this.cache.set(host, cached);
      return Promise.resolve(cached.leaf);
    }
    const pending = this.inFlight.get(host);
    if (pending) {
      this.counters.joined++;
      return pending;
    }
    this.counters.misses++;
    const mint = this.mint(host, owner).then(
      (leaf) => {
        this.inFlight.delete(host);
        this.remove(host);
        if ((this.owned.get(owner) ?? 0) >= this.ownerCapacity) this.evictOldestOf(owner);
        this.cache.set(host, { leaf, owner });
        this.owned.set(owner, (this.owned.get(owner) ?? 0) + 1);
        while (this.cache.size > this.capacity) {
          this.remove(this.cache.keys().next().value as string);
          this.counters.evictions++;
        }
        return leaf;
      },
      (err: unknown) => {
        this.inFlight.delete(host);
        throw err;
      },
    );
    this.inFlight.set(host, mint);
    return mint;
  }

  stats(): LeafCacheStats {
    return { ...this.counters, size: this.cache.size, inFlight: this.inFlight.size };
  }

  /** Drops every cached leaf (e.g. after the interception CA was replaced). */
  clear(): void {
    this.cache.clear();
    this.owned.clear();
  }

  private fresh(host: string): Entry | undefined {
    const e = this.cache.get(host);
    return e && e.leaf.notAfter.getTime() - this.now() > this.renewBeforeMs ? e : undefined;
  }

  private remove(host: string): void {
    const e = this.cache.get(host);
    if (!e) return;
    this.cache.delete(host);
    const n = (this.owned.get(e.owner) ?? 1) - 1;
    if (n > 0) this.owned.set(e.owner, n);
    else this.owned.delete(e.owner);
  }

  /** The owner's least recently used leaf goes (the walk is bounded by the cache's size). */
  private evictOldestOf(owner: string): void {
    for (const [host, e] of this.cache) {
      if (e.owner !== owner) continue;
      this.remove(host);
      this.counters.evictions++;
      return;
    }
  }

  private async mint(host: string, owner: string): Promise<MintedLeaf> {
    const m = await this.source.leaf(host, owner);
    if (m.minted) this.counters.mints++;
    const secureContext = this.withContext
      ? createSecureContext({ cert: m.certChainPem, key: this.keyPem, minVersion: "TLSv1.2" })
      : undefined;
    return {
      host,
      certChainPem: m.certChainPem,
      keyPem: this.keyPem,
      notAfter: m.notAfter,
      serial: m.serial,
      secureContext,
    };
  }
}

/** Signs leaves with the interception CA over one shared leaf key (leaf-der.ts). */
export class LeafSigner implements LeafSource {
  private readonly validityMs: number;
  private readonly backdateMs: number;
  private readonly now: () => number;

  private constructor(
    private readonly issuer: InterceptionIssuer,
    private readonly template: LeafTemplate,
    readonly keyPem: string,
    options: Pick<LeafCacheOptions, "validityMs" | "backdateMs" | "now">,
  ) {
    this.validityMs = options.validityMs ?? DAY_MS;
    this.backdateMs = options.backdateMs ?? 5 * 60_000;
    this.now = options.now ?? Date.now;
  }

  /** Generates the shared leaf key. */
  static async create(
    issuer: InterceptionIssuer,
    options: Pick<LeafCacheOptions, "validityMs" | "backdateMs" | "now"> = {},
  ): Promise<LeafSigner> {
    const keys = await generateP256KeyPair();
    const keyId = issuer.cert.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId;
    const template = new LeafTemplate({
      issuerNameDer: new Uint8Array(issuer.cert.subjectName.toArrayBuffer()),
      issuerKeyId: keyId ? Uint8Array.from(Buffer.from(keyId, "hex")) : undefined,
      leafSpkiDer: new Uint8Array(await crypto.subtle.exportKey("spki", keys.publicKey)),
      issuerKey: issuer.key,
    });
    return new LeafSigner(issuer, template, await exportPrivateKeyPem(keys.privateKey), options);
  }

  async leaf(host: string): Promise<LeafMaterial> {
    const ipVersion = isIP(host);
    if (ipVersion === 0 && !DNS_NAME_RE.test(host)) {
      throw new PkiError("bad-host", "host is not a canonical DNS name or IP address");
    }
    const now = this.now();
    const notAfter = new Date(Math.min(now + this.validityMs, this.issuer.cert.notAfter.getTime()));
    const { der, serial } = await this.template.mint({
      host,
      kind: ipVersion === 0 ? "dns" : "ip",
      notBefore: new Date(now - this.backdateMs),
      notAfter,
    });
    return { certChainPem: derToPem(der) + this.issuer.certPem, notAfter, serial, minted: true };
  }
}
