/**
 * buildServer(config) -> the proxy and admin Fastify instances; never listens. The HTTP server is
 * made here so that Node's strict parser, header limit, request timeout and `Expect:
 * 100-continue` handling are ours to set.
 */
import { readFileSync } from 'node:fs';
import { STATUS_CODES, createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { buildAdmin } from './admin.js';
import type { Config } from './config.js';
import { HeaderTooLarge, InvalidRequest, InvalidTarget, RequestTimeout, scimErrorBody, GatewayError, TargetTooLong } from './errors.js';
import type { BodyBudget } from './request/body.js';
import { afterAnswersOwed, closeStalled, createRewriteUrl, gateway, InFlight, parserRefusalOf } from './gateway.js';
import type { AccessLine } from './log.js';
import type { Metrics } from './metrics.js';
import type { Runtime } from './runtime.js';
import type { PurgeMatch } from './token/cache.js';
import { createUpstreamPool } from './upstream.js';

/** What buildServer needs. */
export interface ServerOptions {
  current: () => Runtime;
  metrics: Metrics;
  logger: Logger;
  access: (line: AccessLine) => void;
  /** The bytes of request bodies held in memory, all requests together. */
  bodies: BodyBudget;
  broadcastPurge?: (match: PurgeMatch) => Promise<number>;
}

/** The proxy and admin instances of one gateway. */
export interface Servers {
  proxy: FastifyInstance;
  admin: FastifyInstance;
  /** The proxy's requests whose response has not closed yet. */
  inFlight: InFlight;
  /** Stops the proxy (its requests in flight finish), then the upstream pool; /readyz says 503 from now on. */
  closeProxy(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Writes `error` as a SCIM error on a raw socket and closes it; counts and logs the answer: as the
 * line of the request whose body the parser refused, or of a request that never got a head.
 * Nothing is written on a connection already closing (the last answer owed said `Connection:
 * close`) nor behind the answer of the request the refusal concerns.
 */
function answerOnSocket(socket: Socket, error: GatewayError, options: ServerOptions, nextId: () => string, method: string | undefined, reason: string): void {
  if (!socket.writable) return;
  const refused = parserRefusalOf(socket, error.statusCode, reason);
  if (refused === null) {
    // Its own answer is under way: the connection ends after what is written of it (as Node's
    // own handler does, an answer still streaming is cut: nothing more can be read from a
    // connection whose parser refused).
    socket.destroySoon();
    return;
  }
  const body = scimErrorBody(error);
  socket.write(`HTTP/1.1 ${error.statusCode} ${STATUS_CODES[error.statusCode] ?? 'Error'}\r\ncontent-type: application/scim+json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  socket.destroySoon();
  const line = refused ?? {
    reqId: nextId(), method, path: '(unparsed)', operation: null, status: error.statusCode, decision: 'deny',
    reason, clientId: null, subject: null, fingerprint: null, requiredScopes: null, durationMs: 0,
  };
  options.metrics.requests.inc({ operation: line.operation ?? 'none', decision: line.decision, status: String(error.statusCode) });
  // A head that never parsed has no start to time from: it counts with 0.
  options.metrics.duration.cell({ decision: line.decision }).observe(line.durationMs / 1000);
  options.access(line);
}

/**
 * Answers a request the HTTP parser refused, on the raw socket, as a SCIM error, and counts it
 * like any other answer of the proxy port (metrics and an access line): after the answers the
 * connection owes the requests before it.
 */
function createClientErrorHandler(options: ServerOptions, nextId: () => string): (error: NodeJS.ErrnoException, socket: Socket) => void {
  // A parser that refused stays refused: every later byte of its connection is reported again.
  const refused = new WeakSet<Socket>();
  return (error, socket) => {
    // A TLS connection whose handshake failed or never ended (Node's https server passes those
    // here too) made no request: an HTTP answer written to it would wait forever for a
    // handshake, keeping the socket open and the shutdown waiting. A peer that went away
    // mid-request (ECONNRESET) has nobody to answer.
    if (tlsFailed(error, socket)) {
      if (!established(socket)) options.metrics.tlsHandshakeFailures.inc();
      socket.destroy();
      return;
    }
    // Answered already, or about to be (after the answers owed): its parser reports every later
    // byte again until the lingering close (lingerOnClose) lets it go and drops what follows, so
    // that the answer is not overtaken by a reset.
    if (refused.has(socket) && error.code !== 'ECONNRESET') return;
    if (!socket.writable || error.code === 'ECONNRESET') {
      socket.destroy();
      return;
    }
    refused.add(socket);
    // Bytes after a request that closes its connection (`Connection: close`, HTTP/1.0) are never
    // processed and get no answer (RFC 9112 section 9.6): the connection ends after that request's.
    if (error.code === 'HPE_CLOSED_CONNECTION') {
      afterAnswersOwed(socket, () => socket.destroySoon());
      return;
    }
    const gatewayError = error.code === 'HPE_HEADER_OVERFLOW'
      ? (longRequestLine(error, options.current().config.limits.targetBytes) ? new TargetTooLong(error.code) : new HeaderTooLarge(error.code))
      : error.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? new RequestTimeout(error.code)
        : new InvalidRequest(error.code ?? 'parse error', 'The request cannot be parsed');
    afterAnswersOwed(socket, () => answerOnSocket(socket, gatewayError, options, nextId, undefined, `refused by the HTTP parser: ${gatewayError.reason}`));
  };
}

/**
 * Whether the head Node refused as too large was refused for its request line: the bytes it was
 * parsing start with a method and a space, and hold no line end within limits.targetBytes of them.
 * Node counts the target with the headers, so a target far over limits.targetBytes (which the steps
 * answer 414) can meet its bound first; it is a 414 then too, not a 431.
 */
function longRequestLine(error: Error, targetBytes: number): boolean {
  const packet = (error as { rawPacket?: unknown }).rawPacket;
  if (!Buffer.isBuffer(packet) || !/^[A-Z]+ /.test(packet.subarray(0, 24).toString('latin1'))) return false;
  const end = packet.indexOf('\n');
  return end === -1 || end > targetBytes + 32;
}

const kPending = Symbol('scopegate.sent');
const kSince = Symbol('scopegate.sentSince');
type WatchedSocket = Socket & { [kPending]?: number; [kSince]?: number };

/**
 * Closes the connections whose client stopped reading: bytes waiting to go out, and not one byte
 * taken by the kernel for limits.sendTimeoutMs (nginx's send_timeout). Its answer would otherwise hold an
 * upstream connection as long as the client likes: a few such clients would hold the whole pool.
 * One sweep over the open connections at most every second; nothing per request.
 */
function watchStalls(server: Server, connectionEvent: 'connection' | 'secureConnection', sendTimeoutMs: number): void {
  const sockets = new Set<WatchedSocket>();
  server.on(connectionEvent, (socket: WatchedSocket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  const sweep = setInterval(() => {
    const now = performance.now();
    for (const socket of sockets) {
      // The bytes the kernel has taken: those given to the socket, less what libuv still holds
      // (a write a slow reader takes part by part shrinks that queue as it goes).
      const sent = socket.bytesWritten - ((socket as { _handle?: { writeQueueSize?: number } })._handle?.writeQueueSize ?? 0);
      if (socket.writableLength === 0 || sent !== socket[kPending]) {
        // Nothing waiting, or some of it went since the last sweep.
        socket[kPending] = sent;
        socket[kSince] = now;
      } else if (now - socket[kSince]! >= sendTimeoutMs) {
        closeStalled(socket, sendTimeoutMs);
      }
    }
  }, Math.max(20, Math.min(1000, Math.floor(sendTimeoutMs / 4))));
  sweep.unref();
  server.once('close', () => clearInterval(sweep));
}

/** How long a connection the gateway closes goes on reading what its client still sends. */
const LINGER_MS = 5000;

/** The sockets of one server that are lingering, so that a shutdown need not wait for them. */
const kLingering = Symbol('scopegate.lingering');
type LingeringSocket = Socket & { [kLingering]?: Set<Socket> };

/**
 * Closes the connections of `Connection: close` answers as nginx's `lingering_close` does. An
 * answer that refuses a request before its body is read (413, 401, 403 on a 3 MB PUT sent without
 * `Expect`) is written while the client is still sending; were the socket closed at once, the
 * body still arriving would make the kernel reset the connection, and a reset throws away the
 * answer the client has not read yet: it would see a broken pipe instead of its 413. So the
 * gateway's side is ended (FIN) after the answer, and what the client still sends is read and
 * discarded until it ends its own side, or LINGER_MS pass. Node closes such a connection with
 * destroySoon, which each accepted socket gets in this form.
 */
function lingerOnClose(lingering: Set<Socket>): (socket: Socket) => void {
  return (socket: LingeringSocket) => {
    socket[kLingering] = lingering;
    socket.destroySoon = lingeringClose;
  };
}

function lingeringClose(this: LingeringSocket): void {
  if (this.writable) this.end();
  if (this.destroyed) return;
  if (this.readableEnded) {
    this.destroy();
    return;
  }
  const lingering = this[kLingering];
  lingering?.add(this);
  const timer = setTimeout(() => this.destroy(), LINGER_MS);
  timer.unref();
  this.once('close', () => {
    clearTimeout(timer);
    lingering?.delete(this);
  });
  this.once('end', () => this.destroy());
  // Read on, and drop what comes as bytes: nothing more of the connection is HTTP to the gateway.
  // Left to the HTTP parser, a body still coming would cost its callbacks for each of its pieces
  // (a chunked body of 1-byte chunks, ten times a plain one's CPU), for LINGER_MS, from a client
  // that needs no token to be refused. Node's parser reads a plain socket from native code
  // (consume): it is let go as Node lets it go for an upgrade, and its listener removed.
  releaseParser(this);
  this.on('data', discard);
  this.resume();
}

/** Drops a chunk. */
function discard(): void {}

/** Stops `socket`'s HTTP parser reading it; later bytes come as 'data' events, to no one. */
function releaseParser(socket: Socket): void {
  const parser = (socket as { parser?: { _consumed?: boolean; unconsume?: () => void } | null }).parser;
  if (parser?._consumed === true && typeof parser.unconsume === 'function') {
    parser.unconsume();
    parser._consumed = false;
  }
  socket.removeAllListeners('data');
}

/** False for a TLS connection whose handshake has not ended (true for plain TCP). */
function established(socket: Socket): boolean {
  const tls = socket as Socket & { encrypted?: boolean; _secureEstablished?: boolean };
  return tls.encrypted !== true || tls._secureEstablished !== false;
}

/**
 * True for the error of a TLS connection that failed below HTTP: its handshake failed, timed out
 * or has not ended, or a record could not be read. Nothing can be answered on it.
 */
function tlsFailed(error: NodeJS.ErrnoException, socket: Socket): boolean {
  return error.code === 'ERR_TLS_HANDSHAKE_TIMEOUT' || error.code?.startsWith('ERR_SSL_') === true || !established(socket);
}

/** Builds the HTTP(S) server of the proxy port with the limits of the config. */
function createProxyServer(config: Config, handler: (req: IncomingMessage, res: ServerResponse) => void, serverOptions: ServerOptions, nextId: () => string, lingering: Set<Socket>): Server {
  const options = {
    // Node counts the request-target with the header names and values (not the `: ` and CRLFs),
    // and refuses at the limit: its bound is left above both of ours, which the steps apply
    // exactly (414 over limits.targetBytes, 431 over limits.headerBytes as written).
    maxHeaderSize: config.limits.headerBytes + config.limits.targetBytes + 64,
    requestTimeout: config.limits.requestTimeoutMs,
    headersTimeout: Math.min(config.limits.requestTimeoutMs, 60000),
    keepAliveTimeout: 5000,
    // Node checks request and header timeouts only this often (30 s by default).
    connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(config.limits.requestTimeoutMs / 2))),
    // Node's strict parser stays on (SECURITY.md F01-F04): never insecureHTTPParser.
    insecureHTTPParser: false,
    joinDuplicateHeaders: false,
    // A missing Host is refused by the steps (a SCIM 400 in the access log), not by Node's bare 400.
    requireHostHeader: false,
  };
  const server = config.listen.tls
    // A handshake is part of sending the request: it has limits.requestTimeoutMs too (Node's own
    // default is 120 s).
    ? createHttpsServer({ ...options, handshakeTimeout: config.limits.requestTimeoutMs, cert: readFileSync(config.listen.tls.certFile), key: readFileSync(config.listen.tls.keyFile) }, handler)
    : createHttpServer(options, handler);
  // Node keeps the first 1000 header lines and drops the rest unseen: a second Host or
  // Authorization past them would go unnoticed. The steps bound the block by its bytes as written
  // (limits.headerBytes; Node's maxHeaderSize counts names and values only), at least 5 a line
  // (`a:` CRLF, an empty value): Node keeps one line more than fit, so that a block with lines
  // dropped is always over the limit (431), and memory stays bounded by the limit.
  server.maxHeadersCount = Math.floor(config.limits.headerBytes / 5) + 1;
  // listen.maxConnections (0: none; Node reads 0 as no limit too): a connection past it is closed
  // by Node as it is accepted, before a byte is read. Set again at a reload (src/app.ts).
  server.maxConnections = config.listen.maxConnections;
  server.on('drop', () => serverOptions.metrics.connectionsDropped.inc());
  watchStalls(server as Server, config.listen.tls ? 'secureConnection' : 'connection', config.limits.sendTimeoutMs);
  server.on(config.listen.tls ? 'secureConnection' : 'connection', lingerOnClose(lingering));
  // Without this listener Node answers `100 Continue` by itself, before the token is checked. With
  // it, the request goes to the steps, and 100 is written only once the request is allowed.
  server.on('checkContinue', handler);
  // Any other expectation: to the steps too, which answer 417 in their order (not Node's bare 417
  // before the table is consulted).
  server.on('checkExpectation', handler);
  // CONNECT (authority-form) never reaches the request handler: without this listener Node would
  // close the connection without a word.
  server.on('connect', (_req: IncomingMessage, socket: Socket) => {
    afterAnswersOwed(socket, () => answerOnSocket(socket, new InvalidTarget('CONNECT (authority-form request-target)'), serverOptions, nextId, 'CONNECT', 'CONNECT is not served'));
  });
  return server as Server;
}

/** Request ids: a random prefix per process and a counter, unique across replicas and restarts. */
function createRequestIds(): () => string {
  const prefix = randomBytes(6).toString('hex');
  let next = 0;
  return () => `${prefix}-${(next++).toString(36)}`;
}

/** Builds both instances; the proxy forwards through one undici pool to the upstream. */
export async function buildServer(options: ServerOptions): Promise<Servers> {
  const config = options.current().config;
  const dispatcher = createUpstreamPool(config.upstream);
  const requestIds = createRequestIds();
  // Connections closed after their answer that still read what their clients send (lingerOnClose).
  const lingering = new Set<Socket>();
  const proxy = Fastify({
    serverFactory: (handler) => createProxyServer(config, handler, options, requestIds, lingering),
    // No logger of Fastify's own: every answer has its access line (src/gateway.ts), and what
    // else the gateway has to say it writes with options.logger. Given a logger, Fastify would
    // follow every response with listeners and timestamps of its own, and a library would write
    // lines (reply-from's warning, with a stack, for each client that leaves) the gateway does not.
    logger: false,
    // One sequence for every access line, those of requests the parser refused included.
    genReqId: requestIds,
    requestIdHeader: false,
    rewriteUrl: createRewriteUrl(options.current),
    // The only handler of the parser's refusals: Fastify's own would write its JSON 400 beside
    // ours, or destroy the connection while the answers owed before the refusal are still due.
    clientErrorHandler: createClientErrorHandler(options, requestIds),
    // The gateway answers such requests itself (src/gateway.ts, ShuttingDown).
    return503OnClosing: false,
    forceCloseConnections: 'idle',
    bodyLimit: config.limits.bodyBytes,
    routerOptions: { maxParamLength: 65535, caseSensitive: true, ignoreTrailingSlash: false, ignoreDuplicateSlashes: false },
  });
  const inFlight = new InFlight();
  await proxy.register(gateway, { current: options.current, metrics: options.metrics, dispatcher, access: options.access, logger: options.logger, inFlight, bodies: options.bodies });
  let stopping = false;
  const admin = buildAdmin({
    current: options.current, metrics: options.metrics, logger: options.logger, stopping: () => stopping,
    ...(options.broadcastPurge ? { broadcastPurge: options.broadcastPurge } : {}),
  });
  const closeProxy = async () => {
    stopping = true;
    // Their answers are written: the stop does not wait for their clients to finish sending.
    for (const socket of lingering) socket.destroy();
    await proxy.close();
    // Every client connection is closed now, and the requests they had in flight upstream were
    // aborted as they closed: whatever the upstream still owes has nobody to go to. Waiting for
    // it, as close() would, could hold the stop up to upstream.timeoutMs.
    await dispatcher.destroy().catch(() => undefined);
  };
  return {
    proxy,
    admin,
    inFlight,
    closeProxy,
    async close() {
      await Promise.allSettled([closeProxy(), admin.close()]);
    },
  };
}
