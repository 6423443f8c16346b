import { expect, test } from "bun:test";
import net from "node:net";
import tls from "node:tls";
import { parseClientHello } from "./client-hello.ts";

/** The first bytes a real TLS client sends, captured by a server that never answers. */
async function helloFrom(servername: string | undefined): Promise<Uint8Array> {
  const got: Buffer[] = [];
  const server = net.createServer((s) => s.on("data", (d: Buffer) => got.push(d)));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  const c = tls.connect({
    host: "127.0.0.1",
    port,
    ...(servername ? { servername } : {}),
    rejectUnauthorized: false,
  });
  c.on("error", () => {});
  while (got.length === 0 || parseClientHello(Buffer.concat(got)).kind === "incomplete") {
    await Bun.sleep(5);
  }
  c.destroy();
  server.close();
  return new Uint8Array(Buffer.concat(got));
}

test("the server name a real client asks for", async () => {
  const hello = await helloFrom("api.example.com");
  expect(parseClientHello(hello)).toEqual({
    kind: "hello",
    sni: "api.example.com",
    length: hello.length,
  });
});

test("no server name when the client names none (an IP target)", async () => {
  const hello = await helloFrom(undefined);
  expect(parseClientHello(hello)).toMatchObject({ kind: "hello", sni: undefined });
});

test("a hello split over two records, and one cut short", async () => {
  const hello = await helloFrom("split.example");
  const message = hello.subarray(5);
  const cut = 40;
  const record = (body: Uint8Array) =>
    Buffer.concat([Buffer.from([22, 3, 1, body.length >> 8, body.length & 0xff]), body]);
  const split = Buffer.concat([record(message.subarray(0, cut)), record(message.subarray(cut))]);
  expect(parseClientHello(split)).toMatchObject({ kind: "hello", sni: "split.example" });
  expect(parseClientHello(split.subarray(0, split.length - 1))).toEqual({ kind: "incomplete" });
  expect(parseClientHello(hello.subarray(0, 3))).toEqual({ kind: "incomplete" });
});

test("anything else is invalid, never guessed at", () => {
  expect(parseClientHello(new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n"))).toMatchObject({
    kind: "invalid",
  });
  // A handshake record whose message is not a ClientHello (a ServerHello, type 2).
  expect(parseClientHello(Uint8Array.from([22, 3, 3, 0, 4, 2, 0, 0, 0]))).toMatchObject({
    kind: "invalid",
  });
});
