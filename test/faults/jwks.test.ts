/**
 * Fault injection against the JWKS (SECURITY.md rule 4, cases J05, J06): a JWKS server of our
 * own, switchable between serving keys and failing, counts every fetch. The gateway fails closed
 * (503) without a key set, recovers without a restart, keeps its last good key set when a refresh
 * fails, and never fetches more than once per cool-down however many unknown kids arrive.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import t from 'tap';
import type { Test } from 'tap';
import { B, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/upstream.js';
import { assertAuthServerDown, assertDenied, closedPort, INVALID_TOKEN, sleep } from '../gateway/support.js';

/** Runs `step` until `check` holds or `timeoutMs` passes (the test's patience, not an assertion). */
async function until(check: () => boolean, timeoutMs: number, step: () => Promise<void>): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    await step();
    if (check()) return true;
    if (Date.now() > deadline) return false;
    await sleep(100);
  }
}
import { listenStoppable, send } from './support.js';

const ISSUER = 'https://as.faults.test';
const READ = 'https://jans.io/scim/users.read';

/** An RS256 signing key with its public JWK. */
interface Key {
  kid: string;
  privateKey: CryptoKey;
  jwk: JWK;
}

async function newKey(): Promise<Key> {
  const { privateKey, publicKey } = await generateKeyPair('RS256');
  const kid = randomUUID();
  return { kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' } };
}

/** A JWT access token as jans issues them (typ JWT, a scope claim), signed by `key` under `kid`. */
function sign(key: Key, kid = key.kid): Promise<string> {
  return new SignJWT({ scope: READ, client_id: 'scim-client', jti: randomUUID() })
    .setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid })
    .setIssuer(ISSUER)
    .setSubject('scim-client')
    .setIssuedAt()
    .setExpirationTime('5m')
    .sign(key.privateKey);
}

type Mode = 'ok' | '500' | 'html' | 'not-a-jwks' | 'keys-not-objects' | 'oversize' | 'oversize-chunked';

/** The JWKS server: serves `keys` in mode ok, fails in the other modes; counts fetches. */
interface JwksServer {
  readonly uri: string;
  readonly port: number;
  keys: JWK[];
  mode: Mode;
  fetches: number;
  close(): Promise<void>;
}

/** A JWKS with valid keys, padded past the gateway's 512 KiB cap. */
function oversized(keys: JWK[]): string {
  return JSON.stringify({ keys, pad: 'x'.repeat(600 * 1024) });
}

function answer(server: JwksServer, res: ServerResponse): void {
  const json = { 'content-type': 'application/json' };
  switch (server.mode) {
    case 'ok':
      res.writeHead(200, json).end(JSON.stringify({ keys: server.keys }));
      return;
    case '500':
      res.writeHead(500, json).end('{"error":"server_error"}');
      return;
    case 'html':
      res.writeHead(200, { 'content-type': 'text/html' }).end(`<html><body>${JSON.stringify({ keys: server.keys })}</body></html>`);
      return;
    case 'not-a-jwks':
      res.writeHead(200, json).end(JSON.stringify([server.keys]));
      return;
    case 'keys-not-objects':
      // A `keys` list, but of no key objects: jose refuses it as a set.
      res.writeHead(200, json).end(JSON.stringify({ keys: [1, null, ...server.keys] }));
      return;
    case 'oversize': {
      const body = oversized(server.keys);
      res.writeHead(200, { ...json, 'content-length': String(Buffer.byteLength(body)) }).end(body);
      return;
    }
    case 'oversize-chunked': {
      // No Content-Length: only a cap on the bytes actually read can refuse this one.
      const body = oversized(server.keys);
      res.writeHead(200, json);
      for (let i = 0; i < body.length; i += 16384) res.write(body.slice(i, i + 16384));
      res.end();
    }
  }
}

