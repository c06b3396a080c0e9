/**
 * The gateway plugin: every request on the proxy port goes through these named steps, and the
 * first that fails answers (INTERFACE.md order):
 *   1. target   the raw request-target passes the strict grammar (400, 414)
 *   2. route    the table gives the operation (404, 405; OPTIONS answered here)
 *   3. token    public operations skip; else one Bearer credential, validated through the cache (401, 503)
 *   4. scopes   the operation's requirement is satisfied (403)
 *   5. body     the size limit, and /Bulk's inner operations (413, 400, 403)
 *   6. forward  @fastify/http-proxy (reply-from, from its preHandler), exactly the checked method and raw target
 *   7. log      one access line as the response closes, finished or not
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import proxy from '@fastify/http-proxy';
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Dispatcher } from 'undici';
import { classifyBulk, isBulk, type BulkSummary } from './bulk.js';
import {
  ExpectationFailed, GatewayBusy, GatewayError, HeaderTooLarge, InsufficientScope, InternalError, InvalidBearerRequest, InvalidRequest, InvalidTarget, MethodNotAllowed, MissingToken, PayloadTooLarge, RouteNotFound, ShuttingDown,
  UnsupportedMediaType, UpstreamTimeout, UpstreamUnavailable, scimErrorBody, wwwAuthenticate,
} from './errors.js';
import { responseHeaders, upstreamHeaders } from './headers.js';
import type { AccessLine } from './log.js';
import type { Metrics } from './metrics.js';
import { BodyBudget, readBody } from './request/body.js';
import { parseTarget, type Target } from './request/target.js';
import type { Runtime } from './runtime.js';
import type { Operation } from './scopes/openapi.js';
import { requirementOfMatch, type Table } from './scopes/table.js';
import { closest, satisfied } from './scopes/requirement.js';
import { authorizationValue, checkB64Token, extractBearer, isFormBody, queryHasToken } from './token/bearer.js';
import { fingerprintOf, tokenKey } from './token/cache.js';
import type { Principal } from './token/principal.js';
import { abortableDispatcher, ClientLeft, kUpstreamAbort, UpstreamAbort } from './upstream.js';

/** What the steps learned about one request; the access line is written from it. */
export interface Decision {
  readonly started: number;
  readonly runtime: Runtime;
  target?: Target;
  operation?: Operation;
  /** The other operations its path matches too (src/scopes/table.ts): their scopes are needed as well. */
  also?: readonly Operation[];
  allowed: boolean;
  reason: string;
  principal?: Principal;
  fingerprint?: string;
  token?: string;
  required?: readonly string[];
  bulk?: BulkSummary;
  /** The length of a body read whole before forwarding (one sent chunked): sent as Content-Length. */
  bodyLength?: number;
  /** The path template of a path in the table whose method is not (405, OPTIONS): the metric's label. */
  template?: string;
  /** Its access line is written (as its response closed, or by the parser's refusal of its body). */
  logged: boolean;
  /** The upstream answer's body, once it is relayed. */
  upstreamBody: Readable | undefined;
  /** Aborts its upstream request, once it is forwarded: its client left before the answer. */
  upstreamAbort: UpstreamAbort | undefined;
  /** Its share of the body budget (options.bodies), given back when its response closes. */
  heldBytes: number;
  /** It holds one of the upstream connections that streamed bodies may take, given back when its response closes. */
  streaming: boolean;
  /** The client's connection; the request's own `socket` is null once the forwarder destroyed its body stream. */
  readonly connection: Socket;
  /** Runs its steps, once the request before it on its connection has ended (pipelining). */
  resume: (() => void) | undefined;
}

declare module 'fastify' {
  interface FastifyRequest {
    decision: Decision | null;
  }
}

/** Options of the gateway plugin. */
export interface GatewayOptions {
  /** The runtime in force; read once per request, swapped whole on reload. */
  current: () => Runtime;
  metrics: Metrics;
  dispatcher: Dispatcher;
  /** Writes one access line. */
  access: (line: AccessLine) => void;
  /** What the gateway itself has to say beside the access lines (an internal error). */
  logger: Pick<FastifyBaseLogger, 'error'>;
  /** Counts the requests whose response has not closed yet. */
  inFlight: InFlight;
  /** The bytes of request bodies read whole (chunked, /Bulk) held in memory, all requests together. */
  bodies: BodyBudget;
}

/**
 * The requests between their onRequest and the close of their response, when their access line
 * has been written: what a shutdown waits for after it closed their connections. (The server's
 * own 'close' is emitted as the last connection is destroyed, before the responses' 'close'.)
 */
export class InFlight {
  #count = 0;
  #waiters: Array<() => void> = [];

  get count(): number {
    return this.#count;
  }

  enter(): void {
    this.#count++;
  }

  leave(): void {
    if (--this.#count === 0 && this.#waiters.length > 0) {
      for (const wake of this.#waiters.splice(0)) wake();
    }
  }

  /** Resolves true once no request is in flight, or false after `timeoutMs`. */
  settled(timeoutMs: number): Promise<boolean> {
    if (this.#count === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== wake);
        resolve(false);
      }, timeoutMs);
      this.#waiters.push(wake);
    });
  }
}

const NO_SCOPES: ReadonlySet<string> = new Set();

const kTarget = Symbol('scopegate.target');
type WithTarget = IncomingMessage & { [kTarget]?: Target | GatewayError };

/**
 * Step 1 as Fastify's `rewriteUrl`, before its router sees the URL: the grammar is applied to
 * the raw target, and the router and forwarder only ever see the checked origin-form (an
 * absolute-form target is routed by its path, never by the client's authority).
 */
export function createRewriteUrl(current: () => Runtime): (req: IncomingMessage) => string {
  return (req) => {
    const r = req as WithTarget;
    try {
      const runtime = current();
      const target = parseTarget(req.url ?? '', req.headers.host, runtime.config.limits.targetBytes, runtime.table.encodable);
      r[kTarget] = target;
      return target.target;
    } catch (error) {
      r[kTarget] = error instanceof GatewayError ? error : new InternalError(String(error));
      return '/';
    }
  };
}

// The Host header: an RFC 3986 authority without userinfo, as Jetty's HostPort accepts it. Its
// value goes on as X-Forwarded-Host, which Jetty's forwarded module trusts: a value Jetty would
// refuse as a Host (a path, a `#`, a space) must not reach it by that way either, nor a `,`, which
// RFC 3986 allows in a reg-name but which makes X-Forwarded-Host a list (Jetty reads its first member).
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+;=]*)(?::\d{0,5})?$/;

