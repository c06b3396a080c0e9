/**
 * The config: one schema (every key, its default and meaning), then environment overrides, then
 * validation with every problem listed by key path, then `Object.freeze`. INTERFACE.md is the
 * contract for the keys; the README's reference is generated from this schema.
 */
import { isIP } from 'node:net';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseDocument } from 'yaml';
import { ConfigError } from './errors.js';
import { readSmallFile, strictUtf8, syntaxProblems } from './files.js';
import { checkPemFiles } from './pem.js';
import { envName, fromEnv, leaves, nearest, validate, type Section } from './schema.js';

const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;

/**
 * The longest wait a Node timer holds (2^31-1 ms, 24.8 days): a longer one fires after 1 ms, which
 * would cut every request at shutdown or time out every introspection at once.
 */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Our own description of jans-scim, shipped in config/: the table when none is configured. */
const BUNDLED_OPENAPI = fileURLToPath(new URL('../config/scim-openapi.yaml', import.meta.url));

/** An operation the OpenAPI file lacks but the upstream serves (`openapi.extra`). */
export interface ExtraOperation {
  method: string;
  path: string;
  operationId?: string;
  /** One set of scopes, all required; empty with `public: true`. */
  scopes: readonly string[];
  public: boolean;
}

function checkExtra(value: unknown, key: string): { value?: unknown; problems: string[] } {
  if (!Array.isArray(value)) return { problems: [`${key}: must be a list of {method, path, scopes}`] };
  const problems: string[] = [];
  const out: ExtraOperation[] = [];
  value.forEach((entry: unknown, i) => {
    const at = `${key}[${i}]`;
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
      problems.push(`${at}: must be a mapping {method, path, scopes}`);
      return;
    }
    const e = entry as Record<string, unknown>;
    for (const k of Object.keys(e)) {
      if (!['method', 'path', 'scopes', 'public', 'operationId'].includes(k)) {
        const s = nearest(k, ['method', 'path', 'scopes', 'public', 'operationId']);
        problems.push(`${at}.${k}: unknown key${s ? ` (did you mean ${at}.${s}?)` : ''}`);
      }
    }
    const method = e.method;
    if (typeof method !== 'string' || !(METHODS as readonly string[]).includes(method)) problems.push(`${at}.method: must be one of ${METHODS.join(', ')}`);
    if (typeof e.path !== 'string' || !e.path.startsWith('/')) problems.push(`${at}.path: must be a path starting with /`);
    const isPublic = e.public === true;
    if (e.public !== undefined && typeof e.public !== 'boolean') problems.push(`${at}.public: must be true or false`);
    const scopes = e.scopes ?? [];
    if (!Array.isArray(scopes) || scopes.some((s) => typeof s !== 'string' || !/^[\x21\x23-\x5B\x5D-\x7E]+$/.test(s))) {
      problems.push(`${at}.scopes: must be a list of scope tokens`);
    } else if (!isPublic && scopes.length === 0) {
      problems.push(`${at}.scopes: must name at least one scope (or set public: true)`);
    } else if (isPublic && scopes.length > 0) {
      problems.push(`${at}.scopes: a public operation takes no scopes`);
    }
    if (e.operationId !== undefined && typeof e.operationId !== 'string') problems.push(`${at}.operationId: must be a string`);
    out.push(Object.freeze({
      method: String(method), path: String(e.path), scopes: Object.freeze([...(scopes as string[])]), public: isPublic,
      ...(typeof e.operationId === 'string' ? { operationId: e.operationId } : {}),
    }));
  });
  return { value: Object.freeze(out), problems };
}

