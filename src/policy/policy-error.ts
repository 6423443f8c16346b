// The one error type of the policy area (src/policy): thrown only when compiling rules or
// credential bindings at start-up (a bad rule stops the proxy, naming the rule by its path).
// Per-request decisions never throw: they return verdict values. Messages never contain a
// credential value; they name rules and credentials by path and name.

export type PolicyErrorCode = "bad-rule" | "bad-credential" | "bad-input";

export class PolicyError extends TypeError {
  override readonly name = "PolicyError";
  constructor(
    readonly code: PolicyErrorCode,
    /** Where the bad item is, e.g. `allow[3]` or `agents.agent-a[0]` or `credentials[2]`. */
    readonly path: string,
    message: string,
  ) {
    super(`${path}: ${message}`);
  }
}
