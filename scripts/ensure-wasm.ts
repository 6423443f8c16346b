// Test preload: builds the WebAssembly matcher when it is missing or older than its sources,
// so `bun test` works on a fresh clone. It never runs in production (the start script builds).
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";

const root = join(import.meta.dir, "..");
const out = join(root, "wasm/build/matcher.wasm");
const srcDir = join(root, "wasm/assembly");

function newestSource(): number {
  if (!existsSync(srcDir)) return 0;
  let newest = 0;
  for (const f of readdirSync(srcDir, { recursive: true })) {
    const m = statSync(join(srcDir, String(f))).mtimeMs;
    if (m > newest) newest = m;
  }
  return newest;
}

if (existsSync(join(srcDir, "index.ts"))) {
  if (!existsSync(out) || statSync(out).mtimeMs < newestSource()) {
    const proc = Bun.spawnSync([process.execPath, "run", "build:wasm"], {
      cwd: root,
      stdio: ["ignore", "inherit", "inherit"],
    });
    if (proc.exitCode !== 0) throw new Error("WebAssembly build failed (bun run build:wasm)");
  }
}