// A host name: dot-separated labels of letters, digits and inner hyphens (RFC 1123), underscores
// too (Docker Compose service names resolve with them), a final dot allowed.
const HOST_NAME = /^(?=.{1,254}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;

/**
 * listen.host, admin.host: an IP address or a host name to bind, nothing else. What `check` passes,
 * `serve` can bind: `127.0.0.1:8080`, `http://0.0.0.0`, `[::1]` or `999.1.1.1` would pass
 * as strings and fail only at startup (exit 1), and `127.1` or `0` would slip past the check that
 * the two listeners differ (a name made of digits and dots only must be an IPv4 address).
 */
function checkBindHost(value: unknown, key: string): { value?: unknown; problems: string[] } {
  if (typeof value === 'string' && (isIP(value) !== 0 || (HOST_NAME.test(value) && !/^[0-9.]+$/.test(value)))) return { value, problems: [] };
  const shown = typeof value === 'string' ? JSON.stringify(value.slice(0, 100)) : typeof value;
  return { problems: [`${key}: must be an IP address (127.0.0.1, 0.0.0.0, ::) or a host name, without port, scheme or brackets (got ${shown})`] };
}

/** The schema: the single source of truth for keys, types, defaults and descriptions. */
export const schema: Section = {
  kind: 'object',
  description: 'scopegate configuration',
  fields: {
    listen: {
      kind: 'object', description: 'The proxy listener that SCIM clients call.',
      fields: {
        host: { kind: 'custom', default: '127.0.0.1', check: checkBindHost, description: 'Address to bind: an IP address or a host name.' },
        port: { kind: 'port', default: 8080, description: 'Port to bind (0 = any free port).' },
        shutdownTimeoutMs: { kind: 'int', min: 0, max: MAX_TIMER_MS, defaultText: 'upstream.timeoutMs + 5000', description: 'On SIGTERM/SIGINT, time allowed for requests in flight to finish; then their connections are closed.' },
        maxConnections: { kind: 'int', default: 0, min: 0, max: 10_000_000, description: 'Most client connections open at once on the proxy port (0: no limit but the file descriptors): past it, a new connection is closed as it comes, before a byte is read (counted in scopegate_connections_dropped_total). Takes effect at a reload.' },
        tls: {
          kind: 'object', optional: true, description: 'HTTPS termination on the proxy listener.',
          fields: {
            certFile: { kind: 'path', required: true, description: 'PEM certificate chain.' },
            keyFile: { kind: 'path', required: true, secret: true, description: 'PEM private key.' },
          },
        },
      },
    },
    admin: {
      kind: 'object', description: 'The admin listener: /healthz, /readyz, /metrics, /cache/purge. Never the proxy port.',
      fields: {
        host: { kind: 'custom', default: '127.0.0.1', check: checkBindHost, description: 'Address to bind: an IP address or a host name.' },
        port: { kind: 'port', default: 9090, description: 'Port to bind (0 = any free port).' },
      },
    },
    upstream: {
      kind: 'object', description: 'The protected API (jans-scim in protection mode BYPASS).',
      fields: {
        url: { kind: 'url', default: 'http://127.0.0.1:8081', description: 'Origin of the upstream; the request path is forwarded as received.' },
        timeoutMs: { kind: 'int', default: 30000, min: 1, max: MAX_TIMER_MS, description: 'Time allowed for the head of the upstream\'s answer (504 after it), the longest pause within its body (the answer is then cut off: a body that keeps coming is relayed for as long as it comes), and the wait for a free pool connection (504 after it as well).' },
        forwardAuthorization: { kind: 'bool', default: true, description: 'Forward `Authorization: Bearer <token>` in canonical form; false strips it.' },
        identityHeaders: { kind: 'bool', default: true, description: 'Add X-Scopegate-Client-Id, -Subject and -Scopes (inbound copies are always removed).' },
        caFile: { kind: 'path', description: 'PEM CA bundle for an https upstream, trusted in place of the public CAs (TLS is always verified).' },
        connections: { kind: 'int', default: 128, min: 1, description: 'Maximum pooled connections to the upstream.' },
      },
    },
    limits: {
      kind: 'object', description: 'Request limits, enforced before anything reaches the upstream.',
      fields: {
        bodyBytes: { kind: 'int', default: 3072000, min: 1, description: 'Largest request body (413), chunked bodies included (those are read whole before forwarding, so this also bounds the memory of each); jans bulkMaxPayloadSize.' },
        targetBytes: { kind: 'int', default: 4096, min: 64, description: 'Longest request-target (414).' },
        headerBytes: { kind: 'int', default: 8192, min: 1024, description: 'Largest header block (431), counted as written (`name: value` CRLF per line; every line is read, none dropped past Node\'s usual 1000); Jetty accepts 8 KiB.' },
        tokenBytes: { kind: 'int', default: 4096, min: 64, description: 'Longest bearer token, checked before any network call.' },
        requestTimeoutMs: { kind: 'int', default: 30000, min: 1, max: MAX_TIMER_MS, description: 'Time allowed for a client to send its whole request.' },
        sendTimeoutMs: { kind: 'int', default: 30000, min: 1000, max: MAX_TIMER_MS, description: 'Time an answer may wait on a client that reads none of it (nginx send_timeout): its connection is then closed and its upstream connection freed. Progress is what the kernel takes from the gateway, which it takes in steps of its send buffer (megabytes): a client that reads slower than a step per sendTimeoutMs is cut too. At least 1000.' },
        bufferBodyBytes: { kind: 'int', default: 65536, min: 0, description: 'A request body with a declared length up to this size is read whole before it is forwarded (nginx proxy_request_buffering): a client that stalls or leaves mid-body gets its 408 or 400 and the upstream nothing. Larger bodies stream as they come, as does a small one while limits.bufferedBytes cannot hold it (never a 503 for it); 0 streams every declared body.' },
        bufferedBytes: { kind: 'int', default: 67108864, min: 0, description: 'Request bodies read whole before forwarding (chunked, declared up to bufferBodyBytes, /Bulk) held in memory at once, all requests together: a chunked or /Bulk body that would pass it is refused 503 with `Retry-After: 1` before any of it goes upstream. At least `limits.bodyBytes`. The gauge `scopegate_request_body_bytes_held` shows the bytes held.' },
      },
    },
    bulk: {
      kind: 'object', description: 'POST /Bulk handling.',
      fields: {
        checkOperations: { kind: 'bool', default: true, description: '/Bulk also needs each inner operation\'s own scope.' },
        maxOperations: { kind: 'int', default: 30, min: 1, description: 'Most operations in one Bulk request (jans bulkMaxOperations).' },
      },
    },
    search: {
      kind: 'object', description: 'POST /.search handling.',
      fields: {
        rootRequiresReadScopes: { kind: 'bool', default: false, description: 'The root search also needs the read scope of every resource type it can return.' },
      },
    },
    openapi: {
      kind: 'object', description: 'Where the endpoint-to-scope table comes from.',
      fields: {
        file: { kind: 'path', default: BUNDLED_OPENAPI, defaultText: 'the bundled config/scim-openapi.yaml (the 31 jans-scim operations)', description: 'An OpenAPI 3.0, 3.1 or 3.2 file, YAML or JSON (relative to the config file): a regular file or a pipe of UTF-8 text, at most 16 MiB.' },
        basePath: { kind: 'string', description: 'Base path of every operation; default: the path of servers[0].url.' },
        extra: { kind: 'custom', default: Object.freeze([]), check: checkExtra, description: 'Operations the file lacks but the upstream serves: {method, path (relative to basePath), scopes | public: true}.' },
      },
    },
    token: {
      kind: 'object', description: 'How bearer tokens are validated. At least one of introspection and jwt.',
      fields: {
        issuer: { kind: 'url', noUserinfo: true, description: 'Issuer; endpoints not given are read from its /.well-known/openid-configuration at startup.' },
        caFile: { kind: 'path', description: 'PEM CA bundle for an https authorization server (introspection, JWKS, discovery), trusted in place of the public CAs (TLS is always verified); default: Node\'s CAs, and NODE_EXTRA_CA_CERTS.' },
        realm: { kind: 'string', default: 'scopegate', description: 'The realm of WWW-Authenticate challenges: printable ASCII and spaces, no double quote nor backslash.' },
        introspection: {
          kind: 'object', optional: true, description: 'RFC 7662 introspection, for opaque tokens.',
          fields: {
            endpoint: { kind: 'url', noUserinfo: true, description: 'Introspection endpoint (default: from discovery).' },
            clientId: { kind: 'string', description: 'Client id for client_secret_basic / client_secret_post.' },
            clientSecret: { kind: 'string', secret: true, description: 'Client secret.' },
            clientSecretFile: { kind: 'path', description: 'File holding the client secret (instead of clientSecret).' },
            authMethod: { kind: 'enum', default: 'client_secret_basic', values: ['client_secret_basic', 'client_secret_post', 'bearer_token'], description: 'How the gateway authenticates; bearer_token: the presented token authorises its own introspection (jans default).' },
            timeoutMs: { kind: 'int', default: 2000, min: 1, max: MAX_TIMER_MS, description: 'Time allowed for one introspection (503 after it).' },
            maxConcurrent: { kind: 'int', default: 64, min: 1, description: 'Most introspection calls in flight at once (503 beyond).' },
            clockToleranceSeconds: { kind: 'int', default: 30, max: 300, description: 'Allowed clock skew for the nbf of an active answer (a token just issued by a clock ahead of this one); an exp that has passed here is refused without leeway: a token the authorization server has just issued is not refused because this clock is behind its own, and no token outlives its exp (SECURITY.md I03).' },
            issuer: { kind: 'string', description: 'The `iss` an active answer may carry (default: `token.issuer`): an answer from another issuer is refused (401), a trailing slash aside; an answer without `iss` is taken (RFC 7662 makes it optional).' },
            audience: { kind: 'list', default: Object.freeze([]), description: 'Accepted `aud` values of an active answer; empty = not checked; set, an answer without one of them (or without `aud`) is refused (401).' },
          },
        },
        jwt: {
          kind: 'object', optional: true, description: 'JWT access tokens verified locally against a JWKS.',
          fields: {
            jwksUri: { kind: 'url', noUserinfo: true, description: 'JWKS URL (default: from discovery).' },
            issuer: { kind: 'string', description: 'Exact `iss` (default: token.issuer).' },
            audience: { kind: 'list', default: Object.freeze([]), description: 'Accepted `aud` values; empty = not checked (jans sets aud = client_id).' },
            algorithms: { kind: 'list', nonEmpty: true, default: Object.freeze(['RS256', 'RS384', 'RS512', 'PS256', 'ES256', 'ES384']), values: ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'], description: 'Accepted signature algorithms (never none, never HS*).' },
            clockToleranceSeconds: { kind: 'int', default: 30, max: 300, description: 'Allowed clock skew for exp/nbf/iat.' },
            types: { kind: 'list', nonEmpty: true, default: Object.freeze(['JWT', 'at+jwt']), description: 'Accepted `typ` headers (jans issues JWT; RFC 9068 says at+jwt).' },
            cooldownSeconds: { kind: 'int', default: 30, min: 1, description: 'Least time between two JWKS fetches caused by unknown kids.' },
            refreshSeconds: { kind: 'int', default: 300, min: 1, max: Math.floor(MAX_TIMER_MS / 1000), description: 'Period of the background JWKS refresh: a key the authorization server withdraws stops validating new tokens within it (a token already cached, within token.cache.maxTtlSeconds). A failed refresh keeps the last good key set.' },
          },
        },
        cache: {
          kind: 'object', description: 'Validation results, keyed by SHA-256 of the token.',
          fields: {
            maxEntries: { kind: 'int', default: 100000, min: 1, max: 10000000, description: 'Most cached valid tokens (LRU), at most 10,000,000 (some 330 MB per million); refusals are kept apart, at most 10,000 (or this many, if fewer).' },
            maxTtlSeconds: { kind: 'int', default: 300, min: 0, description: 'Longest a result is reused; never past the token\'s own exp either.' },
            negativeTtlSeconds: { kind: 'int', default: 5, min: 0, description: 'How long an invalid/inactive result is reused.' },
            redis: {
              kind: 'object', optional: true, description: 'Optional second-level cache shared across replicas.',
              fields: {
                url: { kind: 'url', required: true, protocols: ['redis:', 'rediss:'], description: 'Redis URL.' },
                keyPrefix: { kind: 'string', default: 'scopegate:', description: 'Prefix of every key and channel.' },
                signingKey: { kind: 'string', secret: true, description: 'Key the shared entries are signed with, the same on every replica (default: derived from token.introspection.clientSecret; none: entries unsigned, and a warning).' },
              },
            },
          },
        },
      },
    },
    log: {
      kind: 'object', description: 'Logging (pino JSON lines on stdout).',
      fields: {
        level: { kind: 'enum', default: 'info', values: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], description: 'Least level written.' },
      },
    },
  },
};

/** The validated, frozen configuration. */
export interface Config {
  readonly file: string;
  readonly listen: { host: string; port: number; shutdownTimeoutMs: number; maxConnections: number; tls?: { certFile: string; keyFile: string } };
  readonly admin: { host: string; port: number };
  readonly upstream: { url: string; timeoutMs: number; forwardAuthorization: boolean; identityHeaders: boolean; caFile?: string; connections: number };
  readonly limits: { bodyBytes: number; targetBytes: number; headerBytes: number; tokenBytes: number; requestTimeoutMs: number; sendTimeoutMs: number; bufferBodyBytes: number; bufferedBytes: number };
  readonly bulk: { checkOperations: boolean; maxOperations: number };
  readonly search: { rootRequiresReadScopes: boolean };
  readonly openapi: { file: string; basePath?: string; extra: readonly ExtraOperation[] };
  readonly token: {
    issuer?: string;
    caFile?: string;
    realm: string;
    introspection?: {
      endpoint?: string; clientId?: string; clientSecret?: string; clientSecretFile?: string;
      authMethod: 'client_secret_basic' | 'client_secret_post' | 'bearer_token'; timeoutMs: number; maxConcurrent: number; clockToleranceSeconds: number;
      issuer?: string; audience: readonly string[];
    };
    jwt?: {
      jwksUri?: string; issuer?: string; audience: readonly string[]; algorithms: readonly string[];
      clockToleranceSeconds: number; types: readonly string[]; cooldownSeconds: number; refreshSeconds: number;
    };
    cache: { maxEntries: number; maxTtlSeconds: number; negativeTtlSeconds: number; redis?: { url: string; keyPrefix: string; signingKey?: string } };
  };
  readonly log: { level: string };
  /** What was ignored but may be a mistake (unknown `SCOPEGATE_*` variables): printed by check, logged by serve. */
  readonly warnings: readonly string[];
  /** Key path -> the SCOPEGATE_* variable that set it (names only: values may be secrets). */
  readonly variables: Readonly<Record<string, string>>;
}

/** The environment variables that are not config keys but are still ours. */
const OTHER_ENV = new Set(['SCOPEGATE_CONFIG']);

/**
 * The variables Kubernetes injects for a Service (`enableServiceLinks`): a Service named
 * scopegate-redis gives SCOPEGATE_REDIS_SERVICE_HOST, SCOPEGATE_REDIS_PORT=tcp://10.0.0.11:6379,
 * SCOPEGATE_REDIS_PORT_6379_TCP_ADDR, ...
 */
const SERVICE_LINK_NAME = /_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)$/;
const SERVICE_LINK_VALUE = /^(tcp|udp|sctp):\/\/[^/\s]+:\d+$/;

