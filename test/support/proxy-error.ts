// The ProxyError a promise rejects with; anything else (a resolution, another error) fails the
// test. Test-only.

import { ProxyError } from "../../src/http/proxy-error.ts";

export async function failure(p: Promise<unknown>): Promise<ProxyError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ProxyError) return e;
    throw e;
  }
  throw new Error("expected a ProxyError");
}
