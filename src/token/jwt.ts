/**
 * JWT access tokens verified locally against the issuer's JWKS (jose): an explicit algorithm
 * allow-list (never none, never HS*), exact issuer, `exp` required, no `iat` in the future,
 * accepted `typ` values, and a scope claim (an ID token signed by the same key has none and
 * authorises nothing).
 */
import { createRemoteJWKSet, customFetch, decodeProtectedHeader, errors, jwtVerify, type CryptoKey, type JWTPayload, type JWTVerifyOptions } from 'jose';
import { fetch, type Dispatcher, type RequestInit as FetchInit } from 'undici';
import { AuthServerUnavailable, InvalidToken } from '../errors.js';
import { isObject } from '../json.js';
import { authServerDispatcher } from './transport.js';
import { principalFromClaims, type Principal, type TokenVerifier } from './principal.js';

/** Claims of an OpenID Connect ID token that no access token carries. */
const ID_TOKEN_CLAIMS = ['nonce', 'at_hash', 'c_hash', 's_hash'] as const;

/** Options of the JWT verifier. */
export interface JwtOptions {
  jwksUri: string;
  issuer: string;
  audience: readonly string[];
  algorithms: readonly string[];
  clockToleranceSeconds: number;
  types: readonly string[];
  cooldownSeconds: number;
  timeoutMs?: number;
  now?: () => number;
  /** Background refresh period (a key the authorization server withdrew stops validating then); a failed refresh keeps the last good key set. */
  refreshSeconds: number;
  /** Called on every JWKS fetch with its outcome. */
  onJwksFetch?: (ok: boolean) => void;
  /** How the JWKS is reached (default: Node's trust store, always verified). */
  dispatcher?: Dispatcher;
}

/** jose error codes that mean "this token is bad", as opposed to "the JWKS could not be had". */
const TOKEN_FAULTS = new Set([
  'ERR_JWKS_NO_MATCHING_KEY', 'ERR_JWKS_MULTIPLE_MATCHING_KEYS', 'ERR_JOSE_ALG_NOT_ALLOWED', 'ERR_JOSE_NOT_SUPPORTED',
]);

function isTokenFault(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && (code.startsWith('ERR_JWT_') || code.startsWith('ERR_JWS_') || TOKEN_FAULTS.has(code));
}

/** `application/at+jwt` and `at+jwt` are the same type (RFC 7515 section 4.1.9). */
function normaliseType(typ: string): string {
  const lower = typ.toLowerCase();
  return lower.startsWith('application/') ? lower.slice('application/'.length) : lower;
}

const MAX_JWKS_BYTES = 512 * 1024;

/**
 * True when `body` is a JSON object with a `keys` list of objects: what jose takes for a key set
 * (each key's members it checks when the key is used). `{"keys":[1]}` passed as a set here, then
 * jose refused it, and the refusal read as the token's fault (401) where the server had answered
 * garbage (503).
 */
function isKeySet(body: Uint8Array): boolean {
  try {
    const value: unknown = JSON.parse(Buffer.from(body).toString('utf8'));
    const keys = isObject(value) ? (value as { keys?: unknown }).keys : undefined;
    return Array.isArray(keys) && keys.every(isObject);
  } catch {
    return false;
  }
}

/**
 * True when each part of a compact JWS is base64url as an encoder writes it: the unused low bits
 * of a last character are zero. A decoder ignores them, so `...A` and `...B` would be one token
 * under two cache keys and two fingerprints (and forwarded as sent).
 */
function canonicalParts(token: string): boolean {
  for (const part of token.split('.')) {
    const last = part.charAt(part.length - 1);
    if (part.length % 4 === 1) return false;
    if (part.length % 4 === 2 && !'AQgw'.includes(last)) return false;
    if (part.length % 4 === 3 && !'AEIMQUYcgkosw048'.includes(last)) return false;
  }
  return true;
}

/** Reads a response body, refusing it past `limit` bytes. */
async function readCapped(response: Response, limit: number): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (response.body) {
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      size += chunk.byteLength;
      if (size > limit) throw new Error(`JWKS response over ${limit} bytes`);
      chunks.push(chunk);
    }
  }
  return Buffer.concat(chunks, size);
}