/** Whether a Host value the pattern above passed names a port over 65535 (the port's colon is the first after any `]`). */
function portOutOfRange(host: string): boolean {
  const colon = host.indexOf(':', host.lastIndexOf(']') + 1);
  return colon !== -1 && colon < host.length - 1 && Number(host.slice(colon + 1)) > 65535;
}

/**
 * Node's parser already refuses TE with CL, duplicate CL and obs-fold (F01-F04). What it lets by:
 * a coding list ending in `chunked` (`gzip, chunked`) or several Transfer-Encoding headers (the
 * gateway would re-frame such a body and drop the other coding), a second Host header, a Host
 * that is not an authority, and (the server does not require it, so that the refusal is a SCIM
 * error) an HTTP/1.1 request without Host.
 */
function checkFraming(raw: IncomingMessage, headerBytes: number): void {
  const rawHeaders = raw.rawHeaders;
  let codings = 0;
  let hosts = 0;
  // The header block as its lines are written (`name: value` CRLF): Node's maxHeaderSize counts
  // names and values only, so a thousand short lines passed it with 4 KiB more than the limit.
  let bytes = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    bytes += name.length + rawHeaders[i + 1]!.length + 4;
    if (name.length === 4 && name.toLowerCase() === 'host') {
      // Node keeps the first of two Host headers; Jetty refuses them (400): so does the gateway.
      hosts += 1;
      if (hosts > 1) throw new InvalidRequest('more than one Host header', 'The request has more than one Host header');
      const host = rawHeaders[i + 1]!;
      if (!HOST.test(host) || portOutOfRange(host)) throw new InvalidRequest('Host is not a host[:port]', 'The Host header is malformed');
      continue;
    }
    if (name.length !== 17 || name.toLowerCase() !== 'transfer-encoding') continue;
    codings += 1;
    if (codings > 1 || rawHeaders[i + 1]!.trim().toLowerCase() !== 'chunked') {
      throw new InvalidRequest('Transfer-Encoding other than one plain chunked', 'The request framing is ambiguous');
    }
  }
  if (bytes > headerBytes) throw new HeaderTooLarge(`header block of ${bytes} bytes (${rawHeaders.length / 2} lines)`);
  if (hosts === 0 && raw.httpVersionMinor >= 1) throw new InvalidRequest('HTTP/1.1 without Host', 'The request has no Host header');
}

/**
 * Whether an Expect value (several headers arrive joined by commas) asks for nothing but
 * 100-continue: the only expectation defined (RFC 9110 section 10.1.1). Node's own test finds the
 * word anywhere (`100-continue, foo`); any other member is refused (417).
 */
function onlyContinue(expect: string): boolean {
  if (expect.length === 12) return expect.toLowerCase() === '100-continue';
  let members = 0;
  for (const member of expect.split(',')) {
    const name = member.trim();
    // Empty list elements are ignored (RFC 9110 section 5.6.1.2); an empty value asks nothing known.
    if (name === '') continue;
    if (name.toLowerCase() !== '100-continue') return false;
    members += 1;
  }
  return members > 0;
}

/** A declared body over the limit is refused before a byte of it is read. */
function checkLength(length: string | undefined, limit: number): void {
  if (length !== undefined && Number(length) > limit) throw new PayloadTooLarge(`content-length ${length}`);
}

/** Metric children bound once, not looked up by label on every request. */
interface Counters {
  cacheHit: { inc(): void };
  cacheMiss: { inc(): void };
}

/** The detail of a refused second place for a token (RFC 6750 sections 2.2 and 2.3 are not supported). */
const ONE_PLACE = 'A token may only be sent in the Authorization header';

/**
 * Steps 2-4, run in onRequest: nothing of the body has been read yet. Synchronous when the token
 * is in the local cache; a promise only when it must be validated.
 */
function decide(request: FastifyRequest, decision: Decision, counters: Counters): Promise<void> | undefined {
  const { runtime } = decision;
  const { config } = runtime;
  const raw = request.raw;
  const target = (raw as WithTarget)[kTarget];
  if (target === undefined) throw new InternalError('request-target not checked');
  if (target instanceof GatewayError) throw target;
  // Only HTTP/1.x is served here: reply-from would take an `HTTP/2.0` request line for an h2 source.
  if (raw.httpVersionMajor !== 1) throw new InvalidRequest(`HTTP/${raw.httpVersion} on an HTTP/1 listener`, 'Unsupported HTTP version');
  checkFraming(raw, config.limits.headerBytes);
  const method = raw.method ?? '';
  if (method === 'OPTIONS') {
    // Answered here, never forwarded, and never an authorisation of anything else (M03).
    const match = runtime.table.match('OPTIONS', target.path);
    if (match.kind === 'none') throw new RouteNotFound('OPTIONS on a path not in the table');
    if (match.kind === 'method') decision.template = match.template;
    const allow = match.kind === 'method' ? match.allow : ['OPTIONS'];
    throw new OptionsAnswer(allow);
  }
  const match = runtime.table.match(method, target.path);
  // TRACE is served nowhere: 405 on any path (SECURITY.md M05, as Jetty's DefaultServlet answers
  // it), with the methods of the path (none outside the table). Nothing about a token is read.
  if (match.kind === 'none' && method === 'TRACE') throw new MethodNotAllowed([], 'TRACE is not served');
  if (match.kind === 'none') throw new RouteNotFound('path not in the table');
  if (match.kind === 'method') {
    decision.template = match.template;
    throw new MethodNotAllowed(match.allow);
  }
  const operation = match.operation;
  decision.operation = operation;
  if (match.also) decision.also = match.also;
  const expect = raw.headers.expect;
  if (expect !== undefined && !onlyContinue(expect)) throw new ExpectationFailed(`Expect: ${expect.slice(0, 64)}`);
  if (operation.public && match.also === undefined) {
    // Not read on a public operation, but two credentials are ambiguous wherever they are sent,
    // and a token in the query would reach the upstream and its logs (rule 5): refused here too.
    const authorization = authorizationValue(raw.rawHeaders);
    if (queryHasToken(target.query)) throw new InvalidBearerRequest('access_token in the query (a token may only travel in the Authorization header)', 400, ONE_PLACE);
    if (authorization !== undefined && isFormBody(raw.headers['content-type'])) {
      throw new InvalidBearerRequest('form-encoded body beside an Authorization header (a token may only travel in the Authorization header)', 400, ONE_PLACE);
    }
    checkLength(raw.headers['content-length'], config.limits.bodyBytes);
    decision.allowed = true;
    decision.reason = 'public';
    return;
  }
  const token = extractBearer(raw.rawHeaders, config.limits.tokenBytes);
  if (token === undefined) throw new MissingToken('no bearer token');
  const key = keyOf(raw.socket as KeyedSocket, token);
  const cached = runtime.verifier.peek(key);
  // Only a token that passed this check is ever cached (under its SHA-256): a hit needs no second look.
  if (!cached) checkB64Token(token);
  // One credential in one place (RFC 6750 sections 2.2 and 2.3 are not supported): a second copy
  // in the query or a form body is refused, never forwarded to the upstream and its logs.
  if (queryHasToken(target.query)) throw new InvalidBearerRequest('access_token in the query as well', 400, ONE_PLACE);
  if (isFormBody(raw.headers['content-type'])) throw new InvalidBearerRequest('form-encoded body (a token may only travel in the Authorization header)', 400, ONE_PLACE);
  decision.fingerprint = fingerprintOf(key);
  decision.token = token;
  if (cached) {
    counters.cacheHit.inc();
    authorize(request, decision, operation, cached);
    return undefined;
  }
  counters.cacheMiss.inc();
  return runtime.verifier.verify(token, key).then(({ principal }) => authorize(request, decision, operation, principal));
}

