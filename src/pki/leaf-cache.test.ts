import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { EmbeddedCa } from "./embedded-ca.ts";
import { LeafCache } from "./leaf-cache.ts";
import { PkiError } from "./pki-error.ts";
import { DAY_MS, OID_SERVER_AUTH, x509 } from "./x509.ts";

let dir: string;
let ca: EmbeddedCa;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "slapenir-leaf-"));
  ca = await EmbeddedCa.open({ home: join(dir, "home") });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function pemCerts(chain: string): x509.X509Certificate[] {
  return x509.PemConverter.decode(chain).map((der) => new x509.X509Certificate(der));
}

describe("minting", () => {
  test("a DNS leaf: one SAN, serverAuth, 24 h, backdated, chain leaf + interception CA", async () => {
    const cache = await LeafCache.create(ca.interception, { secureContext: false });
    const before = Date.now();
    const leaf = await cache.get("api.example.com");
    const [cert, issuer, ...rest] = pemCerts(leaf.certChainPem);
    expect(rest).toEqual([]);
    expect(issuer!.subject).toBe(ca.interception.cert.subject);
    expect(
      await cert!.verify({ publicKey: ca.interception.cert.publicKey, signatureOnly: true }),
    ).toBe(true);
    expect(cert!.issuer).toBe(ca.interception.cert.subject);
    const san = cert!.getExtension(x509.SubjectAlternativeNameExtension)!;
    expect(san.names.items.map((g) => g.toJSON())).toEqual([
      { type: "dns", value: "api.example.com" },
    ]);
    expect(cert!.getExtension(x509.ExtendedKeyUsageExtension)?.usages.map(String)).toEqual([
      OID_SERVER_AUTH,
    ]);
    expect(cert!.getExtension(x509.BasicConstraintsExtension)?.ca).toBe(false);
    const lifetime = cert!.notAfter.getTime() - before;
    expect(lifetime).toBeGreaterThan(DAY_MS - 60_000);
    expect(lifetime).toBeLessThanOrEqual(DAY_MS + 1_000);
    expect(cert!.notBefore.getTime()).toBeLessThan(before - 60_000);
    expect(leaf.keyPem).toStartWith("-----BEGIN PRIVATE KEY-----");
    expect(leaf.secureContext).toBeUndefined();
  });

  test("IP literals get an IP SAN", async () => {
    const cache = await LeafCache.create(ca.interception, { secureContext: false });
    for (const host of ["10.0.0.7", "2001:db8::1"]) {
      const [cert] = pemCerts((await cache.get(host)).certChainPem);
      const san = cert!.getExtension(x509.SubjectAlternativeNameExtension)!;
      expect(san.names.items.map((g) => g.type)).toEqual(["ip"]);
    }
  });

  test("every leaf shares the one leaf key", async () => {
    const cache = await LeafCache.create(ca.interception, { secureContext: false });
    const a = await cache.get("a.example");
    const b = await cache.get("b.example");
    expect(a.keyPem).toBe(b.keyPem);
    const [ca1] = pemCerts(a.certChainPem);
    const [cb1] = pemCerts(b.certChainPem);
    expect(Buffer.from(ca1!.publicKey.rawData)).toEqual(Buffer.from(cb1!.publicKey.rawData));
    expect(a.serial).not.toBe(b.serial);
  });

  test("hosts that cannot be a SAN are refused", async () => {
    const cache = await LeafCache.create(ca.interception, { secureContext: false });
    for (const bad of [
      "",
      "Upper.example",
      "a..b",
      "-x.example",
      "exa mple.com",
      "x".repeat(254),
      "a/b",
    ]) {
      await expect(cache.get(bad)).rejects.toBeInstanceOf(PkiError);
    }
    expect(cache.stats().size).toBe(0);
    expect(cache.stats().inFlight).toBe(0);
  });
});

