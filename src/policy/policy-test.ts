// `slapenir policy test AGENT METHOD URL`: what the proxy would decide for one request, with
// no traffic sent — the allow rule that admits it (or the refusal an agent would get), the
// path as the rules read it, and which credentials would be swapped and where. Pure: the
// compiled policy and credentials in, lines out; names only, never a value. The destination's
// address is judged when it is resolved, which this does not do.

import type { SecretState } from "../credentials/secret-state.ts";
import { surfaceText } from "../credentials/surfaces.ts";
import type { EgressPolicy } from "./egress-policy.ts";
import { canonicalPath } from "./request-rule.ts";

export interface PolicyTestInput {
  readonly agent: string;
  readonly method: string;
  readonly url: string;
}

export interface PolicyTestResult {
  readonly allowed: boolean;
  readonly lines: readonly string[];
}

export function explainRequest(
  input: PolicyTestInput,
  egress: EgressPolicy,
  secrets: SecretState | null,
  denied: { readonly agents: readonly string[] },
): PolicyTestResult {
  // The target as written: URL parsing would resolve `..` and `%2e%2e`, which the proxy refuses.
  const m = /^(https?):\/\/([^/?#]+)([^#]*)$/i.exec(input.url);
  let authority: URL;
  try {
    if (!m) throw new Error();
    authority = new URL(`${m[1]}://${m[2]}/`);
  } catch {
    return { allowed: false, lines: [`not an http or https URL: ${input.url.slice(0, 200)}`] };
  }
  const target = m[3] || "/";
  const method = input.method.toUpperCase();
  const scheme = authority.protocol === "https:" ? "https" : "http";
  const port = authority.port ? Number(authority.port) : scheme === "https" ? 443 : 80;
  const host = authority.hostname.replace(/^\[(.*)\]$/, "$1");
  const head = `${input.agent} ${method} ${scheme}://${authority.host}${target}`;
  if (denied.agents.includes(input.agent)) {
    return {
      allowed: false,
      lines: [head, "  refused: the agent is denied (its TLS handshake fails)"],
    };
  }
  const path = canonicalPath(target);
  const route = { method, path };
  const lines = [head];
  lines.push(
    path.ok ? `  path as the rules read it: ${path.value}` : `  refused 400: ${path.reason}`,
  );
  if (!path.ok) return { allowed: false, lines };
  const v = egress.decide({ agent: input.agent, host, port, scheme, route });
  if (!v.ok) {
    lines.push(`  refused ${v.code === "policy-denied" ? 403 : v.code}: ${v.reason}`);
    return { allowed: false, lines };
  }
  lines.push(`  allowed by ${v.value.rule}`);
  if (!secrets) {
    lines.push("  credentials: none configured (TOKENS_JSON)");
    return { allowed: true, lines };
  }
  const plan = secrets.plan(input.agent, host, port, route);
  const aws = secrets.sigv4Keys(input.agent, host, port, route);
  const awsParts = new Set(
    [...aws.values()].flatMap((p) => [
      p.name,
      `${p.name}.accessKeyId`,
      `${p.name}.secretAccessKey`,
      `${p.name}.sessionToken`,
    ]),
  );
  const swaps = plan.swaps.filter((s) => !awsParts.has(s.name));
  if (swaps.length === 0 && aws.size === 0) {
    lines.push("  credentials: none bound here (a dummy in this request would travel as written)");
  }
  for (const s of swaps) {
    lines.push(
      `  credential ${s.name}: its dummy swapped for the real value in ${s.surfaces.map(surfaceText).join(", ")}`,
    );
  }
  for (const p of aws.values()) {
    lines.push(
      `  credential ${p.name}: AWS Signature V4 verified with the dummy key, signed again with the real one`,
    );
  }
  for (const r of plan.required)
    lines.push(`  credential ${r} is required: a request without its dummy gets 403`);
  lines.push("  any real value in the request: refused (403), a violation");
  return { allowed: true, lines };
}
