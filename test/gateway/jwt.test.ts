/**
 * JWT access tokens (SECURITY.md section E): tokens forged with the authorization server's real
 * signing key, each valid but for one defect, are refused with 401 invalid_token and nothing
 * reaches the upstream; a positive control proves the forging path itself is accepted. Key
 * rotation is followed with one JWKS refetch, and random kids cannot make the gateway hammer the
 * JWKS endpoint.
 */
import { createPrivateKey, generateKeyPairSync, randomUUID, sign as cryptoSign, type KeyObject } from 'node:crypto';
import t, { type Test } from 'tap';
import { decodeProtectedHeader, exportJWK, exportSPKI, generateKeyPair, importJWK, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import type { AuthServer } from '../../src/demo/auth-server.js';
import { accessLines, B, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import type { RecordingUpstream } from '../helpers/upstream.js';
import {
  assertAuthServerDown, assertDenied, closedPort, type GatewayStack, INVALID_TOKEN, insufficientScope, send, sleep, startGatewayStack, startServer, until,
} from './support.js';

const READ = 'https://jans.io/scim/users.read';
const USERS = `${B}/Users`;
const COOLDOWN_MS = 1000;

let auth: AuthServer;
let up: RecordingUpstream;
let gw: TestGateway;
let stack: GatewayStack | undefined;
let realKey: CryptoKey;
let realJwk: JWK;
let kid: string;

t.before(async () => {
  ({ auth, up, gw } = stack = await startGatewayStack({ jwt: { cooldownSeconds: COOLDOWN_MS / 1000 } }));
  ({ privateJwk: realJwk, kid } = await auth.signingKey());
  realKey = (await importJWK(realJwk, 'RS256')) as CryptoKey;
});
t.teardown(() => stack?.close());

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
const nowSeconds = () => Math.floor(Date.now() / 1000);

/** Claims of a jans JWT access token (JANS.md section 2), valid for five minutes. */
function claims(extra: JWTPayload = {}): JWTPayload {
  const iat = nowSeconds();
  return {
    iss: auth.issuer, sub: 'scim-client', client_id: auth.clientId, aud: auth.clientId, scope: [READ],
    token_type: 'Bearer', iat, nbf: iat, exp: iat + 300, ...extra,
  };
}

/** Signs with jose (RS256 with the real key unless told otherwise). */
function forge(payload: JWTPayload, header: Record<string, unknown> = {}, key: CryptoKey | Uint8Array = realKey): Promise<string> {
  return new SignJWT(payload)
    .setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid, ...header } as { alg: string })
    .sign(key);
}

/** Signs RS256 by hand, for headers jose refuses to produce (crit, b64). */
function forgeRaw(header: Record<string, unknown>, payload: JWTPayload, key: KeyObject): string {
  const input = `${b64(header)}.${b64(payload)}`;
  return `${input}.${cryptoSign('sha256', Buffer.from(input), key).toString('base64url')}`;
}

async function assertRefused(t: Test, token: string, what: string): Promise<void> {
  up.reset();
  const before = auth.counts.introspection;
  const res = await send(gw.port, 'GET', USERS, { token });
  assertDenied(t, res, 401, INVALID_TOKEN, up);
  t.notMatch(res.body, token, 'the token is not echoed');
  t.equal(auth.counts.introspection, before, `${what}: a JWS goes to the JWT verifier, not to introspection`);
}

t.test('positive controls: the real token, and a token forged with the real key', async (t) => {
  const issued = await auth.issueToken([READ], { jwt: true });
  const forged = await forge(claims());
  for (const token of [issued, forged]) {
    up.reset();
    const res = await send(gw.port, 'GET', USERS, { token });
    t.equal(res.status, 200, res.body.slice(0, 200));
    t.equal(up.requests.length, 1);
  }
  // The type jans issues and the RFC 9068 type are both accepted.
  up.reset();
  t.equal((await send(gw.port, 'GET', USERS, { token: await forge(claims(), { typ: 'at+jwt' }) })).status, 200, 'typ at+jwt');
  t.equal((await send(gw.port, 'GET', USERS, { token: await forge(claims(), { typ: 'application/at+jwt' }) })).status, 200, 'typ application/at+jwt');
  t.equal((await send(gw.port, 'GET', USERS, { token: await forge(claims({ scope: READ })) })).status, 200, 'scope as a space string');
});

