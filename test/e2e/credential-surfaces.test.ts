// Credentials only where they are presented (issue 15, class 1: store and read back). The
// upstream is an ordinary storage API: it wants the real token where its clients present it
// (Authorization, or `x-api-key` / `?key=` for the keyed credential) and stores whatever
// content it is sent, then serves it back whole, as a zip or a tarball, as base64 (of gzip, or
// wrapped at 60 columns as GitHub's blob API writes it), or a byte range at a time. An agent that writes its dummy into content must get the dummy stored — so nothing it
// reads back, in any form, holds the real value — while its authenticated requests still work.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { deflateRawSync, gzipSync } from "node:zlib";
import {
  type HostileRequest,
  type HostileUpstream,
  sendLength,
  startHostileUpstream,
} from "../support/hostile-upstream.ts";
import { type Harness, startHarness } from "../support/proxy-harness.ts";

const DUMMY = "ghp_dummy000000000000000000000000000001";
const REAL = "ghp_R3aLt0k3nAbCdEfGh1jKlMn0pQrStUv2wX";
const KEY_DUMMY = "key-dummy-00000000000000000002";
const KEY_REAL = "key-R3aL-9f8e7d6c5b4a39281700";
const SECRET_DUMMY = "oauth-dummy-000000000000000003";
const SECRET_REAL = "oauth-R3aL-5e4d3c2b1a0f9e8d7c";

let h: Harness;
let up: HostileUpstream;
const store = new Map<string, Buffer>();

const header = (r: HostileRequest, name: string) =>
  r.headers.find(([k]) => k.toLowerCase() === name)?.[1];

/** Whether the request presented a real credential the way this API's clients do. */
function authorised(r: HostileRequest): boolean {
  const query = new URL(r.target, "https://x").searchParams;
  return (
    header(r, "authorization") === `Bearer ${REAL}` ||
    header(r, "x-api-key") === KEY_REAL ||
    query.get("key") === KEY_REAL
  );
}

/** A zip holding one deflated file (what a repository's zipball download is made of). */
function zipOf(name: string, data: Buffer): Buffer {
  const body = deflateRawSync(data);
  const n = Buffer.from(name);
  const local = Buffer.alloc(30);
  local.writeUInt32LE(0x04034b50, 0);
  local.writeUInt16LE(20, 4);
  local.writeUInt16LE(8, 8);
  local.writeUInt32LE(body.length, 18);
  local.writeUInt32LE(data.length, 22);
  local.writeUInt16LE(n.length, 26);
  return Buffer.concat([local, n, body]);
}

/** A gzipped ustar archive of one file (what a repository's tarball download is made of). */
function tarGzOf(name: string, data: Buffer): Buffer {
  const head = Buffer.alloc(512);
  head.write(name, 0);
  head.write("0000644\0", 100);
  head.write(`${data.length.toString(8).padStart(11, "0")}\0`, 124);
  head.write("00000000000\0", 136);
  head.write("0", 156);
  head.write("ustar\x0000", 257);
  head.fill(" ", 148, 156);
  let sum = 0;
  for (const b of head) sum += b;
  head.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
  const pad = Buffer.alloc((512 - (data.length % 512)) % 512);
  return gzipSync(Buffer.concat([head, data, pad, Buffer.alloc(1024)]));
}

/** GitHub's blob API: base64 wrapped at 60 columns, the breaks as JSON `\n` escapes. */
function blobOf(data: Buffer): Buffer {
  const lines = data.toString("base64").match(/.{1,60}/g) ?? [];
  return Buffer.from(JSON.stringify({ encoding: "base64", content: `${lines.join("\n")}\n` }));
}

