// A program run to its end as a test's user would run it: its output, errors and exit code.
// Test only.

export interface ProcessResult {
  readonly out: string;
  readonly err: string;
  readonly code: number;
}

export async function runProcess(
  cmd: string[],
  options: { env?: Record<string, string>; cwd?: string } = {},
): Promise<ProcessResult> {
  await using p = Bun.spawn(cmd, {
    env: options.env ?? { PATH: process.env.PATH ?? "" },
    ...(options.cwd ? { cwd: options.cwd } : {}),
    stdout: "pipe",
    stderr: "pipe",
  });
  const [out, err, code] = await Promise.all([
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  return { out, err, code };
}
