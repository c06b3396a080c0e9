/**
 * RFC 6750 section 2.1 bearer extraction: from exactly one Authorization header, never the
 * query or the body (SECURITY.md rule 5, cases T01-T07).
 */
import { InvalidBearerRequest } from '../errors.js';

const SCHEME = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+)(.*)$/s;
// b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;

/**
 * The value of the request's one Authorization header, undefined without one; throws
 * InvalidBearerRequest (400) for two, whatever they hold: two credentials are ambiguous on any
 * operation, public ones included.
 */
export function authorizationValue(rawHeaders: readonly string[]): string | undefined {
  let value: string | undefined;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (name.length !== 13 || name.toLowerCase() !== 'authorization') continue;
    if (value !== undefined) throw new InvalidBearerRequest('more than one Authorization header', 400, 'The request carries more than one Authorization header');
    value = rawHeaders[i + 1]!;
  }
  return value;
}

/**
 * The bearer token of a request: undefined when there is no Bearer credential at all (401 with
 * a bare challenge); throws InvalidBearerRequest when the credential is malformed or repeated.
 * `rawHeaders` is Node's flat [name, value, ...] list, which keeps duplicates that
 * `req.headers` would hide. The token's characters are checked by checkB64Token, which a token
 * found in the cache has already passed.
 */
export function extractBearer(rawHeaders: readonly string[], maxTokenBytes: number): string | undefined {
  const value = authorizationValue(rawHeaders);
  if (value === undefined || value === '') return undefined;
  let token: string;
  const first = value.charCodeAt(7);
  if (value.startsWith('Bearer ') && first > 0x20 && first < 0x7f) {
    // The usual form, `Bearer <token>`, without the general parse below (same result).
    token = value.slice(7);
  } else {
    const match = SCHEME.exec(value);
    // The scheme is case-insensitive (RFC 9110 section 11.1): `bearer`, `BEARER` are accepted (T03).
    if (!match || match[1]!.toLowerCase() !== 'bearer') return undefined;
    const rest = match[2]!;
    if (rest === '' || rest.trim() === '') throw new InvalidBearerRequest('empty bearer token');
    if (rest.charCodeAt(0) !== 0x20) throw new InvalidBearerRequest('bearer scheme not followed by SP');
    token = rest.replace(/^ +/, '');
  }
  if (token.length > maxTokenBytes) throw new InvalidBearerRequest(`bearer token longer than ${maxTokenBytes} bytes`);
  return token;
}

/** Throws unless `token` is an RFC 6750 b64token. */
export function checkB64Token(token: string): void {
  if (!B64TOKEN.test(token)) throw new InvalidBearerRequest('bearer token is not a b64token');
}

const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/** True for a compact JWS (three base64url parts): such tokens go to the JWT verifier. */
export function isCompactJws(token: string): boolean {
  return COMPACT_JWS.test(token);
}

/**
 * True when a query carries an `access_token` parameter (RFC 6750 section 2.3). The gateway
 * accepts a token in exactly one place, the Authorization header (SECURITY.md rule 5): a token
 * in the query would also reach the upstream and its logs.
 */
export function queryHasToken(query: string | undefined): boolean {
  // Only a query that names it as written or holds a percent-encoding (`%61ccess_token`) needs
  // its names decoded.
  if (query === undefined || (!query.includes('access_token') && !query.includes('%'))) return false;
  for (const pair of query.split('&')) {
    const name = pair.split('=', 1)[0]!;
    let decoded = name;
    try {
      decoded = decodeURIComponent(name.replace(/\+/g, ' '));
    } catch {
      // a malformed name is compared as written
    }
    if (decoded === 'access_token') return true;
  }
  return false;
}

const FORM = /^application\/x-www-form-urlencoded\s*(;|$)/i;

/** True for a form-encoded body, where RFC 6750 section 2.2 would put a token; SCIM never uses one. */
export function isFormBody(contentType: string | undefined): boolean {
  return contentType !== undefined && FORM.test(contentType);
}