async function startJwks(keys: JWK[], port = 0): Promise<JwksServer> {
  const jwks: JwksServer = { uri: '', port: 0, keys, mode: 'ok', fetches: 0, close: async () => undefined };
  const server: Server = createServer((req, res) => {
    jwks.fetches += 1;
    req.resume();
    answer(jwks, res);
  });
  const listening = await listenStoppable(server, port);
  Object.assign(jwks, {
    port: listening.port,
    uri: `http://127.0.0.1:${listening.port}/jans-auth/restv1/jwks`,
    close: listening.close,
  });
  return jwks;
}

async function jwtGateway(t: Test, jwksUri: string, cooldownSeconds: number, refreshSeconds?: number): Promise<{ gw: TestGateway; upstream: RecordingUpstream }> {
  const upstream = await startRecordingUpstream();
  const gw = await startTestGateway({ upstream: { url: upstream.origin }, token: { jwt: { jwksUri, issuer: ISSUER, cooldownSeconds, ...(refreshSeconds ? { refreshSeconds } : {}) } } });
  t.teardown(async () => {
    await gw.close();
    await upstream.close();
  });
  return { gw, upstream };
}

async function readyz(gw: TestGateway): Promise<number> {
  const res = await fetch(`${gw.adminUrl}/readyz`);
  await res.arrayBuffer();
  return res.status;
}

async function assertServed(t: Test, gw: TestGateway, token: string, upstream: RecordingUpstream, message: string): Promise<void> {
  const before = upstream.requests.length;
  const res = await send(gw.port, 'GET', `${B}/Users`, { token });
  t.equal(res.status, 200, message);
  t.equal(upstream.requests.length, before + 1, 'forwarded once');
}

t.test('JWKS unreachable at startup: not ready, 503; ready and serving once it answers, no restart', async (t) => {
  const key = await newKey();
  const port = await closedPort();
  const { gw, upstream } = await jwtGateway(t, `http://127.0.0.1:${port}/jans-auth/restv1/jwks`, 1);
  const token = await sign(key);

  t.equal(await readyz(gw), 503, '/readyz 503 without a key set');
  for (let i = 0; i < 3; i++) {
    const res = await send(gw.port, 'GET', `${B}/Users`, { token });
    assertAuthServerDown(t, res, upstream);
  }

  const jwks = await startJwks([key.jwk], port);
  t.teardown(() => jwks.close());
  // Polled: a gateway may back off between failed fetches (one per cool-down of 1 s here).
  let status = 0;
  t.ok(await until(() => status === 200, 10000, async () => {
    status = await readyz(gw);
  }), '/readyz 200 once the JWKS answers');
  await assertServed(t, gw, token, upstream, 'the same token is served: the 503s were not cached');
  await assertServed(t, gw, await sign(key), upstream, 'a new token of that key is served');
  t.equal(jwks.fetches, 1, 'one fetch gave the key set');
});

t.test('JWKS answering garbage at startup fails closed (J06)', async (t) => {
  const key = await newKey();
  for (const mode of ['500', 'html', 'not-a-jwks', 'keys-not-objects', 'oversize', 'oversize-chunked'] as const) {
    t.test(mode, async (t) => {
      const jwks = await startJwks([key.jwk]);
      t.teardown(() => jwks.close());
      jwks.mode = mode;
      const { gw, upstream } = await jwtGateway(t, jwks.uri, 1);
      const token = await sign(key);
      t.equal(await readyz(gw), 503, '/readyz 503');
      const res = await send(gw.port, 'GET', `${B}/Users`, { token });
      assertAuthServerDown(t, res, upstream);
      t.ok(jwks.fetches >= 1, 'the JWKS was asked');

      jwks.mode = 'ok';
      let status = 0;
      t.ok(await until(() => status === 200, 10000, async () => {
        status = await readyz(gw);
      }), '/readyz 200 once the JWKS is sound');
      await assertServed(t, gw, token, upstream, 'served once the JWKS is sound');
    });
  }
});

