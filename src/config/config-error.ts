// The one error type of the configuration area (secrets file, environment, policy file).
// A message names where the problem is (JSON path, credential name or index, variable name)
// and what is wrong; it must never contain a credential value or a fragment of one.

export type ConfigErrorCode =
  | "file-unreadable"
  | "bad-json"
  | "bad-shape"
  | "bad-value"
  | "missing"
  | "duplicate"
  | "conflict"
  | "bad-host-pattern"
  | "listen-failed";

export class ConfigError extends Error {
  override readonly name = "ConfigError";
  constructor(
    readonly code: ConfigErrorCode,
    /** What is wrong, without where. */
    readonly detail: string,
    /** Where: a JSON path (`credentials[2].hosts[0]`) or an environment variable name. */
    readonly where?: string,
  ) {
    super(where ? `${where}: ${detail}` : detail);
  }
}

/**
 * A field name as an error may show it: a name that looks like an identifier, quoted; any
 * other could be a value written in the wrong place (a credential as a key) and is not shown.
 */
export function safeKey(key: string): string {
  return /^[A-Za-z_$][A-Za-z0-9_]{0,31}$/.test(key)
    ? `'${key}'`
    : "(a field whose name is not shown)";
}
