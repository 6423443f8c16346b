// Shared helpers for the container checks: where the repository's container files are, and
// a way to find a Debian tool or skip loudly. These tests drive real tools (s6, socat,
// shellcheck, openssl) installed by scripts/install-test-deps.sh; they never need Docker.
// Must never hide a missing tool: callers log the reason whenever they skip.
import { join } from "node:path";

export const repoRoot = join(import.meta.dir, "..", "..");
export const agentRootfs = join(repoRoot, "docker", "agent", "rootfs");
export const s6RcDir = join(agentRootfs, "etc", "s6-overlay", "s6-rc.d");
export const s6ScriptsDir = join(agentRootfs, "etc", "s6-overlay", "scripts");

/** The absolute path of a tool on PATH, or null (the caller then skips with a reason). */
export function findTool(name: string): string | null {
  return Bun.which(name);
}

export function missingTools(names: readonly string[]): string[] {
  const missing = names.filter((n) => findTool(n) === null);
  if (missing.length > 0) {
    // In CI the install script must have provided them: a skip there would hide a missing
    // install step behind a green run.
    if (process.env.CI) {
      throw new Error(`missing tools in CI: ${missing.join(", ")} (scripts/install-test-deps.sh)`);
    }
    console.warn(`SKIP: missing tools ${missing.join(", ")} (run scripts/install-test-deps.sh)`);
  }
  return missing;
}

/** Polls `probe` every few milliseconds until it returns a value; fails after `limitMs`. */
export async function waitFor<T>(
  what: string,
  probe: () => T | null | undefined | Promise<T | null | undefined>,
  limitMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const v = await probe();
    if (v !== null && v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(5);
  }
}
