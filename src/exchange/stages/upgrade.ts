// Stage: protocol upgrades. A WebSocket handshake (RFC 6455 §4: GET, `Upgrade: websocket`,
// version 13, a 16-byte key) goes on like any request — its head scanned and swapped by
// `outbound` — and, when the upstream switches, the connection becomes a frame relay that
// scans every message (net/ws-relay.ts). permessage-deflate (RFC 7692) is negotiated on each
// leg apart (http/ws-deflate.ts): the relay inflates what either peer compresses, with or
// without context takeover, and compresses on its own terms. Any other upgrade (h2c above all)
// is refused: the proxy reads HTTP/1.1 and WebSocket frames, nothing else, so a
// connection must never stop being one of them behind its back.

import { createHash } from "node:crypto";
import { agentTerms, upstreamTerms } from "../../http/ws-deflate.ts";
import { allow, refuse } from "../../policy/verdict.ts";
import type { Stage } from "../exchange.ts";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const fieldValues = (fields: readonly (readonly [string, string])[], name: string) =>
  fields.filter(([n]) => n.toLowerCase() === name).map(([, v]) => v.trim());

/** The Sec-WebSocket-Accept an upstream must answer `key` with (§4.2.2). */
export function acceptFor(key: string): string {
  return createHash("sha1").update(`${key}${GUID}`).digest("base64");
}

export function upgrades(): Stage {
  return {
    name: "upgrade",
    request: function allowWebSocket(ex, out) {
      const offered = ex.head.upgrade ?? [];
      if (offered.length === 0) return allow(out);
      const h2c = offered.some((p) => p.toLowerCase().startsWith("h2c"));
      if (h2c) return refuse("upgrade-refused", "h2c upgrade refused");
      const ws = offered.length === 1 && offered[0]!.toLowerCase() === "websocket";
      if (!ws) return refuse("upgrade-refused", "protocol upgrade refused (only websocket)");
      const fields = ex.head.headers.fields;
      const keys = fieldValues(fields, "sec-websocket-key");
      const key = keys.length === 1 ? Buffer.from(keys[0]!, "base64") : null;
      if (
        ex.head.method !== "GET" ||
        (out.body !== null && out.body.length !== 0) ||
        fieldValues(fields, "sec-websocket-version").join(",") !== "13" ||
        key?.length !== 16 ||
        key.toString("base64") !== keys[0]
      ) {
        return refuse(
          "bad-request",
          "a WebSocket handshake is a GET without a body, Sec-WebSocket-Version 13 and one 16-byte Sec-WebSocket-Key",
        );
      }
      return allow({ ...out, upgrade: "websocket" as const });
    },
    response: function checkSwitch(ex, res) {
      if (res.status !== 101) return allow(res);
      const key = fieldValues(ex.head.headers.fields, "sec-websocket-key")[0];
      const accept = fieldValues(res.headers, "sec-websocket-accept");
      // An answer that did not read this handshake, or accepted an extension the relay cannot
      // read, is not relayed.
      if (!key || accept.length !== 1 || accept[0] !== acceptFor(key)) {
        return refuse(
          "upstream-protocol",
          "upstream switched protocols without a valid WebSocket answer",
        );
      }
      const upstream = upstreamTerms(fieldValues(res.headers, "sec-websocket-extensions"));
      if (upstream === null) {
        return refuse(
          "upstream-protocol",
          "upstream answered with a WebSocket extension the proxy did not offer or cannot read",
        );
      }
      // The agent's leg: permessage-deflate if it offered it in a form the RFC allows.
      const offer = agentTerms(fieldValues(ex.head.headers.fields, "sec-websocket-extensions"));
      const headers = res.headers.filter(([n]) => n.toLowerCase() !== "sec-websocket-extensions");
      if (offer) headers.push(["sec-websocket-extensions", offer.answer]);
      const agent = offer?.terms ?? null;
      return allow({
        ...res,
        headers,
        deflate: { agent, upstream: upstream === "off" ? null : upstream },
      });
    },
  };
}
