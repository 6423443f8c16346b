import { expect, test } from "bun:test";
import { allocWithHeadroom } from "../body/held-buffers.ts";
import { heldBody, heldResponse, onHeldSettled, settleHeld } from "./held-response.ts";

test("a held answer is released once settled, even when a listener throws", () => {
  const bytes = allocWithHeadroom(1000).fill(0x52);
  const res = heldResponse(bytes, { status: 200 });
  expect(heldBody(res)).toBe(bytes);
  const heard: boolean[] = [];
  onHeldSettled(res, (ok) => heard.push(ok));
  onHeldSettled(res, () => {
    throw new Error("a broken listener");
  });
  expect(() => settleHeld(res, true)).toThrow("a broken listener");
  expect(heard).toEqual([true]);
  expect(bytes.every((x) => x === 0)).toBe(true);
  expect(heldBody(res)).toBeUndefined();
  settleHeld(res, false); // once only
  expect(heard).toEqual([true]);
});
