// Multi-tenant suffixes (issue 15, class 4): a wildcard like `*.amazonaws.com`, `*.github.io`
// or `*.blob.core.windows.net` covers hosts that strangers register (an S3 bucket, a Pages
// site, a storage account), so a credential bound to it goes to them. The Public Suffix List,
// private section included, names those suffixes; it comes from `psl` (the list as one array
// of rules, updated with the package). A wildcard `*.S` is shared when some rule is S or lies
// under S: then at or below S, names belong to different owners.

import { readFileSync } from "node:fs";
import { domainToASCII, fileURLToPath } from "node:url";

/** Each rule's name (wildcard and exception marks dropped), once loaded. */
let names: readonly string[] | null = null;
/** Every suffix, at label boundaries, of every rule's name. */
let under: ReadonlySet<string> | null = null;

function load(): { names: readonly string[]; under: ReadonlySet<string> } {
  if (names && under) return { names, under };
  // Rules are written in Unicode (`公司.cn`); hosts reach here as ASCII (`xn--55qx5d.cn`).
  names = loadRules().map((r) => {
    const name = r.replace(/^!/, "").replace(/^\*\./, "");
    return /^[\x00-\x7f]*$/.test(name) ? name : domainToASCII(name) || name;
  });
  const out = new Set<string>();
  for (const name of names) {
    const labels = name.split(".");
    for (let i = 0; i < labels.length; i++) out.add(labels.slice(i).join("."));
  }
  under = out;
  return { names, under };
}

/** The package exports only its parser, so its list is read from the file its build uses. */
function loadRules(): readonly string[] {
  const dist = fileURLToPath(import.meta.resolve("psl"));
  const path = dist.replace(/dist\/psl\.mjs$/, "data/rules.js");
  const text = readFileSync(path, "utf8");
  const m = /^export default (\[[\s\S]*\]);?\s*$/.exec(text);
  const rules: unknown = m ? JSON.parse(m[1]!) : null;
  if (!Array.isArray(rules) || rules.length < 1000 || !rules.every((r) => typeof r === "string")) {
    throw new Error(`the Public Suffix List in ${path} is not in the expected form`);
  }
  return rules;
}

/**
 * For the suffix of a wildcard (`amazonaws.com` for `*.amazonaws.com`): a public suffix at or
 * under it, proof that names under the wildcard have different owners; undefined when there is
 * none (`github.com`: every name under it is GitHub's). IP addresses never have one.
 */
export function sharedSuffixUnder(suffix: string): string | undefined {
  const s = suffix.toLowerCase().replace(/\.$/, "");
  if (s === "" || /^[0-9.]+$/.test(s) || s.includes(":")) return undefined;
  const list = load();
  if (!list.under.has(s)) return undefined;
  if (list.names.includes(s)) return s;
  return list.names.find((n) => n.endsWith(`.${s}`)) ?? s;
}
