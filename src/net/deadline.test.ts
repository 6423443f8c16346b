import { describe, expect, test } from "bun:test";
import { Deadline } from "./deadline.ts";

describe("Deadline", () => {
  test("expires once after the time set", async () => {
    let fired = 0;
    const d = new Deadline(() => fired++);
    d.set(20);
    expect(d.armed).toBe(true);
    await Bun.sleep(60);
    expect({ fired, armed: d.armed }).toEqual({ fired: 1, armed: false });
  });

  test("pushing it later keeps it from expiring at the first time", async () => {
    let fired = 0;
    const d = new Deadline(() => fired++);
    d.set(40);
    for (let i = 0; i < 6; i++) {
      await Bun.sleep(15);
      d.set(40); // like a body chunk arriving
    }
    expect(fired).toBe(0);
    await Bun.sleep(100);
    expect(fired).toBe(1);
  });

  test("moving it earlier reschedules", async () => {
    let fired = 0;
    const d = new Deadline(() => fired++);
    d.set(60_000);
    d.set(20);
    await Bun.sleep(60);
    expect(fired).toBe(1);
  });

  test("clear() stops it; set() after clear() arms again", async () => {
    let fired = 0;
    const d = new Deadline(() => fired++);
    d.set(20);
    d.clear();
    await Bun.sleep(50);
    expect(fired).toBe(0);
    d.set(10);
    await Bun.sleep(50);
    expect(fired).toBe(1);
  });
});
