/**
 * Headers toward the upstream (SECURITY.md rule 6): hop-by-hop headers and what `Connection`
 * names are gone, client-sent forwarding and identity headers are replaced by the gateway's own,
 * method overrides and credentials the gateway did not check are removed.
 */
import type { Principal } from './token/principal.js';

/** Removed from every forwarded request. */
const REMOVED = new Set([
  // hop-by-hop (RFC 9110 section 7.6.1) and what must never reach the upstream
  'connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'http2-settings', 'expect',
  'proxy-authorization', 'proxy-authenticate', 'cookie', 'cookie2',
  // forwarding headers Jetty's ForwardedRequestCustomizer trusts (SECURITY.md 0.2)
  'forwarded', 'x-real-ip', 'x-proxied-https', 'proxy-ssl-id', 'proxy-auth-cert', 'x-client-ip', 'true-client-ip', 'x-original-url', 'x-rewrite-url',
  // method overrides: the method authorised is the method forwarded
  'x-http-method-override', 'x-http-method', 'x-method-override',
  'authorization',
]);

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

/** Rewrites the request headers for the upstream, in place, and returns them. */
export function upstreamHeaders(headers: Record<string, unknown>, ctx: ForwardContext): Record<string, unknown> {
  const connection = headers.connection;
  if (typeof connection === 'string') {
    for (const name of connection.split(',')) delete headers[name.trim().toLowerCase()];
  }
  for (const name of Object.keys(headers)) {
    if (REMOVED.has(name) || name.startsWith('x-forwarded-') || name.startsWith('x-scopegate-')) delete headers[name];
  }
  if (ctx.clientIp) headers['x-forwarded-for'] = ctx.clientIp;
  headers['x-forwarded-proto'] = ctx.proto;
  if (ctx.host) headers['x-forwarded-host'] = ctx.host;
  if (ctx.authorization) headers.authorization = ctx.authorization;
  const p = ctx.principal;
  if (ctx.identityHeaders && p) {
    // A value that is not printable ASCII is left out rather than sent mangled.
    if (p.clientId && PRINTABLE.test(p.clientId)) headers['x-scopegate-client-id'] = p.clientId;
    if (p.subject && PRINTABLE.test(p.subject)) headers['x-scopegate-subject'] = p.subject;
    const scopes = [...p.scopes].join(' ');
    if (PRINTABLE.test(scopes)) headers['x-scopegate-scopes'] = scopes;
  }
  return headers;
}
