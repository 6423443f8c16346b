// Defence in depth for LLM token streams (issue 15, item 5). A streaming LLM API sends its text
// one token per server-sent event; a real value the model was made to repeat arrives in pieces,
// none of which the byte-level redactor can recognise. This reads the events, joins the text of
// their deltas per channel — an OpenAI choice (`delta.content`, `logprobs` tokens and each rank
// of their `top_logprobs` alternatives, tool-call
// arguments), a Responses API `*.delta` item, an Anthropic content block (`text`,
// `partial_json`, `thinking`), a Gemini candidate's parts, a Cohere content delta — and redacts
// that text: a value spanning events is rewritten
// in the events that carry it (the whole redacted text in the first, the others emptied).
// Each channel's last (longest pattern − 1) bytes are held back, whatever they are (with the
// redactor's decoded view, as many as spell that many view bytes, InlineReplacer.holdFor) — an
// event leaves once its channel has that much text after it, or the stream ends — so when an
// event leaves says nothing about the values (holding only what could begin a value would time out
// a prefix oracle); events leave in the order they came. Other events pass untouched.
// Pure: text in, text out (the stream wrapper is `sseDeltaStream`).

import { ProxyError } from "../http/proxy-error.ts";
import type { InlineReplacer } from "../matcher/inline.ts";

interface Delta {
  readonly channel: string;
  get(): string;
  set(text: string): void;
  pending: boolean;
}

interface SseEvent {
  /** The event as received (its separator included), emitted as is unless changed. */
  readonly raw: string;
  readonly separator: string;
  /** Its parsed `data` (JSON), when it has deltas. */
  readonly data: Record<string, unknown> | null;
  readonly deltas: Delta[];
  changed: boolean;
}

/** A blank line: two line ends, each CRLF, LF or a CR not followed by LF (`\n\r\n` too). */
const SEPARATOR = /(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)/;
const MAX_EVENT = 256 * 1024;
/**
 * Most text that may wait behind a held delta (later events leave in order, after it). An
 * upstream that sends more than this while a channel's tail is held — megabytes of other
 * events — gets its stream cut rather than held without bound.
 */
export const MAX_QUEUED = 4 * 1024 * 1024;

export class SseDeltaRedactor {
  readonly #replacers: readonly InlineReplacer[];
  readonly #onRedact: (n: number) => void;
  #rest = "";
  readonly #queue: SseEvent[] = [];
  readonly #channels = new Map<string, Delta[]>();

  constructor(replacers: readonly InlineReplacer[], onRedact: (n: number) => void = () => {}) {
    this.#replacers = replacers.filter((r) => !r.empty);
    this.#onRedact = onRedact;
  }

