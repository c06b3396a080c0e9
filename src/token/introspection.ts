/**
 * RFC 7662 verifier: POST the token to the introspection endpoint, accept only `active: true`,
 * check `exp` locally too. Every failure of the authorization server (refused, slow, 5xx, 3xx,
 * garbage, our own credentials refused) is AuthServerUnavailable: a 503, never a forward, never
 * cached. A refusal (401, 403) that is about the token and not the gateway's credentials is the
 * token's (see credentialsAccepted).
 */
import { request, type Dispatcher } from 'undici';
import { authServerDispatcher } from './transport.js';
import { AuthServerUnavailable, InvalidToken } from '../errors.js';
import { JsonError, parseStrictJson } from '../json.js';
import { createBreaker } from './breaker.js';
import type { IntrospectionHealth } from '../readiness.js';
import { principalFromClaims, type Principal, type TokenVerifier } from './principal.js';

/** Options of the introspection verifier. */
export interface IntrospectionOptions {
  endpoint: string;
  authMethod: 'client_secret_basic' | 'client_secret_post' | 'bearer_token';
  clientId?: string | undefined;
  clientSecret?: string | undefined;
  timeoutMs: number;
  maxConcurrent: number;
  /** Skew allowed between this clock and the authorization server's, for nbf (exp has none). */
  clockToleranceSeconds: number;
  /** The `iss` an active answer may carry: another is refused (a trailing slash aside); none is taken. */
  issuer?: string | undefined;
  /** When not empty, an active answer's `aud` must hold one of these. */
  audience?: readonly string[];
  dispatcher?: Dispatcher;
  now?: () => number;
  /** Called once per call that went out, with its outcome. */
  onCall?: (durationMs: number, outcome: 'active' | 'inactive' | 'failure') => void;
  /** Called when the authorization server refuses the gateway's own credentials. */
  onCredentialsRefused?: (status: number) => void;
  /** Called when it refuses to introspect a token for the gateway's client, whose credentials it accepts. */
  onTokenRefusedForClient?: (status: number) => void;
}

/** An answer read as inactive that is no introspection answer (`active` missing or not a boolean). */
class NotAnAnswer extends InvalidToken {}

/** The largest introspection response read (a bigger one is a failure, not a principal). */
export const MAX_RESPONSE_BYTES = 64 * 1024;

/** application/x-www-form-urlencoded, as RFC 6749 section 2.3.1 wants for Basic credentials. */
function formEncode(value: string): string {
  return encodeURIComponent(value).replace(/%20/g, '+');
}

