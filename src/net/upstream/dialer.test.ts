import { describe, expect, test } from "bun:test";
import net from "node:net";
import { failure } from "../../../test/support/proxy-error.ts";
import { PASS } from "../../policy/verdict.ts";
import { type DialerOptions, dialUpstream, type Lookup, resolveChecked } from "./dialer.ts";

const TARGET = { host: "upstream.test", port: 9, tls: false, isIp: false } as const;

function options(lookup: Lookup, connectTimeoutMs = 100): DialerOptions {
  return { addressCheck: () => PASS, connectTimeoutMs, ca: [], lookup };
}

describe("upstream dialer: name lookup", () => {
  test("a lookup that never answers fails with dns-failed after the connect timeout", async () => {
    let asked = 0;
    const never: Lookup = () => {
      asked++;
      return new Promise(() => {});
    };
    const err = await failure(resolveChecked(TARGET, options(never, 50)));
    expect({ code: err.code, asked }).toEqual({ code: "dns-failed", asked: 1 });
  });

  test("dialling through a never-answering lookup fails the same way", async () => {
    const err = await failure(
      dialUpstream(
        TARGET,
        options(() => new Promise(() => {}), 50),
      ),
    );
    expect(err.code).toBe("dns-failed");
  });

  test("a lookup that fails or throws is dns-failed, and says nothing of the cause", async () => {
    const rejects = await failure(
      resolveChecked(
        TARGET,
        options(() => Promise.reject(new Error("ENOTFOUND secret"))),
      ),
    );
    const throws = await failure(
      resolveChecked(
        TARGET,
        options(() => {
          throw new Error("sync secret");
        }),
      ),
    );
    for (const e of [rejects, throws]) {
      expect(e.code).toBe("dns-failed");
      expect(e.message).not.toContain("secret");
    }
  });

  test("an answer after the timeout is ignored; one in time is used", async () => {
    let answer!: (a: { address: string; family: number }[]) => void;
    const late = await failure(
      resolveChecked(
        TARGET,
        options(() => new Promise((r) => (answer = r)), 30),
      ),
    );
    answer([{ address: "127.0.0.1", family: 4 }]); // must not throw or resurrect anything
    expect(late.code).toBe("dns-failed");
    const inTime = await resolveChecked(
      TARGET,
      options(async () => [{ address: "127.0.0.1", family: 4 }], 5000),
    );
    expect(inTime).toEqual([{ address: "127.0.0.1", family: 4 }]);
  });

  test("a resolved name connects to the checked address", async () => {
    const server = net.createServer((s) => s.end());
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const sock = await dialUpstream(
        { ...TARGET, port },
        options(async () => [{ address: "127.0.0.1", family: 4 }], 5000),
      );
      expect(sock.remoteAddress).toBe("127.0.0.1");
      sock.destroy();
    } finally {
      server.close();
    }
  });
});

describe("upstream dialer: deadlines while the proxy is busy", () => {
  test("a handshake deadline that comes due while the proxy is busy waits another period, five at most", async () => {
    // An upstream that takes the connection and never answers the ClientHello.
    const server = net.createServer(() => {});
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const port = (server.address() as net.AddressInfo).port;
    try {
      let asked = 0;
      const busyFor = (n: number) => () => ++asked <= n;
      const dial = (busy: () => boolean) =>
        failure(
          dialUpstream(
            { host: "127.0.0.1", port, tls: true, isIp: true },
            { ...options(async () => [{ address: "127.0.0.1", family: 4 }], 30), busy },
          ),
        );
      const twice = await dial(busyFor(2));
      expect({ code: twice.code, asked }).toEqual({ code: "connect-timeout", asked: 3 });
      asked = 0;
      // Busy for ever: it still fails, after the sixth period.
      const always = await dial(busyFor(1_000));
      expect({ code: always.code, asked }).toEqual({ code: "connect-timeout", asked: 6 });
    } finally {
      server.close();
    }
  });
});
