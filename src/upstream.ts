/**
 * The connection pool to the upstream, and what ends a forwarded request early: a client that
 * leaves before its answer has its upstream request aborted (as nginx and Envoy do), so that the
 * pool's connection is not held to `upstream.timeoutMs` for an answer nobody will read.
 */
import { readFileSync } from 'node:fs';
import { Pool, type Dispatcher } from 'undici';

/** The upstream settings the pool is built from. */
export interface UpstreamOptions {
  url: string;
  connections: number;
  timeoutMs: number;
  caFile?: string;
}

/** The pool of connections to the upstream's origin; one request per connection at a time. */
export function createUpstreamPool(upstream: UpstreamOptions): Pool {
  return new Pool(new URL(upstream.url).origin, {
    connections: upstream.connections,
    pipelining: 1,
    headersTimeout: upstream.timeoutMs,
    bodyTimeout: upstream.timeoutMs,
    keepAliveTimeout: 4000,
    connect: {
      timeout: Math.min(upstream.timeoutMs, 10000),
      // TLS to the upstream is always verified (reply-from's own default is not).
      rejectUnauthorized: true,
      ...(upstream.caFile ? { ca: readFileSync(upstream.caFile) } : {}),
    },
  });
}

/** Why an upstream request was aborted: its client closed the connection first. */
export class ClientLeft extends Error {
  readonly code = 'SCOPEGATE_CLIENT_LEFT';
  constructor() {
    super('the client closed the connection before the answer');
  }
}

/**
 * The abort signal of one forwarded request, in the EventEmitter form undici accepts (`on`,
 * `once`, `removeListener`): an AbortController costs several times more, on every request, for
 * the few whose client leaves. undici adds one listener and removes it once the answer is read;
 * any further one is kept too.
 */
export class UpstreamAbort {
  aborted = false;
  reason: Error | undefined = undefined;
  private listener: (() => void) | undefined = undefined;
  private more: Array<() => void> | undefined = undefined;

  on(_event: 'abort', listener: () => void): this {
    if (this.listener === undefined) this.listener = listener;
    else (this.more ??= []).push(listener);
    return this;
  }

  once(event: 'abort', listener: () => void): this {
    return this.on(event, listener);
  }

  removeListener(_event: 'abort', listener: () => void): this {
    if (this.listener === listener) this.listener = undefined;
    else if (this.more) this.more = this.more.filter((l) => l !== listener);
    return this;
  }

  /** Aborts the request, whether it waits for a connection, for its answer, or reads its body. */
  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = new ClientLeft();
    const listeners = [this.listener, ...(this.more ?? [])];
    this.listener = undefined;
    this.more = undefined;
    for (const listener of listeners) listener?.();
  }
}

/**
 * The header under which a request's UpstreamAbort rides from the gateway's header rewrite to
 * the pool: reply-from passes no signal of its own, but copies the headers object whole (symbol
 * keys included), and undici reads only its string keys.
 */
export const kUpstreamAbort = Symbol('scopegate.upstreamAbort');

/** The one method of a dispatcher that reply-from calls per request. */
type RequestFn = (options: Dispatcher.RequestOptions, callback: (err: Error | null, data: Dispatcher.ResponseData) => void) => void;

/**
 * What reply-from forwards through: `pool`'s requests, each with its UpstreamAbort (when its
 * headers carry one) as its signal, and `pool` destroyed when reply-from closes.
 */
export function abortableDispatcher(pool: Dispatcher): { request: RequestFn; destroy(): Promise<void> } {
  const request = pool.request.bind(pool) as RequestFn;
  return {
    request(options, callback) {
      const signal = (options.headers as Record<symbol, unknown> | undefined)?.[kUpstreamAbort];
      if (signal instanceof UpstreamAbort) options.signal = signal as unknown as Dispatcher.RequestOptions['signal'];
      request(options, callback);
    },
    destroy: () => pool.destroy(),
  };
}