t.test('J01 alg none', async (t) => {
  await assertRefused(t, `${b64({ alg: 'none', typ: 'JWT', kid })}.${b64(claims())}.`, 'alg none, empty signature');
  await assertRefused(t, `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims())}.`, 'alg none, no kid');
  // A real RS256 signature under an alg:none header.
  const real = await forge(claims());
  const [, payload, signature] = real.split('.');
  await assertRefused(t, `${b64({ alg: 'none', typ: 'JWT', kid })}.${payload}.${signature}`, 'alg none, a signature');
});

t.test('a long alg or typ the client chose is shortened in the access line', async (t) => {
  for (const [header, reason] of [[{ alg: 'X'.repeat(2000), typ: 'JWT', kid }, /^algorithm X{32} not allowed$/], [{ alg: 'RS256', typ: 'Y'.repeat(2000), kid }, /^typ Y{32} not accepted$/]] as const) {
    const token = `${b64(header)}.${b64(claims())}.c2ln`;
    const before = accessLines(gw.logs).length;
    await assertRefused(t, token, 'a long header value');
    t.ok(await until(() => accessLines(gw.logs).length > before), 'logged');
    const line = accessLines(gw.logs).at(-1)!;
    t.match(line.reason, reason, 'the reason names at most 32 characters of it');
  }
});

t.test('J02 HS256 keyed with the public key', async (t) => {
  const enc = new TextEncoder();
  await assertRefused(t, await forge(claims(), { alg: 'HS256' }, enc.encode(realJwk.n!)), 'HS256 with n');
  const publicKey = await importJWK({ kty: 'RSA', n: realJwk.n!, e: realJwk.e! }, 'RS256', { extractable: true });
  const pem = await exportSPKI(publicKey as CryptoKey);
  await assertRefused(t, await forge(claims(), { alg: 'HS256' }, enc.encode(pem)), 'HS256 with the PEM');
  const jwkText = JSON.stringify({ kty: 'RSA', n: realJwk.n, e: realJwk.e, kid, alg: 'RS256', use: 'sig' });
  await assertRefused(t, await forge(claims(), { alg: 'HS256' }, enc.encode(jwkText)), 'HS256 with the JWK JSON');
});

t.test('J03 HS256 keyed with the client secret', async (t) => {
  await assertRefused(t, await forge(claims(), { alg: 'HS256' }, new TextEncoder().encode(auth.clientSecret)), 'HS256 client secret');
  await assertRefused(t, await forge(claims(), { alg: 'HS512' }, new TextEncoder().encode(auth.clientSecret)), 'HS512 client secret');
});

t.test('J04 an alg other than the JWK\'s own (PS256 with the RS256 key)', async (t) => {
  const ps = (await importJWK(realJwk, 'PS256')) as CryptoKey;
  await assertRefused(t, await forge(claims(), { alg: 'PS256' }, ps), 'PS256 on an RS256 key');
});

t.test('claims', async (t) => {
  await assertRefused(t, await forge(claims({ iss: 'https://evil.example' })), 'wrong issuer');
  await assertRefused(t, await forge(claims({ iss: `${auth.issuer}/` })), 'issuer with a trailing slash');
  const past = nowSeconds() - 3600;
  await assertRefused(t, await forge(claims({ iat: past - 300, nbf: past - 300, exp: past })), 'expired');
  // A fractional exp 5 ms past the clock tolerance (30 s): jose compares whole seconds and would
  // let it pass until the next one.
  await assertRefused(t, await forge(claims({ iat: past, nbf: past, exp: Date.now() / 1000 - 30.005 })), 'fractional exp, past');
  const noExp = claims();
  delete noExp.exp;
  await assertRefused(t, await forge(noExp), 'no exp');
  await assertRefused(t, await forge(claims({ nbf: nowSeconds() + 3600 })), 'not yet valid');
  await assertRefused(t, await forge(claims({ iat: nowSeconds() + 3600, nbf: undefined })), 'issued an hour from now');
  await assertRefused(t, await forge(claims({ iat: nowSeconds() + 3600 })), 'issued an hour from now, nbf now');
  // Within the clock tolerance (30 s by default), a clock a little ahead is no defect.
  up.reset();
  t.equal((await send(gw.port, 'GET', USERS, { token: await forge(claims({ iat: nowSeconds() + 10 })) })).status, 200, 'iat 10 s ahead');
  await assertRefused(t, await forge(claims({ token_type: 'refresh_token' })), 'token_type refresh_token');
});

t.test('typ', async (t) => {
  await assertRefused(t, await forge(claims(), { typ: 'JOSE' }), 'typ JOSE');
  await assertRefused(t, await forge(claims(), { typ: 'id_token+jwt' }), 'typ id_token+jwt');
  await assertRefused(t, await forge(claims(), { typ: undefined }), 'no typ');
});

