import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createLocalJWKSet, exportJWK, generateKeyPair, jwtVerify, type JWK } from 'jose';

/** Options for {@link startAuthServer}. */
export interface AuthServerOptions {
  host?: string;
  port?: number;
  clientId?: string;
  clientSecret?: string;
  scopes?: string[];
  accessTokenTtlSeconds?: number;
  jwtAudience?: string;
}

/** A running oidc-provider laid out like jans-auth, plus helpers for tests and the demo. */
export interface AuthServer {
  issuer: string;
  tokenEndpoint: string;
  introspectionEndpoint: string;
  jwksUri: string;
  revocationEndpoint: string;
  clientId: string;
  clientSecret: string;
  jwtAudience: string;
  /** counters of HTTP calls received, by endpoint */
  counts: { introspection: number; jwks: number; token: number };
  /** tokens (the `token` form field) received by the introspection endpoint, in order */
  introspected: string[];
  /** obtain an access token via a real client_credentials request (client_secret_basic); jwt:true -> RFC 9068 JWT via resource=jwtAudience */
  issueToken(scopes: string[], opts?: { jwt?: boolean }): Promise<string>;
  /** revoke via the real revocation endpoint */
  revoke(token: string): Promise<void>;
  /** the current signing key as a private JWK (with kid, alg RS256) */
  signingKey(): Promise<{ privateJwk: JWK; kid: string }>;
  /** rotate: a new RS256 key with a new kid becomes the signing key; keepOld (default true) keeps serving the previous keys */
  rotateKeys(opts?: { keepOld?: boolean }): Promise<void>;
  /** reset counts and introspected */
  resetCounts(): void;
  close(): Promise<void>;
}

/** The ten scopes held by jans' bundled SCIM client. */
export const SCIM_SCOPES: readonly string[] = Object.freeze(
  ['users.read', 'users.write', 'groups.read', 'groups.write', 'fido.read', 'fido.write',
    'fido2.read', 'fido2.write', 'all-resources.search', 'bulk'].map((s) => `https://jans.io/scim/${s}`),
);

const P = '/jans-auth/restv1';
const ROUTES = {
  authorization: `${P}/authorize`, token: `${P}/token`, introspection: `${P}/introspection`, jwks: `${P}/jwks`,
  revocation: `${P}/revoke`, userinfo: `${P}/userinfo`, end_session: `${P}/end_session`, registration: `${P}/register`,
};
const MAX_BODY = 64 * 1024;

// Minimal view of the untyped oidc-provider module (it ships no TypeScript declarations).
interface StoredToken { isValid: boolean; clientId: string }
interface OidcProvider {
  callback(): (req: IncomingMessage, res: ServerResponse) => Promise<void> | void;
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  ClientCredentials: { find(value: string): Promise<StoredToken | undefined> };
  AccessToken: { find(value: string): Promise<StoredToken | undefined> };
}
interface OidcModule {
  default: new (issuer: string, configuration: Record<string, unknown>) => OidcProvider;
  errors: { InvalidTarget: new (description?: string) => Error };
}

let oidcModule: Promise<OidcModule> | undefined;
/** Lazily import oidc-provider (an optional dependency), hiding only its "Unsupported runtime" notice on Node 20. */
function loadOidc(): Promise<OidcModule> {
  oidcModule ??= (async () => {
    const warn = console.warn;
    console.warn = (...args: unknown[]) => {
      if (typeof args[0] === 'string' && args[0].includes('oidc-provider WARNING: Unsupported runtime')) return;
      warn.apply(console, args);
    };
    try {
      return (await import('oidc-provider' as string)) as OidcModule;
    } finally {
      console.warn = warn;
    }
  })();
  return oidcModule;
}

