// Lints the Dockerfiles with dockerfile-utils (the validator behind the Dockerfile language
// server, from npm; hadolint is neither in Debian nor on npm) with every rule at error level,
// then checks what matters for SLAPENIR that no generic linter knows: a non-root final USER,
// base images pinned to a version (the one documented exception: Chainguard's free wolfi-base
// is only published as `latest`, so it is an ARG to pin by digest), no secret in ENV/ARG/COPY,
// multi-stage proxy build with the WASM built in a build stage.
// Must never pass a Dockerfile whose final stage runs as root.
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ValidationSeverity, validate } from "dockerfile-utils";
import { repoRoot } from "./tool-paths.ts";

const dockerfiles = ["docker/proxy/Dockerfile", "docker/agent/Dockerfile"] as const;

interface Instruction {
  keyword: string;
  args: string;
  line: number;
}

/** Joins continuation lines and drops comments: one entry per instruction. */
function instructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  let buf = "";
  let start = 0;
  text.split("\n").forEach((raw, i) => {
    const line = raw.trimEnd();
    if (buf === "" && (line.trim() === "" || line.trimStart().startsWith("#"))) return;
    if (buf === "") start = i + 1;
    if (line.endsWith("\\")) {
      buf += `${line.slice(0, -1)} `;
      return;
    }
    buf += line;
    const m = /^\s*(\w+)\s*(.*)$/s.exec(buf);
    if (m) out.push({ keyword: m[1]!.toUpperCase(), args: m[2]!.trim(), line: start });
    buf = "";
  });
  return out;
}

/** The policy checks; returns one message per violation. */
export function slapenirDockerfileProblems(text: string): string[] {
  const problems: string[] = [];
  const ins = instructions(text);
  const args = new Map<string, string>();
  const stages: { from: string; user: string | null }[] = [];
  for (const i of ins) {
    if (i.keyword === "ARG") {
      const [k, v] = i.args.split("=", 2);
      if (k && v !== undefined) args.set(k.trim(), v.trim());
    }
    if (i.keyword === "FROM") stages.push({ from: i.args, user: null });
    if (i.keyword === "USER" && stages.length > 0) stages[stages.length - 1]!.user = i.args;
    if (
      /^(ENV|ARG|LABEL)$/.test(i.keyword) &&
      /(PASSWORD|SECRET|TOKEN|API_KEY|PRIVATE_KEY)\w*\s*=\s*\S/i.test(i.args)
    ) {
      problems.push(`line ${i.line}: ${i.keyword} sets what looks like a secret`);
    }
    if (
      /^(COPY|ADD)$/.test(i.keyword) &&
      /(secrets\/|\.env\b|\.pem\b|\.key\b|tokens\.json)/.test(i.args)
    ) {
      problems.push(`line ${i.line}: ${i.keyword} copies what looks like a secret: ${i.args}`);
    }
  }
  const stageNames = new Set(
    stages.map((s) => /\bAS\s+(\S+)/i.exec(s.from)?.[1]).filter((x): x is string => !!x),
  );
  for (const s of stages) {
    let image = s.from.split(/\s+/)[0]!;
    image = image.replace(/\$\{?(\w+)\}?/g, (_, k: string) => args.get(k) ?? `$${k}`);
    if (stageNames.has(image)) continue;
    const pinned = /@sha256:[0-9a-f]{64}$/.test(image) || /:[^:/]+$/.test(image);
    const latest = /:latest$/.test(image);
    const documented =
      latest && image.startsWith("cgr.dev/chainguard/") && /ARG WOLFI_BASE=/.test(text);
    if (!pinned || (latest && !documented)) problems.push(`base image not pinned: ${image}`);
  }
  const last = stages[stages.length - 1];
  const user = last?.user ?? null;
  if (user === null || /^(root|0)(:|$)/.test(user)) {
    problems.push(`final stage runs as ${user ?? "root (no USER)"}`);
  }
  return problems;
}

describe.each(dockerfiles)("%s", (file) => {
  const text = readFileSync(join(repoRoot, file), "utf8");

  test("dockerfile-utils reports nothing at any severity", () => {
    const all = ValidationSeverity.ERROR;
    const diags = validate(text, {
      deprecatedMaintainer: all,
      directiveCasing: all,
      emptyContinuationLine: all,
      instructionCasing: all,
      instructionCmdMultiple: all,
      instructionEntrypointMultiple: all,
      instructionHealthcheckMultiple: all,
      instructionJSONInSingleQuotes: all,
      instructionWorkdirRelative: all,
    });
    expect(diags.map((d) => `${d.range.start.line + 1}: ${d.message}`)).toEqual([]);
  });

  test("non-root final USER, pinned bases, no secrets", () => {
    expect(slapenirDockerfileProblems(text)).toEqual([]);
  });
});

describe("the Dockerfile policy check is live", () => {
  test("it flags root, unpinned bases and baked-in secrets", () => {
    const bad = "FROM debian\nENV API_TOKEN=abc\nCOPY secrets/ca_password.txt /x\nUSER root\n";
    expect(slapenirDockerfileProblems(bad)).toEqual([
      "line 2: ENV sets what looks like a secret",
      "line 3: COPY copies what looks like a secret: secrets/ca_password.txt /x",
      "base image not pinned: debian",
      "final stage runs as root",
    ]);
  });

  test("it flags a final stage without USER even if an earlier stage had one", () => {
    expect(slapenirDockerfileProblems("FROM a:1 AS b\nUSER 1000\nFROM c:2\n")).toEqual([
      "final stage runs as root (no USER)",
    ]);
  });
});

test("the proxy image builds the WASM matcher in a build stage and runs `src/main.ts`", () => {
  const text = readFileSync(join(repoRoot, "docker/proxy/Dockerfile"), "utf8");
  expect(text).toMatch(/FROM \S+ AS build[\s\S]*bun run build:wasm/);
  expect(text).toMatch(/ENTRYPOINT \["bun", "src\/main\.ts"\]/);
});

test("the agent image is Wolfi with s6-overlay as PID 1 and the R5 packages", () => {
  const text = readFileSync(join(repoRoot, "docker/agent/Dockerfile"), "utf8");
  for (const pkg of [
    "python-3.11",
    "py3.11-pip",
    "build-base",
    "git",
    "openssh",
    "step",
    "socat",
  ]) {
    expect({ pkg, present: new RegExp(`\\b${pkg.replace(".", "\\.")}`).test(text) }).toEqual({
      pkg,
      present: true,
    });
  }
  expect(text).toContain("cgr.dev/chainguard/wolfi-base");
  expect(text).toMatch(/ENTRYPOINT \["\/init"\]/);
  expect(text).toMatch(/adduser -D -u 1000 .* agent/);
});
