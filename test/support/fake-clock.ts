// A clock a test moves by hand, for code that takes `now` as an option. Test-only.

export function clock(start = 1000): { now(): number; advance(ms: number): void } {
  let t = start;
  return {
    now: () => t,
    advance(ms: number): void {
      t += ms;
    },
  };
}