/** A gateway whose JWKS (cool-down 1 s) serves the key `old`, a token of which it has served; `next` is the key it will rotate to. */
async function beforeRotation(t: Test): Promise<{ old: Key; next: Key; jwks: JwksServer; gw: TestGateway; upstream: RecordingUpstream; cooldownSeconds: number }> {
  const cooldownSeconds = 1;
  const old = await newKey();
  const next = await newKey();
  const jwks = await startJwks([old.jwk]);
  t.teardown(() => jwks.close());
  const { gw, upstream } = await jwtGateway(t, jwks.uri, cooldownSeconds);
  t.equal(await readyz(gw), 200, 'ready');
  await assertServed(t, gw, await sign(old), upstream, 'old key served');
  return { old, next, jwks, gw, upstream, cooldownSeconds };
}

t.test('a failed refresh keeps the last good key set', async (t) => {
  const { old, next, jwks, gw, upstream, cooldownSeconds } = await beforeRotation(t);

  // The authorization server rotates, but its JWKS endpoint fails: the refetch an unknown kid
  // causes fails.
  jwks.mode = '500';
  await sleep(cooldownSeconds * 1000 + 200);
  const fetchesBefore = jwks.fetches;
  const before = upstream.requests.length;
  const unknown = await send(gw.port, 'GET', `${B}/Users`, { token: await sign(next) });
  t.ok(unknown.status === 401 || unknown.status === 503, `the new kid is refused (${unknown.status})`);
  t.equal(upstream.requests.length, before, 'not forwarded');
  t.equal(jwks.fetches, fetchesBefore + 1, 'the unknown kid caused one refetch, which failed');

  // A token of the old key that the gateway has never seen (not in its cache) still verifies.
  await assertServed(t, gw, await sign(old), upstream, 'old-kid token still served after the failed refresh');
  t.equal(await readyz(gw), 200, 'still ready: the key set is kept');

  // The JWKS recovers with the new key: accepted after the next refetch.
  jwks.mode = 'ok';
  jwks.keys = [next.jwk, old.jwk];
  await sleep(cooldownSeconds * 1000 + 200);
  await assertServed(t, gw, await sign(next), upstream, 'the new key is accepted once the JWKS answers');
});

t.test('a refetch that answers a key set jose refuses is the server\'s failure (503), not the token\'s (401)', async (t) => {
  const { old, next, jwks, gw, upstream, cooldownSeconds } = await beforeRotation(t);
  // The new key is published, in a list jose cannot read as a key set.
  jwks.mode = 'keys-not-objects';
  jwks.keys = [next.jwk, old.jwk];
  await sleep(cooldownSeconds * 1000 + 200);
  const fetches = jwks.fetches;
  const token = await sign(next);
  const before = upstream.requests.length;
  assertAuthServerDown(t, await send(gw.port, 'GET', `${B}/Users`, { token }), upstream, before);
  t.equal(jwks.fetches, fetches + 1, 'the unknown kid caused one refetch');
  // Not cached as an invalid token: served once the key set is sound.
  jwks.mode = 'ok';
  await sleep(cooldownSeconds * 1000 + 200);
  await assertServed(t, gw, token, upstream, 'the same token is served once the JWKS is sound');
});

// jans-scim reads its JWKS on every request: a key jans-auth withdraws (a compromised one) stops
// working there at once. Here it stops at the next periodic refresh (token.jwt.refreshSeconds),
// never only when an unknown kid happens to cause a refetch.
t.test('a key withdrawn from the JWKS stops validating new tokens at the next refresh', async (t) => {
  const withdrawn = await newKey();
  const kept = await newKey();
  const jwks = await startJwks([withdrawn.jwk, kept.jwk]);
  t.teardown(() => jwks.close());
  const { gw, upstream } = await jwtGateway(t, jwks.uri, 30, 1);
  await assertServed(t, gw, await sign(withdrawn), upstream, 'served while the key is published');
  jwks.keys = [kept.jwk];
  const fetches = jwks.fetches;
  // The test's patience: the refresh runs every second.
  t.ok(await until(() => jwks.fetches >= fetches + 2, 5000, async () => undefined), 'the JWKS is refreshed without any unknown kid');
  const before = upstream.requests.length;
  assertDenied(t, await send(gw.port, 'GET', `${B}/Users`, { token: await sign(withdrawn) }), 401, INVALID_TOKEN, upstream, before);
  await assertServed(t, gw, await sign(kept), upstream, 'the key still published is served');
});