  /** More of the stream's text; returns what may leave now. */
  push(text: string): string {
    this.#rest += text;
    this.#events(false);
    // No event is this long: what is not an event passes on to the byte-level redactor (it
    // runs after this), so an upstream that never ends one cannot make the proxy hold it all.
    if (this.#rest.length > MAX_EVENT) {
      this.#queue.push({ raw: this.#rest, separator: "", data: null, deltas: [], changed: false });
      this.#rest = "";
    }
    const out = this.#release();
    let queued = this.#rest.length;
    for (const ev of this.#queue) queued += ev.raw.length;
    if (queued > MAX_QUEUED) {
      throw new ProxyError(
        "scan-failed",
        "an event stream held too much behind an unfinished delta",
      );
    }
    return out;
  }

  /** Take every complete event off `#rest` (at the end, a last CR ends a line too). */
  #events(atEnd: boolean): void {
    for (;;) {
      const m = SEPARATOR.exec(this.#rest);
      if (!m) break;
      const end = m.index + m[0].length;
      // A CR that ends what has come may be the first half of a CRLF still on its way.
      if (!atEnd && end === this.#rest.length && m[0].endsWith("\r")) break;
      this.#add(this.#rest.slice(0, end), m[0]);
      this.#rest = this.#rest.slice(end);
    }
  }

  /** The end of the stream: everything left leaves (a held start of a value was not one). */
  end(): string {
    this.#events(true);
    for (const list of this.#channels.values()) for (const d of list) d.pending = false;
    this.#channels.clear();
    const out = this.#release() + this.#rest;
    this.#rest = "";
    return out;
  }

  #add(raw: string, separator: string): void {
    const data = dataOf(raw.slice(0, raw.length - separator.length));
    const deltas = data ? deltasOf(data) : [];
    const ev: SseEvent = {
      raw,
      separator,
      data: deltas.length > 0 ? data : null,
      deltas,
      changed: false,
    };
    this.#queue.push(ev);
    const touched = new Set<string>();
    for (const d of deltas) {
      const list = this.#channels.get(d.channel) ?? [];
      list.push(d);
      this.#channels.set(d.channel, list);
      touched.add(d.channel);
    }
    for (const channel of touched) this.#scan(channel);
  }

  /** Redacts the channel's held text, then keeps held only what could begin a value. */
  #scan(channel: string): void {
    const list = this.#channels.get(channel)!;
    const enc = new TextEncoder();
    let bytes: Uint8Array = enc.encode(list.map((d) => d.get()).join(""));
    let count = 0;
    for (const r of this.#replacers) {
      const out = r.apply(bytes);
      count += out.count;
      bytes = out.output;
    }
    if (count > 0) {
      this.#onRedact(count);
      const text = new TextDecoder().decode(bytes);
      list.forEach((d, i) => {
        d.set(i === 0 ? text : "");
      });
      for (const ev of this.#queue) if (ev.deltas.some((d) => list.includes(d))) ev.changed = true;
    }
    let hold = 0;
    for (const r of this.#replacers) hold = Math.max(hold, r.holdFor(bytes));
    // Deltas wholly before the held end leave the channel.
    let at = 0;
    const keep: Delta[] = [];
    for (const d of list) {
      const len = enc.encode(d.get()).length;
      if (keep.length > 0 || at + len > bytes.length - hold) keep.push(d);
      else d.pending = false;
      at += len;
    }
    if (keep.length === 0) this.#channels.delete(channel);
    else this.#channels.set(channel, keep);
  }

  #release(): string {
    let out = "";
    while (this.#queue.length > 0 && this.#queue[0]!.deltas.every((d) => !d.pending)) {
      const ev = this.#queue.shift()!;
      out += ev.changed && ev.data ? rewrite(ev) : ev.raw;
    }
    return out;
  }
}

/** The event's data lines, joined, as a JSON object; null when they are not one. */
function dataOf(block: string): Record<string, unknown> | null {
  const lines = block.split(/\r\n|\n|\r/).filter((l) => l.startsWith("data:"));
  if (lines.length === 0) return null;
  const text = lines.map((l) => l.slice(5).replace(/^ /, "")).join("\n");
  if (!text.startsWith("{")) return null;
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === "object" && v !== null && !Array.isArray(v)
      ? (v as Record<string, unknown>)
      : null;
  } catch {
    return null;
  }
}

/** The event with its data lines replaced by the (rewritten) JSON; other lines kept. */
function rewrite(ev: SseEvent): string {
  const block = ev.raw.slice(0, ev.raw.length - ev.separator.length);
  const eol = /\r\n/.test(block) ? "\r\n" : /\r/.test(block) && !/\n/.test(block) ? "\r" : "\n";
  const kept = block.split(/\r\n|\n|\r/).filter((l) => !l.startsWith("data:"));
  return [...kept, `data: ${JSON.stringify(ev.data)}`].join(eol) + ev.separator;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

/** A string field as a delta: read and written in place. */
function field(channel: string, o: Obj, key: string): Delta[] {
  if (typeof o[key] !== "string") return [];
  return [
    {
      channel,
      get: () => o[key] as string,
      set: (t) => {
        o[key] = t;
      },
      pending: true,
    },
  ];
}

/** The text-carrying deltas of one event's data, each with its channel. */
export function deltasOf(data: Obj): Delta[] {
  const out: Delta[] = [];
  // OpenAI chat completions (and legacy completions).
  if (Array.isArray(data.choices)) {
    data.choices.forEach((c: unknown, i) => {
      if (!isObj(c)) return;
      const idx = typeof c.index === "number" ? c.index : i;
      if (isObj(c.delta)) {
        for (const key of ["content", "reasoning_content", "refusal"]) {
          out.push(...field(`chat:${idx}:${key}`, c.delta, key));
        }
        if (Array.isArray(c.delta.tool_calls)) {
          c.delta.tool_calls.forEach((t: unknown, j) => {
            if (isObj(t) && isObj(t.function)) {
              const k = typeof t.index === "number" ? t.index : j;
              out.push(...field(`tool:${idx}:${k}`, t.function, "arguments"));
            }
          });
        }
      }
      out.push(...field(`text:${idx}`, c, "text"));
      const lp = isObj(c.logprobs) ? c.logprobs.content : undefined;
      if (Array.isArray(lp)) {
        const tokens = lp.filter(isObj).filter((t) => typeof t.token === "string");
        if (tokens.length > 0) {
          out.push({
            channel: `logprobs:${idx}`,
            get: () => tokens.map((t) => t.token as string).join(""),
            set: (text) => {
              // The bytes and the alternatives spell the old tokens: they go with them.
              tokens.forEach((t, j) => {
                t.token = j === 0 ? text : "";
                t.bytes = null;
                t.top_logprobs = [];
              });
            },
            pending: true,
          });
          // The alternatives at each position, rank by rank, are text a model can be steered
          // to spell with too: each rank is a channel of its own.
          const ranks = Math.max(
            0,
            ...tokens.map((t) => (Array.isArray(t.top_logprobs) ? t.top_logprobs.length : 0)),
          );
          for (let r = 0; r < Math.min(ranks, 20); r++) {
            const alts = tokens
              .map((t) => (Array.isArray(t.top_logprobs) ? t.top_logprobs[r] : undefined))
              .filter(isObj)
              .filter((a) => typeof a.token === "string");
            if (alts.length === 0) continue;
            out.push({
              channel: `top_logprobs:${idx}:${r}`,
              get: () => alts.map((a) => a.token as string).join(""),
              set: (text) => {
                alts.forEach((a, j) => {
                  a.token = j === 0 ? text : "";
                  a.bytes = null;
                });
              },
              pending: true,
            });
          }
        }
      }
    });
  }
  // OpenAI Responses API: `response.output_text.delta`, `response.function_call_arguments.delta`, …
  if (typeof data.type === "string" && data.type.endsWith(".delta")) {
    const item = String(data.item_id ?? data.output_index ?? "");
    out.push(...field(`${data.type}:${item}:${String(data.content_index ?? "")}`, data, "delta"));
  }
  // Google Gemini (`alt=sse`): each candidate's content parts.
  if (Array.isArray(data.candidates)) {
    data.candidates.forEach((c: unknown, i) => {
      if (!isObj(c) || !isObj(c.content) || !Array.isArray(c.content.parts)) return;
      const idx = typeof c.index === "number" ? c.index : i;
      c.content.parts.forEach((part: unknown, j) => {
        if (isObj(part)) out.push(...field(`gemini:${idx}:${j}`, part, "text"));
      });
    });
  }
  // Cohere v2 chat: content-delta events.
  if (data.type === "content-delta" && isObj(data.delta) && isObj(data.delta.message)) {
    const content = data.delta.message.content;
    if (isObj(content)) out.push(...field(`cohere:${String(data.index ?? "")}`, content, "text"));
  }
  // Anthropic Messages: content_block_delta with text, partial_json or thinking.
  if (data.type === "content_block_delta" && isObj(data.delta)) {
    const idx = String(data.index ?? "");
    for (const key of ["text", "partial_json", "thinking"]) {
      out.push(...field(`block:${idx}:${key}`, data.delta, key));
    }
  }
  return out;
}

/** The redactor over a stream of bytes (UTF-8 text). */
export function sseDeltaStream(
  input: ReadableStream<Uint8Array>,
  replacers: readonly InlineReplacer[],
  onRedact: (n: number) => void,
): ReadableStream<Uint8Array> {
  const sse = new SseDeltaRedactor(replacers, onRedact);
  const decoder = new TextDecoder();
  const encoder = new TextEncoder();
  return input.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, c) {
        const out = sse.push(decoder.decode(chunk, { stream: true }));
        if (out) c.enqueue(encoder.encode(out));
      },
      flush(c) {
        const out = sse.push(decoder.decode()) + sse.end();
        if (out) c.enqueue(encoder.encode(out));
      },
    }),
  );
}