describe("cache", () => {
  test("hits and misses are counted; a hit returns the same leaf", async () => {
    const cache = await LeafCache.create(ca.interception, { secureContext: false });
    const first = await cache.get("h.example");
    const second = await cache.get("h.example");
    expect(second).toBe(first);
    expect(cache.stats()).toEqual({
      hits: 1,
      misses: 1,
      joined: 0,
      mints: 1,
      evictions: 0,
      size: 1,
      inFlight: 0,
    });
  });

  test("concurrent requests for one host share one mint (single-flight)", async () => {
    const cache = await LeafCache.create(ca.interception, { secureContext: false });
    const leaves = await Promise.all(Array.from({ length: 50 }, () => cache.get("same.example")));
    expect(new Set(leaves).size).toBe(1);
    expect(cache.stats()).toMatchObject({ misses: 1, joined: 49, mints: 1, size: 1, inFlight: 0 });
  });

  test("LRU: the least recently used host is evicted at the cap", async () => {
    const cache = await LeafCache.create(ca.interception, { capacity: 3, secureContext: false });
    const a = await cache.get("a.example");
    await cache.get("b.example");
    await cache.get("c.example");
    expect(await cache.get("a.example")).toBe(a); // a is now most recent; b is oldest
    await cache.get("d.example");
    expect(cache.stats()).toMatchObject({ size: 3, evictions: 1, mints: 4 });
    expect(await cache.get("a.example")).toBe(a);
    await cache.get("b.example"); // evicted before: minted again
    expect(cache.stats()).toMatchObject({ mints: 5, evictions: 2 });
  });

  test("an owner asking for ever-new names churns only its own leaves", async () => {
    const cache = await LeafCache.create(ca.interception, {
      capacity: 8,
      ownerCapacity: 3,
      secureContext: false,
    });
    const kept = [];
    for (const h of ["a.example", "b.example", "c.example"])
      kept.push(await cache.get(h, "agent-b"));
    for (let i = 0; i < 100; i++) await cache.get(`n${i}.flood.example`, "agent-a");
    // agent-b's leaves are all still there: hits, not mints.
    const mints = cache.stats().mints;
    for (const [i, h] of ["a.example", "b.example", "c.example"].entries())
      expect(await cache.get(h, "agent-b")).toBe(kept[i]!);
    expect(cache.stats().mints).toBe(mints);
    expect(cache.stats().size).toBe(6);
    // agent-a holds its last three, in LRU order.
    expect(cache.has("n99.flood.example") && cache.has("n97.flood.example")).toBe(true);
    expect(cache.has("n96.flood.example")).toBe(false);
    // A host another owner minted is a hit for anyone, and stays charged to its minter.
    await cache.get("a.example", "agent-a");
    expect(cache.has("n97.flood.example")).toBe(true);
  });

  test("has: a fresh cached leaf or one being minted needs no mint", async () => {
    const cache = await LeafCache.create(ca.interception, { secureContext: false });
    expect(cache.has("h.example")).toBe(false);
    const pending = cache.get("h.example");
    expect(cache.has("h.example")).toBe(true);
    await pending;
    expect(cache.has("h.example")).toBe(true);
    cache.clear();
    expect(cache.has("h.example")).toBe(false);
  });

  test("a leaf close to expiry is re-minted", async () => {
    let now = Date.now();
    const cache = await LeafCache.create(ca.interception, {
      secureContext: false,
      validityMs: 10 * 60_000,
      renewBeforeMs: 2 * 60_000,
      now: () => now,
    });
    const first = await cache.get("r.example");
    now += 7 * 60_000;
    expect(await cache.get("r.example")).toBe(first);
    now += 2 * 60_000; // 1 minute left < renewBefore
    const second = await cache.get("r.example");
    expect(second).not.toBe(first);
    expect(second.notAfter.getTime()).toBeGreaterThan(first.notAfter.getTime());
    expect(cache.stats()).toMatchObject({ mints: 2, size: 1 });
  });

  test("options are validated", async () => {
    await expect(LeafCache.create(ca.interception, { capacity: 0 })).rejects.toBeInstanceOf(
      PkiError,
    );
    await expect(
      LeafCache.create(ca.interception, { validityMs: 60_000, renewBeforeMs: 60_000 }),
    ).rejects.toBeInstanceOf(PkiError);
    await expect(LeafCache.create(ca.interception, { ownerCapacity: 0.5 })).rejects.toThrow(
      "ownerCapacity",
    );
  });
});

