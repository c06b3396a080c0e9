/**
 * Config -> Runtime: the table, the token verifiers behind the cache, resolved endpoints. A
 * runtime is built whole and validated before it replaces the running one (SIGHUP), so a request
 * always sees one consistent config.
 */
import { hash } from 'node:crypto';
import { request, type Dispatcher } from 'undici';
import { authServerDispatcher, type AuthServerTransport } from './token/transport.js';
import { nameVariables, type Config } from './config.js';
import { ConfigError, InvalidToken, OpenApiError } from './errors.js';
import type { Metrics } from './metrics.js';
import { createIntrospectionReadiness } from './readiness.js';
import { operationsFrom, readOpenApiFile, type Operation } from './scopes/openapi.js';
import { createTable, type Table } from './scopes/table.js';
import { isCompactJws } from './token/bearer.js';
import { withCache, type CachedVerifier, type SharedLevel } from './token/cache.js';
import { createIntrospectionVerifier } from './token/introspection.js';
import { createJwtVerifier } from './token/jwt.js';
import type { TokenVerifier } from './token/principal.js';

/** Everything a request is decided with. */
export interface Runtime {
  readonly config: Config;
  readonly table: Table;
  readonly verifier: CachedVerifier;
  /** The digest of what decides a token's fate (rulesOf): a reload under the same keeps the cache. */
  readonly rules: string;
  /**
   * True when token validation can work now: the JWKS fetched; the introspection endpoint answered
   * within the last few seconds and its circuit breaker is closed.
   */
  ready(): Promise<boolean>;
  /** Stops background work (the JWKS refresh) once the runtime is replaced or the gateway stops. */
  close(): void;
}

/** Loads the OpenAPI file named by the config into a table (no network). */
export function loadTable(config: Config): Table {
  let operations: Operation[];
  try {
    operations = operationsFrom(readOpenApiFile(config.openapi.file), { basePath: config.openapi.basePath, extra: config.openapi.extra });
  } catch (error) {
    // Every problem with its key path (INTERFACE.md): one inside the file (`GET /a: ...`) is
    // named under the key that chose the file.
    if (!(error instanceof OpenApiError)) throw error;
    throw new OpenApiError(nameVariables(error.problems.map((p) => (p.startsWith('openapi.') ? p : `openapi.file: ${p}`)), config.variables));
  }
  // Deny by default: a file without oauth2 security (the wrong file, or one stripped of it) would
  // make a gateway that forwards every request without a token while reporting itself healthy.
  // The file's own operations decide: a scoped `openapi.extra` entry beside them would leave every
  // one of them public. operationsFrom adds the extra entries last, each of them, or throws.
  const own = operations.slice(0, operations.length - (config.openapi.extra?.length ?? 0));
  if (own.every((o) => o.public)) {
    const extra = config.openapi.extra?.length ? ' (openapi.extra entries aside)' : '';
    throw new OpenApiError(nameVariables([`openapi.file: no operation requires a token${extra}: ${config.openapi.file} declares no oauth2 or openIdConnect security, so every request to its operations would be forwarded without one`], config.variables));
  }
  return createTable(operations, config.limits.targetBytes);
}

/**
 * The problems of the OpenAPI file named by a config that has problems of its own, when the keys
 * the table needs did validate (INTERFACE.md: `check` prints every problem); [] otherwise.
 */
