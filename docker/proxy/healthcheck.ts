// The proxy container's healthcheck: GET /health on the admin listener named by
// SLAPENIR_ADMIN_LISTEN (host:port). Exits 0 when it answers 2xx, 1 otherwise.
// Must never print response bodies (a status page could one day carry operator data).
const listen = process.env.SLAPENIR_ADMIN_LISTEN ?? "127.0.0.1:8081";
const [host, port] = ((): [string, string] => {
  const i = listen.lastIndexOf(":");
  const h = listen.slice(0, i).replace(/^\[|\]$/g, "");
  // A wildcard bind is probed on loopback.
  return [h === "0.0.0.0" || h === "::" || h === "" ? "127.0.0.1" : h, listen.slice(i + 1)];
})();
const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}/health`;
try {
  const res = await fetch(url, { signal: AbortSignal.timeout(2500) });
  await res.body?.cancel();
  process.exit(res.ok ? 0 : 1);
} catch {
  process.exit(1);
}
