/**
 * Headers toward the upstream (SECURITY.md rule 6): hop-by-hop headers and what `Connection`
 * names are gone, client-sent forwarding and identity headers are replaced by the gateway's own,
 * method overrides and credentials the gateway did not check are removed. And back toward the
 * client: the upstream's hop-by-hop headers are not relayed.
 */
import type { Principal } from './token/principal.js';

/** Removed from every forwarded request. */
const REMOVED = new Set([
  // hop-by-hop (RFC 9110 section 7.6.1) and what must never reach the upstream
  'connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'http2-settings', 'expect',
  'proxy-authorization', 'proxy-authenticate', 'cookie', 'cookie2',
  // forwarding headers Jetty's ForwardedRequestCustomizer trusts (SECURITY.md 0.2)
  'forwarded', 'x-real-ip', 'x-proxied-https', 'proxy-ssl-id', 'proxy-auth-cert', 'x-client-ip', 'true-client-ip', 'x-original-url', 'x-rewrite-url',
  // what other proxies say of the original request (nginx auth_request, IIS ARR, ingress controllers)
  'x-original-uri', 'x-original-host', 'x-original-forwarded-for',
  // method overrides: the method authorised is the method forwarded
  'x-http-method-override', 'x-http-method', 'x-method-override', 'x-original-method',
  // identities and client certificates other proxies assert (jans reads none of them, but a
  // custom script or a later hop might): only the gateway names who is calling
  'remote-user', 'x-remote-user', 'x-authenticated-user', 'x-authenticated-userid', 'x-proxy-user', 'x-user', 'x-userinfo',
  'x-client-cert', 'x-ssl-cert', 'ssl_client_cert', 'x-client-verify', 'x-client-dn', 'front-end-https', 'x-url-scheme',
  'x-oauth-client-id', 'x-oauth-expiration', 'x-authenticated-scope', 'x-authenticated-scopes', 'x-oauth-scopes', 'x-scopes',
  'x-auth-user', 'x-webauth-user', 'x-user-id', 'x-email', 'x-roles', 'x-groups', 'x-authenticated-groups',
  'x-jwt-assertion', 'x-id-token', 'x-access-token', 'x-auth-token', 'dpop',
  'x-arr-clientcert', 'x-client-certificate',
  'authorization',
]);

/** Removed by prefix: forwarding headers, the gateway's own, and identity families (jans scripts' `X-Scim-*`, Kong's `X-Consumer-*`, oauth2-proxy's `X-Auth-Request-*`). */
const REMOVED_PREFIXES = [
  'x-forwarded-', 'x-scopegate-', 'x-scim-', 'x-consumer-', 'x-auth-request-',
  // cloud proxies' identity headers (AWS ALB, Azure App Service, Google IAP), client-certificate families
  'x-amzn-oidc-', 'x-ms-client-principal', 'x-goog-authenticated-user-', 'x-ssl-client-', 'ssl-client-',
];

function removedByPrefix(name: string): boolean {
  const first = name.charCodeAt(0);
  if (first !== 0x78 && first !== 0x73) return false;
  for (let i = 0; i < REMOVED_PREFIXES.length; i++) if (name.startsWith(REMOVED_PREFIXES[i]!)) return true;
  return false;
}

/**
 * A removed name spelt with underscores (`X_Scopegate_Scopes`, `X_Forwarded_For`): Jetty keeps
 * it apart, but a later hop that maps `_` to `-` (CGI-style variables, some proxies) would read it
 * as the original. nginx drops every such name by default (`underscores_in_headers off`); the
 * others are kept.
 */
function removedWithUnderscores(name: string): boolean {
  const dashed = name.replaceAll('_', '-');
  return REMOVED.has(dashed) || removedByPrefix(dashed);
}

/** What the gateway adds after a decision. */
export interface ForwardContext {
  clientIp: string | undefined;
  proto: 'http' | 'https';
  host: string | undefined;
  /** The canonical `Bearer <token>`, when forwarded. */
  authorization: string | undefined;
  principal: Principal | undefined;
  identityHeaders: boolean;
}

const PRINTABLE = /^[\x20-\x7E]*$/;

// One `X-Scopegate-Scopes` value per interned scope set, computed once (src/token/principal.ts).
const scopeHeaders = new WeakMap<ReadonlySet<string>, string | null>();

function scopeHeader(scopes: ReadonlySet<string>): string | null {
  let value = scopeHeaders.get(scopes);
  if (value === undefined) {
    const joined = [...scopes].join(' ');
    value = PRINTABLE.test(joined) ? joined : null;
    scopeHeaders.set(scopes, value);
  }
  return value;
}

/**
 * The header names a `Connection` value lists, lower-cased; undefined when it lists none beyond
 * the hop-by-hop headers every caller removes anyway (`keep-alive`, `close`, absent).
 */
function connectionNames(connection: unknown): string[] | undefined {
  // An upstream that sent two Connection lines: undici gives both (Node joins a client's).
  if (Array.isArray(connection)) connection = connection.join(',');
  if (typeof connection !== 'string' || connection === 'keep-alive' || connection === 'close') return undefined;
  return connection.toLowerCase().split(',').map((name) => name.trim());
}

/** The request headers for the upstream: a new object, what the client sent less what is removed. */
export function upstreamHeaders(headers: Record<string, unknown>, ctx: ForwardContext): Record<string, unknown> {
  const named = connectionNames(headers.connection);
  const out: Record<string, unknown> = {};
  for (const name in headers) {
    if (REMOVED.has(name) || removedByPrefix(name)) continue;
    if (named !== undefined && named.includes(name)) continue;
    if (name.includes('_') && removedWithUnderscores(name)) continue;
    out[name] = headers[name];
  }
  if (ctx.clientIp) out['x-forwarded-for'] = ctx.clientIp;
  out['x-forwarded-proto'] = ctx.proto;
  if (ctx.host) out['x-forwarded-host'] = ctx.host;
  if (ctx.authorization) out.authorization = ctx.authorization;
  const p = ctx.principal;
  if (ctx.identityHeaders && p) {
    // A value that is not printable ASCII is left out rather than sent mangled.
    if (p.clientId && PRINTABLE.test(p.clientId)) out['x-scopegate-client-id'] = p.clientId;
    if (p.subject && PRINTABLE.test(p.subject)) out['x-scopegate-subject'] = p.subject;
    const scopes = scopeHeader(p.scopes);
    if (scopes !== null) out['x-scopegate-scopes'] = scopes;
  }
  return out;
}

/** Hop-by-hop headers of the upstream's response are the upstream's business, not the client's. */
// Proxy-Authenticate is a challenge for the next client of the chain (RFC 9110 section 11.7.1), the
// gateway: never the SCIM client's to answer, whose Proxy-Authorization the gateway drops anyway.
const RESPONSE_HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'proxy-authenticate']);

/**
 * The upstream's response headers for the client: a new object without the hop-by-hop headers
 * and those the upstream's `Connection` names (deleting them from undici's object would cost
 * more, and leave it slow for every later read).
 */
export function responseHeaders<H extends Record<string, unknown>>(headers: H): H {
  const named = connectionNames(headers.connection);
  const out: Record<string, unknown> = {};
  for (const name in headers) {
    if (RESPONSE_HOP_BY_HOP.has(name) || (named !== undefined && named.includes(name))) continue;
    out[name] = headers[name];
  }
  return out as H;
}
