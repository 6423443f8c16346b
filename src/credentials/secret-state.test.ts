import { expect, test } from "bun:test";
import { compiledSecrets } from "../../test/support/request-fixtures.ts";

const REAL = "sk-real-0123456789abcdef";
const compile = async () =>
  compiledSecrets([
    { name: "api", dummy: "sk-dummy-000000000000000", real: REAL, hosts: ["api.example.com"] },
  ]);

test("a retired state is kept until the last exchange using it is over, however long", async () => {
  const s = await compile();
  const first = s.use();
  const second = s.use();
  let retired = 0;
  s.whenUnused(() => {
    retired++;
    s.dispose();
  });
  first();
  first(); // once only
  expect(retired).toBe(0);
  // The exchange still running redacts with it.
  expect(s.redactInline.applyLatin1(`x ${REAL}`).value).toBe("x [REDACTED]");
  second();
  expect(retired).toBe(1);
  expect(s.redactInline.applyLatin1(`x ${REAL}`).count).toBe(0);
});

test("a state nobody uses is retired at once", async () => {
  const s = await compile();
  let retired = false;
  s.whenUnused(() => {
    retired = true;
  });
  expect(retired).toBe(true);
});

test("no plan swaps anything for plain http", async () => {
  const s = await compile();
  const p = s.noSwapPlan();
  expect([p.swaps.length, p.bodySpecs, p.headerSwap.size]).toEqual([0, null, 0]);
  expect(s.plan("a", "api.example.com", 443).swaps.map((x) => x.name)).toEqual(["api"]);
});
