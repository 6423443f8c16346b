import { expect, test } from "bun:test";
import net from "node:net";
import { parseProcNetTcp, readSendQueues, tcpKey, tcpKeyOf } from "./tcp-queues.ts";

test("parses /proc/net/tcp and tcp6 lines into the keys sockets make", () => {
  const m = new Map<string, number>();
  parseProcNetTcp(
    [
      "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
      "   0: 0100007F:20FB 0100007F:C350 01 0003D000:00000000 00:00000000 00000000     0        0 1 1 0 20 4 30 10 -1",
      "   1: 0202000A:01BB 0302000A:9C40 01 00000000:00000010 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1",
    ].join("\n"),
    m,
  );
  parseProcNetTcp(
    [
      "  sl  local_address                         remote_address                        st tx_queue rx_queue",
      "   0: 00000000000000000000000001000000:20FB 0000000000000000FFFF00000100007F:C351 01 00000400:00000000 00:00000000",
      "   1: 000080FE00000000FF000002030000FE:20FB B80D0120000000000000000001000000:C352 01 00000001:00000000 00:00000000",
    ].join("\n"),
    m,
  );
  expect(m.get(tcpKey("127.0.0.1", 50000, 8443))).toBe(0x3d000);
  expect(m.get(tcpKey("10.0.2.3", 40000, 443))).toBe(0);
  // An IPv4 peer of a dual-stack listener, as the runtime names it.
  expect(m.get(tcpKey("::ffff:127.0.0.1", 50001, 8443))).toBe(0x400);
  expect(m.get(tcpKey("2001:db8::1", 50002, 8443))).toBe(1);
  expect(m.size).toBe(4);
  expect(tcpKeyOf({ remoteAddress: "::ffff:127.0.0.1", remotePort: 50001, localPort: 8443 })).toBe(
    tcpKey("127.0.0.1", 50001, 8443),
  );
  expect(tcpKeyOf({})).toBeNull();
});

test.skipIf(process.platform !== "linux")(
  "a real connection whose peer does not read shows a send queue; it shrinks as the peer reads",
  async () => {
    let peer!: net.Socket;
    const server = net.createServer((s) => {
      peer = s;
      s.pause();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const port = (server.address() as net.AddressInfo).port;
    const client = net.connect(port, "127.0.0.1");
    await new Promise<void>((r) => client.once("connect", () => r()));
    while (!peer) await Bun.sleep(5);
    try {
      const chunk = Buffer.alloc(1 << 20, 0x61);
      for (let i = 0; i < 32; i++) client.write(chunk);
      await Bun.sleep(200);
      const key = tcpKeyOf(client)!;
      const before = readSendQueues().get(key);
      expect(before).toBeGreaterThan(0);
      let got = 0;
      peer.on("data", (d: Buffer) => {
        got += d.length;
        if (got > 2 << 20) peer.pause();
      });
      peer.resume();
      await Bun.sleep(200);
      expect(readSendQueues().get(key)!).toBeLessThan(before!);
    } finally {
      client.destroy();
      peer.destroy();
      server.close();
    }
  },
);
