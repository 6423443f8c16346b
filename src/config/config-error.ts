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
    message: string,
    /** Where: a JSON path (`credentials[2].hosts[0]`) or an environment variable name. */
    readonly where?: string,
  ) {
    super(where ? `${where}: ${message}` : message);
  }
}
