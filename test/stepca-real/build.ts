// Builds the real step-ca for the tests from Debian's packages (golang-go and
// golang-github-smallstep-certificates-dev, installed by scripts/install-test-deps.sh): our
// main.go compiled against the library in /usr/share/gocode with GO111MODULE=off, no network.
// The binary is cached under $XDG_CACHE_HOME (or ~/.cache)/slapenir/, keyed by main.go, the
// package version and the Go version, so only the first run of a machine pays the ~30 s build;
// scripts/test.sh builds it before the suite so no test's time includes it.
// `bun test/stepca-real/build.ts` builds (or finds) it and prints its path.
// Must never fetch anything: a missing package is a skip with its reason, never a download.
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

/** Where Debian puts the packaged Go sources. */
export const GOCODE = "/usr/share/gocode";
const PACKAGE = "golang-github-smallstep-certificates-dev";
const MAIN_GO = join(import.meta.dir, "main.go");

export type StepCaBuild = { path: string; version: string } | { skip: string };

function run(
  cmd: string[],
  env?: Record<string, string>,
  cwd?: string,
): { ok: boolean; out: string } {
  const p = Bun.spawnSync(cmd, { env: env ?? process.env, cwd, stdout: "pipe", stderr: "pipe" });
  return { ok: p.exitCode === 0, out: `${p.stdout.toString()}${p.stderr.toString()}`.trim() };
}

function packageVersion(): string | null {
  // dpkg-query's own format placeholder (a "$" and "{Version}"), not a template string.
  const r = run(["dpkg-query", "-W", `-f=$${"{Version}"}`, PACKAGE]);
  return r.ok && r.out !== "" ? r.out : null;
}

function cacheRoot(): string {
  const base = process.env.XDG_CACHE_HOME || join(process.env.HOME || homedir(), ".cache");
  return join(base, "slapenir");
}

let memo: StepCaBuild | null = null;

/** The step-ca binary, built once per machine; or why it cannot be (the caller skips). */
export function buildStepCa(): StepCaBuild {
  if (memo) return memo;
  memo = build();
  return memo;
}

function build(): StepCaBuild {
  const go = Bun.which("go");
  const version = packageVersion();
  const lib = join(GOCODE, "src", "github.com", "smallstep", "certificates", "commands");
  if (!go || !version || !existsSync(lib)) {
    return {
      skip: `the real step-ca needs golang-go and ${PACKAGE} (run scripts/install-test-deps.sh)`,
    };
  }
  const goVersion = run([go, "env", "GOVERSION"]).out;
  const key = createHash("sha256")
    .update(readFileSync(MAIN_GO))
    .update(`\0${version}\0${goVersion}`)
    .digest("hex")
    .slice(0, 16);
  const dir = join(cacheRoot(), `step-ca-${key}`);
  const bin = join(dir, "step-ca");
  const label = `step-ca ${version.replace(/-[^-]*$/, "")} (Debian ${version})`;
  if (existsSync(bin)) return { path: bin, version: label };

  mkdirSync(dir, { recursive: true });
  // GOPATH mode: our package in a private GOPATH entry, every dependency from Debian's.
  const work = mkdtempSync(join(dir, "build-"));
  try {
    const pkg = join(work, "src", "slapenir-step-ca");
    mkdirSync(pkg, { recursive: true });
    writeFileSync(join(pkg, "main.go"), readFileSync(MAIN_GO));
    const out = join(work, "step-ca");
    const r = run(
      [go, "build", "-trimpath", "-o", out, "."],
      {
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        HOME: work,
        GO111MODULE: "off",
        GOPATH: `${work}:${GOCODE}`,
        GOCACHE: join(cacheRoot(), "go-build"),
        GOFLAGS: "",
        // No C toolchain needed (badger's zstd has a pure-Go path); nothing is downloaded.
        CGO_ENABLED: "0",
        GOPROXY: "off",
        GOTOOLCHAIN: "local",
      },
      pkg,
    );
    if (!r.ok) {
      // A build failure on a machine that has the packages is a broken setup, not a skip.
      throw new Error(`building step-ca from ${PACKAGE} ${version} failed:\n${r.out.slice(-4000)}`);
    }
    // Rename into place: a concurrent build (another test process) never sees half a file.
    renameSync(out, bin);
    return { path: bin, version: label };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const b = buildStepCa();
  if ("skip" in b) {
    console.warn(`step-ca not built: ${b.skip}`);
  } else {
    console.log(`${b.version}: ${b.path}`);
  }
}
