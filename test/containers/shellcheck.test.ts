// Every shell script of the container setup through shellcheck (Debian package): scripts under
// docker/ (s6 run/finish scripts included, found by their #!/bin/sh line) and
// scripts/container-*.sh. Must never skip silently: a missing shellcheck is reported.
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { missingTools, repoRoot } from "./tool-paths.ts";

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

function isShellScript(path: string): boolean {
  const head = readFileSync(path, "utf8").slice(0, 64);
  return /^#!\s*\/(usr\/)?bin\/(env )?(ba|da)?sh\b/.test(head);
}

const scripts = [
  ...walk(join(repoRoot, "docker")).filter(isShellScript),
  ...readdirSync(join(repoRoot, "scripts"))
    .filter((n) => /^container-.*\.sh$/.test(n))
    .map((n) => join(repoRoot, "scripts", n)),
].map((p) => relative(repoRoot, p));

const skip = missingTools(["shellcheck"]).length > 0;

// Skipped only on a machine without the tool, with a warning; under CI missingTools throws.
describe.skipIf(skip)("shellcheck", () => {
  test("finds the scripts it must check", () => {
    for (const must of [
      "docker/ca/ca-init.sh",
      "docker/agent/rootfs/etc/s6-overlay/scripts/init-certs.sh",
      "docker/agent/rootfs/etc/s6-overlay/s6-rc.d/agent-svc/finish",
      "docker/agent/rootfs/etc/s6-overlay/s6-rc.d/agent-svc/run",
      "docker/agent/rootfs/etc/s6-overlay/s6-rc.d/proxy-forwarder/run",
      "docker/agent/rootfs/etc/s6-overlay/s6-rc.d/cert-renewer/run",
      "scripts/container-secrets.sh",
    ]) {
      expect(scripts).toContain(must);
    }
  });

  test.each(scripts)("%s is clean and executable", (script) => {
    const r = Bun.spawnSync(["shellcheck", "--severity=style", "--external-sources", script], {
      cwd: repoRoot,
    });
    expect(r.stdout.toString() + r.stderr.toString()).toBe("");
    expect(r.exitCode).toBe(0);
    expect(statSync(join(repoRoot, script)).mode & 0o111).not.toBe(0);
  });
});