async function readCapped(body: Dispatcher.ResponseData['body']): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += (chunk as Buffer).length;
    if (size > MAX_RESPONSE_BYTES) {
      body.destroy();
      throw new AuthServerUnavailable(`introspection response over ${MAX_RESPONSE_BYTES} bytes`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** `url` without one trailing slash. */
const withoutSlash = (url: string): string => (url.endsWith('/') ? url.slice(0, -1) : url);

/**
 * The `iss` and `aud` members of an active answer, against what the gateway was told to accept.
 * RFC 7662 makes both optional: an answer without `iss` is taken (the gateway asked the server
 * itself); an answer without `aud` is refused only when an audience is configured, as jose does
 * for a JWT.
 */
function checkIssuerAndAudience(claims: Record<string, unknown>, issuer: string | undefined, audience: readonly string[]): void {
  const iss = claims.iss;
  if (issuer !== undefined && iss !== undefined && iss !== null) {
    // `https://as.example/` and `https://as.example` name one server (`https://as.example//` a path).
    if (typeof iss !== 'string' || withoutSlash(iss) !== withoutSlash(issuer)) throw new InvalidToken('wrong issuer (iss)');
  }
  if (audience.length === 0) return;
  const aud = claims.aud;
  const held = typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud : [];
  if (!held.some((a) => typeof a === 'string' && audience.includes(a))) throw new InvalidToken(aud === undefined || aud === null ? 'no audience (aud)' : 'wrong audience (aud)');
}

/** Creates the verifier; a bound on concurrent calls and a circuit breaker protect the server. */
export function createIntrospectionVerifier(options: IntrospectionOptions): TokenVerifier & IntrospectionHealth {
  const now = options.now ?? Date.now;
  const breaker = createBreaker(5, 5000, now);
  let answeredAt = -Infinity;
  const basic = options.authMethod === 'client_secret_basic'
    ? `Basic ${Buffer.from(`${formEncode(options.clientId ?? '')}:${formEncode(options.clientSecret ?? '')}`).toString('base64')}`
    : undefined;
  let inFlight = 0;

  async function call(token: string): Promise<{ status: number; text: string }> {
    const form = new URLSearchParams({ token, token_type_hint: 'access_token' });
    if (options.authMethod === 'client_secret_post') {
      form.set('client_id', options.clientId ?? '');
      form.set('client_secret', options.clientSecret ?? '');
    }
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
    headers.authorization = basic ?? (options.authMethod === 'bearer_token' ? `Bearer ${token}` : '');
    if (!headers.authorization) delete headers.authorization;
    // One budget for the whole call, the body included; the timer is cleared when it ends.
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), options.timeoutMs);
    try {
      const response = await request(options.endpoint, {
        method: 'POST', body: form.toString(), headers, signal: controller.signal,
        dispatcher: options.dispatcher ?? authServerDispatcher,
      });
      return { status: response.statusCode, text: await readCapped(response.body) };
    } catch (error) {
      if (error instanceof AuthServerUnavailable) throw error;
      const reason = controller.signal.aborted ? `introspection timed out after ${options.timeoutMs} ms` : `introspection failed: ${(error as Error).message}`;
      throw new AuthServerUnavailable(reason, 5, { cause: error });
    } finally {
      clearTimeout(timer);
    }
  }

  /** A 200 that is an introspection answer (`active` a boolean): what good credentials get for any token. */
  function isIntrospectionAnswer(status: number, text: string): boolean {
    if (status !== 200) return false;
    try {
      return typeof (parseStrictJson(text, 64, false) as { active?: unknown } | null)?.active === 'boolean';
    } catch {
      return false;
    }
  }

  let credentialCheck: Promise<'accepted' | 'refused' | 'failed'> | undefined;

  /**
   * Whether the server accepts the gateway's own credentials, asked after it refused (401, 403)
   * to introspect a token with them: a refusal can be about the credentials or about the token.
   * jans-auth answers both alike (401 access_denied): with `introspectionRestrictBasicAuthnToOwnTokens`
   * it refuses a client the tokens of other clients, which is every SCIM client's token. A token
   * that is no token tells them apart: good credentials get 200 `{"active":false}` for it. Read
   * as an outage, each such token would be a 503 and a failure of the circuit breaker, and any
   * holder of another client's token could keep the circuit open for everyone. Concurrent
   * refusals share one check. Refused (401, 403), the credentials are at fault; a check that fails
   * otherwise (a timeout, garbage) tells nothing, and the refusal stays an outage (503).
   */
  function checkCredentials(): Promise<'accepted' | 'refused' | 'failed'> {
    credentialCheck ??= call(`scopegate-credentials-${Date.now()}`)
      .then(({ status, text }) => (isIntrospectionAnswer(status, text) ? 'accepted' as const : status === 401 || status === 403 ? 'refused' as const : 'failed' as const), () => 'failed' as const)
      .finally(() => {
        credentialCheck = undefined;
      });
    return credentialCheck;
  }

  function interpret(status: number, text: string): Principal {
    if ((status === 400 || status === 401 || status === 403) && options.authMethod === 'bearer_token') {
      // jans-auth answers 401 {"error":"access_denied"} when the presented token cannot
      // authorise its own introspection (JANS.md section 2), and an AS that wants an
      // introspection scope of it answers 403: either way the token is refused, and the gateway
      // has no credentials of its own in this mode. A 400 is about the token too: in this mode
      // the token is all of the request that varies. Counted as failures, anyone could open the
      // circuit with five made-up tokens. (A server that answers 400 to every request fails the
      // readiness probe, which takes only 401 and 403 for a refusal.)
      throw new InvalidToken(`the authorization server refused the token (self-introspection ${status})`);
    }
    if (status === 401 || status === 403) {
      options.onCredentialsRefused?.(status);
      throw new AuthServerUnavailable(`the authorization server refused the gateway's credentials (${status})`);
    }
    if (status !== 200) throw new AuthServerUnavailable(`introspection answered ${status}`);
    let body: unknown;
    try {
      // Strict: a member named twice (`"active":false,"active":true`) is an answer that reads two
      // ways, refused as garbage (503) rather than read last-wins as JSON.parse would.
      body = parseStrictJson(text, 64, false);
    } catch (error) {
      // Without the member's name: the answer is the server's text, and it may hold the token.
      throw new AuthServerUnavailable(`introspection answered something that is not JSON (${error instanceof JsonError ? error.withoutText : 'unreadable'})`);
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new AuthServerUnavailable('introspection answered JSON that is not an object');
    const claims = body as Record<string, unknown>;
    // RFC 7662 section 2.2: only the boolean true means active ("true", 1, null do not: I02).
    if (claims.active !== true) {
      if (claims.active === false) throw new InvalidToken('inactive token');
      // Read as inactive (I02), but not an answer that shows the server working: readiness,
      // whose probe refuses it, is not told otherwise by the requests it refuses.
      throw new NotAnAnswer('an introspection answer without a boolean "active" (read as inactive)');
    }
    checkIssuerAndAudience(claims, options.issuer, options.audience ?? []);
    // The server called it active by its own clock: a token it has just issued (nbf = now
    // there) is not refused here because this clock is a second behind. An `exp` that has passed
    // by this clock is refused without leeway (SECURITY.md I03): a skew shortens a token's life
    // here, never lengthens it.
    return principalFromClaims(claims, now() / 1000, false, options.clockToleranceSeconds, 0);
  }

  async function verify(token: string): Promise<Principal> {
    if (inFlight >= options.maxConcurrent) throw new AuthServerUnavailable(`more than ${options.maxConcurrent} introspections in flight`, 1);
    if (!breaker.tryAcquire()) throw new AuthServerUnavailable('introspection circuit open');
    inFlight += 1;
    const started = performance.now();
    try {
      const { status, text } = await call(token);
      if ((status === 401 || status === 403) && options.authMethod !== 'bearer_token') {
        const credentials = await checkCredentials();
        if (credentials === 'accepted') {
          options.onTokenRefusedForClient?.(status);
          throw new InvalidToken(`the authorization server refused to introspect the token for the gateway's client (${status}), whose credentials it accepts`);
        }
        if (credentials === 'failed') throw new AuthServerUnavailable(`the authorization server refused the token (${status}), and the check of the gateway's credentials that followed failed`);
      }
      const principal = interpret(status, text);
      breaker.success();
      answeredAt = now();
      options.onCall?.(performance.now() - started, 'active');
      return principal;
    } catch (error) {
      if (error instanceof InvalidToken) {
        breaker.success();
        if (!(error instanceof NotAnAnswer)) answeredAt = now();
        options.onCall?.(performance.now() - started, 'inactive');
      } else {
        breaker.failure();
        options.onCall?.(performance.now() - started, 'failure');
      }
      throw error;
    } finally {
      inFlight -= 1;
    }
  }

  /**
   * Readiness: the endpoint answers a well-formed introspection for a token that is no token. The
   * outcome feeds the breaker too: a probe that succeeds closes a circuit that no request would
   * close while the gateway is out of the load balancer because it is not ready.
   */
  async function probe(): Promise<boolean> {
    let ok: boolean;
    try {
      const { status, text } = await call(`scopegate-readiness-${Date.now()}`);
      // In bearer_token mode the probe's token is refused (401, or 403: see interpret): the AS
      // answered. A 200 must be an introspection answer in either mode: one that is garbage
      // (an HTML page) fails every token with a 503, and the gateway is not ready then.
      ok = isIntrospectionAnswer(status, text) || (options.authMethod === 'bearer_token' && (status === 401 || status === 403));
    } catch {
      ok = false;
    }
    if (ok) breaker.success();
    else breaker.failure();
    return ok;
  }

  return Object.assign(verify, { probe, circuit: () => breaker.state, lastAnsweredAt: () => answeredAt });
}
