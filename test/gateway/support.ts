/**
 * Shared pieces of the gateway tests: the stack most of them run against, raw requests, the SCIM
 * error and challenge assertions that every denial makes, a port nobody listens on, and the token
 * config of a real authorization server. Not a test file itself (tap runs only *.test.ts).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Test } from 'tap';
import { startAuthServer, type AuthServer } from '../../src/demo/auth-server.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { http11, rawRequest, type RawResponse } from '../helpers/raw.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/upstream.js';

/** The SCIM error schema URN (RFC 7644 section 3.12). */
export const SCIM_ERROR = 'urn:ietf:params:scim:api:messages:2.0:Error';
/** The realm the gateway uses by default. */
export const REALM = 'scopegate';
/** `Bearer realm="scopegate"`: the bare challenge (RFC 6750 section 3.1, no error attribute). */
export const BARE_CHALLENGE = `Bearer realm="${REALM}"`;
/** The challenge of a refused token. */
export const INVALID_TOKEN = `Bearer realm="${REALM}", error="invalid_token"`;
/** The challenge of a malformed credential. */
export const INVALID_REQUEST = `Bearer realm="${REALM}", error="invalid_request"`;

/** The challenge of a 403 naming the scopes required. */
export function insufficientScope(scopes: string | readonly string[]): string {
  return `Bearer realm="${REALM}", error="insufficient_scope", scope="${typeof scopes === 'string' ? scopes : scopes.join(' ')}"`;
}

/** One request over raw TCP; `auth` becomes `Authorization: Bearer <auth>` when given. */
export function send(
  port: number,
  method: string,
  target: string,
  opts: { token?: string; headers?: string[]; body?: string; timeoutMs?: number } = {},
): Promise<RawResponse> {
  const headers = [...(opts.headers ?? [])];
  if (opts.token !== undefined) headers.push(`Authorization: Bearer ${opts.token}`);
  if (opts.body !== undefined) headers.push('Content-Type: application/scim+json');
  return rawRequest(port, http11(method, target, headers, opts.body ?? ''), opts.timeoutMs ?? 5000);
}

/** Asserts a SCIM error body with the given status, sent as application/scim+json. */
export function assertScimError(t: Test, res: RawResponse, status: number): Record<string, unknown> {
  t.equal(res.status, status, `status ${status}`);
  t.match(res.headers['content-type'] ?? '', /^application\/scim\+json/, 'SCIM content type');
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(res.body) as Record<string, unknown>;
  } catch {
    t.fail(`body is not JSON: ${res.body.slice(0, 200)}`);
  }
  t.same(body.schemas, [SCIM_ERROR], 'SCIM Error schema');
  t.equal(body.status, String(status), 'SCIM status is the HTTP status, as a string');
  t.type(body.detail, 'string', 'a detail');
  return body;
}

/**
 * Every denial: status, `WWW-Authenticate` (exactly `challenge`, or absent when null), the SCIM
 * body, and nothing at the upstream.
 */
export function assertDenied(
  t: Test,
  res: RawResponse,
  status: number,
  challenge: string | null,
  upstream: RecordingUpstream,
  upstreamBefore = 0,
): void {
  assertScimError(t, res, status);
  if (challenge === null) t.equal(res.headers['www-authenticate'], undefined, 'no WWW-Authenticate');
  else t.equal(res.headers['www-authenticate'], challenge, 'WWW-Authenticate');
  t.equal(upstream.requests.length, upstreamBefore, 'the upstream received nothing');
}

/** A 503 from the authorization server path: Retry-After, SCIM body, no challenge, nothing upstream. */
export function assertAuthServerDown(t: Test, res: RawResponse, upstream: RecordingUpstream, upstreamBefore = 0): void {
  assertDenied(t, res, 503, null, upstream, upstreamBefore);
  t.match(res.headers['retry-after'] ?? '', /^\d+$/, 'Retry-After in seconds');
}

const LIST = JSON.stringify({ schemas: ['urn:ietf:params:scim:api:messages:2.0:ListResponse'], totalResults: 0, Resources: [] });

/**
 * Makes the upstream answer with a Content-Length, so a raw client knows where the response ends
 * even when the gateway keeps the connection open (see upstream-errors.test.ts, hop-by-hop).
 */
export function answerWithLength(upstream: RecordingUpstream): RecordingUpstream {
  upstream.respond = (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/scim+json', 'content-length': Buffer.byteLength(LIST) });
    res.end(LIST);
  };
  return upstream;
}

/** The token config of the real authorization server: introspection (client_secret_basic) and JWT. */
export function tokenConfig(auth: AuthServer, extra: { introspection?: Record<string, unknown>; jwt?: Record<string, unknown>; cache?: Record<string, unknown> } = {}): Record<string, unknown> {
  return {
    issuer: auth.issuer,
    introspection: { endpoint: auth.introspectionEndpoint, clientId: auth.clientId, clientSecret: auth.clientSecret, ...extra.introspection },
    jwt: { jwksUri: auth.jwksUri, issuer: auth.issuer, ...extra.jwt },
    ...(extra.cache ? { cache: extra.cache } : {}),
  };
}

/** The stack most gateway tests run against. */
export interface GatewayStack {
  auth: AuthServer;
  up: RecordingUpstream;
  gw: TestGateway;
  close(): Promise<void>;
}

/**
 * The real authorization server, a recording upstream answering with a Content-Length, and a
 * gateway in front of it validating tokens with that server (`extra` as in tokenConfig).
 */
export async function startGatewayStack(extra: Parameters<typeof tokenConfig>[1] = {}, config: Record<string, unknown> = {}): Promise<GatewayStack> {
  const auth = await startAuthServer();
  const up = answerWithLength(await startRecordingUpstream());
  const gw = await startTestGateway({ ...config, upstream: { url: up.origin }, token: tokenConfig(auth, extra) });
  return {
    auth, up, gw,
    async close() {
      await gw.close();
      await up.close();
      await auth.close();
    },
  };
}

/** A 127.0.0.1 port that was free a moment ago and has no listener now. */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A plain node:http server on 127.0.0.1:0, closed with every connection. */
export async function startServer(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ server: Server; origin: string; close(): Promise<void> }> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    server,
    origin: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

/** Reads a request body as text. */
export function readText(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** Waits until `check` holds (an access line is written as its response closes, after the client has its answer). */
export async function until(check: () => boolean, timeoutMs = 2000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return true;
}

/** Sleeps; only where a real clock inside a dependency (jose's JWKS cooldown, cache TTL) must pass. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