beforeAll(async () => {
  h = await startHarness({
    agents: ["agent-a", "agent-b"],
    credentials: [
      { name: "gh", dummy: DUMMY, real: REAL, hosts: ["localhost:*"] },
      {
        name: "keyed",
        dummy: KEY_DUMMY,
        real: KEY_REAL,
        hosts: ["localhost:*"],
        in: ["header:x-api-key", "query:key"],
      },
      // An OAuth client secret: presented in a form field, or a JSON member, of one endpoint.
      {
        name: "oauth",
        dummy: SECRET_DUMMY,
        real: SECRET_REAL,
        hosts: ["POST localhost:*/login/oauth/access_token"],
        in: ["form:client_secret", "json:/client_secret"],
      },
    ],
    env: { SLAPENIR_RATE_LIMIT: "off" },
  });
  up = await startHostileUpstream(await h.upstreamCa.issue(["localhost"]));
  up.on("/store/", async (r, w) => {
    if (!authorised(r)) return sendLength(w, [], Buffer.from("bad credentials"), 0, 401);
    const path = new URL(r.target, "https://x").pathname;
    const [key, view] = path.slice("/store/".length).split(".");
    if (r.method === "PUT") {
      // Content as sent, and the note header a client may attach: both are stored.
      const note = header(r, "x-note") ?? "";
      store.set(key!, Buffer.concat([r.body, Buffer.from(`\n${note}`)]));
      return sendLength(w, [], Buffer.from("stored"));
    }
    const data = store.get(key!) ?? Buffer.alloc(0);
    const range = /^bytes=(\d+)-(\d+)$/.exec(header(r, "range") ?? "");
    if (view === "zip") return sendLength(w, [], zipOf(`${key}.txt`, data));
    if (view === "tgz") return sendLength(w, [], tarGzOf(`${key}.txt`, data));
    if (view === "blob") return sendLength(w, [["content-type", "application/json"]], blobOf(data));
    if (view === "b64gz") return sendLength(w, [], Buffer.from(gzipSync(data).toString("base64")));
    if (range) {
      const part = data.subarray(Number(range[1]), Number(range[2]) + 1);
      return sendLength(w, [], part, 0, 206);
    }
    return sendLength(w, [], data);
  });
  up.on("/login/oauth/access_token", async (r, w) => {
    const body = r.body.toString("latin1");
    const ok =
      body.includes(`client_secret=${SECRET_REAL}`) ||
      body.includes(`"client_secret":"${SECRET_REAL}"`);
    return sendLength(
      w,
      [],
      Buffer.from(ok ? "access_token=t0k" : "bad client"),
      0,
      ok ? 200 : 401,
    );
  });
  up.on("/echo", async (r, w) => {
    // Echoes what it was sent, as an httpbin-style API does.
    const echoed = JSON.stringify({ target: r.target, headers: r.headers });
    return sendLength(w, [["content-type", "application/json"]], Buffer.from(echoed));
  });
});

afterAll(async () => {
  await up?.stop();
  await h?.close();
});

const url = (path: string) => `https://localhost:${up.port}${path}`;
const auth = ["-H", `Authorization: Bearer ${DUMMY}`];

describe("a dummy in content is content: stored and read back as the dummy", () => {
  test("a gist-like PUT with the dummy in its body and a note header; every read-back form", async () => {
    const content = JSON.stringify({ files: { "token.txt": { content: `token=${DUMMY}` } } });
    const put = await h.curl([
      ...auth,
      "-X",
      "PUT",
      "-H",
      `X-Note: my token is ${DUMMY}`,
      "--data-binary",
      content,
      url("/store/gist1"),
    ]);
    // The request was authenticated: its Authorization carried the real value.
    expect(put.status).toBe(200);
    const stored = store.get("gist1")!.toString("latin1");
    expect(stored).toBe(`${content}\nmy token is ${DUMMY}`);
    expect(stored).not.toContain(REAL);

    for (const [view, extra] of [
      ["/store/gist1", []],
      ["/store/gist1.zip", []],
      ["/store/gist1.b64gz", []],
      ["/store/gist1.tgz", []],
      ["/store/gist1.blob", []],
      ["/store/gist1", ["-H", "Range: bytes=0-40"]],
      ["/store/gist1", ["-H", "Range: bytes=41-200"]],
    ] as const) {
      const got = await h.curl([...auth, ...extra, url(view)]);
      expect(got.status).toBeLessThan(300);
      expect(got.body.includes(REAL)).toBe(false);
    }
    // Decoded, the downloads hold the dummy: the agent got back what it wrote, nothing more.
    const b64gz = await h.curl([...auth, url("/store/gist1.b64gz")]);
    const { gunzipSync } = await import("node:zlib");
    expect(gunzipSync(Buffer.from(b64gz.body.toString(), "base64")).toString()).toContain(DUMMY);
    const tgz = await h.curl([...auth, url("/store/gist1.tgz")]);
    const untarred = gunzipSync(tgz.body).toString("latin1");
    expect(untarred).toContain(DUMMY);
    expect(untarred).not.toContain(REAL);
    const blob = await h.curl([...auth, url("/store/gist1.blob")]);
    const wrapped = JSON.parse(blob.body.toString()).content as string;
    expect(Buffer.from(wrapped.replaceAll("\n", ""), "base64").toString()).toContain(DUMMY);
    // Another agent reading the store gets the dummy too (it is not even its own).
    const b = await h.curl([...auth, url("/store/gist1")], "agent-b");
    expect(b.body.toString()).toContain(DUMMY);
    // Nothing the upstream received held the real value outside Authorization.
    for (const r of up.received) {
      const outside = r.raw.toString("latin1").replace(`Bearer ${REAL}`, "");
      expect(outside.includes(REAL)).toBe(false);
    }
  });

  test("an LLM-style prompt quoting the dummy reaches the upstream as written", async () => {
    const prompt = JSON.stringify({
      model: "m",
      messages: [{ role: "user", content: `gh auth status says: Token: ${DUMMY}` }],
    });
    const got = await h.curl([...auth, "-X", "PUT", "--data-binary", prompt, url("/store/p1")]);
    expect(got.status).toBe(200);
    expect(store.get("p1")!.toString("latin1")).toStartWith(prompt);
  });
});