describe("caches over the proxy's one cache (several event loops)", () => {
  test("a host's leaf is minted once: every cache over the shared one gets the same leaf", async () => {
    const shared = await LeafCache.create(ca.interception, { secureContext: false });
    const [a, b] = [new LeafCache(shared.asSource()), new LeafCache(shared.asSource())];
    const [la, lb] = await Promise.all([
      a.get("s.example", "agent-a"),
      b.get("s.example", "agent-b"),
    ]);
    expect(la.serial).toBe(lb.serial);
    expect(la.certChainPem).toBe(lb.certChainPem);
    expect(la.keyPem).toBe(shared.keyPem);
    expect(shared.stats()).toMatchObject({ mints: 1, size: 1 });
    // The signature is counted where it was made; each cache counts its own miss.
    expect(a.stats().mints + b.stats().mints).toBe(1);
    expect(a.stats().misses).toBe(1);
    expect(b.stats().misses).toBe(1);
    // Each builds its own context for its handshakes.
    expect(la.secureContext).toBeDefined();
    expect(lb.secureContext).not.toBe(la.secureContext);
  });

  test("what the shared cache refuses, every cache over it refuses", async () => {
    const shared = await LeafCache.create(ca.interception, { secureContext: false });
    const a = new LeafCache(shared.asSource());
    await expect(a.get("not a host")).rejects.toBeInstanceOf(PkiError);
    expect(a.stats().size).toBe(0);
  });

  test("a leaf the shared cache renewed reaches a cache over it once its own is close to expiry", async () => {
    let now = Date.now();
    const clock = { validityMs: 10 * 60_000, renewBeforeMs: 2 * 60_000, now: () => now };
    const shared = await LeafCache.create(ca.interception, { secureContext: false, ...clock });
    const a = new LeafCache(shared.asSource(), { secureContext: false, ...clock });
    const first = await a.get("r.example");
    now += 9 * 60_000;
    const second = await a.get("r.example");
    expect(second.serial).not.toBe(first.serial);
    expect(shared.stats().mints).toBe(2);
  });
});

describe("real TLS handshake on loopback", () => {
  test("a client trusting only ca-bundle.pem accepts minted leaves, with hostname checks", async () => {
    const cache = await LeafCache.create(ca.interception);
    const server = tls.createServer(
      {
        ALPNProtocols: ["http/1.1"],
        minVersion: "TLSv1.2",
        SNICallback: (name, cb) => {
          cache.get(name).then(
            (leaf) => cb(null, leaf.secureContext),
            (err: Error) => cb(err),
          );
        },
      },
      (socket) => socket.end("hello"),
    );
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as AddressInfo).port;
    const connect = (servername: string, checkAs?: string) =>
      new Promise<{ ok: boolean; alpn?: string | false | null; data?: string }>((resolve) => {
        const socket = tls.connect({
          host: "127.0.0.1",
          port,
          servername,
          ca: ca.caBundlePem,
          ALPNProtocols: ["http/1.1"],
          ...(checkAs
            ? {
                checkServerIdentity: (_h: string, cert: tls.PeerCertificate) =>
                  tls.checkServerIdentity(checkAs, cert),
              }
            : {}),
        });
        let data = "";
        socket.on("data", (d) => {
          data += d;
        });
        socket.on("end", () => resolve({ ok: true, alpn: socket.alpnProtocol, data }));
        socket.on("error", () => resolve({ ok: false }));
      });
    try {
      for (let i = 0; i < 5; i++) {
        expect(await connect("api.example.com")).toEqual({
          ok: true,
          alpn: "http/1.1",
          data: "hello",
        });
      }
      expect(cache.stats()).toMatchObject({ mints: 1, hits: 4 });
      // A leaf for one host is refused as another host.
      expect(await connect("api.example.com", "evil.example")).toEqual({ ok: false });
    } finally {
      server.close();
    }
  });
});