const kStalled = Symbol('scopegate.stalled');

/**
 * Closes `socket`, of whose answer the kernel has taken nothing for `ms` (src/server.ts watches):
 * its request ends (its line says why) and its upstream request is aborted, which frees the
 * pool connection it held.
 */
export function closeStalled(socket: Socket, ms: number): void {
  (socket as MarkedSocket)[kStalled] = ms;
  socket.destroy();
}

const kClosing = Symbol('scopegate.closing');
const kOpen = Symbol('scopegate.open');
const kRefusal = Symbol('scopegate.refusal');
type MarkedSocket = Socket & {
  [kClosing]?: boolean;
  /** limits.sendTimeoutMs, when the connection was closed for a client that did not read its answer. */
  [kStalled]?: number;
  /** The connection's requests whose response has not closed, in the order they came, each with what ends it. */
  [kOpen]?: OpenRequests;
  /** The HTTP parser's refusal, waiting for the answers owed before it. */
  [kRefusal]?: () => void;
};

/** An open request of a connection, and what ends it. */
interface OpenEntry {
  readonly reply: FastifyReply;
  readonly end: () => void;
  next: OpenEntry | undefined;
}

/** The most requests of one connection open at once (one in its steps, the others pipelined behind it). */
const MAX_PIPELINED = 64;

/**
 * The requests of a connection whose response has not closed, oldest first: a queue, one entry
 * long but for pipelining. (A Map emptied at the end of each request would shrink its table,
 * a runtime call and a new table, every time.)
 */
class OpenRequests {
  head: OpenEntry | undefined = undefined;
  tail: OpenEntry | undefined = undefined;
  size = 0;

  add(reply: FastifyReply, end: () => void): void {
    this.size += 1;
    const entry: OpenEntry = { reply, end, next: undefined };
    if (this.tail === undefined) this.head = entry;
    else this.tail.next = entry;
    this.tail = entry;
  }

  /** Removes the entry of `reply`: false when it was not open. */
  delete(reply: FastifyReply): boolean {
    let before: OpenEntry | undefined;
    for (let entry = this.head; entry !== undefined; before = entry, entry = entry.next) {
      if (entry.reply !== reply) continue;
      if (before === undefined) this.head = entry.next;
      else before.next = entry.next;
      if (this.tail === entry) this.tail = before;
      this.size -= 1;
      return true;
    }
    return false;
  }

  /** Whether one of them was received whole. */
  someComplete(): boolean {
    for (let entry = this.head; entry !== undefined; entry = entry.next) if (entry.reply.request.raw.complete) return true;
    return false;
  }

  /** What ends each, as they are now. */
  ends(): Array<() => void> {
    const ends: Array<() => void> = [];
    for (let entry = this.head; entry !== undefined; entry = entry.next) ends.push(entry.end);
    return ends;
  }
}

/**
 * The requests of `socket` whose response has not closed. A response queued behind another
 * (pipelining) emits no 'close' of its own when the connection goes: the socket's 'close' ends
 * those, so that each still gets its access line and gives back the bytes of its body.
 */
function openRequestsOf(socket: MarkedSocket): OpenRequests {
  let open = socket[kOpen];
  if (open === undefined) {
    const requests = new OpenRequests();
    socket.once('close', () => {
      for (const end of requests.ends()) end();
    });
    socket[kOpen] = open = requests;
  }
  return open;
}

/**
 * Says `Connection: close` on an answer that ends its connection. While the gateway closes: the
 * answer of the last request open on its connection (the server closes each connection as its
 * last answer is sent); one with a request behind it (pipelined before the close began) keeps the
 * connection for that request's own answer, a 503. And always the answer to a request that asked
 * for an Upgrade, after which nothing of the connection is processed (see steps).
 */
function endsItsConnection(request: FastifyRequest, reply: FastifyReply, closing: boolean): void {
  if (request.raw.headers.upgrade !== undefined) {
    reply.raw.shouldKeepAlive = false;
    return;
  }
  if (!closing) return;
  const open = (request.decision?.connection as MarkedSocket | undefined)?.[kOpen];
  if (open === undefined || open.head === open.tail) reply.raw.shouldKeepAlive = false;
}

/** The latest request of `socket` whose response has not closed. */
function latestOpen(socket: MarkedSocket): FastifyReply | undefined {
  return socket[kOpen]?.tail?.reply;
}

/** Whether `socket` still owes the answer of a request it received whole. */
function owesAnswers(socket: MarkedSocket): boolean {
  return socket[kOpen]?.someComplete() ?? false;
}

/**
 * Runs `answer`, the HTTP parser's refusal of what came next on `socket`, once the answers of
 * the requests received whole before it are complete. Answers go in the order of the requests
 * (RFC 9112 section 9.3.2): a refusal written at once would read as the answer to a request
 * still in flight, one the upstream may already have run, and would cut the answers owed.
 */
export function afterAnswersOwed(socket: Socket, answer: () => void): void {
  const s = socket as MarkedSocket;
  if (owesAnswers(s)) s[kRefusal] = answer;
  else answer();
}

/**
 * The HTTP parser refused what came next on `socket` (src/server.ts answers it there). When that
 * was the body of the connection's latest request, still incomplete (cut off, malformed chunks, a
 * stall to limits.requestTimeoutMs), the refusal is that request's answer: its decision records
 * it and its one access line is returned (a request already forwarded stays allowed, and its
 * upstream request is aborted); null when that request has its own answer under way
 * (refused before its body was read, or answered by the upstream before it), which the refusal
 * must not follow nor be written into. Otherwise (a request whose head could not be parsed) there
 * is no request yet: undefined.
 */
