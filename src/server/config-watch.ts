// Reloads the proxy when a file it reads its configuration from changes: the configuration
// file, the secrets file, the policy file, the revocations. Each file's directory is watched
// (editors and `kubectl`-style mounts replace a file by renaming another over it, which a
// watch on the file itself misses), events are gathered for a short while, and a reload runs
// only when a watched file's content is not what it was at the last reload.

import { createHash } from "node:crypto";
import { type FSWatcher, readFileSync, watch } from "node:fs";
import { basename, dirname } from "node:path";

export interface ConfigWatch {
  close(): void;
}

/** How long events are gathered before the files are compared (an editor writes in steps). */
const SETTLE_MS = 150;

export function watchConfigFiles(
  paths: readonly string[],
  reload: () => Promise<unknown>,
  onError: (e: unknown) => void,
): ConfigWatch {
  const files = [...new Set(paths)];
  // A digest per file, never the content: the secrets file holds real values.
  const digest = (p: string): string => {
    try {
      return createHash("sha256").update(readFileSync(p)).digest("hex");
    } catch {
      return "absent";
    }
  };
  let seen = files.map(digest).join();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const settle = () => {
    timer = undefined;
    const now = files.map(digest).join();
    if (now === seen) return;
    seen = now;
    reload().catch(onError);
  };
  const watchers: FSWatcher[] = [];
  const byDir = new Map<string, Set<string>>();
  for (const f of files) {
    const names = byDir.get(dirname(f)) ?? new Set<string>();
    names.add(basename(f));
    byDir.set(dirname(f), names);
  }
  for (const [dir, names] of byDir) {
    try {
      const w = watch(dir, { persistent: false }, (_event, name) => {
        if (name !== null && !names.has(String(name))) return;
        clearTimeout(timer);
        timer = setTimeout(settle, SETTLE_MS);
      });
      w.on("error", onError);
      watchers.push(w);
    } catch (e) {
      onError(e);
    }
  }
  return {
    close() {
      clearTimeout(timer);
      for (const w of watchers) w.close();
    },
  };
}