/** Creates the verifier and its JWKS; `ready()` is true once a key set has been fetched. */
export function createJwtVerifier(options: JwtOptions): TokenVerifier & { ready(): boolean; reload(): Promise<void>; stop(): void } {
  const now = options.now ?? Date.now;
  const types = new Set(options.types.map(normaliseType));
  const algorithms = new Set(options.algorithms);
  let lastFailureAt = -Infinity;
  // JWKS fetches that failed (or were not tried, cooling down): a verification during which none
  // failed, and that still could not use the key set, failed on the key or the token, not on the
  // authorization server.
  let fetchFailures = 0;
  const jwks = createRemoteJWKSet(new URL(options.jwksUri), {
    cooldownDuration: options.cooldownSeconds * 1000,
    // Keys do not go stale by age: a failed refresh must not take down tokens signed by keys we
    // already hold. New keys are fetched on an unknown kid (at most once per cooldown), and the
    // whole set by the periodic refresh below, which also drops the keys the server withdrew.
    cacheMaxAge: Infinity,
    timeoutDuration: options.timeoutMs ?? 5000,
    [customFetch]: async (url, init) => {
      // jose starts its cooldown only after a successful fetch: while the JWKS fails, every
      // unknown kid would be a fetch. A failure starts a cooldown of its own (J05).
      if (now() - lastFailureAt < options.cooldownSeconds * 1000) {
        fetchFailures += 1;
        throw new Error('JWKS fetch failed recently; cooling down');
      }
      try {
        const response = await fetch(url, { ...(init as FetchInit), redirect: 'manual', dispatcher: options.dispatcher ?? authServerDispatcher });
        // The cap holds for chunked answers too: the body is read, never trusted by its header.
        const body = await readCapped(response, MAX_JWKS_BYTES);
        // A 200 that is no key set (an HTML error page, a proxy's answer) is a failure too.
        const ok = response.status === 200 && isKeySet(body);
        options.onJwksFetch?.(ok);
        if (!ok) {
          lastFailureAt = now();
          fetchFailures += 1;
        }
        return new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers });
      } catch (error) {
        lastFailureAt = now();
        fetchFailures += 1;
        options.onJwksFetch?.(false);
        throw error;
      }
    },
  });

  /**
   * The payload of `token` verified against the key set. Several keys may match its header (a kid
   * listed twice, as some servers do while rotating; no kid and several keys of its algorithm):
   * RFC 7517 makes kids unique only by a SHOULD, so each is tried, as jose's documentation shows.
   */
  async function verified(token: string, checks: JWTVerifyOptions): Promise<JWTPayload> {
    try {
      return (await jwtVerify(token, jwks, checks)).payload;
    } catch (error) {
      if ((error as { code?: unknown }).code !== 'ERR_JWKS_MULTIPLE_MATCHING_KEYS') throw error;
      for await (const key of error as unknown as AsyncIterable<CryptoKey>) {
        try {
          return (await jwtVerify(token, key, checks)).payload;
        } catch (inner) {
          if ((inner as { code?: unknown }).code !== 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED') throw inner;
        }
      }
      throw new errors.JWSSignatureVerificationFailed();
    }
  }

  async function verify(token: string): Promise<Principal> {
    let header;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      throw new InvalidToken('malformed JWS header');
    }
    // The client's values go to the access line's reason: shortened, as they may be as long as the token.
    if (typeof header.alg !== 'string' || !algorithms.has(header.alg)) throw new InvalidToken(`algorithm ${String(header.alg).slice(0, 32)} not allowed`);
    if (typeof header.typ !== 'string' || !types.has(normaliseType(header.typ))) throw new InvalidToken(`typ ${String(header.typ).slice(0, 32)} not accepted`);
    // RFC 7797's unencoded payload: jose reads `b64` only when `crit` names it (and then refuses
    // it); without, the header says one encoding and the signature covers another. Refused either way (J08).
    if (Object.hasOwn(header, 'b64')) throw new InvalidToken('b64 header (RFC 7797 unencoded payload) not accepted');
    if (!canonicalParts(token)) throw new InvalidToken('non-canonical base64url (unused bits set)');
    let payload: JWTPayload;
    const failuresBefore = fetchFailures;
    try {
      payload = await verified(token, {
        issuer: options.issuer,
        ...(options.audience.length > 0 ? { audience: [...options.audience] } : {}),
        algorithms: [...options.algorithms],
        clockTolerance: options.clockToleranceSeconds,
        requiredClaims: ['exp'],
        currentDate: new Date(now()),
      });
    } catch (error) {
      if (isTokenFault(error)) throw new InvalidToken(`JWT refused: ${(error as Error).message}`, { cause: error });
      // The key set was had, and still the key its header names could not be used (an RSA key
      // under 2048 bits, a private key published): the token cannot be verified, which is no
      // outage of the authorization server (a 503 anyone could call up with such a header).
      if (fetchFailures === failuresBefore && jwks.jwks() !== undefined) throw new InvalidToken(`JWT refused: its key cannot be used (${(error as Error).message})`, { cause: error });
      throw new AuthServerUnavailable(`JWKS unavailable: ${(error as Error).message}`, 5, { cause: error });
    }
    // An introspection answer that the authorization server signed (jans' response_as_jwt, RFC
    // 9701) carries scope and exp too, for any token it was asked about: it is not an access
    // token (SECURITY.md rule 10), and would let an opaque token outlive its revocation.
    if (Object.hasOwn(payload, 'active') || Object.hasOwn(payload, 'token_introspection')) throw new InvalidToken('an introspection answer, not an access token');
    // An ID token carries scope only when an issuer adds it, but these claims only an ID token
    // carries (OpenID Connect Core sections 2, 3.1.3.6, 3.3.2.11; FAPI's s_hash): signed by the
    // same key with a scope claim, it still is no access token (SECURITY.md rule 10).
    for (const claim of ID_TOKEN_CLAIMS) if (Object.hasOwn(payload, claim)) throw new InvalidToken(`an ID token (${claim}), not an access token`);
    // Not rounded: jose compares exp with whole seconds, which lets a fractional exp (X.1) pass
    // until X+1; the check below holds it to X.1.
    const nowSeconds = now() / 1000;
    // jose compares iat with the clock only under maxTokenAge: a token issued later than now, past
    // the clock tolerance, was not issued by the authorization server's clock.
    if (typeof payload.iat === 'number' && payload.iat - options.clockToleranceSeconds > nowSeconds) throw new InvalidToken('token issued in the future (iat)');
    return principalFromClaims(payload as Record<string, unknown>, nowSeconds, true, options.clockToleranceSeconds, options.clockToleranceSeconds);
  }

  const refresh = setInterval(() => void jwks.reload().catch(() => undefined), options.refreshSeconds * 1000);
  refresh.unref();

  return Object.assign(verify, {
    stop: () => clearInterval(refresh),
    ready: () => jwks.jwks() !== undefined,
    reload: async () => {
      await jwks.reload();
    },
  });
}
