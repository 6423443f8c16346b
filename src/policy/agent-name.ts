// What an agent name may be. The name becomes a certificate CN, a URI path segment, a file name,
// a metrics label and a key in policy and credential bindings, so every place reads it by this
// one rule.

/** Letters, digits, '.', '_', '-'; starts with a letter or digit; at most 64. */
export const AGENT_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
