// Benchmark of the certificate work on the interception path: minting a per-host leaf on
// first use (with and without building the node:tls SecureContext), a cached lookup, and the
// per-handshake agent identity check — beside the floor they are judged against in the same
// run: one bare ECDSA P-256 signature and one bare createSecureContext.
// Run: `bun bench/pki.bench.ts`. It prints timings only, never key material.

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createSecureContext } from "node:tls";
import { bench, group, run } from "mitata";
import {
  AgentIdentityCache,
  deriveAgentIdentity,
  interceptionCaMarker,
} from "../src/pki/agent-identity.ts";
import { EmbeddedCa } from "../src/pki/embedded-ca.ts";
import { LeafCache } from "../src/pki/leaf-cache.ts";
import { P256_ALGORITHM, x509 } from "../src/pki/x509.ts";

const dir = await mkdtemp(join(tmpdir(), "slapenir-bench-pki-"));
const ca = await EmbeddedCa.open({ home: join(dir, "home") });
const agent = await ca.issueAgentCert("bench-agent");
const agentDer = new Uint8Array(new x509.X509Certificate(agent.certPem).rawData);
const rules = {
  interceptionCa: interceptionCaMarker(ca.interception.cert),
  deniedAgents: new Set<string>(),
  deniedSerials: new Set<string>(),
  deniedFingerprints: new Set<string>(),
  now: new Date(),
};

const identityCache = new AgentIdentityCache();
const withContext = await LeafCache.create(ca.interception, { capacity: 1_000_000 });
const withoutContext = await LeafCache.create(ca.interception, {
  capacity: 1_000_000,
  secureContext: false,
});
const warm = await LeafCache.create(ca.interception);
await warm.get("cached.example.com");
const sample = await warm.get("cached.example.com");
const tbs = new Uint8Array(350).fill(7); // about the size of a leaf's to-be-signed part

let n = 0;
// Warm the JIT on the mint path so the first benchmark is not charged for compilation.
for (let i = 0; i < 300; i++) await withoutContext.get(`warm${i}.example.com`);
group("leaf certificates", () => {
  bench("floor: one ECDSA P-256 sign (WebCrypto)", async () => {
    await crypto.subtle.sign(P256_ALGORITHM, ca.interception.key, tbs);
  });
  bench("floor: createSecureContext (leaf chain + key)", () => {
    createSecureContext({ cert: sample.certChainPem, key: sample.keyPem });
  });
  bench("first mint, certificate only", async () => {
    await withoutContext.get(`h${n++}.example.com`);
  });
  bench("first mint + SecureContext", async () => {
    await withContext.get(`h${n++}.example.com`);
  });
  bench("cached lookup (hit)", async () => {
    await warm.get("cached.example.com");
  });
});

group("agent identity", () => {
  bench("deriveAgentIdentity: parse + decide (first connection with a certificate)", () => {
    deriveAgentIdentity(agentDer, rules);
  });
  bench("AgentIdentityCache.derive: hash + decide (later connections)", () => {
    identityCache.derive(agentDer, rules);
  });
});

await run();
await rm(dir, { recursive: true, force: true });
