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
 * Whether a name written in a configuration (a field, an agent's key) may be shown in an error
 * or an audit line. Not when it could be a value written in the wrong place — a credential
 * pasted as a key: only letters, digits and `._-`, at most 64, and no run of 16 or more
 * letters and digits that holds a digit (tokens and hex keys), nor of 33 or more at all.
 */
export function showableName(key: string): boolean {
  return (
    /^[A-Za-z_$][A-Za-z0-9._$-]{0,63}$/.test(key) &&
    !/(?=[A-Za-z0-9]*[0-9])[A-Za-z0-9]{16,}/.test(key) &&
    !/[A-Za-z0-9]{33,}/.test(key)
  );
}

/**
 * An unknown field's name as an error shows it: quoted when it looks like a field (a word, as
 * every field of the formats is) and could not be a value (showableName); else not at all.
 */
export function safeKey(key: string): string {
  return /^[A-Za-z_$][A-Za-z0-9_]{0,31}$/.test(key) && showableName(key)
    ? `'${key}'`
    : "(a field whose name is not shown)";
}