export function parserRefusalOf(socket: Socket, status: number, reason: string): AccessLine | null | undefined {
  const reply = latestOpen(socket as MarkedSocket);
  const request = reply?.request;
  const d = request?.decision;
  if (!reply || !request || !d || request.raw.complete) return undefined;
  if (d.logged) return null;
  if (reply.raw.headersSent) {
    // Its answer has begun (an upstream that answered before the body ended): the refusal is not
    // written into it; the line written as it closes names the refusal.
    d.reason = reason;
    return null;
  }
  d.logged = true;
  if (d.upstreamAbort === undefined) {
    d.allowed = false;
    d.reason = reason;
  } else {
    // Already forwarded (its body streams as it comes): the upstream has its head and part of its
    // body. Its request is aborted, and its line says allow, as it was: the log is the record of
    // what the upstream was given.
    d.upstreamAbort.abort();
    d.reason = `forwarded, then its body was cut short: ${reason}`;
  }
  return accessLineOf(request, d, status, d.reason, performance.now() - d.started);
}

const kLastKey = Symbol('scopegate.lastKey');
type KeyedSocket = Socket & { [kLastKey]?: { token: string; key: string } };

/**
 * The cache key of `token`. A keep-alive client sends the same token on each request of a
 * connection: the last token of each connection and its key are kept on the socket, so that it
 * is hashed once per connection (1 µs for a JWT). Only the key is reused, never a decision: the
 * cache is consulted on every request.
 */
function keyOf(socket: KeyedSocket, token: string): string {
  const last = socket[kLastKey];
  if (last !== undefined && last.token === token) return last.key;
  const key = tokenKey(token);
  socket[kLastKey] = { token, key };
  return key;
}

/**
 * A request that ended before its scopes were weighed (no token, an invalid one, the AS down, its
 * client gone while the token was validated): its line still names what the operation needs.
 */
function nameRequired(d: Decision): void {
  const { operation, runtime } = d;
  if (d.required !== undefined || operation === undefined) return;
  const requirement = requirementOfMatch(runtime.table, operation, d.also, runtime.config.search.rootRequiresReadScopes);
  if (requirement !== undefined) d.required = closest(requirement, NO_SCOPES);
}

/** Step 4: the scopes, then the declared body size. */
function authorize(request: FastifyRequest, decision: Decision, operation: Operation, principal: Principal): void {
  const { runtime } = decision;
  const { config } = runtime;
  decision.principal = principal;
  const requirement = requirementOfMatch(runtime.table, operation, decision.also, config.search.rootRequiresReadScopes)!;
  decision.required = closest(requirement, principal.scopes);
  if (!satisfied(requirement, principal.scopes)) throw new InsufficientScope(decision.required);
  checkLength(request.raw.headers['content-length'], config.limits.bodyBytes);
  decision.allowed = true;
  decision.reason = 'scopes satisfied';
}

/** A 204 with `Allow` for OPTIONS, carried through the error path so the access line is one. */
class OptionsAnswer extends GatewayError {
  readonly code = 'options';
  readonly statusCode = 204;
  readonly detail = '';
  constructor(readonly allow: readonly string[]) {
    super('answered OPTIONS locally');
  }
  override headers(): Record<string, string> {
    return { allow: this.allow.join(', ') };
  }
}

const BULK_TYPES = /^application\/(scim\+)?json\s*(;|$)/i;

/** Step 5 for /Bulk: read the body (bounded), classify every inner operation, require all scopes. */
async function checkBulkBody(request: FastifyRequest, d: Decision, stream: NodeJS.ReadableStream | undefined, bodies: BodyBudget): Promise<Buffer> {
  const { config } = d.runtime;
  // jans-scim reads Bulk only as JSON; a body in another media type cannot be classified.
  if (!BULK_TYPES.test(request.headers['content-type'] ?? '')) throw new UnsupportedMediaType('Bulk body is not JSON');
  // The bytes checked are the bytes the upstream must read: a coded body (gzip, br) would be read
  // as something else by an upstream that decodes it.
  const coding = request.headers['content-encoding'];
  if (coding !== undefined && coding.trim().toLowerCase() !== 'identity') throw new UnsupportedMediaType(`Bulk body with Content-Encoding ${JSON.stringify(coding).slice(0, 40)}`, 'A Bulk body is checked as it is sent: send it without a Content-Encoding');
  if (!stream) throw new InvalidRequest('Bulk: empty body', 'The Bulk request cannot be checked: the body is empty');
  const buffer = await readBody(stream, config.limits.bodyBytes, bodies, config.limits.bufferedBytes, d);
  const { summary, requirement } = classifyBulk(buffer, d.runtime, d.operation!, d.principal!, d.also);
  d.bulk = summary;
  d.required = closest(requirement, d.principal!.scopes);
  if (!satisfied(requirement, d.principal!.scopes)) {
    throw new InsufficientScope(d.required, `Bulk needs ${d.required.filter((s) => !d.principal!.scopes.has(s)).join(' ')}`);
  }
  return buffer;
}

/** Error codes of a connection to the upstream that broke mid-way. */
const UPSTREAM_BROKEN = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED']);

/**
 * Turns whatever failed into a gateway error: upstream faults by their cause. `clientError` is the
 * error the client's own request stream ended with (its connection cut mid-body): found in the
 * chain, the failure is the client's, though the forwarder reports it as ECONNRESET.
 */
function toGatewayError(error: unknown, clientError?: Error | null): GatewayError {
  if (error instanceof GatewayError) return error;
  const err = error as { code?: string; statusCode?: number; cause?: unknown; message?: string };
  // Walk the cause chain: reply-from wraps undici's errors, which wrap ours (the body limit).
  const codes: string[] = [];
  for (let e: unknown = error; e && codes.length < 5; e = (e as { cause?: unknown }).cause) {
    if (e instanceof GatewayError) return e;
    // Aborted because its client left (src/upstream.ts): not an upstream failure.
    if (e instanceof ClientLeft) return new InvalidRequest('the client closed the connection before the answer', 'The connection closed');
    if (clientError && e === clientError) return new InvalidRequest('the client closed the connection before the end of the body', 'The request body is incomplete');
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') codes.push(code);
    // undici's parser errors carry no code (it looks the reason's name up by number, and misses).
    else if ((e as { name?: unknown }).name === 'HTTPParserError') codes.push('HPE');
  }
  const why = codes.join(' ');
  if (codes.some((c) => c.includes('TIMEOUT'))) return new UpstreamTimeout(`upstream timed out (${why})`);
  if (codes.includes('ECONNREFUSED')) return new UpstreamUnavailable(`upstream refused the connection (${why})`, 'refused');
  if (codes.some((c) => UPSTREAM_BROKEN.has(c))) return new UpstreamUnavailable(`upstream connection failed (${why})`, 'reset');
  // undici's HTTP parser refused the upstream's answer (a malformed chunk, a bad header byte).
  if (codes.some((c) => c.startsWith('HPE'))) return new UpstreamUnavailable(`upstream answered malformed HTTP (${why}: ${err.message ?? ''})`, 'other');
  if (codes.some((c) => c.startsWith('FST_REPLY_FROM_') || c.startsWith('UND_ERR_') || /CERT|SSL|TLS|ENOTFOUND|EHOSTUNREACH/.test(c))) {
    return new UpstreamUnavailable(`upstream failed (${why})`, 'other');
  }
  if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return new PayloadTooLarge('body over the limit');
  // Every media type is accepted as a stream: Fastify refuses only one it cannot parse (`;;;`).
  if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return new InvalidRequest('malformed Content-Type', 'The Content-Type header is malformed');
  // The forwarder's own path checks (reply-from, http-proxy) refuse with a bare 400: a target our
  // grammar let by but they would not forward is refused, never a 500.
  if (err.statusCode === 400) return new InvalidTarget(`refused by the forwarder: ${err.message ?? ''}`);
  return new InternalError(`unexpected: ${err.message ?? String(error)}`);
}

