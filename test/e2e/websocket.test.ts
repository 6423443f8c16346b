// WebSocket through the real proxy (issue 17, first part): the handshake goes on like any
// request (its head scanned, the dummy swapped on the credential's surface, no extension
// offered upstream), then every frame is read, scanned and written again. A WebSocket server
// (Bun's, over TLS) echoes and, when asked, sends a real value; a raw agent drives frames by
// hand so each rule is tried exactly.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type tls from "node:tls";
import { constants, deflateRawSync } from "node:zlib";
import { CLOSE, closePayload, encodeFrame, OP, readClose } from "../../src/http/ws-frames.ts";
import { startForwarder } from "../support/agent-forwarder.ts";
import { carries } from "../support/hostile-oracle.ts";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { closeTunnel, openTunnel, readHead } from "../support/raw-agent.ts";
import { contextDeflater, wsAgent } from "../support/ws-agent.ts";
import { ok101, type RawWsUpstream, startRawWsUpstream } from "../support/ws-raw-upstream.ts";

const CRED = {
  name: "wstok",
  dummy: "ws-dummy-00000000000000001",
  real: "ws-R3aL-secret-000000000001",
};
const enc = new TextEncoder();

let h: Harness;
let server: ReturnType<typeof Bun.serve>;
const handshakes: Headers[] = [];

beforeAll(async () => {
  h = await startHarness({
    credentials: [{ ...CRED, hosts: ["ws.test:*"] }],
    allow: ["ws.test:*"],
    names: ["ws.test"],
    env: { SLAPENIR_WS_MAX_MESSAGE_BYTES: String(4 * 1024 * 1024) },
  });
  const cert = await h.upstreamCa.issue(["ws.test"]);
  server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    tls: { cert: cert.certPem, key: cert.keyPem },
    fetch(req, srv) {
      handshakes.push(req.headers);
      if (srv.upgrade(req, { data: undefined })) return undefined;
      return new Response("not a websocket", { status: 400 });
    },
    websocket: {
      message(ws, m) {
        const text = typeof m === "string" ? m : new TextDecoder().decode(m);
        if (text === "plant") ws.send(`here it is: ${CRED.real} (again: ${CRED.real})`);
        else if (text === "plant-binary") ws.send(enc.encode(`bin ${CRED.real}`));
        else if (text === "ping-me") ws.ping(enc.encode(CRED.real));
        else if (text === "close-me") ws.close(4000, `bye ${CRED.real}`);
        else ws.send(m);
      },
      perMessageDeflate: true,
    },
  });
});

afterAll(async () => {
  server?.stop(true);
  await h?.close();
});

/** A tunnel with a completed handshake to the echo server (test/support/ws-agent.ts). */
const connect = (extra = "") =>
  wsAgent(h, {
    target: `ws.test:${server.port}`,
    extra: `Authorization: Bearer ${CRED.dummy}\r\n${extra}`,
  });