function isServiceLink(name: string, value: string): boolean {
  return SERVICE_LINK_NAME.test(name) || (name.endsWith('_PORT') && SERVICE_LINK_VALUE.test(value));
}

/** What the environment did to a raw config. */
interface EnvResult {
  problems: string[];
  warnings: string[];
  /** Key path -> the variable that set it, so that a bad value names both. */
  sources: Map<string, { name: string; value: string }>;
}

function setPath(target: Record<string, unknown>, path: string, value: unknown): string | undefined {
  const parts = path.split('.');
  let node = target;
  for (const part of parts.slice(0, -1)) {
    const next = node[part];
    if (next === undefined || next === null) node[part] = {};
    else if (typeof next !== 'object' || Array.isArray(next)) return `${parts.slice(0, parts.indexOf(part) + 1).join('.')}: must be a mapping of keys`;
    node = node[part] as Record<string, unknown>;
  }
  node[parts.at(-1)!] = value;
  return undefined;
}

/**
 * Applies `SCOPEGATE_*` overrides to a raw config. An unknown `SCOPEGATE_*` variable is a warning,
 * not a problem: Kubernetes injects service-link variables (SCOPEGATE_REDIS_PORT=tcp://...) for any
 * Service whose name starts with scopegate-, and refusing to start on them would take the gateway
 * down for a Service it never reads. Only exact key names are applied.
 */