function upstreamKind(error: GatewayError): string | undefined {
  if (error instanceof UpstreamTimeout) return 'timeout';
  if (error instanceof UpstreamUnavailable) return error.kind;
  return undefined;
}

/** Sends the wire response of a gateway error (INTERFACE.md table). */
function sendError(reply: FastifyReply, error: GatewayError, realm: string): FastifyReply {
  // An upstream answer that failed after its head was taken (a body that broke off) left its
  // headers on the reply: none of them (Content-Encoding, Set-Cookie, ETag) belongs to the
  // gateway's own answer. A Connection: close decided before stays.
  for (const name of Object.keys(reply.getHeaders())) if (name !== 'connection') reply.removeHeader(name);
  const challenge = wwwAuthenticate(error, realm);
  reply.code(error.statusCode).headers(error.headers());
  if (challenge) reply.header('www-authenticate', challenge);
  // A body the gateway did not read is not drained to keep the connection: it is closed.
  const raw = reply.request.raw;
  if (!raw.complete && (raw.headers['transfer-encoding'] !== undefined || (raw.headers['content-length'] ?? '0') !== '0')) reply.header('connection', 'close');
  // After an answer with `Connection: close`, no later request of the connection is processed
  // (RFC 9112 section 9.6): one pipelined behind it is refused, never forwarded unseen.
  const connection = (reply.request.decision?.connection ?? raw.socket) as MarkedSocket | null;
  if (reply.getHeader('connection') === 'close' && connection) connection[kClosing] = true;
  if (error.statusCode === 204) return reply.send();
  // A Buffer, so that the media type goes exactly as RFC 7644 names it (no charset appended).
  return reply.header('content-type', 'application/scim+json').send(Buffer.from(scimErrorBody(error)));
}

/**
 * `Bearer <token>`: the client's own header value when it is already exactly that (the token is
 * always a suffix of it, so the prefix and the length decide), else built.
 */
function canonicalAuthorization(sent: unknown, token: string): string {
  return typeof sent === 'string' && sent.length === token.length + 7 && sent.startsWith('Bearer ') ? sent : `Bearer ${token}`;
}

