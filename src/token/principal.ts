/**
 * Principal: who a validated token speaks for and what it may do. Built from introspection
 * members or JWT claims, whose `scope` may be a space-separated string or an array (jans sends
 * both), or `scp`.
 */
import { InvalidToken } from '../errors.js';

/** A validated access token, reduced to what the gateway decides with. */
export interface Principal {
  readonly subject: string | undefined;
  readonly clientId: string | undefined;
  readonly scopes: ReadonlySet<string>;
  /** Epoch seconds; undefined when the token states no expiry. */
  readonly expiresAt: number | undefined;
}

/** Validates a token and returns its principal; throws InvalidToken or AuthServerUnavailable. */
export type TokenVerifier = (token: string) => Promise<Principal>;

// Tokens of one client mostly share one scope string: one frozen Set each, not one per token,
// which keeps a cache of a million entries small.
const interned = new Map<string, ReadonlySet<string>>();
const MAX_INTERNED = 10000;

function scopeSet(list: readonly string[]): ReadonlySet<string> {
  const key = list.join(' ');
  let set = interned.get(key);
  if (!set) {
    set = new Set(list);
    if (interned.size < MAX_INTERNED) interned.set(key, set);
  }
  return set;
}

function scopeList(value: unknown, name: string): string[] | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value.split(' ').filter(Boolean);
  if (Array.isArray(value) && value.every((s) => typeof s === 'string')) {
    // A scope-token has no space (RFC 6749 section 3.3). One that had would be two scopes to
    // everything that joins a set with spaces: the interning key, the shared cache, the
    // X-Scopegate-Scopes header (`["a b"]` would read as a and b).
    if (value.some((s: string) => s.includes(' '))) throw new InvalidToken(`${name} holds an element with a space`);
    return value as string[];
  }
  throw new InvalidToken(`${name} is neither a string nor a list of strings`);
}

// Client ids and subjects repeat across tokens: one string each, not one per cached token.
const names = new Map<string, string>();
const MAX_NAMES = 100000;

function optionalString(value: unknown): string | undefined {
  if (typeof value !== 'string' || value === '') return undefined;
  const known = names.get(value);
  if (known !== undefined) return known;
  if (names.size < MAX_NAMES) names.set(value, value);
  return value;
}

/** A principal from stored parts (the shared cache), with the same interning as from claims. */
export function internPrincipal(subject: string | undefined, clientId: string | undefined, scopes: readonly string[], expiresAt: number | undefined): Principal {
  return Object.freeze({ subject: optionalString(subject), clientId: optionalString(clientId), scopes: scopeSet(scopes), expiresAt });
}

/** Token types that are access tokens usable as bearer tokens (RFC 7662 `token_type`). */
const ACCESS_TYPES = new Set(['bearer', 'access_token', 'urn:ietf:params:oauth:token-type:access_token']);

/**
 * The principal of a set of claims. Refuses what is not a plain bearer access token: a
 * sender-constrained token (`cnf`: DPoP, mTLS; SECURITY.md rule 9), another `token_type`, an
 * expired or not-yet-valid token (`nbf` and `exp` each with their own leeway for clock skew).
 * `nowSeconds` is not rounded: a token whose `exp` has a fraction (X.1) is expired from X.1 on,
 * not from X+1. `requireScope` refuses a token without scope claims (JWT: an
 * ID token signed by the same key carries none; rule 10).
 */
export function principalFromClaims(claims: Record<string, unknown>, nowSeconds: number, requireScope: boolean, nbfLeewaySeconds = 0, expLeewaySeconds = 0): Principal {
  if (claims.cnf !== undefined && claims.cnf !== null) throw new InvalidToken('sender-constrained token (cnf) presented as a bearer token');
  // jans writes the certificate binding of a JWT access token as a top-level `x5t#S256` claim
  // (null when unbound), not inside `cnf` as RFC 8705 section 3.1 has it: bound all the same.
  const thumbprint = claims['x5t#S256'];
  if (thumbprint !== undefined && thumbprint !== null && thumbprint !== '') throw new InvalidToken('certificate-bound token (x5t#S256) presented as a bearer token');
  const tokenType = claims.token_type;
  if (tokenType !== undefined && tokenType !== null && !(typeof tokenType === 'string' && ACCESS_TYPES.has(tokenType.toLowerCase()))) {
    throw new InvalidToken('token_type is not an access token');
  }
  const exp = claims.exp;
  if (exp !== undefined && exp !== null) {
    if (typeof exp !== 'number' || !Number.isFinite(exp)) throw new InvalidToken('exp is not a number');
    if (exp + expLeewaySeconds <= nowSeconds) throw new InvalidToken('token expired');
  }
  const nbf = claims.nbf;
  if (nbf !== undefined && nbf !== null) {
    // Like exp: a start that cannot be read is not a start that has passed.
    if (typeof nbf !== 'number' || !Number.isFinite(nbf)) throw new InvalidToken('nbf is not a number');
    if (nbf - nbfLeewaySeconds > nowSeconds) throw new InvalidToken('token not yet valid (nbf)');
  }
  const scope = scopeList(claims.scope, 'scope') ?? scopeList(claims.scp, 'scp');
  if (scope === undefined && requireScope) throw new InvalidToken('no scope claim: not an access token');
  return Object.freeze({
    subject: optionalString(claims.sub),
    clientId: optionalString(claims.client_id) ?? optionalString(claims.azp),
    scopes: scopeSet(scope ?? []),
    expiresAt: typeof exp === 'number' ? exp : undefined,
  });
}

// The cache keeps a principal without its expiry (the entry's own TTL ends with the token), so
// that the tokens of one client share one object: a million cached tokens are a million keys,
// not a million principals.
const identities = new Map<string, Principal>();
const MAX_IDENTITIES = 100000;

/** The principal without `expiresAt`, one shared object per client, subject and scope set. */
export function withoutExpiry(principal: Principal): Principal {
  // JSON, not the parts joined with a separator: claims may hold any character, and a client,
  // subject and scopes that joined alike (`u` NUL `v` + READ, `u` + `v` NUL READ) would share a
  // principal, scopes included.
  const key = JSON.stringify([principal.clientId ?? '', principal.subject ?? '', [...principal.scopes].join(' ')]);
  let identity = identities.get(key);
  if (!identity) {
    identity = Object.freeze({ subject: principal.subject, clientId: principal.clientId, scopes: principal.scopes, expiresAt: undefined });
    if (identities.size < MAX_IDENTITIES) identities.set(key, identity);
  }
  return identity;
}