function applyEnv(raw: Record<string, unknown>, env: Record<string, string | undefined>): EnvResult {
  const result: EnvResult = { problems: [], warnings: [], sources: new Map() };
  const byName = new Map(leaves(schema).map(([path, leaf]) => [envName(path), [path, leaf] as const]));
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith('SCOPEGATE_') || value === undefined || OTHER_ENV.has(name)) continue;
    const entry = byName.get(name);
    if (!entry) {
      const suggestion = nearest(name, [...byName.keys()]);
      const hint = isServiceLink(name, value) ? ' (a Kubernetes service link? enableServiceLinks: false in the pod spec turns them off)'
        : suggestion ? ` (did you mean ${suggestion}?)` : '';
      result.warnings.push(`${name}: unknown environment variable, ignored${hint}`);
      continue;
    }
    result.sources.set(entry[0], { name, value });
    const problem = setPath(raw, entry[0], fromEnv(entry[1], value));
    if (problem) result.problems.push(problem);
  }
  return result;
}

/** `listen.port: ...` -> `listen.port (SCOPEGATE_LISTEN_PORT): ...` when the variable set the key. */
function nameSources(problems: readonly string[], sources: EnvResult['sources']): string[] {
  return problems.map((problem) => {
    const key = problem.slice(0, problem.indexOf(':'));
    // The variable that set the key, or the part of the config it belongs to (`openapi.extra[0].method`
    // of SCOPEGATE_OPENAPI_EXTRA).
    let owner = key;
    while (owner !== '' && !sources.has(owner)) owner = owner.slice(0, Math.max(owner.lastIndexOf('.'), owner.lastIndexOf('['), 0));
    const source = sources.get(owner);
    // Another key the problem names, set by a variable (`admin.port: must differ from listen.port`).
    const others = [...sources].filter(([other]) => other !== owner && new RegExp(`(^|[^\\w.])${other.replace(/[.[\]]/g, '\\$&')}($|[^\\w])`).test(problem.slice(key.length)))
      .map(([other, from]) => ` (${other} from ${from.name})`).join('');
    if (!source) return `${problem}${others}`;
    const link = SERVICE_LINK_VALUE.test(source.value)
      ? ` (${source.name} looks like a Kubernetes service link: set enableServiceLinks: false in the pod spec, or rename the Service)` : '';
    return `${key} (${source.name})${problem.slice(key.length)}${link}${others}`;
  });
}