t.test('an ID-token-like JWT (no scope claim, aud = client id) authorises nothing', async (t) => {
  const iat = nowSeconds();
  const idToken = { iss: auth.issuer, sub: 'user-1', aud: auth.clientId, azp: auth.clientId, iat, exp: iat + 300, auth_time: iat, nonce: 'n-0S6_WzA2Mj', at_hash: 'x' };
  await assertRefused(t, await forge(idToken), 'ID token');
  const noScope = claims();
  delete noScope.scope;
  await assertRefused(t, await forge(noScope), 'access token claims without scope');
  // An ID token that an issuer gave a scope claim is still an ID token.
  await assertRefused(t, await forge({ ...idToken, scope: [READ] }), 'ID token with scope');
  for (const claim of ['nonce', 'at_hash', 'c_hash', 's_hash']) {
    await assertRefused(t, await forge(claims({ [claim]: 'x' })), `access token claims with ${claim}`);
  }
});

t.test('a scope list element holding a space is not two scopes', async (t) => {
  // A token whose two scopes are READ and `x`: the same words, space separated, as the element below.
  up.reset();
  t.equal((await send(gw.port, 'GET', USERS, { token: await forge(claims({ scope: [READ, 'x'] })) })).status, 200, 'two scopes');
  // One element `READ x` is no scope the table knows; it must never read as READ (in the cache,
  // the shared cache or X-Scopegate-Scopes, where scopes are space separated).
  await assertRefused(t, await forge(claims({ scope: [`${READ} x`] })), 'one element holding a space');
  await assertRefused(t, await forge(claims({ scope: undefined, scp: [`x ${READ}`] })), 'scp element holding a space');
});

t.test('an introspection answer signed as a JWT is not an access token', async (t) => {
  // jans 1.0 answers introspection with response_as_jwt=true by signing the answer's members as
  // they are (IntrospectionWebService.createResponseAsJwt): scope, exp, iss, token_type, typ JWT.
  // Anyone with a valid token may ask it for any token, so it would turn an opaque token into
  // a JWT that outlives its revocation; an answer for a revoked token says active false.
  const answer = (active: boolean) => forge({ ...claims(), active, scope: READ, acr_values: null });
  await assertRefused(t, await answer(true), 'active true');
  await assertRefused(t, await answer(false), 'active false');
  // RFC 9701 nests the answer under token_introspection (and has no exp of its own).
  await assertRefused(t, await forge({ ...claims(), token_introspection: { active: true, scope: READ } }), 'token_introspection');
});

t.test('tokens whose client, subject and scopes read alike once joined keep their own scopes', async (t) => {
  // The cache keeps one shared principal per client, subject and scope set: a principal must
  // never be found under another token's parts (here `u` + NUL + `v`, READ against `u`, `v` +
  // NUL + READ).
  up.reset();
  t.equal((await send(gw.port, 'GET', USERS, { token: await forge(claims({ sub: 'u\u0000v', scope: [READ] })) })).status, 200, 'READ: allowed');
  const other = await forge(claims({ sub: 'u', scope: [`v\u0000${READ}`] }));
  up.reset();
  const res = await send(gw.port, 'GET', USERS, { token: other });
  assertDenied(t, res, 403, insufficientScope(READ), up);
});

t.test('a sender-constrained token (cnf) is not a bearer token', async (t) => {
  await assertRefused(t, await forge(claims({ cnf: { jkt: '0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I' } })), 'cnf.jkt (DPoP)');
  await assertRefused(t, await forge(claims({ cnf: { 'x5t#S256': 'bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2' } })), 'cnf x5t#S256 (mTLS)');
  // jans writes a certificate-bound token's thumbprint as a top-level claim, not in cnf (JANS.md section 2).
  await assertRefused(t, await forge(claims({ 'x5t#S256': 'bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2' })), 'jans top-level x5t#S256 (mTLS)');
  // Control: jans sets the claim to null on a token that is not bound.
  up.reset();
  t.equal((await send(gw.port, 'GET', USERS, { token: await forge(claims({ 'x5t#S256': null })) })).status, 200, 'x5t#S256 null: a bearer token');
});

