// Child process for bench/proxy-tail.bench.ts: the smallest TLS-in-TLS responder — mTLS outer
// listener, CONNECT answered 200, inner TLS with a minted leaf, then for each request (head +
// 100 000-byte body, counted, not parsed) a fixed 100 KB answer. Prints its port and file paths
// as one JSON line. Benchmark use only.

import tls from "node:tls";
import { EmbeddedCa } from "../src/pki/embedded-ca.ts";
import { LeafCache } from "../src/pki/leaf-cache.ts";

const home = process.argv[2]!;
const ca = await EmbeddedCa.open({ home });
const agent = await ca.issueAgentCert("bench");
const leaf = await (await LeafCache.create(ca.interception)).get("localhost");
const answer = Buffer.concat([
  Buffer.from("HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n"),
  Buffer.alloc(100_000, 0x62),
]);
const server = tls.createServer(
  {
    key: ca.server.keyPem,
    cert: ca.server.certPem,
    ca: ca.root.certPem,
    requestCert: true,
    rejectUnauthorized: true,
  },
  (outer) => {
    let head = "";
    const onConnect = (d: Buffer) => {
      head += d.toString("latin1");
      if (!head.includes("\r\n\r\n")) return;
      outer.off("data", onConnect);
      outer.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      const inner = new tls.TLSSocket(outer, {
        isServer: true,
        secureContext: leaf.secureContext!,
      });
      let req = "";
      let got = -1;
      inner.on("data", (chunk: Buffer) => {
        if (got < 0) {
          req += chunk.toString("latin1");
          const end = req.indexOf("\r\n\r\n");
          if (end < 0) return;
          got = Buffer.byteLength(req.slice(end + 4), "latin1");
        } else {
          got += chunk.length;
        }
        if (got >= 100_000) {
          got = -1;
          req = "";
          inner.write(answer);
        }
      });
    };
    outer.on("data", onConnect);
  },
);
server.listen(0, "127.0.0.1", () => {
  const port = (server.address() as { port: number }).port;
  process.stdout.write(
    `${JSON.stringify({ port, caBundlePath: ca.caBundlePath, certPath: agent.certPath, keyPath: agent.keyPath })}\n`,
  );
});