/**
 * Problems found past loading (the OpenAPI file's: `openapi.file: cannot read ...`), with the
 * variable that set their key named as loadConfig names it: `openapi.file (SCOPEGATE_OPENAPI_FILE): ...`.
 */
export function nameVariables(problems: readonly string[], variables: Readonly<Record<string, string>> | undefined): string[] {
  if (variables === undefined || Object.keys(variables).length === 0) return [...problems];
  return nameSources(problems, new Map(Object.entries(variables).map(([key, name]) => [key, { name, value: '' }])));
}

/**
 * Parses YAML or JSON text; a syntax error names the file, line and column, never the text there:
 * the YAML parser quotes the token it stumbled on, which may be the client secret of a line
 * written wrong (and a reload logs the problems).
 */
export function parseConfigText(text: string, file: string): unknown {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(syntaxProblems(doc.errors, file, true));
  }
  try {
    return doc.toJS() as unknown;
  } catch (error) {
    // Well-formed YAML that has no value: an alias without its anchor (its name is not repeated:
    // it may be a value written after a `*`), or too many aliases.
    const message = (error as Error).message;
    throw new ConfigError([`${file}: ${message.startsWith('Unresolved alias') ? 'an alias (*name) without its anchor (&name)' : message}`]);
  }
}

/** Checks that span keys: what one key means for another. */
function crossCheck(c: Config): string[] {
  const problems: string[] = [];
  if (!c.token || !c.listen || !c.admin) return problems;
  const { introspection, jwt, issuer } = c.token;
  if (!introspection && !jwt) problems.push('token: needs at least one of token.introspection and token.jwt');
  if (introspection) {
    if (!introspection.endpoint && !issuer) problems.push('token.introspection.endpoint: is required (or set token.issuer for discovery)');
    // An invalid authMethod is a problem of its own (and absent here): what it needs is unknown.
    if (introspection.authMethod !== undefined && introspection.authMethod !== 'bearer_token') {
      if (!introspection.clientId) problems.push(`token.introspection.clientId: is required with authMethod ${introspection.authMethod}`);
      if (!introspection.clientSecret && !introspection.clientSecretFile) problems.push(`token.introspection.clientSecret: is required with authMethod ${introspection.authMethod} (or clientSecretFile)`);
    }
    if (introspection.clientSecret && introspection.clientSecretFile) problems.push('token.introspection.clientSecretFile: give clientSecret or clientSecretFile, not both');
  }
  if (jwt) {
    if (!jwt.jwksUri && !issuer) problems.push('token.jwt.jwksUri: is required (or set token.issuer for discovery)');
    if (!jwt.issuer && !issuer) problems.push('token.jwt.issuer: is required (or set token.issuer)');
  }
  const redis = c.token.cache?.redis;
  if (redis && typeof redis.url === 'string') {
    // ioredis reads the path as the database number: `/abc` became SELECT NaN, and a crash.
    const database = new URL(redis.url).pathname;
    if (database !== '' && database !== '/' && !/^\/\d{1,5}$/.test(database)) problems.push('token.cache.redis.url: the path must be a database number (/0, /1, ...)');
  }
  if (c.upstream && typeof c.upstream.url === 'string') {
    const url = new URL(c.upstream.url);
    if (url.pathname !== '/' || url.search || url.hash || url.username || url.password) {
      problems.push('upstream.url: must be an origin (scheme, host, port): the request path is forwarded as received');
    }
    for (const name of ['listen', 'admin'] as const) {
      if (namesListener(url, c[name])) problems.push(`upstream.url: names the gateway's own ${name} listener (${c[name].host}:${c[name].port}); the upstream is jans-scim`);
    }
  }
  // A quoted-string of WWW-Authenticate (RFC 9110 section 5.6.4) that Node writes as a header value:
  // printable ASCII and spaces, no quote nor backslash (no escaping needed).
  if (typeof c.token.realm === 'string' && !/^[\x20\x21\x23-\x5B\x5D-\x7E]*$/.test(c.token.realm)) problems.push('token.realm: must be printable ASCII (spaces allowed), without " or \\');
  if (c.limits && c.limits.bufferedBytes < c.limits.bodyBytes) problems.push(`limits.bufferedBytes: must be at least limits.bodyBytes (${c.limits.bodyBytes}), or no body of the largest size could ever be read`);
  if (sameSocket(c.admin, c.listen)) problems.push(`admin.port: must differ from listen.port: admin ${c.admin.host}:${c.admin.port} and listen ${c.listen.host}:${c.listen.port} cannot both be bound`);
  return problems;
}

