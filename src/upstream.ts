/**
 * The connection pool to the upstream, and what ends a forwarded request early: a client that
 * leaves before its answer has its upstream request aborted (as nginx and Envoy do), so that the
 * pool's connection is not held to `upstream.timeoutMs` for an answer nobody will read.
 */
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { buildConnector, Pool, type Dispatcher } from 'undici';
import { UpstreamUnavailable } from './errors.js';

/** The upstream settings the pool is built from. */
export interface UpstreamOptions {
  url: string;
  connections: number;
  timeoutMs: number;
  caFile?: string;
}

/**
 * A reset of an upstream connection is a failure of the answer it carries, whatever its framing.
 * undici reads a reset that ends a body delimited by the close of the connection (no
 * Content-Length, not chunked) as its end (a workaround for macOS, where a reset may follow a
 * whole body), and the client would get a cut answer as a whole one (RFC 9112 section 8: such a
 * body is complete unless the connection says otherwise). Run before undici's own listener, this
 * gives the error another code, which undici passes on as the failure it is; answers with a length
 * or chunks fail on a reset anyway. The code is otherwise read only as one of a broken upstream.
 */
function resetFailsTheAnswer(error: NodeJS.ErrnoException): void {
  if (error.code === 'ECONNRESET') error.code = 'UND_ERR_SOCKET';
}

