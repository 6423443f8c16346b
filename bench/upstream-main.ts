// The benchmark's upstream as its own process, so the origin does not share an event loop with
// the client being timed: the streaming upstream of test/support (downloads generated on the
// fly, uploads consumed, fixed-size answers). Reads its certificate from UPSTREAM_CERT and
// UPSTREAM_KEY (paths), plants UPSTREAM_PLANT into downloads that ask, and prints `port=N` when listening. Bench only.

import { readFileSync } from "node:fs";
import { startStreamUpstream } from "../test/support/stream-upstream.ts";

const cert = {
  certPem: readFileSync(process.env.UPSTREAM_CERT ?? "", "utf8"),
  keyPem: readFileSync(process.env.UPSTREAM_KEY ?? "", "utf8"),
};
const up = startStreamUpstream({
  cert,
  ...(process.env.UPSTREAM_PLANT ? { plantText: process.env.UPSTREAM_PLANT } : {}),
});
process.stdout.write(`port=${up.port}\n`);
process.on("SIGTERM", () => {
  void up.stop().then(() => process.exit(0));
});