/** Hosts that bind every address: a listener there takes the port on every other host too. */
const WILDCARD_HOSTS = new Set(['', '0.0.0.0', '::', '::0', '0:0:0:0:0:0:0:0']);
const LOOPBACK_NAMES: Record<string, string> = { localhost: '127.0.0.1' };

/**
 * A host as written, compared: lower case, without IPv6 brackets nor a final dot, an IPv4-mapped
 * IPv6 address as its IPv4 one, localhost as 127.0.0.1.
 */
function normHost(host: string): string {
  const h = host.toLowerCase().replace(/^\[(.*)\]$/, '$1').replace(/\.$/, '').replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/, '$1')
    // As a URL writes it: [::ffff:127.0.0.1] is [::ffff:7f00:1].
    .replace(/^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/, (_, high: string, low: string) => {
      const [a, b] = [parseInt(high, 16), parseInt(low, 16)];
      return `${a >> 8}.${a & 255}.${b >> 8}.${b & 255}`;
    });
  return LOOPBACK_NAMES[h] ?? h;
}

/** True when two listeners would ask for the same port on overlapping addresses (EADDRINUSE). */
function sameSocket(a: { host: string; port: number }, b: { host: string; port: number }): boolean {
  if (typeof a.port !== 'number' || a.port === 0 || a.port !== b.port || typeof a.host !== 'string' || typeof b.host !== 'string') return false;
  const [x, y] = [normHost(a.host), normHost(b.host)];
  return x === y || WILDCARD_HOSTS.has(x) || WILDCARD_HOSTS.has(y);
}

