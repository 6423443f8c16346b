// `npm run bench`: runs every benchmark file in bench/ one after another (each prints its own
// mitata table and the ratios to its in-run baseline). Pass names to run a subset:
//   bun bench/run.ts matcher pool
import { readdirSync } from "node:fs";
import { join } from "node:path";

const dir = import.meta.dir;
const wanted = process.argv.slice(2);
const files = readdirSync(dir)
  .filter((f) => f.endsWith(".bench.ts"))
  .filter((f) => wanted.length === 0 || wanted.some((w) => f.startsWith(w)))
  .sort();
let failed = 0;
for (const f of files) {
  console.log(`\n=== ${f}`);
  const proc = Bun.spawnSync([process.execPath, join(dir, f)], {
    stdio: ["inherit", "inherit", "inherit"],
  });
  if (proc.exitCode !== 0) failed++;
}
process.exit(failed === 0 ? 0 : 1);