/** In-memory adapter over a caller-owned Map, so a re-built Provider (key rotation) keeps every issued token. */
function memoryAdapter(store: Map<string, { payload: Record<string, unknown>; expiresAt?: number }>) {
  let writes = 0;
  const live = (key: string) => {
    const hit = store.get(key);
    if (hit?.expiresAt !== undefined && hit.expiresAt <= Date.now()) { store.delete(key); return undefined; }
    return hit?.payload;
  };
  return (model: string) => {
    const k = (id: string) => `${model}:${id}`;
    return {
      async upsert(id: string, payload: Record<string, unknown>, expiresIn?: number) {
        const expiresAt = expiresIn ? Date.now() + expiresIn * 1000 : undefined;
        if (++writes % 1000 === 0) for (const key of store.keys()) live(key);
        store.set(k(id), { payload, expiresAt });
        if (typeof payload.uid === 'string') store.set(`uid:${payload.uid}`, { payload: { id }, expiresAt });
        if (typeof payload.userCode === 'string') store.set(`userCode:${payload.userCode}`, { payload: { id }, expiresAt });
      },
      async find(id: string) { return live(k(id)); },
      async findByUid(uid: string) { const ref = live(`uid:${uid}`); return ref ? live(k(String(ref.id))) : undefined; },
      async findByUserCode(code: string) { const ref = live(`userCode:${code}`); return ref ? live(k(String(ref.id))) : undefined; },
      async consume(id: string) { const p = live(k(id)); if (p) p.consumed = Math.floor(Date.now() / 1000); },
      async destroy(id: string) { store.delete(k(id)); },
      async revokeByGrantId(grantId: string) {
        for (const [key, v] of store) if (v.payload.grantId === grantId) store.delete(key);
      },
    };
  };
}

async function newSigningKey(): Promise<JWK> {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  return { ...(await exportJWK(privateKey)), kid: randomUUID(), alg: 'RS256', use: 'sig' };
}

const publicPart = ({ kty, n, e, kid, alg, use }: JWK): JWK => ({ kty, n, e, kid, alg, use });

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) reject(new Error('request entity too large')); else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** A fresh request carrying the same head and an already-read form body, so the provider can parse it again. */
function replay(req: IncomingMessage, body: Buffer, authorization: string | undefined, asPost: boolean): IncomingMessage {
  const copy = new IncomingMessage(req.socket);
  Object.assign(copy, {
    method: asPost ? 'POST' : req.method, url: asPost ? ROUTES.introspection : req.url, httpVersion: req.httpVersion,
    httpVersionMajor: req.httpVersionMajor, httpVersionMinor: req.httpVersionMinor, complete: true,
  });
  copy.headers = { ...req.headers, authorization };
  if (authorization === undefined) delete copy.headers.authorization;
  if (asPost) {
    copy.headers['content-type'] = 'application/x-www-form-urlencoded';
    copy.headers['content-length'] = String(body.length);
    delete copy.headers['transfer-encoding'];
  }
  copy.push(body);
  copy.push(null);
  return copy;
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) { res.destroy(); return; }
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