/**
 * True when `upstream` names a listener of the gateway itself: the same host (localhost as
 * 127.0.0.1) and port, or a loopback address on the port of a listener bound to every address.
 * Every request would come back to the gateway, 129 times over, until the upstream timeout.
 */
function namesListener(upstream: URL, listener: { host: string; port: number }): boolean {
  const port = Number(upstream.port || (upstream.protocol === 'https:' ? 443 : 80));
  if (typeof listener.port !== 'number' || listener.port === 0 || listener.port !== port || typeof listener.host !== 'string') return false;
  const [x, y] = [normHost(upstream.hostname), normHost(listener.host)];
  // A connection to 0.0.0.0 or :: reaches this machine's loopback address.
  const local = x.startsWith('127.') || x === '::1' || WILDCARD_HOSTS.has(x);
  return x === y || (local && WILDCARD_HOSTS.has(y)) || (WILDCARD_HOSTS.has(x) && (y === '127.0.0.1' || y === '::1'));
}

/** Reads a secret file: one line of UTF-8 (a final newline aside), trimmed; problems name the key, never the content. */
function readSecretFile(path: string, key: string): { value?: string; problem?: string } {
  try {
    const text = readSmallFile(path, MAX_SECRET_BYTES);
    if (text === undefined) return { problem: `${key}: the file it names is not a regular file or a pipe of at most ${MAX_SECRET_BYTES} bytes` };
    let value: string;
    try {
      value = strictUtf8.decode(text).trim();
    } catch {
      // Node would send U+FFFD in place of each bad byte: another secret than the file's.
      return { problem: `${key}: the file is not UTF-8 text` };
    }
    if (/[\r\n]/.test(value)) return { problem: `${key}: the file holds more than one line (one secret, a final newline at most)` };
    return value ? { value } : { problem: `${key}: the file is empty` };
  } catch (error) {
    // Not the path: the value may be the secret itself, set where its file's path belongs.
    return { problem: `${key}: cannot read the file it names (${(error as NodeJS.ErrnoException).code ?? 'error'})` };
  }
}