t.test('unknown kids: at most one JWKS fetch per cool-down; a rotated key after one refetch (J05)', async (t) => {
  const cooldownSeconds = 2;
  const cooldownMs = cooldownSeconds * 1000;
  const current = await newKey();
  const rotated = await newKey();
  const jwks = await startJwks([current.jwk]);
  t.teardown(() => jwks.close());
  const { gw, upstream } = await jwtGateway(t, jwks.uri, cooldownSeconds);
  t.equal(await readyz(gw), 200, 'ready');
  await assertServed(t, gw, await sign(current), upstream, 'current key served');

  // 300 tokens with random kids, all at once, once the cool-down of the startup fetch is over.
  const rogue = await newKey();
  const tokens = await Promise.all(Array.from({ length: 300 }, () => sign(rogue, randomBytes(12).toString('base64url'))));
  await sleep(cooldownMs + 200);
  const fetchesBefore = jwks.fetches;
  const forwardedBefore = upstream.requests.length;
  const started = Date.now();
  const answers = await Promise.all(tokens.map((token) => send(gw.port, 'GET', `${B}/Users`, { token, timeoutMs: 30000 })));
  const elapsedMs = Date.now() - started;
  const fetched = jwks.fetches - fetchesBefore;
  t.same(new Set(answers.map((r) => r.status)), new Set([401]), 'every unknown kid is 401');
  t.ok(answers.every((r) => r.headers['www-authenticate'] === INVALID_TOKEN), 'invalid_token challenges');
  t.equal(upstream.requests.length, forwardedBefore, 'nothing forwarded');
  t.ok(fetched >= 1, 'an unknown kid after the cool-down does refetch');
  t.ok(fetched <= 1 + Math.floor(elapsedMs / cooldownMs), `at most one fetch per cool-down: ${fetched} fetches in ${elapsedMs} ms`);

  // Rotation: the JWKS now serves the new key first; once the cool-down allows, one refetch.
  jwks.keys = [rotated.jwk, current.jwk];
  await sleep(cooldownMs + 200);
  const beforeRotation = jwks.fetches;
  await assertServed(t, gw, await sign(rotated), upstream, 'a token of the rotated key is accepted');
  t.equal(jwks.fetches, beforeRotation + 1, 'after exactly one refetch');
  await assertServed(t, gw, await sign(rotated), upstream, 'and the next one without a fetch');
  await assertServed(t, gw, await sign(current), upstream, 'the previous key still verifies');
  t.equal(jwks.fetches, beforeRotation + 1, 'no further fetch');
});

t.test('unknown kids while the JWKS fails: still at most one fetch per cool-down (J05 under J06)', async (t) => {
  // A failed refetch must not leave the door open: otherwise every request with a random kid
  // during a JWKS outage is one more call to the struggling authorization server.
  const cooldownSeconds = 2;
  const cooldownMs = cooldownSeconds * 1000;
  const current = await newKey();
  const rogue = await newKey();
  const jwks = await startJwks([current.jwk]);
  t.teardown(() => jwks.close());
  const { gw, upstream } = await jwtGateway(t, jwks.uri, cooldownSeconds);
  t.equal(await readyz(gw), 200, 'ready');
  jwks.mode = '500';
  await sleep(cooldownMs + 200);
  const fetchesBefore = jwks.fetches;
  const started = Date.now();
  for (let i = 0; i < 20; i++) {
    const res = await send(gw.port, 'GET', `${B}/Users`, { token: await sign(rogue, randomBytes(12).toString('base64url')) });
    if (res.status === 401) assertDenied(t, res, 401, INVALID_TOKEN, upstream);
    else assertAuthServerDown(t, res, upstream);
  }
  const elapsedMs = Date.now() - started;
  const fetched = jwks.fetches - fetchesBefore;
  t.ok(fetched <= 1 + Math.floor(elapsedMs / cooldownMs), `at most one fetch per cool-down: ${fetched} fetches for 20 sequential unknown kids in ${elapsedMs} ms`);
  await assertServed(t, gw, await sign(current), upstream, 'the known key still verifies');
});