/** Request headers toward the upstream, from what the steps decided (module-level: no closure per request). */
function rewriteRequestHeaders(request: FastifyRequest, headers: Record<string, unknown>): Record<string, unknown> {
  const d = request.decision!;
  const { upstream } = d.runtime.config;
  const forwarded = upstreamHeaders(headers, {
    clientIp: request.raw.socket.remoteAddress,
    proto: (request.raw.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http',
    host: request.headers.host,
    authorization: upstream.forwardAuthorization && d.token ? canonicalAuthorization(headers.authorization, d.token) : undefined,
    principal: d.principal,
    identityHeaders: upstream.identityHeaders,
  });
  d.token = undefined;
  if (d.bodyLength !== undefined) forwarded['content-length'] = String(d.bodyLength);
  // The request's abort signal, for the pool (src/upstream.ts): headers are all reply-from passes on.
  (forwarded as Record<symbol, unknown>)[kUpstreamAbort] = d.upstreamAbort = new UpstreamAbort();
  return forwarded;
}

/** The raw query, unparsed and unre-encoded: what was checked is what goes. */
function rawQuery(_search: string, _url: string, request: FastifyRequest): string {
  return request.decision!.target!.query ?? '';
}

/** Never retried: a request is forwarded once, as checked. */
function noRetry(): null {
  return null;
}

/** The access line of `request`, from what the steps decided. */
function accessLineOf(request: FastifyRequest, d: Decision, status: number, reason: string, durationMs: number): AccessLine {
  const line: AccessLine = {
    reqId: request.id, method: request.raw.method, path: d.target?.path ?? refusedPath(request.originalUrl), operation: d.operation?.id ?? null,
    status, decision: d.allowed ? 'allow' : 'deny', reason, clientId: d.principal?.clientId ?? null, subject: d.principal?.subject ?? null,
    fingerprint: d.fingerprint ?? null, requiredScopes: d.required ?? null, durationMs: Math.round(durationMs * 1000) / 1000,
  };
  if (d.bulk) line.bulk = d.bulk;
  return line;
}

/** A target's userinfo: after `scheme://` (absolute-form) or `//`, or at its start (authority-form), before any `/`. */
const USERINFO = /^((?:[A-Za-z][A-Za-z0-9+.-]*:)?\/\/|)[^/]*@/;

/** How much of a refused path its access line keeps. */
const REFUSED_PATH_CHARS = 512;

/**
 * The path of a request-target the grammar refused, as the client sent it, for its access line:
 * what an operator investigates. Cut at the first `?`, `;` or `#` (where a token could ride: a query,
 * a matrix parameter, a fragment) and at 512 characters, and JSON-escaped here, as it passed no
 * grammar (the line writer takes paths verbatim).
 */
function refusedPath(target = ''): string {
  // The userinfo of an absolute-form or authority-form target (`http://user:password@host/`) is
  // a credential: its line shows that there was one, not what it was. Replaced before the cuts,
  // as a userinfo may hold a `;` or a `?` itself.
  const url = target.replace(USERINFO, '$1(userinfo cut)@');
  const end = url.search(/[?;#]/);
  const path = end === -1 ? url : url.slice(0, end);
  let shown = path.length > REFUSED_PATH_CHARS ? `${path.slice(0, REFUSED_PATH_CHARS)}... (${path.length} characters)` : path;
  if (end !== -1) shown += ` (cut at ${url[end]})`;
  return JSON.stringify(shown).slice(1, -1);
}

/** How a request ended, for its one access line and its metrics. */
interface Recorder {
  /** Its response was sent whole. */
  answered(request: FastifyRequest, d: Decision, status: number, reason: string): void;
  /** Its response closed before it was complete. */
  endedEarly(request: FastifyRequest, reply: FastifyReply, d: Decision): void;
}

function createRecorder(metrics: Metrics, access: (line: AccessLine) => void): Recorder {
  // Label children bound once per label set, found without building a key string: by
  // operation id, then by status, allowed and denied apart.
  const requestChildren = { allow: new Map<string, Map<number, { inc(): void }>>(), deny: new Map<string, Map<number, { inc(): void }>>() };
  const durations = { allow: metrics.duration.cell({ decision: 'allow' }), deny: metrics.duration.cell({ decision: 'deny' }) };

  /** The access line and the request metrics of an answer of the proxy port. */
  function answered(request: FastifyRequest, d: Decision, status: number, reason: string): void {
    d.logged = true;
    const durationMs = performance.now() - d.started;
    const decision = d.allowed ? 'allow' : 'deny';
    const operation = d.operation?.id ?? d.template ?? 'none';
    let byStatus = requestChildren[decision].get(operation);
    if (!byStatus) requestChildren[decision].set(operation, (byStatus = new Map()));
    let child = byStatus.get(status);
    if (!child) {
      child = metrics.requests.cell({ operation, decision, status: String(status) });
      byStatus.set(status, child);
    }
    child.inc();
    durations[decision].observe(durationMs / 1000);
    access(accessLineOf(request, d, status, reason, durationMs));
  }

  const recorder: Recorder = {
    answered,
    endedEarly(request, reply, d) {
      // The upstream's body failed after its head was relayed (reset, closed, timed out): the
      // gateway cut the client's response. An answer of the proxy port, with the status sent.
      const broke = d.upstreamBody?.errored;
      if (broke) {
        const error = toGatewayError(broke);
        metrics.upstreamErrors.inc({ kind: upstreamKind(error) ?? 'other' });
        answered(request, d, reply.statusCode, `the upstream failed mid-response: ${error.reason}`);
        return;
      }
      // The connection closed first (the client went away, or the shutdown deadline closed it):
      // status 499, as nginx logs it. No metric: the proxy port answered nothing.
      d.logged = true;
      const stalled = (d.connection as MarkedSocket)[kStalled];
      const why = stalled === undefined ? 'connection closed' : `the kernel took none of the answer for ${stalled} ms (limits.sendTimeoutMs; the client reads too slowly or not at all): connection closed`;
      const reason = `${why} before the response was complete${d.reason ? ` (${d.reason})` : ''}`;
      nameRequired(d);
      access(accessLineOf(request, d, 499, reason, performance.now() - d.started));
    },
  };
  return recorder;
}

/**
 * reply-from's own way of relaying the upstream's answer, keeping its body stream on the
 * decision: if that fails mid-way, the access line says it was the upstream, not the client.
 */
function relayUpstreamBody(request: FastifyRequest, reply: FastifyReply, res: unknown): void {
  const stream = (res as { stream: Readable }).stream;
  request.decision!.upstreamBody = stream;
  // An HTTP/1.0 client reads a body without Content-Length to the close of the connection: were
  // the upstream's body to break off, a plain close would end it as if it were whole. The
  // connection is reset instead (before Fastify's own listener closes it), so that the client
  // sees a broken answer. An HTTP/1.1 client sees the chunked body end unterminated either way.
  if (request.raw.httpVersionMinor === 0 && reply.getHeader('content-length') === undefined) {
    stream.once('error', () => resetConnection(request.raw.socket));
  }
  reply.send(stream);
}

/** Ends `socket` with a reset (TCP RST), or a plain close where it has no TCP handle of its own (TLS). */
function resetConnection(socket: Socket | null): void {
  if (!socket || socket.destroyed) return;
  try {
    socket.resetAndDestroy();
  } catch {
    socket.destroy();
  }
}

/** Registers the steps and the forwarder on `app`. */
export async function gateway(app: FastifyInstance, options: GatewayOptions): Promise<void> {
  const { metrics, inFlight, bodies } = options;
  // Requests whose declared body is streamed to the upstream, each holding an upstream connection.
  let streamed = 0;
  app.decorateRequest('decision', null);
  const recorder = createRecorder(metrics, options.access);
  const counters: Counters = { cacheHit: metrics.cache.cell({ result: 'hit' }), cacheMiss: metrics.cache.cell({ result: 'miss' }) };

  // Once the gateway is closing, a request that still arrives (on a kept-alive connection) is
  // answered 503 by the steps, as a SCIM error with Retry-After, counted and logged like any
  // other: not Fastify's own JSON 503, which would be neither.
  let closing = false;
  app.addHook('preClose', (done) => {
    closing = true;
    done();
  });

  /**
   * The upstream's answer, relayed. Once the gateway is closing, a connection ends after its last
   * answer: that answer says `Connection: close` rather than promise a keep-alive that a client
   * would race the close on.
   */
  function relay(request: FastifyRequest, reply: FastifyReply, res: unknown): void {
    endsItsConnection(request, reply, closing);
    relayUpstreamBody(request, reply, res);
  }

  // Callback style with a synchronous path: a request whose token is in the cache is decided
  // without a promise.
  app.addHook('onRequest', (request, reply, done) => {
    // Every field from the start: one object shape for every request.
    const decision: Decision = {
      started: performance.now(), runtime: options.current(), allowed: false, reason: '',
      target: undefined, operation: undefined, also: undefined, template: undefined, principal: undefined, fingerprint: undefined, token: undefined, required: undefined, bulk: undefined,
      bodyLength: undefined, logged: false, upstreamBody: undefined, upstreamAbort: undefined, heldBytes: 0, streaming: false, connection: request.raw.socket,
      resume: undefined,
    };
    request.decision = decision;
    // Every request ends once: as its response closes, finished or not (a client that went away,
    // a connection the shutdown deadline closed, whether or not the request's body had been
    // read), or with its connection when its response was still queued behind another. Fastify's
    // onRequestAbort is not enough: it runs only while the request body is unread.
    const socket = decision.connection as MarkedSocket;
    const open = openRequestsOf(socket);
    inFlight.enter();
    const end = () => {
      if (!open.delete(reply)) return;
      // Its one access line, written here rather than in a Fastify onResponse hook: that hook
      // (or Fastify's own logger) makes Fastify follow every response with listeners of its own.
      if (reply.raw.writableFinished) {
        if (!decision.logged) recorder.answered(request, decision, reply.statusCode, decision.reason);
      } else {
        if (!decision.logged) recorder.endedEarly(request, reply, decision);
        // Nobody is left to read the upstream's answer: its request is aborted, not left to
        // hold a pool connection until upstream.timeoutMs (nginx's and Envoy's default).
        decision.upstreamAbort?.abort();
      }
      if (decision.heldBytes !== 0) bodies.give(decision.heldBytes);
      if (decision.streaming) streamed -= 1;
      inFlight.leave();
      const refusal = socket[kRefusal];
      if (refusal !== undefined && !owesAnswers(socket)) {
        socket[kRefusal] = undefined;
        refusal();
      }
      // Closing, the server closed the connections idle then; one whose last answer ends now is
      // idle too, and closed at once: kept alive, it would hold the drain open to its keep-alive
      // timeout, for requests that could only be refused.
      if (closing && open.head === undefined) app.server.closeIdleConnections();
      // The next request of the connection takes its turn, unless the connection is gone (its
      // requests all end now, unforwarded) or its own line is written (the parser refused its body).
      const next = open.head?.reply.request.decision;
      if (next?.resume !== undefined && !socket.destroyed && !next.logged) {
        const resume = next.resume;
        next.resume = undefined;
        resume();
      }
    };
    open.add(reply, end);
    reply.raw.on('close', end);
    // Pipelining deeper than any client needs (browsers and SCIM clients do not pipeline at all):
    // each request waiting holds its objects, and thousands per connection (a flood of a few bytes
    // each, any token or none) took hundreds of megabytes and seconds of the event loop. The
    // connection is closed: its requests end unforwarded, and no more of its bytes are read.
    if (open.size > MAX_PIPELINED) socket.destroy();
    // Refused before the steps (the gateway stops, the connection closes), its line still names
    // its path when the grammar passed it.
    const target = (request.raw as WithTarget)[kTarget];
    if (!(target instanceof GatewayError)) decision.target = target;
    // One request of a connection at a time, as nginx and Envoy take pipelined requests: one sent
    // behind a request still in flight waits for that one to end. Its answer could not go before
    // anyway (answers go in order), and a connection holds at most one validation and one
    // upstream request: one client cannot take the whole pool with a single connection.
    // An earlier request of the connection is still open when the head of its queue is not this one.
    if (open.head !== open.tail) decision.resume = () => steps(request, decision, socket, done);
    else steps(request, decision, socket, done);
  });

  /** The steps up to the forwarder, for a request whose turn it is on its connection. */
  function steps(request: FastifyRequest, decision: Decision, socket: MarkedSocket, done: (error?: Error) => void): void {
    let pending: Promise<void> | undefined;
    try {
      if (closing) throw new ShuttingDown('request after the gateway began to close');
      if (socket[kClosing]) throw new InvalidRequest('request pipelined behind an answer with Connection: close', 'The connection is closing');
      // The gateway has ended its side of the connection (an answer that closed it: one the HTTP
      // parser's timeout wrote mid-head, one to an HTTP/1.0 client), and reads on only to discard
      // (src/server.ts, lingering close): a request that completes there is never processed, and
      // cannot be answered; its connection ends now.
      if (socket.writableEnded) {
        socket.destroy();
        throw new InvalidRequest('request on a connection the gateway had closed', 'The connection is closed');
      }
      // A request that asks for an Upgrade (never granted) ends its connection: Node's parser
      // drops unseen what was pipelined behind it in the same read, and would read later bytes out
      // of their framing (the rest of a dropped request's body taken for a request of its own).
      // Nothing after it is processed, and its answer says Connection: close.
      if (request.raw.headers.upgrade !== undefined) socket[kClosing] = true;
      pending = decide(request, decision, counters);
    } catch (error) {
      done(error as Error);
      return;
    }
    if (pending) pending.then(() => done(), done);
    else done();
  }

  app.setErrorHandler((error, request, reply) => {
    const decision = request.decision;
    // Once its connection closed or the parser refused its body (its line is written), a request
    // whose own stream failed failed by the client's doing. Not before: the forwarder destroys
    // that stream with the upstream's error when the upstream fails mid-body.
    const gatewayError = toGatewayError(error, decision?.logged ? request.raw.errored : undefined);
    const kind = upstreamKind(gatewayError);
    // A response already closed (the client went away) has nobody to answer: what fails after it,
    // the relay of an answer that came too late, is the client's leaving, not an upstream failure.
    if (kind && !reply.raw.destroyed) metrics.upstreamErrors.inc({ kind });
    // Its access line is written (the connection closed, or the parser refused its body): there
    // is nobody to answer, and its line stays as written.
    if (decision?.logged) return;
    if (decision) {
      // The upstream failing a request the gateway forwarded (502, 504) is not a denial: the
      // decision stays allow, so that an upstream outage does not show as refused clients.
      decision.allowed = gatewayError instanceof OptionsAnswer || (decision.allowed && kind !== undefined);
      decision.reason = gatewayError.reason;
      nameRequired(decision);
    }
    if (gatewayError instanceof InternalError) options.logger.error({ err: error, reqId: request.id }, 'internal error');
    endsItsConnection(request, reply, closing);
    return sendError(reply, gatewayError, decision?.runtime.config.token.realm ?? 'scopegate');
  });
  app.setNotFoundHandler((_request, reply) => {
    // Reached only for methods the forwarder does not register (TRACE, PROPFIND, ...) after
    // onRequest let them by, which it never does: deny regardless.
    reply.send(new RouteNotFound('no route'));
  });

  // Every body is a pass-through stream: Fastify's own JSON and text parsers would hand the
  // forwarder a parsed value that reply-from re-serialises (not the bytes the client sent).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, payload, done) => done(null, payload));

  let fromOptions: Record<string, unknown> | undefined;
  await app.register(proxy, {
    upstream: options.current().config.upstream.url,
    httpMethods: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'],
    // The pool's connections are fixed at startup; the timeout is read at each request (a reload's).
    undici: abortableDispatcher(options.dispatcher, {
      connections: options.current().config.upstream.connections,
      get timeoutMs() {
        return options.current().config.upstream.timeoutMs;
      },
    }) as unknown as Dispatcher,
    disableRequestLogging: true,
    internalRewriteLocationHeader: false,
    // Each content type arrives as the raw stream (see the parsers above), never parsed.
    proxyPayloads: false,
    replyOptions: { rewriteHeaders: responseHeaders },
    // Steps 5 and 6 run in the routes' preHandler, which never calls `done`: the answer comes from
    // reply.from (Fastify's way of answering from a hook). http-proxy's own handler would parse
    // and resolve the target again (three URL objects, a percent-decoding), which the grammar has
    // settled, and Fastify would then wait on the reply it returns: 4-5 µs of the 47-52 a request
    // costs the stock proxy (bench/RESULTS.md, bare-proxy-hook). The options are http-proxy's own
    // (its response-header sanitising), taken once from its public fromParameters. Nothing is
    // returned: a reply is thenable, and Fastify would wait on it and then run the handler.
    preHandler(request, reply, _done) {
      fromOptions ??= { ...(reply.fromParameters('/').options as Record<string, unknown>), queryString: rawQuery, rewriteRequestHeaders, retryDelay: noRetry, onResponse: relay };
      proceed(request, reply);
    },
    // Never reached (the preHandler answers every request); were it reached, it denies.
    handler(_request, reply) {
      reply.send(new InternalError('the forwarder was reached past its preHandler'));
    },
  });

  /**
   * Steps 5 and 6: the body (a chunked or /Bulk one read and checked first), then forward. It
   * returns nothing, as the preHandler must not (a reply is thenable).
   */
  function proceed(request: FastifyRequest, reply: FastifyReply): void {
    const d = request.decision!;
    // Ended while it was decided (its client left: its line is written, and the bytes it held were
    // given back then): nothing is read, reserved or forwarded for it any more.
    if (d.logged) return;
    const { config } = d.runtime;
    // Never to an HTTP/1.0 client, which must have its 100-continue ignored (RFC 9110 section 10.1.1).
    if (request.headers.expect !== undefined && request.raw.httpVersionMinor >= 1 && onlyContinue(request.headers.expect)) reply.raw.writeContinue();
    const body = request.body;
    const bulk = config.bulk.checkOperations && d.operation !== undefined && isBulk(d.operation);
    // NaN without a Content-Length: no comparison below holds for it.
    const declared = Number(request.headers['content-length']);
    // A body without a declared length (chunked) is read whole, within the limit, before
    // anything goes upstream: past the limit the upstream must get nothing at all, not a
    // request cut off mid-body whose first JSON value it may already have acted on.
    if (!bulk && request.headers['content-length'] === undefined && request.headers['transfer-encoding'] !== undefined) {
      forwardWhole(request, reply, d, body);
    } else if (body === undefined || body === null) {
      if (bulk) forwardBulk(request, reply, d, undefined);
      else forward(reply, d, fromOptions);
    } else if (typeof (body as { pipe?: unknown }).pipe !== 'function') {
      // Every content type is parsed as a pass-through stream (above): anything else here
      // would be a body the checks never saw.
      reply.send(new InternalError('request body is not a stream'));
    } else if (bulk) {
      forwardBulk(request, reply, d, body as NodeJS.ReadableStream);
    } else if (declared <= config.limits.bufferBodyBytes && reserve(d, declared)) {
      // A declared length up to limits.bufferBodyBytes is read whole first, as nginx does
      // (proxy_request_buffering): a client that stalls or leaves mid-body is refused (408, 400)
      // and the upstream gets nothing, not a head it may act on (a DELETE ignores its body).
      // Its bytes are reserved first; while limits.bufferedBytes cannot hold them (bodies held
      // by others, slow clients perhaps), it streams as a larger body does: it is never refused
      // for the bodies of others.
      forwardWhole(request, reply, d, body, true);
    } else {
      // A larger declared length is within the limit (checked before the body) and Node's parser
      // holds the body to it: streamed as it comes. Such a request holds an upstream connection
      // for as long as its client takes to send the body (limits.requestTimeoutMs): at most half
      // the pool does, so that slow bodies (a read-only token, 140 connections at 1 byte a second
      // took all 128) leave the other half to requests without one.
      if (streamed >= Math.max(1, Math.floor(config.upstream.connections / 2))) {
        reply.send(new GatewayBusy(`${streamed} streamed bodies hold half the upstream connections`, 'The gateway is forwarding too many request bodies; retry later'));
        return;
      }
      streamed += 1;
      d.streaming = true;
      // Sent with the length that was checked, even when the client's Connection names
      // Content-Length (the forwarder drops such names): never chunked upstream, where jans
      // reads a Bulk body's size from Content-Length alone.
      if (Number.isSafeInteger(declared)) d.bodyLength = declared;
      forward(reply, d, fromOptions);
    }
  }

  /**
   * Step 6, for a request still owed an answer. One whose connection closed while it was decided
   * or its body read has its access line already (499, not forwarded), and nobody would see the
   * upstream's answer: it is never forwarded then, so that the upstream gets only what the log
   * says it got. The forwarder's own refusals (it throws) go to the error handler.
   */
  function forward(reply: FastifyReply, d: Decision, replyOptions: Record<string, unknown> | undefined): void {
    if (d.logged) return;
    try {
      reply.from(d.target!.path, replyOptions);
    } catch (error) {
      reply.send(error);
    }
  }

  // The two below read a body before forwarding. Their callbacks return nothing: a reply is
  // thenable, and the promise they end would wait on the response and reject, unhandled, if it
  // failed.

  /**
   * A chunked body, or a small declared one: read whole (bounded by limits.bodyBytes, 413 past
   * it, and by limits.bufferedBytes, 503), then forwarded with its Content-Length. A chunked body
   * Fastify does not hand over for the method (GET, HEAD) is read the same way, for the limit,
   * and not forwarded, as before.
   */
  function forwardWhole(request: FastifyRequest, reply: FastifyReply, d: Decision, body: unknown, reserved = false): void {
    const stream = (body ?? request.raw) as NodeJS.ReadableStream;
    const { limits } = d.runtime.config;
    readBody(stream, limits.bodyBytes, bodies, limits.bufferedBytes, d, reserved).then(
      (buffer) => {
        if (body !== undefined && body !== null) {
          d.bodyLength = buffer.length;
          request.body = Readable.from([buffer], { objectMode: false });
        }
        forward(reply, d, fromOptions);
      },
      (error: unknown) => {
        reply.send(error);
      },
    );
  }

  /** Takes `length` bytes of limits.bufferedBytes for the body of `d`, given back when its response closes; false when they do not fit. */
  function reserve(d: Decision, length: number): boolean {
    if (!bodies.take(length, d.runtime.config.limits.bufferedBytes)) return false;
    d.heldBytes += length;
    return true;
  }

  /** /Bulk: read and check the body, then forward exactly the bytes that were checked, with their length. */
  function forwardBulk(request: FastifyRequest, reply: FastifyReply, d: Decision, stream: NodeJS.ReadableStream | undefined): void {
    checkBulkBody(request, d, stream, bodies).then(
      (checked) => {
        forward(reply, d, { ...fromOptions, body: checked, contentType: request.headers['content-type']! });
      },
      (error: unknown) => {
        reply.send(error);
      },
    );
  }
}
