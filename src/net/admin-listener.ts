// The operator's listener (SLAPENIR_ADMIN_LISTEN): plain HTTP on its own address, never the
// agents' port, serving whatever app it is given (observe/admin-app.ts).

export interface AdminListener {
  /** The port it is bound to (the configured one, or the one the system chose for 0). */
  readonly port: number;
  /** Stop; `closeActive` false lets requests in flight (the one asking for it) finish. */
  stop(closeActive?: boolean): void;
}

export function listenAdmin(
  host: string,
  port: number,
  fetch: (req: Request) => Response | Promise<Response>,
): AdminListener {
  // The console's live stream sends a comment every 10 s when nothing happens: 30 s of
  // silence is a connection gone, not a quiet proxy.
  const server = Bun.serve({ hostname: host, port, fetch, idleTimeout: 30 });
  return {
    port: server.port ?? port,
    stop: (closeActive = true) => server.stop(closeActive),
  };
}
