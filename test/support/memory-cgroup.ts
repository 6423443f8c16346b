// A Linux memory cgroup for a test: the same mechanism Docker uses for a service's
// `deploy.resources.limits.memory`, so a process can be run under the limit compose gives it.
// cgroup v2 (memory.max, memory.peak, memory.events) or v1 (memory.limit_in_bytes,
// memory.max_usage_in_bytes, memory.oom_control), whichever the machine mounts; needs root.
// Swap is limited to nothing, as in a container without swap: over the limit, the kernel's OOM
// killer ends the process instead of paging it out.

import { existsSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseByteSize } from "../../src/config/proxy-config.ts";

const V2_ROOT = "/sys/fs/cgroup";
const V1_ROOT = "/sys/fs/cgroup/memory";

type Flavour = { v: 2; root: string } | { v: 1; root: string };

function flavour(): Flavour | null {
  const controllers = join(V2_ROOT, "cgroup.controllers");
  if (existsSync(controllers) && readFileSync(controllers, "utf8").split(/\s+/).includes("memory"))
    return { v: 2, root: V2_ROOT };
  if (existsSync(join(V1_ROOT, "memory.limit_in_bytes"))) return { v: 1, root: V1_ROOT };
  return null;
}

/** Why a memory cgroup cannot be made here, or null when it can. */
export function memoryCgroupUnavailableReason(): string | null {
  if (process.platform !== "linux") return "memory cgroups need Linux";
  if (process.getuid?.() !== 0) return "creating a memory cgroup needs root";
  if (!flavour()) return "no cgroup memory controller is mounted (v2 or v1)";
  return null;
}

export interface MemoryCgroup {
  readonly path: string;
  readonly limitBytes: number;
  /**
   * A command prefix that starts the command inside this cgroup (the shell joins it, then
   * execs the command, so the PID and every byte the command ever allocates are charged here).
   */
  readonly launcher: readonly string[];
  /** The highest memory use the cgroup reached, in bytes. */
  peakBytes(): number;
  /** How many times use reached the limit (the kernel then reclaims, or kills). */
  limitHits(): number;
  /** How many processes the OOM killer ended in this cgroup. */
  oomKills(): number;
  /** Removes the cgroup (its processes must have exited). */
  remove(): Promise<void>;
}

/** Creates a fresh memory cgroup named `name` limited to `limitBytes`, without swap. */
export async function createMemoryCgroup(name: string, limitBytes: number): Promise<MemoryCgroup> {
  const f = flavour();
  if (!f) throw new Error("no cgroup memory controller is mounted");
  if (f.v === 2) {
    // A child of the root only gets the memory files when the root delegates the controller.
    const sub = join(f.root, "cgroup.subtree_control");
    if (!readFileSync(sub, "utf8").split(/\s+/).includes("memory")) writeFileSync(sub, "+memory");
  }
  const path = join(f.root, name);
  if (existsSync(path)) rmdirSync(path); // a crashed run's, empty (else this throws)
  await mkdir(path);
  const set = (file: string, value: string) => writeFileSync(join(path, file), value);
  const read = (file: string) => readFileSync(join(path, file), "utf8");
  const counter = (file: string, key: string) =>
    Number(new RegExp(`^${key} (\\d+)$`, "m").exec(read(file))?.[1] ?? Number.NaN);
  if (f.v === 2) {
    set("memory.max", String(limitBytes));
    if (existsSync(join(path, "memory.swap.max"))) set("memory.swap.max", "0");
  } else {
    set("memory.limit_in_bytes", String(limitBytes));
    // memsw (memory + swap) must not be below the memory limit; equal means no swap.
    if (existsSync(join(path, "memory.memsw.limit_in_bytes")))
      set("memory.memsw.limit_in_bytes", String(limitBytes));
  }
  return {
    path,
    limitBytes,
    launcher: ["sh", "-c", 'echo $$ > "$0" && exec "$@"', join(path, "cgroup.procs")],
    peakBytes: () => Number(read(f.v === 2 ? "memory.peak" : "memory.max_usage_in_bytes").trim()),
    limitHits: () =>
      f.v === 2 ? counter("memory.events", "max") : Number(read("memory.failcnt").trim()),
    oomKills: () =>
      f.v === 2 ? counter("memory.events", "oom_kill") : counter("memory.oom_control", "oom_kill"),
    async remove() {
      // The kernel refuses while exited processes are still being reaped; retry briefly.
      for (let i = 0; ; i++) {
        try {
          rmdirSync(path);
          return;
        } catch (e) {
          if (i >= 50) throw e;
          await Bun.sleep(100);
        }
      }
    },
  };
}

/** Docker's memory size notation ("256M", "1g", "512m", "1048576"): binary units. */
export function parseDockerBytes(text: string): number {
  const n = parseByteSize(text);
  if (n === null) throw new Error(`not a Docker memory size: ${JSON.stringify(text)}`);
  return n;
}

/** The memory limit compose.yml gives the proxy service (`deploy.resources.limits.memory`). */
export async function composeProxyMemoryLimit(): Promise<number> {
  const path = join(resolve(import.meta.dir, "../.."), "compose.yml");
  const doc = Bun.YAML.parse(await Bun.file(path).text()) as {
    services: { proxy: { deploy: { resources: { limits: { memory: string } } } } };
  };
  return parseDockerBytes(doc.services.proxy.deploy.resources.limits.memory);
}
