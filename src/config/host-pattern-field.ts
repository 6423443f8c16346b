// A host pattern read from configuration: the one parser (policy/host-pattern.ts), with a
// problem reported as a ConfigError that names where the pattern was written.

import {
  type HostPattern,
  type HostPatternRules,
  parseHostPattern,
} from "../policy/host-pattern.ts";
import { ConfigError } from "./config-error.ts";

export function hostPatternField(
  input: unknown,
  where: string,
  rules: HostPatternRules,
): HostPattern {
  const r = parseHostPattern(input, rules);
  if (!r.ok) throw new ConfigError("bad-host-pattern", r.reason, where);
  return r.value;
}
