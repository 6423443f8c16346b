// How many agent connections may be open, counted without sockets: the listener tells it what
// opens and closes and asks before it admits. Three caps (the total is the runtime's own):
//   - handshakes in progress per peer address: before its handshake ends a peer has no
//     identity, so its address is the only key (one peer opening connections that never finish
//     a handshake would otherwise take every slot and lock every agent out);
//   - authenticated connections per agent;
//   - refusals of one agent being told (a 429 kept open up to a second to be read): at most
//     TELLING_PER_AGENT (or the agent cap, if lower), beyond them a connection is closed at once,
//     so an agent opening connections as fast as it can cannot fill the total with refusals.

import { formatIPv4, formatIPv6, mappedIPv4, parseIPv6 } from "../policy/ip-address.ts";
import { PASS, refuse, type Verdict } from "../policy/verdict.ts";

const TELLING_PER_AGENT = 8;

export interface CapLimits {
  readonly perAgent: number;
  readonly handshakesPerAddress: number;
}

export class ConnectionCaps {
  readonly #limits: CapLimits;
  readonly #perAgent = new Map<string, number>();
  readonly #handshaking = new Map<string, number>();
  readonly #telling = new Map<string, number>();

  constructor(limits: CapLimits) {
    this.#limits = limits;
  }

  /** A connection from `address` begins its handshake (counted when admitted). */
  handshake(address: string): Verdict {
    const key = peerKey(address);
    const cap = this.#limits.handshakesPerAddress;
    if ((this.#handshaking.get(key) ?? 0) >= cap) {
      return refuse(
        "connection-limit",
        `too many handshakes in progress from this address (limit ${cap})`,
      );
    }
    countUp(this.#handshaking, key);
    return PASS;
  }

  handshakeOver(address: string): void {
    countDown(this.#handshaking, peerKey(address));
  }

  /** An authenticated connection of `agent` opens (counted when admitted). */
  open(agent: string): Verdict {
    const cap = this.#limits.perAgent;
    if ((this.#perAgent.get(agent) ?? 0) >= cap) {
      return refuse("connection-limit", `too many open connections for this agent (limit ${cap})`);
    }
    countUp(this.#perAgent, agent);
    return PASS;
  }

  closed(agent: string): void {
    countDown(this.#perAgent, agent);
  }

  /** Whether one more refusal of `agent` may be told (counted when true). */
  tell(agent: string): boolean {
    const room = Math.min(TELLING_PER_AGENT, this.#limits.perAgent);
    if ((this.#telling.get(agent) ?? 0) >= room) return false;
    countUp(this.#telling, agent);
    return true;
  }

  told(agent: string): void {
    countDown(this.#telling, agent);
  }

  /** Open authenticated connections by agent. */
  perAgent(): Iterable<readonly [string, number]> {
    return this.#perAgent.entries();
  }
}

/**
 * Who a connection comes from, for the per-address handshake cap: an IPv4 address (also when
 * written IPv4-mapped), or an IPv6 address's /64 — one host is usually given a whole /64, so
 * counting single IPv6 addresses would let it pick a new one per connection.
 */
export function peerKey(address: string | undefined): string {
  if (address === undefined) return "?";
  const v6 = parseIPv6(address.replace(/%.*$/, ""));
  if (!v6) return address;
  const v4 = mappedIPv4(v6);
  if (v4) return formatIPv4(v4);
  const prefix = new Uint8Array(16);
  prefix.set(v6.subarray(0, 8));
  return `${formatIPv6(prefix)}/64`;
}

/** Counts one more for `key` (absent means none). */
function countUp(counts: Map<string, number>, key: string): void {
  counts.set(key, (counts.get(key) ?? 0) + 1);
}

/** Counts one less for `key`, forgetting it at none. */
function countDown(counts: Map<string, number>, key: string): void {
  const left = (counts.get(key) ?? 1) - 1;
  if (left > 0) counts.set(key, left);
  else counts.delete(key);
}