/**
 * Loads and validates a config file with the environment overrides. Throws ConfigError listing
 * every problem by key path; secrets never appear in a message.
 */
export function loadConfig(file: string, env: Record<string, string | undefined> = {}): Config {
  const path = resolve(file);
  let bytes: Buffer | undefined;
  try {
    bytes = readSmallFile(path, MAX_CONFIG_BYTES);
  } catch (error) {
    throw new ConfigError([`${file}: cannot read the config file (${(error as NodeJS.ErrnoException).code ?? 'error'})`]);
  }
  // `/dev/zero`, a FIFO, a file of gigabytes: read, it would take the memory, or never end.
  if (bytes === undefined) throw new ConfigError([`${file}: not a config file (a regular file or a pipe of at most ${MAX_CONFIG_BYTES} bytes)`]);
  let text: string;
  try {
    text = strictUtf8.decode(bytes);
  } catch {
    throw new ConfigError([`${file}: the config file is not UTF-8 text`]);
  }
  const parsed = parseConfigText(text, file);
  // A file of nothing (a template that rendered empty, a truncated copy) is not a wish for every
  // default, as a key with no value is not one for its default: `{}` says that.
  if (parsed === null || parsed === undefined) throw new ConfigError([`${file}: the config file is empty (whitespace or comments only); write {} to take every default`]);
  return configFromValue(parsed, path, env);
}

const MAX_CONFIG_BYTES = 1024 * 1024;
const MAX_SECRET_BYTES = 64 * 1024;

/** Validates an already parsed config value, as if read from `file`. */
export function configFromValue(parsed: unknown, file: string, env: Record<string, string | undefined> = {}): Config {
  const raw: Record<string, unknown> = parsed === null || parsed === undefined ? {} : (structuredClone(parsed) as Record<string, unknown>);
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError([`${file}: must be a mapping of keys`]);
  const fromEnv = applyEnv(raw, env);
  const problems = fromEnv.problems;
  const base = dirname(file);
  const result = validate(schema, raw, (p) => resolve(base, p));
  problems.push(...result.problems);
  const variables = Object.freeze(Object.fromEntries([...fromEnv.sources].map(([key, { name }]) => [key, name])));
  let config = { ...(result.value as object), file, warnings: Object.freeze(fromEnv.warnings), variables } as Config;
  // Problems between keys are listed with the others, so one run shows every problem.
  const seen = new Set(problems.map((p) => p.slice(0, p.indexOf(':'))));
  problems.push(...[...crossCheck(config), ...checkPemFiles(config)].filter((p) => !seen.has(p.slice(0, p.indexOf(':')))));
  // The secret file is read whatever else is wrong, so that its problem is listed with the others.
  const introspection = config.token?.introspection;
  const secretFile = typeof introspection?.clientSecretFile === 'string' ? introspection.clientSecretFile : undefined;
  const secret = secretFile === undefined ? undefined : readSecretFile(secretFile, 'token.introspection.clientSecretFile');
  if (secret?.problem) problems.push(secret.problem);
  // One section that is no mapping is one problem, however many variables set keys under it.
  if (problems.length > 0) throw new ConfigError(nameSources([...new Set(problems)], fromEnv.sources), fromEnv.warnings, config);
  // The default lets every request the upstream may still answer finish (INTERFACE.md: graceful).
  if (config.listen.shutdownTimeoutMs === undefined) {
    config = { ...config, listen: Object.freeze({ ...config.listen, shutdownTimeoutMs: Math.min(config.upstream.timeoutMs + 5000, MAX_TIMER_MS) }) };
  }
  if (introspection && secret?.value !== undefined) {
    config = { ...config, token: Object.freeze({ ...config.token, introspection: Object.freeze({ ...introspection, clientSecret: secret.value }) }) };
  }
  return Object.freeze(config);
}

/** Every key path with its env variable, default and description: the README reference. */
export function configReference(): Array<{ key: string; env: string; default: string; description: string }> {
  return leaves(schema).map(([key, leaf]) => ({
    key,
    env: envName(key),
    default: leaf.required ? '(required)' : leaf.defaultText ?? (leaf.default === undefined ? '(none)' : JSON.stringify(leaf.default)),
    description: leaf.description,
  }));
}