/** The pool of connections to the upstream's origin; one request per connection at a time. */
export function createUpstreamPool(upstream: UpstreamOptions): Pool {
  const connector = buildConnector({
    timeout: Math.min(upstream.timeoutMs, 10000),
    // TLS to the upstream is always verified (reply-from's own default is not).
    rejectUnauthorized: true,
    ...(upstream.caFile ? { ca: readFileSync(upstream.caFile) } : {}),
  });
  return new Pool(new URL(upstream.url).origin, {
    connections: upstream.connections,
    pipelining: 1,
    headersTimeout: upstream.timeoutMs,
    bodyTimeout: upstream.timeoutMs,
    keepAliveTimeout: 4000,
    connect: (options, callback) => connector(options, (...args) => {
      (args[1] as Socket | null)?.prependListener('error', resetFailsTheAnswer);
      callback(...args);
    }),
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
 * Why an upstream request was given up: it waited `upstream.timeoutMs` for a connection of the
 * pool, every one held by requests still in flight (clients that do not read their answers).
 * undici starts its own timeouts only once a request has a connection. A 504.
 */
export class PoolTimeout extends Error {
  readonly code = 'SCOPEGATE_POOL_TIMEOUT';
  constructor(ms: number) {
    super(`no upstream connection free within ${ms} ms`);
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
  /** Called once, when undici is done with the request (it removes its listener) or it is aborted. */
  onSettled: (() => void) | undefined = undefined;
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
    if (this.listener === listener) {
      this.listener = undefined;
      this.settle();
    } else if (this.more) this.more = this.more.filter((l) => l !== listener);
    return this;
  }

  /** Aborts the request, whether it waits for a connection, for its answer, or reads its body. */
  abort(reason: Error = new ClientLeft()): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    const listeners = [this.listener, ...(this.more ?? [])];
    this.listener = undefined;
    this.more = undefined;
    for (const listener of listeners) listener?.();
    this.settle();
  }

  /** Says, once, that undici is done with the request. */
  settle(): void {
    const settled = this.onSettled;
    this.onSettled = undefined;
    settled?.();
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

/** The handler methods (undici's interceptor form) the wrapper below passes on. */
type Handler = Dispatcher.DispatchHandler;

/** Where a request's "it has a connection" callback rides from the dispatcher to its handler. */
const kStarted = Symbol('scopegate.started');

/**
 * The handler of a request that needs more than the pool gives: told when the request gets a
 * connection (its wait for one is over), and completing a 304 that declares the length of the
 * representation it stands for (RFC 9110 section 8.6 allows `Content-Length` on a 304): undici
 * reads that length as the body it failed to get and fails the request once the 304 has been
 * passed on (`UND_ERR_RES_CONTENT_LENGTH_MISMATCH`). A 304 has no body: the answer is complete.
 * Every other failure goes on as it came.
 */
class Watched implements Handler {
  private status = 0;
  constructor(private readonly handler: Handler, private readonly started: (() => void) | undefined) {}

  onRequestStart(controller: Dispatcher.DispatchController, context: unknown): void {
    this.started?.();
    this.handler.onRequestStart?.(controller, context);
  }

  onRequestUpgrade(controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[]>, socket: import('node:stream').Duplex): void {
    this.handler.onRequestUpgrade?.(controller, statusCode, headers, socket);
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[]>, statusMessage?: string): void {
    this.status = statusCode;
    this.handler.onResponseStart?.(controller, statusCode, headers, statusMessage);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.handler.onResponseData?.(controller, chunk);
  }

  onResponseEnd(controller: Dispatcher.DispatchController, trailers: Record<string, string | string[]>): void {
    this.handler.onResponseEnd?.(controller, trailers);
  }

  onResponseError(controller: Dispatcher.DispatchController, error: Error): void {
    if (this.status === 304 && (error as { code?: unknown }).code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH') {
      this.handler.onResponseEnd?.(controller, {});
      return;
    }
    this.handler.onResponseError?.(controller, error);
  }
}

/**
 * What reply-from forwards through: `pool`'s requests, each with its UpstreamAbort (when its
 * headers carry one) as its signal, and `pool` destroyed when reply-from closes. `limits` is read
 * at each request: `timeoutMs` (upstream.timeoutMs) is the current config's, a reload's included,
 * for the answer's head, its body and the wait for a connection.
 */
export function abortableDispatcher(pool: Dispatcher, limits: { readonly connections: number; readonly timeoutMs: number }): { request: RequestFn; destroy(): Promise<void> } {
  const request = pool.request.bind(pool) as RequestFn;
  const watched = pool.compose((dispatch) => (options, handler) => dispatch(options, new Watched(handler, (options as { [kStarted]?: () => void })[kStarted])));
  const requestWatched = watched.request.bind(watched) as RequestFn;
  // The requests undici holds (waiting for a connection, or on one until their answer's body is
  // read): past the pool's connections, a new one waits, and gets a deadline of its own.
  let held = 0;
  const release = () => {
    held -= 1;
  };
  return {
    request(options, callback) {
      const headers = options.headers as Record<string | symbol, unknown> | undefined;
      // reply-from builds these options for each request (its own timeout unset): the pool's
      // timeouts are those of startup, these the current ones.
      const timeoutMs = limits.timeoutMs;
      options.headersTimeout = timeoutMs;
      options.bodyTimeout = timeoutMs;
      const signal = headers?.[kUpstreamAbort];
      let deadline: NodeJS.Timeout | undefined;
      let givenUp = false;
      if (signal instanceof UpstreamAbort) options.signal = signal as unknown as Dispatcher.RequestOptions['signal'];
      if (signal instanceof UpstreamAbort && !signal.aborted) {
        held += 1;
        signal.onSettled = release;
        if (held > limits.connections) {
          // undici would keep it queued, with no timeout, until a connection frees: answered 504
          // if it has none after upstream.timeoutMs, and dropped should one free later. Once it
          // has one, undici's own timeouts take over.
          deadline = setTimeout(() => {
            givenUp = true;
            const error = new PoolTimeout(timeoutMs);
            signal.abort(error);
            callback(error, undefined as unknown as Dispatcher.ResponseData);
          }, timeoutMs);
          (options as { [kStarted]?: () => void })[kStarted] = () => clearTimeout(deadline);
        }
      }
      const answered = (error: Error | null, data: Dispatcher.ResponseData) => {
        if (deadline !== undefined) clearTimeout(deadline);
        // Failed: undici holds it no longer (it has removed its listener, if it ever added one).
        if (error !== null && signal instanceof UpstreamAbort) signal.settle();
        if (givenUp) {
          if (error === null) data.body.destroy();
          return;
        }
        // A transfer coding other than chunked (`gzip, chunked`): undici takes the chunks off, and
        // the client would get the coded bytes as if they were the body, their coding gone (the
        // forwarder drops Transfer-Encoding). Not relayed: a 502, as for any answer the gateway
        // cannot pass on as it came.
        const coding = error === null ? data.headers['transfer-encoding'] : undefined;
        if (coding !== undefined && !(typeof coding === 'string' && coding.trim().toLowerCase() === 'chunked')) {
          data.body.destroy();
          callback(new UpstreamUnavailable(`upstream answered with a transfer coding other than chunked (${String(coding).slice(0, 64)})`, 'other'), data);
          return;
        }
        callback(error, data);
      };
      // A conditional request (the only kind a 304 answers) and one that waits for a connection
      // go through Watched; the others, all but a few, straight to the pool.
      if (deadline !== undefined || (headers !== undefined && (headers['if-none-match'] !== undefined || headers['if-modified-since'] !== undefined))) requestWatched(options, answered);
      else request(options, answered);
    },
    destroy: () => pool.destroy(),
  };
}