export function tableProblems(error: ConfigError): string[] {
  const needs = /^(openapi|limits\.targetBytes)[.:\s[]/;
  if (error.problems.some((p) => needs.test(p))) return [];
  const validated = error.validated as { openapi?: { file?: unknown; extra?: unknown }; limits?: { targetBytes?: unknown } } | undefined;
  if (typeof validated?.openapi?.file !== 'string' || !Array.isArray(validated.openapi.extra) || typeof validated.limits?.targetBytes !== 'number') return [];
  try {
    loadTable(validated as Config);
    return [];
  } catch (problem) {
    return problem instanceof ConfigError ? [...problem.problems] : [`openapi.file: ${(problem as Error).message}`];
  }
}

/**
 * A config error with the OpenAPI file's problems added (tableProblems), so that `check`, `serve`
 * and a refused reload each print every problem; any other error as it is.
 */
export function withTableProblems(error: unknown): unknown {
  if (!(error instanceof ConfigError)) return error;
  const more = tableProblems(error);
  return more.length > 0 ? new ConfigError([...error.problems, ...more], error.warnings) : error;
}

/** Endpoints after discovery: `token.issuer`'s openid-configuration fills what the config lacks. */
export interface Endpoints {
  introspection?: string;
  jwksUri?: string;
  jwtIssuer?: string;
  /** The `iss` an introspection answer may carry: token.introspection.issuer, else token.issuer. */
  introspectionIssuer?: string;
}

/** Reads missing endpoints from the issuer's discovery document (startup only). */
export async function resolveEndpoints(config: Config, dispatcher: Dispatcher = authServerDispatcher): Promise<Endpoints> {
  const { issuer, introspection, jwt } = config.token;
  const out: Endpoints = {
    ...(introspection?.endpoint ? { introspection: introspection.endpoint } : {}),
    ...(jwt?.jwksUri ? { jwksUri: jwt.jwksUri } : {}),
    ...(jwt?.issuer ?? issuer ? { jwtIssuer: (jwt?.issuer ?? issuer)! } : {}),
    ...(introspection && (introspection.issuer ?? issuer) ? { introspectionIssuer: (introspection.issuer ?? issuer)! } : {}),
  };
  const needs = (introspection && !out.introspection) || (jwt && !out.jwksUri);
  if (!needs || !issuer) return out;
  const url = `${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
  let doc: Record<string, unknown>;
  try {
    const response = await request(url, { signal: AbortSignal.timeout(10000), dispatcher });
    if (response.statusCode !== 200) throw new Error(`status ${response.statusCode}`);
    doc = (await response.body.json()) as Record<string, unknown>;
  } catch (error) {
    // The authorization server being down is a runtime failure (exit 1), not a bad config.
    throw new Error(`token.issuer: cannot read ${url} (${(error as Error).message}); set the endpoints explicitly to start without discovery`, { cause: error });
  }
  // OpenID Connect Discovery section 4.3 (RFC 8414 section 3.3): a document that names another
  // issuer is not this issuer's, and its endpoints are not to be used. Identical, a trailing
  // slash included: the issuer is also what a JWT's iss must equal, exactly.
  const named = doc.issuer;
  if (typeof named !== 'string' || named !== issuer) {
    throw new ConfigError([`token.issuer: the discovery document at ${url} names ${typeof named === 'string' ? `another issuer, ${JSON.stringify(named.slice(0, 200))}` : 'no issuer'}; its endpoints are not used (set token.issuer to the issuer it names, or the endpoints explicitly)`]);
  }
  const pick = (key: string, configKey: string): string => {
    const value = doc[key];
    if (typeof value !== 'string' || !/^https?:\/\//.test(value)) throw new ConfigError([`${configKey}: the discovery document of token.issuer has no ${key}`]);
    return value;
  };
  if (introspection && !out.introspection) out.introspection = pick('introspection_endpoint', 'token.introspection.endpoint');
  if (jwt && !out.jwksUri) out.jwksUri = pick('jwks_uri', 'token.jwt.jwksUri');
  return out;
}

/**
 * The digest of what decides a token's fate under `config`: the shared cache keeps it with each
 * result, and reuses a result only under the same rules. Another audience, issuer, algorithm
 * list, ... (after a reload, or on a replica configured otherwise) decides anew.
 */
function rulesOf(config: Config, endpoints: Endpoints): string {
  const { introspection, jwt } = config.token;
  return hash('sha256', JSON.stringify({
    endpoints,
    introspection: introspection && {
      authMethod: introspection.authMethod, clientId: introspection.clientId, clockToleranceSeconds: introspection.clockToleranceSeconds,
      audience: introspection.audience,
    },
    jwt: jwt && { audience: jwt.audience, algorithms: jwt.algorithms, types: jwt.types, clockToleranceSeconds: jwt.clockToleranceSeconds },
  }), 'base64url').slice(0, 16);
}

/**
 * Builds a runtime: table, verifiers, cache. Throws ConfigError on any problem. `transport` (the
 * connections to the authorization server, token.caFile's) is the runtime's from then on: closed
 * with it.
 */
export function createRuntime(config: Config, endpoints: Endpoints, metrics: Metrics, options: { now?: () => number; shared?: SharedLevel; onCredentialsRefused?: (status: number) => void; onTokenRefusedForClient?: (status: number) => void; transport?: AuthServerTransport; previous?: Runtime | undefined } = {}): Runtime {
  const table = loadTable(config);
  // Read here, once: a closure that named `options` would keep it, and through `previous` every
  // runtime before this one, alive for as long as this one lives.
  const { transport, previous } = options;
  const dispatcher = transport?.dispatcher;
  const { introspection, jwt, cache } = config.token;
  const now = options.now ?? Date.now;
  const introspect = introspection && endpoints.introspection
    ? createIntrospectionVerifier({
      endpoint: endpoints.introspection, authMethod: introspection.authMethod, clientId: introspection.clientId,
      clientSecret: introspection.clientSecret, timeoutMs: introspection.timeoutMs, maxConcurrent: introspection.maxConcurrent,
      clockToleranceSeconds: introspection.clockToleranceSeconds, issuer: endpoints.introspectionIssuer, audience: introspection.audience, now,
      onCall: (ms, outcome) => {
        metrics.introspections.inc({ outcome });
        metrics.introspectionSeconds.observe(ms / 1000);
      },
      ...(options.onCredentialsRefused ? { onCredentialsRefused: options.onCredentialsRefused } : {}),
      ...(options.onTokenRefusedForClient ? { onTokenRefusedForClient: options.onTokenRefusedForClient } : {}),
      ...(dispatcher ? { dispatcher } : {}),
    })
    : undefined;
  const verifyJwt = jwt && endpoints.jwksUri && endpoints.jwtIssuer
    ? createJwtVerifier({
      jwksUri: endpoints.jwksUri, issuer: endpoints.jwtIssuer, audience: jwt.audience, algorithms: jwt.algorithms,
      clockToleranceSeconds: jwt.clockToleranceSeconds, types: jwt.types, cooldownSeconds: jwt.cooldownSeconds, refreshSeconds: jwt.refreshSeconds, now,
      onJwksFetch: (ok) => metrics.jwksFetches.inc({ outcome: ok ? 'ok' : 'failure' }),
      ...(dispatcher ? { dispatcher } : {}),
    })
    : undefined;
  // Token routing (INTERFACE.md): a compact JWS goes to jwt when configured; every other token
  // to introspection when configured; otherwise it is invalid.
  const route: TokenVerifier = async (token) => {
    if (verifyJwt && isCompactJws(token)) return verifyJwt(token);
    if (introspect) return introspect(token);
    throw new InvalidToken('no verifier for this kind of token');
  };
  // A JWT is verified here, at the cost of a signature check: no replica's word for it is taken
  // from Redis (whatever can write there could otherwise vouch for a forged one).
  const shares = (token: string) => !(verifyJwt && isCompactJws(token));
  const rules = rulesOf(config, endpoints);
  // A reload under the same rules keeps what the cache holds (a SIGHUP that renews a certificate
  // must not send every token back to the authorization server at once).
  const verifier = withCache(route, {
    ...cache, now, shares, store: previous?.rules === rules ? previous.verifier.store : undefined,
    ...(options.shared ? { secondLevel: options.shared.scoped(rules) } : {}),
  });
  if (verifyJwt) void verifyJwt.reload().catch(() => undefined);

  const introspectionReady = introspect ? createIntrospectionReadiness(introspect, { now }) : undefined;
  return Object.freeze({
    config,
    table,
    verifier,
    rules,
    close() {
      verifier.retire();
      verifyJwt?.stop();
      transport?.close();
    },
    async ready() {
      if (verifyJwt && !verifyJwt.ready()) {
        await verifyJwt.reload().catch(() => undefined);
        if (!verifyJwt.ready()) return false;
      }
      return introspectionReady ? introspectionReady() : true;
    },
  });
}
