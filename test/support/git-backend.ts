// `git http-backend` (smart HTTP) as a CGI program behind a test upstream: a real git server
// for clone, fetch and push through the proxy. Test-only; it serves `root` and nothing else.

/** Run one request through git http-backend and turn its CGI output into a Response. */
export async function gitBackend(
  root: string,
  req: Request,
  url: URL,
  body: Uint8Array,
  user: string,
): Promise<Response> {
  const cgiEnv: Record<string, string> = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    GIT_PROJECT_ROOT: root,
    GIT_HTTP_EXPORT_ALL: "1",
    REQUEST_METHOD: req.method,
    PATH_INFO: decodeURIComponent(url.pathname),
    QUERY_STRING: url.search.replace(/^\?/, ""),
    CONTENT_TYPE: req.headers.get("content-type") ?? "",
    CONTENT_LENGTH: String(body.length),
    REMOTE_USER: user,
    REMOTE_ADDR: "0.0.0.0",
    SERVER_PROTOCOL: "HTTP/1.1",
    GATEWAY_INTERFACE: "CGI/1.1",
  };
  const enc = req.headers.get("content-encoding");
  if (enc) cgiEnv.HTTP_CONTENT_ENCODING = enc;
  const proto = req.headers.get("git-protocol");
  if (proto) cgiEnv.HTTP_GIT_PROTOCOL = proto;
  const proc = Bun.spawn(["git", "http-backend"], {
    stdin: new Blob([body]),
    stdout: "pipe",
    stderr: "ignore",
    env: cgiEnv,
  });
  const timer = setTimeout(() => proc.kill("SIGKILL"), 20_000);
  const out = Buffer.from(await new Response(proc.stdout).arrayBuffer());
  await proc.exited;
  clearTimeout(timer);
  let split = out.indexOf("\r\n\r\n");
  let sepLen = 4;
  if (split < 0) {
    split = out.indexOf("\n\n");
    sepLen = 2;
  }
  if (split < 0) return new Response("bad CGI output", { status: 500 });
  const headers = new Headers();
  let status = 200;
  for (const line of out.subarray(0, split).toString("latin1").split(/\r?\n/)) {
    const c = line.indexOf(":");
    if (c <= 0) continue;
    const k = line.slice(0, c).trim();
    const v = line.slice(c + 1).trim();
    if (k.toLowerCase() === "status") status = Number.parseInt(v, 10) || 200;
    else headers.append(k, v);
  }
  return new Response(out.subarray(split + sepLen), { status, headers });
}
