// Adapts one matcher stream (anything with write/end/abort and an output sink) to a WHATWG
// TransformStream, the shape Bun's fetch and Hono bodies pipe through. It must never close the
// readable side cleanly unless the core reported that every input byte was scanned (`end()`
// resolved), and never keep an output chunk it could not deliver without zeroing it.

/** Where a stream core delivers output and failures. */
export interface ScanSink {
  /**
   * An output chunk; ownership passes to the consumer. `replaced`: the replacements made in
   * all output so far, this chunk's included (when the core knows it).
   */
  output(chunk: Uint8Array, replaced?: number): void;
  /** The stream failed: the readable side errors, the writable side rejects further writes. */
  error(reason: unknown): void;
}

/** The engine side of a scan stream (the worker pool implements it). */
export interface ScanStreamCore {
  /** Accepts a chunk; the returned promise (if any) holds the writer back (backpressure). */
  write(chunk: Uint8Array): Promise<void> | undefined;
  /** Resolves once every written byte was scanned and all output went to the sink. */
  end(): Promise<void>;
  /** The consumer cancelled or the producer aborted: drop the stream and zero its state. */
  abort(reason: unknown): void;
}

/** What a finished stream did. */
export interface ScanResult {
  readonly replacements: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
}

/** A TransformStream over a matcher stream, plus its outcome once it has finished. */
export interface ScanStream extends TransformStream<Uint8Array, Uint8Array> {
  /** Resolves after a clean end; rejects if the stream failed or was aborted. */
  readonly result: Promise<ScanResult>;
  /**
   * Replacements in the output enqueued so far: known before the consumer reads it, so a
   * stream the consumer abandons half-way still says what it was shown.
   */
  replacedSoFar(): number;
}

export interface ScanStreamOptions {
  /** Output bytes the readable side may queue before the writer is held back. */
  readonly readableHighWaterMark: number;
}

/**
 * Builds the TransformStream. `attach` receives the sink and returns the core and its result;
 * it is called synchronously, before any chunk can be written.
 */
export function createScanStream(
  attach: (sink: ScanSink) => { core: ScanStreamCore; result: Promise<ScanResult> },
  options: ScanStreamOptions,
): ScanStream {
  let controller: TransformStreamDefaultController<Uint8Array> | undefined;
  let replaced = 0;
  const sink: ScanSink = {
    output(chunk, soFar) {
      if (soFar !== undefined) replaced = Math.max(replaced, soFar);
      try {
        controller!.enqueue(chunk);
      } catch {
        // The readable side is already cancelled or errored: nobody will read this chunk.
        chunk.fill(0);
      }
    },
    error(reason) {
      try {
        controller!.error(reason);
      } catch {
        // Already errored or closed.
      }
    },
  };
  // Created below, before the TransformStream can call any transformer method but `start`.
  let core: ScanStreamCore | undefined;
  const transformer: Transformer<Uint8Array, Uint8Array> & { cancel(reason: unknown): void } = {
    start(c) {
      controller = c;
    },
    transform(chunk) {
      if (!(chunk instanceof Uint8Array)) {
        throw new TypeError("a scan stream accepts Uint8Array chunks only");
      }
      return core!.write(chunk);
    },
    flush() {
      return core!.end();
    },
    // Called when the readable side is cancelled or the writable side aborted.
    cancel(reason) {
      core!.abort(reason);
    },
  };
  const stream = new TransformStream<Uint8Array, Uint8Array>(
    transformer,
    undefined,
    new ByteLengthQueuingStrategy({ highWaterMark: options.readableHighWaterMark }),
  );
  const attached = attach(sink);
  core = attached.core;
  // Callers that never look at the result must not see an unhandled rejection.
  attached.result.catch(() => {});
  attached.result.then(
    (r) => {
      replaced = Math.max(replaced, r.replacements);
    },
    () => {},
  );
  return Object.assign(stream, { result: attached.result, replacedSoFar: () => replaced });
}
