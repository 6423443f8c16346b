// The TLS the agent leg speaks, outside and inside a tunnel: 1.2 or 1.3, HTTP/1.1 by ALPN.

export const TLS_OPTIONS = {
  minVersion: "TLSv1.2",
  ALPNProtocols: ["http/1.1"],
} as const;
