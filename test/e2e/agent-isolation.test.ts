// Agents are isolated from each other on the upstream side (THREATS 22; issue 21). Kept-alive
// upstream connections are shared only by one agent's requests: an upstream that reads a request
// boundary differently from the proxy can then mix nothing of another agent's into what it
// stores. The classic way to make it read differently — a body on a GET, which Python's
// http.server ignores and parses as the next request — is refused before it leaves.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import {
  type HostileUpstream,
  sendLength,
  startHostileUpstream,
} from "../support/hostile-upstream.ts";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { openTunnel, readAnswers } from "../support/raw-agent.ts";

// agent-a's credential is its own: agent-b must never see its real value, however the upstream
// misreads what the proxy sends.
const DUMMY = "sk-dummy-agent-a-00000000000000000001";
const REAL = "sk-real-agent-a-9f8e7d6c5b4a3928170f";

let h: Harness;
let up: HostileUpstream;

beforeAll(async () => {
  h = await startHarness({
    agents: ["agent-a", "agent-b"],
    credentials: [
      { name: "a-only", dummy: DUMMY, real: REAL, hosts: ["localhost:*"], agents: ["agent-a"] },
    ],
    env: { SLAPENIR_RATE_LIMIT: "off" },
  });
  up = await startHostileUpstream(await h.upstreamCa.issue(["localhost"]));
  up.on("/", async (_r, w) => sendLength(w, [], Buffer.from("ok")));
});

afterAll(async () => {
  await up?.stop();
  await h?.close();
});

const as = (agent: string) => ({
  port: h.port,
  caBundlePath: h.caBundlePath,
  agent: h.agents[agent]!,
});

async function get(agent: string, port: number, path: string, extra = ""): Promise<string> {
  const t = await openTunnel(as(agent), { connect: `localhost:${port}` });
  const reply = readAnswers(t);
  t.write(`GET ${path} HTTP/1.1\r\nHost: localhost:${port}\r\n${extra}\r\n`);
  const text = (await reply).toString("latin1");
  t.destroy();
  return text;
}

describe("kept-alive upstream connections", () => {
  test("one agent's requests never travel on a connection another agent's used", async () => {
    const first = up.received.length;
    // Each agent's two requests on one tunnel of its own: one event loop, whose idle
    // upstream connections both agents' requests go through in turn.
    const tunnels = {
      "agent-a": await openTunnel(as("agent-a"), { connect: `localhost:${up.port}` }),
      "agent-b": await openTunnel(as("agent-b"), { connect: `localhost:${up.port}` }),
    };
    for (const [agent, path] of [
      ["agent-b", "/b1"],
      ["agent-a", "/a1"],
      ["agent-b", "/b2"],
      ["agent-a", "/a2"],
    ] as const) {
      const extra = agent === "agent-a" ? `Authorization: Bearer ${DUMMY}\r\n` : "";
      const reply = readAnswers(tunnels[agent]);
      tunnels[agent].write(`GET ${path} HTTP/1.1\r\nHost: localhost:${up.port}\r\n${extra}\r\n`);
      expect((await reply).toString("latin1")).toStartWith("HTTP/1.1 200");
    }
    for (const t of Object.values(tunnels)) t.destroy();
    const conn = (path: string) =>
      up.received.slice(first).find((r) => r.target === path)!.connection;
    // Each agent's connection was kept and reused — by that agent only.
    expect(conn("/b2")).toBe(conn("/b1"));
    expect(conn("/a2")).toBe(conn("/a1"));
    expect(conn("/a1")).not.toBe(conn("/b1"));
    // Only agent-a's requests carried its real value.
    const onB = up.received.filter((r) => r.connection === conn("/b1"));
    expect(onB.some((r) => r.raw.includes(REAL))).toBe(false);
  });
});

describe("against Python's http.server (HTTP/1.1), which ignores a GET's body", () => {
  let dir: string;
  let py: Bun.Subprocess<"ignore", "pipe", "inherit">;
  let pyPort = 0;
  let caPath: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "slapenir-pystore-"));
    const cert = await h.upstreamCa.issue(["localhost"]);
    await writeFile(join(dir, "up.crt"), cert.certPem);
    await writeFile(join(dir, "up.key"), cert.keyPem);
    caPath = join(dir, "ca.pem");
    await writeFile(caPath, h.upstreamCa.certPem);
    // A storage API: POST /store/KEY keeps the body, GET /store/KEY returns it.
    await writeFile(
      join(dir, "store.py"),
      [
        "import http.server, ssl, sys",
        "store = {}",
        "class H(http.server.BaseHTTPRequestHandler):",
        "    protocol_version = 'HTTP/1.1'",
        "    def answer(self, body):",
        "        self.send_response(200)",
        "        self.send_header('Content-Length', str(len(body)))",
        "        self.end_headers()",
        "        self.wfile.write(body)",
        "    def do_GET(self):",
        "        self.answer(store.get(self.path, b'') if self.path.startswith('/store/') else b'ok')",
        "    def do_POST(self):",
        "        store[self.path] = self.rfile.read(int(self.headers.get('Content-Length', '0')))",
        "        self.answer(b'stored')",
        "    def log_message(self, *a):",
        "        pass",
        "srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)",
        "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)",
        "ctx.load_cert_chain(sys.argv[1], sys.argv[2])",
        "srv.socket = ctx.wrap_socket(srv.socket, server_side=True)",
        "print(srv.server_address[1], flush=True)",
        "srv.serve_forever()",
      ].join("\n"),
    );
    py = Bun.spawn(["python3", join(dir, "store.py"), join(dir, "up.crt"), join(dir, "up.key")], {
      stdin: "ignore",
      stdout: "pipe",
      stderr: "inherit",
    });
    const reader = py.stdout.getReader();
    let text = "";
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error("the Python store did not start");
      text += new TextDecoder().decode(value);
    }
    reader.releaseLock();
    pyPort = Number(text.trim());
  });

  afterAll(async () => {
    py?.kill();
    await py?.exited;
    await rm(dir, { recursive: true, force: true });
  });

  test("agent-b cannot smuggle a request that captures agent-a's into the store", async () => {
    // agent-b's GET carries, as its body, the head of a POST that would store the next bytes
    // on the connection — agent-a's request, real value swapped in, if they shared it.
    const smuggled = `POST /store/loot HTTP/1.1\r\nHost: localhost\r\nContent-Length: 96\r\n\r\n`;
    const t = await openTunnel(as("agent-b"), { connect: `localhost:${pyPort}` });
    const reply = readAnswers(t);
    t.write(
      `GET /x HTTP/1.1\r\nHost: localhost:${pyPort}\r\nContent-Length: ${smuggled.length}\r\n\r\n${smuggled}`,
    );
    const refused = (await reply).toString("latin1");
    t.destroy();
    expect(refused).toStartWith("HTTP/1.1 400");
    expect(refused).toContain("may not carry a body");
    // agent-a goes on with its work.
    const a = await get("agent-a", pyPort, "/y", `Authorization: Bearer ${DUMMY}\r\n`);
    expect(a).toStartWith("HTTP/1.1 200");
    // What the store holds, asked directly: nothing of agent-a's.
    const loot = await fetch(`https://localhost:${pyPort}/store/loot`, {
      tls: { ca: await Bun.file(caPath).text() },
    } as RequestInit);
    expect(await loot.text()).not.toContain(REAL);
  });
});

