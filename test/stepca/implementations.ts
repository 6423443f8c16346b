// The Step-CAs every identity test runs against: the double (always) and the real step-ca
// built from Debian's packages (skipped, loudly, only where the packages are missing; under CI
// a missing build is an error, as missing tools are in tool-paths.ts).
// Test-only; never imported by src/.
import { startStepCaDouble } from "../stepca-double/stepca-double.ts";
import { buildStepCa } from "../stepca-real/build.ts";
import { startRealStepCa } from "../stepca-real/stepca-real.ts";
import type { CaOptions, CaUnderTest } from "./ca-under-test.ts";

export interface CaImplementation {
  readonly name: "double" | "real";
  /** Why this implementation cannot run here (null: it runs). */
  readonly skip: string | null;
  start(opts?: CaOptions): Promise<CaUnderTest>;
}

function realStepCa(): CaImplementation {
  const built = buildStepCa();
  if ("skip" in built) {
    if (process.env.CI) throw new Error(`missing in CI: ${built.skip}`);
    console.warn(`SKIP: tests against the real step-ca: ${built.skip}`);
    return { name: "real", skip: built.skip, start: () => Promise.reject(new Error(built.skip)) };
  }
  return { name: "real", skip: null, start: (opts) => startRealStepCa(built.path, opts) };
}

export const CA_IMPLEMENTATIONS: readonly CaImplementation[] = [
  { name: "double", skip: null, start: (opts) => startStepCaDouble(opts) },
  realStepCa(),
];