/** Start a real oidc-provider on 127.0.0.1 with jans-auth's endpoint paths and a client_credentials SCIM client. */
export async function startAuthServer(opts: AuthServerOptions = {}): Promise<AuthServer> {
  const { default: Provider, errors } = await loadOidc();
  const host = opts.host ?? '127.0.0.1';
  const clientId = opts.clientId ?? 'scim-client';
  const clientSecret = opts.clientSecret ?? randomBytes(32).toString('base64url');
  const scopes = [...(opts.scopes ?? SCIM_SCOPES)];
  const ttl = opts.accessTokenTtlSeconds ?? 300;
  const jwtAudience = opts.jwtAudience ?? 'urn:scopegate:scim';
  const basic = `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`).toString('base64')}`;
  const adapter = memoryAdapter(new Map());
  const cookieKeys = [randomBytes(32).toString('base64url')];
  const counts = { introspection: 0, jwks: 0, token: 0 };
  const introspected: string[] = [];
  let keys: JWK[] = [await newSigningKey()];
  let provider: OidcProvider | undefined;
  let handle: ((req: IncomingMessage, res: ServerResponse) => Promise<void> | void) | undefined;

  const server = createServer((req, res) => {
    route(req, res).catch((err: unknown) => {
      const tooLarge = err instanceof Error && /too large/.test(err.message);
      sendJson(res, tooLarge ? 413 : 500, { error: tooLarge ? 'invalid_request' : 'server_error' });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => { server.off('error', reject); resolve(); });
  });
  const { port } = server.address() as AddressInfo;
  const issuer = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;

  function build(): void {
    const p = new Provider(issuer, {
      adapter,
      clients: [{
        client_id: clientId, client_secret: clientSecret, grant_types: ['client_credentials'], response_types: [],
        redirect_uris: [], token_endpoint_auth_method: 'client_secret_basic', scope: scopes.join(' '),
      }],
      jwks: { keys },
      cookies: { keys: cookieKeys },
      scopes: ['openid', ...scopes],
      routes: ROUTES,
      ttl: { AccessToken: ttl, ClientCredentials: ttl },
      clientBasedCORS: () => false,
      features: {
        devInteractions: { enabled: false },
        clientCredentials: { enabled: true },
        introspection: { enabled: true, allowedPolicy: async () => true },
        revocation: {
          enabled: true,
          allowedPolicy: async (_ctx: unknown, client: { clientId: string }, token: StoredToken) => token.clientId === client.clientId,
        },
        resourceIndicators: {
          enabled: true,
          defaultResource: async () => undefined,
          useGrantedResource: async () => false,
          getResourceServerInfo: async (_ctx: unknown, resource: string) => {
            if (resource !== jwtAudience) throw new errors.InvalidTarget();
            return { scope: scopes.join(' '), audience: jwtAudience, accessTokenTTL: ttl, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } };
          },
        },
      },
    });
    p.on('error', () => {});
    p.on('server_error', () => {});
    provider = p;
    handle = p.callback();
  }
  build();

  /** jans' bearer_token introspection authorisation: any valid access token may introspect. */
  async function bearerIsValid(token: string): Promise<boolean> {
    if (!provider) return false;
    const found = (await provider.ClientCredentials.find(token)) ?? (await provider.AccessToken.find(token));
    if (found) return found.isValid;
    try {
      await jwtVerify(token, createLocalJWKSet({ keys: keys.map(publicPart) }), { issuer });
      return true;
    } catch {
      return false;
    }
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', issuer);
    if (url.pathname === ROUTES.token) counts.token++;
    if (url.pathname === ROUTES.jwks) counts.jwks++;
    if (url.pathname !== ROUTES.introspection) { await handle?.(req, res); return; }

    counts.introspection++;
    // jans also accepts GET with the parameters in the query: hand those to the provider as a POST form.
    const asGet = req.method === 'GET';
    const body = asGet ? Buffer.from(url.searchParams.toString()) : await readBody(req);
    const form = new URLSearchParams(body.toString('utf8'));
    const token = form.get('token');
    if (token !== null) introspected.push(token);
    let authorization = req.headers.authorization;
    const bearer = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
    if (bearer) {
      if (!(await bearerIsValid(bearer[1] ?? ''))) { sendJson(res, 401, { error: 'access_denied' }); return; }
      authorization = basic;
    }
    await handle?.(replay(req, body, authorization, asGet), res);
  }

  async function tokenRequest(endpoint: string, form: Record<string, string>): Promise<Response> {
    return fetch(endpoint, {
      method: 'POST',
      headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(form).toString(),
    });
  }

  return {
    issuer,
    tokenEndpoint: issuer + ROUTES.token,
    introspectionEndpoint: issuer + ROUTES.introspection,
    jwksUri: issuer + ROUTES.jwks,
    revocationEndpoint: issuer + ROUTES.revocation,
    clientId,
    clientSecret,
    jwtAudience,
    counts,
    introspected,
    async issueToken(requested, o = {}) {
      const form: Record<string, string> = { grant_type: 'client_credentials' };
      if (requested.length) form.scope = requested.join(' ');
      if (o.jwt) form.resource = jwtAudience;
      const res = await tokenRequest(issuer + ROUTES.token, form);
      const json = (await res.json()) as { access_token?: string; error?: string; error_description?: string };
      if (!res.ok || !json.access_token) throw new Error(`token request failed: ${res.status} ${json.error ?? ''} ${json.error_description ?? ''}`);
      return json.access_token;
    },
    async revoke(token) {
      const res = await tokenRequest(issuer + ROUTES.revocation, { token });
      const text = await res.text();
      if (!res.ok) throw new Error(`revocation failed: ${res.status} ${text}`);
    },
    async signingKey() {
      const current = keys[0] as JWK;
      return { privateJwk: { ...current }, kid: current.kid as string };
    },
    async rotateKeys(o = {}) {
      const next = await newSigningKey();
      keys = (o.keepOld ?? true) ? [next, ...keys] : [next];
      build();
    },
    resetCounts() {
      counts.introspection = counts.jwks = counts.token = 0;
      introspected.length = 0;
    },
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