t.test('J07 jku and jwk headers pointing at an attacker key are ignored', async (t) => {
  const attacker = await generateKeyPair('RS256', { extractable: true });
  const attackerKid = randomUUID();
  const attackerJwk = { ...(await exportJWK(attacker.publicKey)), kid: attackerKid, alg: 'RS256', use: 'sig' };
  let hits = 0;
  const evil = await startServer((_req, res) => {
    hits += 1;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ keys: [attackerJwk] }));
  });
  t.teardown(() => evil.close());
  const jwksBefore = auth.counts.jwks;
  await assertRefused(t, await forge(claims(), { kid: attackerKid, jku: `${evil.origin}/jwks` }, attacker.privateKey), 'jku, attacker kid');
  await assertRefused(t, await forge(claims(), { jku: `${evil.origin}/jwks` }, attacker.privateKey), 'jku, real kid');
  await assertRefused(t, await forge(claims(), { kid: attackerKid, jwk: attackerJwk }, attacker.privateKey), 'embedded jwk, attacker kid');
  await assertRefused(t, await forge(claims(), { jwk: { ...attackerJwk, kid } }, attacker.privateKey), 'embedded jwk, real kid');
  await assertRefused(t, await forge(claims(), { x5u: `${evil.origin}/cert.pem` }, attacker.privateKey), 'x5u');
  t.equal(hits, 0, 'the attacker\'s URL was never fetched');
  t.ok(auth.counts.jwks - jwksBefore <= 1, 'at most one refetch of the real JWKS for the unknown kids');
});

t.test('J08 crit and b64:false', async (t) => {
  const key = createPrivateKey({ key: realJwk as import('node:crypto').JsonWebKey, format: 'jwk' });
  // Controls: the hand signer makes tokens the gateway accepts.
  up.reset();
  t.equal((await send(gw.port, 'GET', USERS, { token: forgeRaw({ alg: 'RS256', typ: 'JWT', kid }, claims(), key) })).status, 200, 'hand-signed control');
  await assertRefused(t, forgeRaw({ alg: 'RS256', typ: 'JWT', kid, crit: ['foo'], foo: 1 }, claims(), key), 'crit foo');
  await assertRefused(t, forgeRaw({ alg: 'RS256', typ: 'JWT', kid, crit: ['b64'], b64: false }, claims(), key), 'b64 false');
  // Without crit, jose ignores b64 and checks the usual encoding: the header says otherwise, refused all the same.
  await assertRefused(t, forgeRaw({ alg: 'RS256', typ: 'JWT', kid, b64: false }, claims(), key), 'b64 false without crit');
  await assertRefused(t, forgeRaw({ alg: 'RS256', typ: 'JWT', kid, b64: true }, claims(), key), 'b64 true');
});

t.test('J05 key rotation: a new kid is fetched once, the old key still works', async (t) => {
  const oldToken = await auth.issueToken([READ], { jwt: true });
  await auth.rotateKeys();
  const newToken = await auth.issueToken([READ], { jwt: true });
  t.not(decodeProtectedHeader(newToken).kid, decodeProtectedHeader(oldToken).kid, 'signed with a new kid');
  // jose refetches an unknown kid only when its cooldown (here 1 s) has passed since the last fetch.
  await sleep(COOLDOWN_MS + 200);
  const before = auth.counts.jwks;
  up.reset();
  const burst = await Promise.all(Array.from({ length: 20 }, () => send(gw.port, 'GET', USERS, { token: newToken })));
  t.same(burst.map((r) => r.status), Array(20).fill(200), 'the new key is accepted');
  t.equal(auth.counts.jwks - before, 1, 'exactly one JWKS refetch for 20 concurrent requests');
  t.equal(up.requests.length, 20);
  t.equal((await send(gw.port, 'GET', USERS, { token: oldToken })).status, 200, 'a token of the previous key still works');
  t.equal(auth.counts.jwks - before, 1, 'no further fetch');
});

t.test('J05 200 random unknown kids: at most one JWKS refetch per cooldown', async (t) => {
  await sleep(COOLDOWN_MS + 200);
  const tokens = await Promise.all(Array.from({ length: 200 }, () => forge(claims(), { kid: randomUUID() })));
  const before = auth.counts.jwks;
  up.reset();
  const started = Date.now();
  const all = await Promise.all(tokens.map((token) => send(gw.port, 'GET', USERS, { token })));
  const elapsedMs = Date.now() - started;
  const refetches = auth.counts.jwks - before;
  for (const res of all) {
    if (res.status !== 401 || res.headers['www-authenticate'] !== INVALID_TOKEN) {
      t.fail(`expected 401 invalid_token, got ${res.status} ${res.headers['www-authenticate'] ?? ''}`);
      break;
    }
  }
  t.pass(`200 answers in ${elapsedMs} ms`);
  t.equal(up.requests.length, 0, 'nothing upstream');
  t.ok(refetches >= 1, `the cooldown had passed, so an unknown kid is looked up (${refetches})`);
  t.ok(refetches <= 1 + Math.floor(elapsedMs / COOLDOWN_MS), `${refetches} refetches in ${elapsedMs} ms with a ${COOLDOWN_MS} ms cooldown`);
});