/** A client program run as the agent: its exit code, stderr and one JSON line of output. */
async function runClient(cmd: string[], env: Record<string, string>) {
  await using p = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe", env });
  const [out, err, code] = await Promise.all([
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  return { out, err, code };
}

describe("the handshake", () => {
  test("goes on as a request: 101, the dummy swapped on its surface; permessage-deflate negotiated on each leg on the proxy's terms", async () => {
    const before = handshakes.length;
    const c = await connect();
    try {
      expect(c.head).toStartWith("HTTP/1.1 101");
      expect(c.head.toLowerCase()).toContain("upgrade: websocket");
      expect(c.head.toLowerCase()).toContain("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=");
      // The agent keeps its compression context if it likes; the proxy keeps none of its own.
      expect(c.head.toLowerCase()).toContain(
        "sec-websocket-extensions: permessage-deflate; server_no_context_takeover\r\n",
      );
      const seen = handshakes[before]!;
      expect(seen.get("authorization")).toBe(`Bearer ${CRED.real}`);
      // The proxy's offer, not the agent's: the upstream may keep its context.
      expect(seen.get("sec-websocket-extensions")).toBe(
        "permessage-deflate; client_no_context_takeover",
      );
      expect(carries(c.head, CRED.real)).toBe(false);
    } finally {
      closeTunnel(c.t);
    }
  });

  test("h2c and other protocols are still refused; a handshake without a valid key is 400", async () => {
    const t = await openTunnel(
      { port: h.port, caBundlePath: h.caBundlePath, agent: h.agents["agent-a"]! },
      { connect: `ws.test:${server.port}` },
    );
    try {
      t.write(
        `GET / HTTP/1.1\r\nHost: ws.test:${server.port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n`,
      );
      expect(await readHead(t)).toStartWith("HTTP/1.1 400");
    } finally {
      closeTunnel(t);
    }
  });
});

describe("frames", () => {
  test("an echo, text and binary, fragmented with a ping between the fragments", async () => {
    const c = await connect();
    try {
      c.send(OP.text, "hello ");
      expect(new TextDecoder().decode((await c.next())!.payload)).toBe("hello ");
      c.send(OP.binary, new Uint8Array([0, 1, 2, 255]));
      expect([...(await c.next())!.payload]).toEqual([0, 1, 2, 255]);
      c.send(OP.text, "frag", false);
      c.send(OP.ping, "p?");
      c.send(OP.continuation, "mented");
      const pong = await c.next();
      expect([pong?.opcode, new TextDecoder().decode(pong!.payload)]).toEqual([OP.pong, "p?"]);
      const echo = await c.next();
      expect([echo?.opcode, echo?.fin, new TextDecoder().decode(echo!.payload)]).toEqual([
        OP.text,
        true,
        "fragmented",
      ]);
    } finally {
      closeTunnel(c.t);
    }
  });

  test("a real value the upstream sends — text, binary, ping payload, close reason — reaches the agent redacted", async () => {
    const c = await connect();
    try {
      c.send(OP.text, "plant");
      const text = await c.next();
      expect(new TextDecoder().decode(text!.payload)).toBe(
        "here it is: [REDACTED] (again: [REDACTED])",
      );
      c.send(OP.text, "plant-binary");
      expect(new TextDecoder().decode((await c.next())!.payload)).toBe("bin [REDACTED]");
      c.send(OP.text, "ping-me");
      const ping = await c.next();
      expect([ping?.opcode, new TextDecoder().decode(ping!.payload)]).toEqual([
        OP.ping,
        "[REDACTED]",
      ]);
      c.send(OP.text, "close-me");
      const close = await c.next();
      expect(close?.opcode).toBe(OP.close);
      expect(readClose(close!.payload)).toEqual({ code: 4000, reason: "bye [REDACTED]" });
      for (const f of c.frames) expect(carries(f.payload, CRED.real)).toBe(false);
    } finally {
      closeTunnel(c.t);
    }
  });

  test("a real value the agent sends closes both sides with 1008 and is a violation", async () => {
    const c = await connect();
    try {
      c.send(OP.text, `leak ${CRED.real}`);
      const close = await c.next();
      expect(close?.opcode).toBe(OP.close);
      expect(readClose(close!.payload).code).toBe(CLOSE.policyViolation);
      await c.untilClosed();
      const v = await h.auditWhere((l) => l.evt === "violation" && l.kind === "dlp");
      expect(v.length).toBeGreaterThan(0);
    } finally {
      closeTunnel(c.t);
    }
  });

  test("an unmasked frame from the agent closes it with 1002; the close is audited", async () => {
    const c = await connect();
    try {
      c.t.write(Buffer.from(encodeFrame({ fin: true, opcode: OP.text }, enc.encode("no mask"))));
      const close = await c.next();
      expect(readClose(close!.payload).code).toBe(CLOSE.protocolError);
      await c.untilClosed();
      const lines = await h.auditWhere(
        (l) => l.evt === "websocket" && l.agentClose === CLOSE.protocolError,
      );
      expect(lines.length).toBeGreaterThan(0);
    } finally {
      closeTunnel(c.t);
    }
  });

  test("a clean close from the agent is answered by the upstream's", async () => {
    const c = await connect();
    try {
      c.send(OP.close, closePayload(1000, "done"));
      const close = await c.next();
      expect(readClose(close!.payload).code).toBe(1000);
      await c.untilClosed();
    } finally {
      closeTunnel(c.t);
    }
  });
});

describe("real clients", () => {
  test.each([
    ["on", "1", "permessage-deflate"],
    ["off", "0", ""],
  ])(
    "Node with the ws package, permessage-deflate %s: a conversation, the real value redacted",
    async (_, deflate, extensions) => {
      const a = h.agents["agent-a"]!;
      const { out, err, code } = await runClient(
        [
          "node",
          join(import.meta.dir, "../fixtures/ws-node-client.mjs"),
          `wss://ws.test:${server.port}/chat`,
          `https://localhost:${h.port}`,
          a.certPath,
          a.keyPath,
          h.caBundlePath,
          `Bearer ${CRED.dummy}`,
          "hello from node",
          "plant",
          `big ${"x".repeat(20_000)}`,
        ],
        { PATH: process.env.PATH ?? "", WS_DEFLATE: deflate },
      );
      expect({ code, err }).toEqual({ code: 0, err: "" });
      expect(JSON.parse(out)).toEqual({
        got: [
          "hello from node",
          "here it is: [REDACTED] (again: [REDACTED])",
          `big ${"x".repeat(20_000)}`,
        ],
        code: 1000,
        // With it on, the agent's messages and the proxy's own are compressed both ways.
        extensions,
      });
      expect(carries(out, CRED.real)).toBe(false);
    },
  );

  test("Node's ws on both ends, the server keeping its compression context: every message inflated in it, the real value redacted wherever it repeats", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ws-node-server-"));
    const cert = await h.upstreamCa.issue(["ws.test"]);
    await Bun.write(join(dir, "cert.pem"), cert.certPem);
    await Bun.write(join(dir, "key.pem"), cert.keyPem);
    await using upstream = Bun.spawn(
      [
        "node",
        join(import.meta.dir, "../fixtures/ws-node-server.mjs"),
        join(dir, "cert.pem"),
        join(dir, "key.pem"),
        CRED.real,
      ],
      { stdout: "pipe", stderr: "inherit", env: { PATH: process.env.PATH ?? "" } },
    );
    try {
      const reader = upstream.stdout.getReader();
      const first = await reader.read();
      const port = Number(new TextDecoder().decode(first.value).trim());
      reader.releaseLock();
      const a = h.agents["agent-a"]!;
      const { out, err, code } = await runClient(
        [
          "node",
          join(import.meta.dir, "../fixtures/ws-node-client.mjs"),
          `wss://ws.test:${port}/chat`,
          `https://localhost:${h.port}`,
          a.certPath,
          a.keyPath,
          h.caBundlePath,
          `Bearer ${CRED.dummy}`,
          "who",
          "plant",
          "x".repeat(5_000),
        ],
        { PATH: process.env.PATH ?? "", WS_EXPECT: "4" },
      );
      expect({ code, err }).toEqual({ code: 0, err: "" });
      const got = JSON.parse(out);
      // The proxy's offer reached the server: it may keep its context, the proxy keeps none.
      expect(got.got[0]).toBe("extensions offered: permessage-deflate; client_no_context_takeover");
      expect(got.got.slice(1)).toEqual([
        "here it is: [REDACTED] (again: [REDACTED])",
        "and once more: [REDACTED]",
        "x".repeat(5_000),
      ]);
      expect(got.extensions).toBe("permessage-deflate");
      expect(carries(out, CRED.real)).toBe(false);
    } finally {
      upstream.kill();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("Bun", () => {
  test("Bun's own WebSocket through the proxy (an HTTPS proxy with a client certificate): a conversation, the real value redacted", async () => {
    const a = h.agents["agent-a"]!;
    const ca = readFileSync(h.caBundlePath, "utf8");
    const ws = new WebSocket(`wss://ws.test:${server.port}/chat`, {
      headers: { authorization: `Bearer ${CRED.dummy}` },
      tls: { ca },
      proxy: {
        url: `https://localhost:${h.port}`,
        headers: {},
        tls: { ca, cert: readFileSync(a.certPath, "utf8"), key: readFileSync(a.keyPath, "utf8") },
      },
    } as unknown as string[]);
    const got: string[] = [];
    const closed = new Promise<number>((ok, fail) => {
      ws.onmessage = (e) => {
        got.push(String(e.data));
        if (got.length === 2) ws.close(1000, "done");
      };
      ws.onclose = (e) => ok(e.code);
      ws.onerror = () => fail(new Error("websocket error"));
    });
    await new Promise<void>((ok, fail) => {
      ws.onopen = () => ok();
      setTimeout(() => fail(new Error("not opened")), 10_000).unref?.();
    });
    ws.send("hello from bun");
    ws.send("plant");
    expect(await closed).toBe(1000);
    expect(got).toEqual(["hello from bun", "here it is: [REDACTED] (again: [REDACTED])"]);
  });
});

describe("Python", () => {
  // Debian's python3-websockets (scripts/install-test-deps.sh), in the system interpreter.
  const PYTHON = "/usr/bin/python3";
  const have = Bun.spawnSync([PYTHON, "-c", "import websockets"]).exitCode === 0;
  if (!have && process.env.CI) throw new Error("missing python3-websockets in CI");
  if (!have) console.warn("SKIP: /usr/bin/python3 cannot import websockets");

  test.skipIf(!have)(
    "websockets through the agent's forwarder, deflate offered: a conversation, the real value redacted",
    async () => {
      const home = mkdtempSync(join(tmpdir(), "slapenir-wspy-"));
      const fwd = await startForwarder(h, home);
      try {
        const { out, err, code } = await runClient(
          [
            PYTHON,
            join(import.meta.dir, "../fixtures/ws-python-client.py"),
            String(fwd.port),
            "ws.test",
            String(server.port),
            h.caBundlePath,
            `Bearer ${CRED.dummy}`,
            "hello from python",
            "plant",
            `big ${"y".repeat(30_000)}`,
          ],
          { PATH: "/usr/bin:/bin" },
        );
        expect({ code, err }).toEqual({ code: 0, err: "" });
        expect(JSON.parse(out)).toEqual({
          got: [
            "hello from python",
            "here it is: [REDACTED] (again: [REDACTED])",
            `big ${"y".repeat(30_000)}`,
          ],
          code: 1000,
          extensions: ["permessage-deflate"],
        });
        expect(carries(out, CRED.real)).toBe(false);
      } finally {
        fwd.stop();
        rmSync(home, { recursive: true, force: true });
      }
    },
    30_000,
  );
});

describe("a hostile upstream, answering the handshake by hand", () => {
  let raw: RawWsUpstream;
  let rawPort = 0;
  let onHandshake: (s: tls.TLSSocket, key: string) => void = () => {};
  const frameOf = (opcode: number, text: string) =>
    Buffer.from(encodeFrame({ fin: true, opcode }, enc.encode(text)));

  beforeAll(async () => {
    const cert = await h.upstreamCa.issue(["ws.test"]);
    raw = await startRawWsUpstream(cert, (s, key) => onHandshake(s, key));
    rawPort = raw.port;
  });
  afterAll(() => {
    raw?.close();
  });

  /** A tunnel to the raw upstream with the handshake sent; every byte the agent got. */
  async function rawAgent(extra = "") {
    const t = await openTunnel(
      { port: h.port, caBundlePath: h.caBundlePath, agent: h.agents["agent-a"]! },
      { connect: `ws.test:${rawPort}` },
    );
    const got: Buffer[] = [];
    let closed = false;
    t.on("data", (d: Buffer) => got.push(d));
    t.on("close", () => {
      closed = true;
    });
    t.on("error", () => {});
    t.write(
      `GET /chat HTTP/1.1\r\nHost: ws.test:${rawPort}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer ${CRED.dummy}\r\n${extra}\r\n`,
    );
    const untilClosed = async () => {
      for (let i = 0; !closed; i++) {
        expect(i).toBeLessThan(1000);
        await Bun.sleep(10);
      }
    };
    return { t, bytes: () => Buffer.concat(got), untilClosed };
  }

  test("a reload while the 101 is on its way: the frame that came with it is not relayed (1012), nothing real passes", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let arrived!: () => void;
    const handshakeSeen = new Promise<void>((r) => {
      arrived = r;
    });
    onHandshake = (s, key) => {
      arrived();
      gate.then(() =>
        s.write(Buffer.concat([Buffer.from(ok101(key)), frameOf(OP.text, `x ${CRED.real} y`)])),
      );
    };
    const a = await rawAgent();
    await handshakeSeen;
    await h.proxy.reloadSecrets();
    release();
    await a.untilClosed();
    const bytes = a.bytes();
    expect(carries(bytes, CRED.real)).toBe(false);
    expect(bytes.toString("latin1")).toStartWith("HTTP/1.1 101");
    closeTunnel(a.t);
  });

  const deflated = (text: string) => {
    const d = deflateRawSync(Buffer.from(text), { finishFlush: constants.Z_SYNC_FLUSH });
    return Buffer.from(
      encodeFrame({ fin: true, rsv1: true, opcode: OP.text }, d.subarray(0, d.length - 4)),
    );
  };
  const deflate101 = (key: string, params: string) =>
    ok101(key).replace(
      "\r\n\r\n",
      `\r\nSec-WebSocket-Extensions: permessage-deflate${params}\r\n\r\n`,
    );

  test("a compressed message is inflated and scanned: a real value in it arrives redacted, uncompressed", async () => {
    onHandshake = (s, key) =>
      s.write(
        Buffer.concat([
          Buffer.from(deflate101(key, "; server_no_context_takeover")),
          deflated(`zipped ${CRED.real} zipped`),
        ]),
      );
    const a = await rawAgent();
    for (let i = 0; !a.bytes().includes("zipped [REDACTED] zipped"); i++) {
      expect(i).toBeLessThan(1000);
      await Bun.sleep(10);
    }
    expect(carries(a.bytes(), CRED.real)).toBe(false);
    closeTunnel(a.t);
  });

  /** Messages compressed with one context (each may refer back into the ones before), framed. */
  function contextFrames(windowBits = 15) {
    const compress = contextDeflater(windowBits);
    return async (text: string) =>
      Buffer.from(encodeFrame({ fin: true, rsv1: true, opcode: OP.text }, await compress(text)));
  }

  test("an upstream keeping its compression context, with a small window: every message inflated in that context and scanned", async () => {
    for (const [params, bits] of [
      ["", 15],
      ["; server_max_window_bits=10", 10],
    ] as const) {
      const compress = contextFrames(bits);
      // The second message is mostly a back-reference into the first: the real value in it
      // is only there for an inflater that kept the first message's context.
      const first = await compress(`one ${CRED.real} one`);
      const second = await compress(`two ${CRED.real} one`);
      onHandshake = (s, key) =>
        s.write(Buffer.concat([Buffer.from(deflate101(key, params)), first, second]));
      const a = await rawAgent();
      for (let i = 0; !a.bytes().includes("two [REDACTED] one"); i++) {
        expect(i).toBeLessThan(1000);
        await Bun.sleep(10);
      }
      expect(a.bytes().toString("latin1")).toContain("one [REDACTED] one");
      expect(carries(a.bytes(), CRED.real)).toBe(false);
      closeTunnel(a.t);
    }
  });

  test("an answer the offer did not allow (a client window not asked about, an unknown parameter): 502", async () => {
    for (const params of [
      "; client_max_window_bits=10",
      "; x_unknown",
      "; server_max_window_bits=7",
    ]) {
      onHandshake = (s, key) => s.write(deflate101(key, params));
      const a = await rawAgent();
      await a.untilClosed();
      expect(a.bytes().toString("latin1")).toStartWith("HTTP/1.1 502");
    }
  });

  test("a message that inflates past the cap: the upstream is closed with 1009, the agent with 1001, and it gets no more than the cap", async () => {
    // 8 MiB of one byte deflates to a few KiB: past this proxy's 4 MiB cap once inflated.
    onHandshake = (s, key) =>
      s.write(
        Buffer.concat([
          Buffer.from(deflate101(key, "; server_no_context_takeover")),
          deflated("a".repeat(8 * 1024 * 1024)),
        ]),
      );
    const bomb = await rawAgent();
    await bomb.untilClosed();
    const bytes = bomb.bytes();
    expect(bytes.toString("latin1")).toStartWith("HTTP/1.1 101");
    expect(bytes.length).toBeLessThan(4 * 1024 * 1024 + 64 * 1024);
    const ws = await h.auditWhere(
      (l) => l.evt === "websocket" && l.reason === "message too big once inflated",
    );
    expect(ws.at(-1)?.upstreamClose).toBe(1009);
    expect(ws.at(-1)?.agentClose).toBe(1001);
    closeTunnel(bomb.t);
  });

  test("a real value the upstream shows the agent is a reflection (as on the HTTP path); a handshake with Content-Length: 0 is one", async () => {
    onHandshake = (s, key) =>
      s.write(Buffer.concat([Buffer.from(ok101(key)), frameOf(OP.text, CRED.real)]));
    const a = await rawAgent("Content-Length: 0\r\n");
    const lines = await h.auditWhere((l) => l.evt === "violation" && l.kind === "reflection");
    expect(lines.length).toBeGreaterThan(0);
    expect(carries(a.bytes(), CRED.real)).toBe(false);
    closeTunnel(a.t);
  });
});