describe("against a raw upstream that ignores Content-Length where it expects no body", () => {
  // A storage API written by hand, with a common bug: its POST /ping handler never reads the
  // body, so the body is parsed as the next request on the connection. POST /store/KEY keeps
  // the number of bytes its Content-Length says (whatever they are); GET /store/KEY returns them.
  let server: tls.Server;
  let port = 0;
  const store = new Map<string, Buffer>();

  beforeAll(async () => {
    const cert = await h.upstreamCa.issue(["localhost"]);
    server = tls.createServer({ key: cert.keyPem, cert: cert.certPem }, (s) => {
      let buf = Buffer.alloc(0);
      const answer = (body: Buffer | string) => {
        const b = Buffer.from(body);
        s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${b.length}\r\n\r\n`);
        s.write(b);
      };
      s.on("data", (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        for (;;) {
          const end = buf.indexOf("\r\n\r\n");
          if (end < 0) return;
          const head = buf.subarray(0, end).toString("latin1");
          const [method, target] = head.split(" ");
          const length = Number(/^content-length:\s*(\d+)/im.exec(head)?.[1] ?? 0);
          if (method === "POST" && target!.startsWith("/store/")) {
            if (buf.length < end + 4 + length) return;
            store.set(target!, Buffer.from(buf.subarray(end + 4, end + 4 + length)));
            buf = buf.subarray(end + 4 + length);
            answer("stored");
          } else if (method === "GET" && target!.startsWith("/store/")) {
            buf = buf.subarray(end + 4);
            answer(store.get(target!) ?? "");
          } else {
            // The bug: the body (if any) is left to be read as the next request.
            buf = buf.subarray(end + 4);
            answer("pong");
          }
        }
      });
      s.on("error", () => {});
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    port = (server.address() as { port: number }).port;
  });

  afterAll(() => {
    server?.close();
  });

  const post = async (
    agent: string,
    path: string,
    body: string,
    extra = "",
    tunnel?: tls.TLSSocket,
  ) => {
    const t = tunnel ?? (await openTunnel(as(agent), { connect: `localhost:${port}` }));
    const reply = readAnswers(t);
    t.write(
      `POST ${path} HTTP/1.1\r\nHost: localhost:${port}\r\nContent-Length: ${body.length}\r\n${extra}\r\n${body}`,
    );
    const text = (await reply).toString("latin1");
    if (!tunnel) t.destroy();
    return text;
  };

  test("agent-b's POST whose body is a storing request captures nothing of agent-a's", async () => {
    // The upstream reads agent-b's body as `POST /store/loot` and stores the next 120 bytes on
    // that connection: agent-a's request, real value swapped in, if it came on it.
    const smuggled = "POST /store/loot HTTP/1.1\r\nHost: localhost\r\nContent-Length: 120\r\n\r\n";
    // agent-b's requests on one tunnel: one event loop, whose idle connections are its pool.
    const b = await openTunnel(as("agent-b"), { connect: `localhost:${port}` });
    expect(await post("agent-b", "/ping", smuggled, "", b)).toStartWith("HTTP/1.1 200");
    const a = await post("agent-a", "/ping", "{}", `Authorization: Bearer ${DUMMY}\r\n`);
    expect(a).toStartWith("HTTP/1.1 200");
    // agent-a's request went out with its real value, on a connection of its own.
    expect(store.get("/store/loot")?.includes(REAL) ?? false).toBe(false);
    // The smuggled POST did wait on agent-b's connection (the bug is real): agent-b's next
    // request there (a GET: any idle connection of its own will do) is what it stores.
    const reply = readAnswers(b);
    b.write(`GET /ping?pad=${"x".repeat(120)} HTTP/1.1\r\nHost: localhost:${port}\r\n\r\n`);
    expect((await reply).toString("latin1")).toStartWith("HTTP/1.1 200");
    b.destroy();
    expect(store.get("/store/loot")?.toString("latin1")).toStartWith("GET /ping?pad=x");
  });
});
