// The operator's bearer token: what the admin listener's actions (quarantine release, reload)
// and the console's buttons need. Made on first start — 32 random bytes, a file only its owner
// reads — and read by the CLI from the same place. Never logged, never in an answer.

import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { ConfigError } from "../config/config-error.ts";

const TOKEN_RE = /^[A-Za-z0-9_-]{32,256}$/;

/** The token in `path`, made there first when there is none. */
export function ensureAdminToken(path: string): string {
  if (!existsSync(path)) {
    mkdirSync(dirname(path), { recursive: true });
    // `wx`: two proxies starting on one home must not both write one.
    try {
      writeFileSync(path, `${randomBytes(32).toString("base64url")}\n`, {
        mode: 0o600,
        flag: "wx",
      });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    chmodSync(path, 0o600);
  }
  return readAdminToken(path);
}

/** The token in `path` (the CLI's side); a ConfigError naming the file when it is not one. */
export function readAdminToken(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, "utf8").trim();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? "error";
    throw new ConfigError(
      "file-unreadable",
      `${path} cannot be read (${code})`,
      "SLAPENIR_ADMIN_TOKEN_FILE",
    );
  }
  if (!TOKEN_RE.test(text)) {
    throw new ConfigError(
      "bad-value",
      `${path} must hold one token of 32 to 256 characters [A-Za-z0-9_-]`,
      "SLAPENIR_ADMIN_TOKEN_FILE",
    );
  }
  return text;
}