describe("where a credential is presented, it is swapped", () => {
  test("declared surfaces: a header and a query parameter; the same dummy elsewhere is left", async () => {
    const viaHeader = await h.curl(["-H", `x-api-key: ${KEY_DUMMY}`, url("/store/none")]);
    expect(viaHeader.status).toBe(200);
    const viaQuery = await h.curl([url(`/store/none?key=${KEY_DUMMY}`)]);
    expect(viaQuery.status).toBe(200);
    // Presented where this credential is not: Authorization, another parameter, another header.
    const echoed = await h.curl([
      "-H",
      `Authorization: Bearer ${KEY_DUMMY}`,
      "-H",
      `x-api-key-copy: ${KEY_DUMMY}`,
      url(`/echo?note=${KEY_DUMMY}&key=${KEY_DUMMY}`),
    ]);
    const seen = JSON.parse(echoed.body.toString()) as {
      target: string;
      headers: [string, string][];
    };
    expect(seen.target).toBe(`/echo?note=${KEY_DUMMY}&key=[REDACTED]`);
    expect(seen.headers).toContainEqual(["authorization", `Bearer ${KEY_DUMMY}`]);
    expect(seen.headers).toContainEqual(["x-api-key-copy", KEY_DUMMY]);
  });

  test("a dummy in the URL of a credential with no query surface travels unchanged (it would be in access logs)", async () => {
    const echoed = await h.curl([url(`/echo?access_token=${DUMMY}`)]);
    expect(JSON.parse(echoed.body.toString()).target).toBe(`/echo?access_token=${DUMMY}`);
  });
});

describe("a credential presented in a body field, on its endpoint", () => {
  const token = (type: string, body: string, path = "/login/oauth/access_token") =>
    h.curl(["-H", `Content-Type: ${type}`, "--data-binary", body, url(path)]);

  test("form and JSON: the named field is swapped; the same dummy in another field is not", async () => {
    const before = up.received.length;
    const form = await token(
      "application/x-www-form-urlencoded",
      `client_id=app&client_secret=${SECRET_DUMMY}&note=${SECRET_DUMMY}`,
    );
    expect(form.status).toBe(200);
    const json = await token(
      "application/json",
      JSON.stringify({ client_id: "app", client_secret: SECRET_DUMMY, note: SECRET_DUMMY }),
    );
    expect(json.status).toBe(200);
    const [f, j] = up.received.slice(before);
    expect(f!.body.toString()).toBe(
      `client_id=app&client_secret=${SECRET_REAL}&note=${SECRET_DUMMY}`,
    );
    expect(JSON.parse(j!.body.toString())).toEqual({
      client_id: "app",
      client_secret: SECRET_REAL,
      note: SECRET_DUMMY,
    });
  });

  test("the field on another endpoint of the host, or another content type: not swapped", async () => {
    const store = await token(
      "application/x-www-form-urlencoded",
      `client_secret=${SECRET_DUMMY}`,
      "/echo",
    );
    expect(store.body.toString()).not.toContain("[REDACTED]");
    const plain = await token("text/plain", `client_secret=${SECRET_DUMMY}`);
    expect(plain.status).toBe(401);
  });

  test("a declared field or parameter holding the dummy among other text is content (found by an attacker's review)", async () => {
    // Rack and CGI split a query on `;` too: `note` would have stored the real value.
    const echoed = await h.curl([url(`/echo?key=${KEY_DUMMY};note=${KEY_DUMMY}`)]);
    expect(JSON.parse(echoed.body.toString()).target).toBe(
      `/echo?key=${KEY_DUMMY};note=${KEY_DUMMY}`,
    );
    // A JSON body labelled as a form, and a form with two Content-Type fields: not swapped.
    const before = up.received.length;
    const json = JSON.stringify({
      x: "&client_secret=",
      client_secret: SECRET_DUMMY,
      prompt: `&client_secret=${SECRET_DUMMY}`,
    });
    expect((await token("application/x-www-form-urlencoded", json)).status).toBe(401);
    const twice = await h.curl([
      "-H",
      "Content-Type: application/x-www-form-urlencoded",
      "-H",
      "Content-Type: text/plain",
      "--data-binary",
      `client_secret=${SECRET_DUMMY}`,
      url("/login/oauth/access_token"),
    ]);
    expect(twice.status).toBe(401);
    const sent = up.received.at(-1)!.headers.filter(([k]) => k.toLowerCase() === "content-type");
    expect(sent).toHaveLength(2);
    for (const r of up.received.slice(before)) expect(r.raw.includes(SECRET_REAL)).toBe(false);
  });
});