t.test('J06 a JWKS that cannot be had is a 503, never a pass', async (t) => {
  const port = await closedPort();
  const html = await startServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<html>maintenance</html>');
  });
  t.teardown(() => html.close());
  for (const jwksUri of [`http://127.0.0.1:${port}/jwks`, `${html.origin}/jwks`]) {
    const broken = await startTestGateway({ upstream: { url: up.origin }, token: { jwt: { jwksUri, issuer: auth.issuer } } });
    t.teardown(() => broken.close());
    up.reset();
    assertAuthServerDown(t, await send(broken.port, 'GET', USERS, { token: await forge(claims()) }), up);
  }
});

// What the authorization server publishes, the gateway cannot choose: a kid listed twice (RFC 7517
// makes kids unique only by a SHOULD; some servers repeat a key while rotating) still verifies the
// token it signed, each candidate tried; a key that cannot be used (RSA under 2048 bits) refuses
// the token (401), never calls it an outage (503) that anyone could provoke with such a header.
t.test('a kid listed twice verifies its tokens; a key that cannot be used refuses them', async (t) => {
  const pair = async () => {
    const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
    return { privateKey, jwk: await exportJWK(publicKey) };
  };
  const [k1, k2, k3] = await Promise.all([pair(), pair(), pair()]);
  const small = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ format: 'jwk' });
  const jwks = await startServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ keys: [
      { ...k1.jwk, kid: 'k1', alg: 'RS256', use: 'sig' }, { ...k1.jwk, kid: 'k1', alg: 'RS256', use: 'sig' },
      { ...k2.jwk, kid: 'dup', alg: 'RS256', use: 'sig' }, { ...k3.jwk, kid: 'dup', alg: 'RS256', use: 'sig' },
      { ...small, kid: 'small', alg: 'RS256', use: 'sig' },
    ] }));
  });
  t.teardown(() => jwks.close());
  const own = await startTestGateway({ upstream: { url: up.origin }, token: { jwt: { jwksUri: `${jwks.origin}/jwks`, issuer: auth.issuer } } });
  t.teardown(() => own.close());
  const sign = (key: CryptoKey, keyId: string) => new SignJWT(claims()).setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid: keyId }).sign(key);
  for (const [what, token] of [['the same key listed twice', await sign(k1.privateKey, 'k1')], ['the second of two keys under one kid', await sign(k3.privateKey, 'dup')]] as const) {
    up.reset();
    const res = await send(own.port, 'GET', USERS, { token });
    t.equal(res.status, 200, `${what}: verified`);
    t.equal(up.requests.length, 1, `${what}: forwarded`);
  }
  const { privateKey: stranger } = await pair();
  up.reset();
  assertDenied(t, await send(own.port, 'GET', USERS, { token: await sign(stranger, 'dup') }), 401, INVALID_TOKEN, up);
  const unusable = `${b64({ alg: 'RS256', typ: 'JWT', kid: 'small' })}.${b64(claims())}.${Buffer.alloc(128, 1).toString('base64url')}`;
  up.reset();
  assertDenied(t, await send(own.port, 'GET', USERS, { token: unusable }), 401, INVALID_TOKEN, up);
  t.match(accessLines(own.logs).at(-1)?.reason, /its key cannot be used/, 'the access line says why');
  const ready = await fetch(`${own.adminUrl}/readyz`);
  t.equal(ready.status, 200, 'still ready');
});

// A decoder ignores the unused low bits of a last base64url character: one token would be several
// strings, under several cache keys and fingerprints.
t.test('a JWS with unused bits set in a last base64url character is refused', async (t) => {
  const token = await forge(claims());
  const [header, payload, signature] = token.split('.') as [string, string, string];
  t.equal(signature.length % 4, 2, 'an RS256 signature (256 bytes) ends with 4 unused bits');
  const last = signature.charAt(signature.length - 1);
  const twin = `${header}.${payload}.${signature.slice(0, -1)}${String.fromCharCode(last.charCodeAt(0) + 1)}`;
  up.reset();
  t.equal((await send(gw.port, 'GET', USERS, { token })).status, 200, 'the token as signed');
  await assertRefused(t, twin, 'the same signature with an unused bit set');
});
