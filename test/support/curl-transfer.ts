// curl as the agent, through a proxy process: the response body is hashed as it arrives (a
// test never holds a big body), an upload is generated into curl's stdin, and the proxy's RSS
// is sampled while the transfer runs.

import type { FileSink } from "bun";
import { type AgentFiles, curlProxyArgs } from "./proxy-harness.ts";
import type { ProxyProcess } from "./proxy-process.ts";
import { generateChunks, type StreamSpec } from "./stream-source.ts";

export interface Transfer {
  readonly exit: number;
  readonly stderr: string;
  readonly bytes: number;
  readonly sha256: string;
  /** curl's stdout when it is small (the upload report), else empty. */
  readonly text: string;
  /** The proxy process's highest RSS seen during the transfer (sampled every 50 ms). */
  readonly peakRss: number;
}

/** One curl run through `proxy` with `args`; `upload` (a spec, or chunks) goes into its stdin. */
export async function curlTransfer(
  proxy: ProxyProcess,
  args: readonly string[],
  upload?: StreamSpec | Iterable<Uint8Array>,
  maxTimeSec = 60,
  agent: AgentFiles = proxy.agent,
): Promise<Transfer> {
  const sampler = proxy.sampleRss(50);
  const proc = Bun.spawn(
    [
      "curl",
      "-sS",
      "--max-time",
      String(maxTimeSec),
      ...curlProxyArgs(proxy.port, proxy.caBundlePath, agent),
      ...args,
    ],
    { stdin: upload ? "pipe" : "ignore", stdout: "pipe", stderr: "pipe" },
  );
  const feeding = upload
    ? (async () => {
        const sink = proc.stdin as FileSink;
        try {
          const chunks = Symbol.iterator in upload ? upload : generateChunks(upload);
          for (const c of chunks) {
            sink.write(c);
            await sink.flush();
          }
        } finally {
          await sink.end();
        }
      })().catch(() => {})
    : Promise.resolve();
  const hash = new Bun.CryptoHasher("sha256");
  let bytes = 0;
  let text = "";
  const dec = new TextDecoder();
  for await (const c of proc.stdout) {
    hash.update(c);
    bytes += c.length;
    if (bytes <= 4096) text += dec.decode(c, { stream: true });
  }
  const [exit, stderr] = await Promise.all([proc.exited, new Response(proc.stderr).text()]);
  await feeding;
  const peakRss = await sampler.stop();
  return { exit, stderr, bytes, sha256: hash.digest("hex"), text, peakRss };
}
