// Scale out: two gateway processes share one token cache through a real redis-server; a purge
// on one replica reaches the other; Redis going away never makes either fail open or answer 5xx.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { Redis } from 'ioredis';
import { request } from 'undici';
import { startAuthServer, type AuthServer } from '../src/demo/auth-server.js';
import { B, SHARED_OPENAPI } from './helpers/gateway.js';
import { CLI, startServe, type ServeProcess } from './helpers/process.js';
import { readText, sleep, startServer } from './gateway/support.js';
import { hasRedis, startRedis, type RedisServer } from './helpers/redis.js';
import { startRecordingUpstream, type RecordingUpstream } from './helpers/upstream.js';

const READ = 'https://jans.io/scim/users.read';

if (!hasRedis()) {
  t.fail('redis-server is not installed (.ci/run installs it)');
} else {
  let auth: AuthServer;
  let up: RecordingUpstream;
  let redis: RedisServer;
  let a: ServeProcess;
  let b: ServeProcess;
  let dir: string;
  let keyPrefix: string;

  /** Writes the serve config `name` (port-0 listeners, the recording upstream, the shared OpenAPI file) with `token`. */
  const serveConfig = (name: string, token: Record<string, unknown>) => {
    const file = join(dir, `${name}.json`);
    writeFileSync(file, JSON.stringify({
      listen: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 }, upstream: { url: up.origin }, openapi: { file: SHARED_OPENAPI }, token,
    }));
    return file;
  };

  /** The whole answer of a GET /Users with `token`: status, headers and body. */
  const getFull = async (replica: ServeProcess, token: string) => {
    const response = await request(`${replica.proxyUrl}${B}/Users`, { headers: { authorization: `Bearer ${token}` } });
    const body = await response.body.text();
    return { status: response.statusCode, headers: response.headers, body };
  };
  /** Its status only (most checks need no more). */
  const get = async (replica: ServeProcess, token: string) => (await getFull(replica, token)).status;
  /** A 401 refusal with nothing forwarded: the challenge names the token, the body is a SCIM error. */
  const refused = async (t: Test, replica: ServeProcess, token: string, message: string) => {
    up.reset();
    const answer = await getFull(replica, token);
    t.equal(answer.status, 401, message);
    t.equal(up.requests.length, 0, `${message}: nothing reaches the upstream`);
    t.match(String(answer.headers['www-authenticate']), /error="invalid_token"/, `${message}: the challenge names the token`);
    t.match(JSON.parse(answer.body), { schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'], status: '401' }, `${message}: a SCIM error body`);
  };

  t.before(async () => {
    auth = await startAuthServer();
    up = await startRecordingUpstream();
    redis = await startRedis();
    dir = mkdtempSync(join(tmpdir(), 'scopegate-redis-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    keyPrefix = `t${Date.now()}:`;
    const token = {
      introspection: { endpoint: auth.introspectionEndpoint, clientId: auth.clientId, clientSecret: auth.clientSecret },
      cache: { maxTtlSeconds: 300, negativeTtlSeconds: 1, redis: { url: redis.url, keyPrefix } },
    };
    [a, b] = await Promise.all([startServe(serveConfig('a', token)), startServe(serveConfig('b', token))]);
  });
  t.teardown(async () => {
    await Promise.allSettled([a?.stop(), b?.stop()]);
    await redis?.stop();
    await up?.close();
    await auth?.close();
  });

  t.test('a token used on replica A then B is introspected once in total', async (t) => {
    const token = await auth.issueToken([READ]);
    auth.resetCounts();
    t.equal(await get(a, token), 200);
    t.equal(await get(b, token), 200);
    t.equal(await get(b, token), 200);
    t.equal(auth.counts.introspection, 1, 'one introspection across both replicas');
  });

  t.test('a purge on A makes B refuse the revoked token within one second', async (t) => {
    const token = await auth.issueToken([READ]);
    t.equal(await get(a, token), 200);
    t.equal(await get(b, token), 200, 'B serves it from the shared cache');
    await auth.revoke(token);
    t.equal(await get(b, token), 200, 'still cached: revocation alone does not reach the gateway');
    const purge = await request(`${a.adminUrl}/cache/purge`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token }) });
    const answer = (await purge.body.json()) as { purged: number };
    t.equal(purge.statusCode, 200);
    t.ok(answer.purged >= 1, `purged ${answer.purged}`);
    const deadline = Date.now() + 1000;
    let status = 0;
    up.reset();
    while (Date.now() < deadline && status !== 401) status = await get(b, token);
    t.equal(status, 401, 'B refuses the revoked token within one second');
    t.equal(await get(a, token), 401, 'A refuses it too');
  });

  t.test('scopegate purge --token, and purge by fingerprint', async (t) => {
    const token = await auth.issueToken([READ]);
    t.equal(await get(a, token), 200);
    t.equal(await get(b, token), 200);
    await auth.revoke(token);
    // The CLI reads the admin address from the config: A's, with the port it listens on.
    const cliConfig = join(dir, 'cli.json');
    writeFileSync(cliConfig, JSON.stringify({ admin: { host: '127.0.0.1', port: Number(new URL(a.adminUrl).port) }, openapi: { file: SHARED_OPENAPI }, token: { jwt: { jwksUri: 'http://127.0.0.1:1/jwks', issuer: 'https://x' } } }));
    const cli = spawnSync(process.execPath, [CLI, 'purge', '--config', cliConfig, '--token', token], { encoding: 'utf8' });
    t.equal(cli.status, 0, cli.stderr);
    t.match(cli.stdout, /"purged":\s*[1-9]/);
    t.notMatch(cli.stdout + cli.stderr, new RegExp(token), 'the token is not echoed');
    const deadline = Date.now() + 1000;
    let status = 0;
    while (Date.now() < deadline && status !== 401) status = await get(b, token);
    t.equal(status, 401, 'B refuses it within one second');

    const other = await auth.issueToken([READ]);
    t.equal(await get(a, other), 200);
    const fingerprint = createHash('sha256').update(other).digest('base64url').slice(0, 12);
    const byFingerprint = await request(`${b.adminUrl}/cache/purge`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ fingerprint }) });
    t.equal(byFingerprint.statusCode, 200);
    t.ok(((await byFingerprint.body.json()) as { purged: number }).purged >= 1, 'the fingerprint of the access line purges the entry');
    const usage = spawnSync(process.execPath, [CLI, 'purge', '--config', cliConfig], { encoding: 'utf8' });
    t.equal(usage.status, 2, 'purge without a selector is a usage error');
  });

  t.test('a garbage value in Redis is a miss, never a principal', async (t) => {
    const raw = new Redis(redis.url, { lazyConnect: true });
    await raw.connect();
    t.teardown(() => raw.disconnect());
    for (const garbage of ['not json', '[1,2]', '{"sc":42}', '{"s":1,"sc":"x"}']) {
      auth.resetCounts();
      const fresh = await auth.issueToken([READ]);
      const freshKey = createHash('sha256').update(fresh).digest('base64url');
      await raw.set(`${keyPrefix}token:${freshKey}`, garbage, 'PX', 60000);
      t.equal(await get(b, fresh), 200, `served despite ${garbage}`);
      t.equal(auth.counts.introspection, 1, 'validated at the authorization server instead');
    }
    const invalid = `garbage-${Date.now()}`;
    await raw.set(`${keyPrefix}token:${createHash('sha256').update(invalid).digest('base64url')}`, '{"sc":', 'PX', 60000);
    up.reset();
    t.equal(await get(a, invalid), 401, 'an invalid token stays invalid');
    t.equal(up.requests.length, 0);
  });

  // A black-box audit wrote an entry of its own into Redis, with the rules digest of a real one,
  // and a token the authorization server refuses was let through. Entries are signed now (here
  // with the key derived from the introspection client's secret), over their Redis key too.
  t.test('a forged entry, or a real one moved under another token\'s key, is a miss: the authorization server decides', async (t) => {
    const raw = new Redis(redis.url, { lazyConnect: true });
    await raw.connect();
    t.teardown(() => raw.disconnect());
    const keyOf = (token: string) => `${keyPrefix}token:${createHash('sha256').update(token).digest('base64url')}`;
    const real = await auth.issueToken([READ]);
    t.equal(await get(a, real), 200);
    let stored: string | null = null;
    for (let i = 0; i < 50 && stored === null; i++) {
      stored = await raw.get(keyOf(real));
      if (stored === null) await sleep(20);
    }
    t.match(stored, /^[A-Za-z0-9_-]{43}\.\{/, 'the entry A wrote is signed');
    const rules = (JSON.parse(stored!.slice(44)) as { r: string }).r;
    const forgedJson = JSON.stringify({ s: 'attacker', c: 'evil', sc: `${READ} https://jans.io/scim/users.write`, r: rules });
    const cases: Array<[string, string]> = [
      ['a forged entry, unsigned', forgedJson],
      ['a forged entry under a made-up signature', `${'A'.repeat(43)}.${forgedJson}`],
      ['the real entry moved under another key', stored!],
    ];
    for (const [what, value] of cases) {
      const unknown = `unknown-${what.length}-${Date.now()}`;
      await raw.set(keyOf(unknown), value, 'PX', 60000);
      auth.resetCounts();
      await refused(t, b, unknown, `${what}: refused`);
      t.equal(auth.counts.introspection, 1, `${what}: the authorization server was asked`);
    }
  });

  // Pub/sub delivers at most once: a purge published while B's subscription was lost never
  // reaches B, which drops its whole local cache when it hears again.
  t.test('a replica that lost its purge subscription drops its local cache when it hears again', async (t) => {
    const raw = new Redis(redis.url, { lazyConnect: true });
    await raw.connect();
    t.teardown(() => raw.disconnect());
    const token = await auth.issueToken([READ]);
    t.equal(await get(a, token), 200);
    t.equal(await get(b, token), 200, 'B holds it');
    await auth.revoke(token);
    const linesBefore = b.lines.length;
    await raw.call('CLIENT', 'KILL', 'TYPE', 'pubsub');
    const purge = await request(`${a.adminUrl}/cache/purge`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token }) });
    t.equal(purge.statusCode, 200);
    await purge.body.text();
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && !b.lines.slice(linesBefore).some((l) => l.includes('purges may have been missed'))) await sleep(20);
    t.ok(b.lines.slice(linesBefore).some((l) => l.includes('purges may have been missed')), 'B says it dropped its cache');
    await refused(t, b, token, 'B refuses the revoked token once it hears again');
  });

  // The end of an entry's reuse is signed with it: an entry saved from Redis and written back
  // after it ended (with any TTL) is a miss.
  t.test('an entry written back to Redis after its end is a miss, whatever TTL it is given', async (t) => {
    const raw = new Redis(redis.url, { lazyConnect: true });
    await raw.connect();
    t.teardown(() => raw.disconnect());
    const short = await startServe(serveConfig('short', {
      introspection: { endpoint: auth.introspectionEndpoint, clientId: auth.clientId, clientSecret: auth.clientSecret },
      cache: { maxTtlSeconds: 1, negativeTtlSeconds: 1, redis: { url: redis.url, keyPrefix } },
    }));
    t.teardown(() => short.stop());
    const token = await auth.issueToken([READ]);
    const keyOf = `${keyPrefix}token:${createHash('sha256').update(token).digest('base64url')}`;
    t.equal(await get(short, token), 200);
    let stored: string | null = null;
    for (let i = 0; i < 50 && stored === null; i++) {
      stored = await raw.get(keyOf);
      if (stored === null) await sleep(20);
    }
    t.ok(stored, 'written with a reuse of one second');
    await sleep(1200);
    await auth.revoke(token);
    await raw.set(keyOf, stored!, 'PX', 60000);
    auth.resetCounts();
    await refused(t, b, token, 'the entry written back is not reused: the revoked token is refused');
    t.equal(auth.counts.introspection, 1, 'the authorization server was asked');
  });

  t.test('a JWT\'s result is never taken from Redis, nor written there: each replica verifies it', async (t) => {
    const raw = new Redis(redis.url, { lazyConnect: true });
    await raw.connect();
    t.teardown(() => raw.disconnect());
    const jwtPrefix = `jwt${Date.now()}:`;
    const file = serveConfig('jwt-shared', { jwt: { jwksUri: auth.jwksUri, issuer: auth.issuer }, cache: { redis: { url: redis.url, keyPrefix: jwtPrefix, signingKey: 'k' } } });
    const replica = await startServe(file);
    t.teardown(() => replica.stop());
    const token = await auth.issueToken([READ], { jwt: true });
    const key = `${jwtPrefix}token:${createHash('sha256').update(token).digest('base64url')}`;
    t.equal(await get(replica, token), 200);
    await sleep(100);
    t.equal(await raw.get(key), null, 'nothing written for the JWT');
    await raw.set(key, JSON.stringify({ i: 'forged refusal' }), 'PX', 60000);
    const other = await startServe(file);
    t.teardown(() => other.stop());
    t.equal(await get(other, token), 200, 'a value under its key is not read: verified here');
  });

  t.test('purge by client id through the admin listener', async (t) => {
    const token = await auth.issueToken([READ]);
    t.equal(await get(a, token), 200);
    const byClient = await request(`${b.adminUrl}/cache/purge`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ clientId: auth.clientId }) });
    t.equal(byClient.statusCode, 200);
    t.ok(((await byClient.body.json()) as { purged: number }).purged >= 1);
    const bad = await request(`${b.adminUrl}/cache/purge`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token, clientId: 'x' }) });
    t.equal(bad.statusCode, 400, 'exactly one selector');
    await bad.body.text();
  });

  t.test('purge by client id over more entries than one batch: exactly that client\'s', async (t) => {
    const raw = new Redis(redis.url, { lazyConnect: true });
    await raw.connect();
    t.teardown(() => raw.disconnect());
    // 1,200 stored validations, a third of them the client's (the purge reads 500 keys per command).
    const keyOf = (i: number) => `${keyPrefix}token:${createHash('sha256').update(`bulk-${i}`).digest('base64url')}`;
    const pipeline = raw.pipeline();
    for (let i = 0; i < 1200; i++) pipeline.set(keyOf(i), JSON.stringify({ c: i % 3 === 0 ? 'batch-client' : 'other-client', sc: READ }), 'PX', 60000);
    await pipeline.exec();
    const response = await request(`${a.adminUrl}/cache/purge`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ clientId: 'batch-client' }) });
    t.equal(response.statusCode, 200);
    t.same(await response.body.json(), { purged: 400 }, 'the 400 entries of the client, in Redis');
    const left = await raw.mget(...Array.from({ length: 1200 }, (_, i) => keyOf(i)));
    t.equal(left.filter((v, i) => v === null && i % 3 === 0).length, 400, 'all of them gone');
    t.equal(left.filter((v, i) => v !== null && i % 3 !== 0).length, 800, 'the other client\'s kept');
  });

  t.test('a keyPrefix with glob characters purges its own keys only', async (t) => {
    const globPrefix = `g${Date.now()}*:`;
    const neighbour = globPrefix.replace('*', 'x');
    const g = await startServe(serveConfig('glob', {
      introspection: { endpoint: auth.introspectionEndpoint, clientId: auth.clientId, clientSecret: auth.clientSecret }, cache: { redis: { url: redis.url, keyPrefix: globPrefix } },
    }));
    t.teardown(() => g.stop());
    const raw = new Redis(redis.url, { lazyConnect: true });
    await raw.connect();
    t.teardown(() => raw.disconnect());
    const value = JSON.stringify({ c: 'glob-client', sc: READ });
    await raw.set(`${globPrefix}token:own`, value, 'PX', 60000);
    await raw.set(`${neighbour}token:theirs`, value, 'PX', 60000);
    // Its tail starts with the fingerprint purged below: an unescaped `*` in the prefix would reach it.
    await raw.set(`${neighbour}token:theirsXX-rest`, value, 'PX', 60000);
    const purge = async (body: object) => {
      const response = await request(`${g.adminUrl}/cache/purge`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      t.equal(response.statusCode, 200, JSON.stringify(body));
      await response.body.text();
    };
    await purge({ fingerprint: 'theirsXX' });
    t.equal(await raw.exists(`${neighbour}token:theirsXX-rest`), 1, 'a purge by fingerprint leaves the other prefix\'s matching entry');
    await purge({ clientId: 'glob-client' });
    t.equal(await raw.exists(`${globPrefix}token:own`), 0, 'its own entry is purged');
    t.equal(await raw.exists(`${neighbour}token:theirs`), 1, 'the entry under the other prefix is not');
    t.equal(await raw.exists(`${neighbour}token:theirsXX-rest`), 1, 'nor the other one under that prefix');
  });

  t.test('an entry read from Redis ends when it ends there, not a full TTL later', async (t) => {
    // An authorization server whose answer for a token the test changes: a token valid when
    // first seen is revoked, and one refused when first seen becomes valid.
    const active = new Map<string, boolean>();
    const as = await startServer((req, res) => {
      void readText(req).then((body) => {
        const token = new URLSearchParams(body).get('token') ?? '';
        const answer = active.get(token) === true ? { active: true, scope: READ, client_id: 'c', token_type: 'Bearer' } : { active: false };
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(answer));
      });
    });
    const endpoint = `${as.origin}/introspection`;
    const file = serveConfig('ttl', {
      introspection: { endpoint, clientId: 'c', clientSecret: 's' },
      cache: { maxTtlSeconds: 3, negativeTtlSeconds: 3, redis: { url: redis.url, keyPrefix: `ttl${Date.now()}:` } },
    });
    const [c, d] = await Promise.all([startServe(file), startServe(file)]);
    t.teardown(async () => {
      await Promise.allSettled([c.stop(), d.stop()]);
      await as.close();
    });
    const revoked = `revoked-${Date.now()}`;
    const late = `late-${Date.now()}`;
    active.set(revoked, true);
    t.equal(await get(c, revoked), 200, 'C: valid, cached here and in Redis for 3 s');
    await refused(t, c, late, 'C: refused, cached here and in Redis for 3 s');
    const t0 = Date.now();
    active.set(revoked, false);
    active.set(late, true);
    await sleep(t0 + 2000 - Date.now());
    t.equal(await get(d, revoked), 200, 'D, 2 s later: the valid result from Redis');
    await refused(t, d, late, 'D, 2 s later: the refusal from Redis');
    await sleep(t0 + 3800 - Date.now());
    await refused(t, d, revoked, 'D, past the 3 s of the result: validated again, revoked');
    t.equal(await get(d, late), 200, 'D, past the 3 s of the refusal: validated again, now valid');
  });

  t.test('replicas share only what their own token rules would decide alike', async (t) => {
    // Two replicas of one Redis whose rules differ (as while a reload or a rolling deploy
    // tightens them): what the lenient one allowed is not an answer for the strict one.
    const config = (name: string, audience: string[]) => serveConfig(name, { jwt: { jwksUri: auth.jwksUri, issuer: auth.issuer, audience }, cache: { redis: { url: redis.url, keyPrefix } } });
    const [lenient, strict] = await Promise.all([startServe(config('lenient', [])), startServe(config('strict', ['https://elsewhere.example']))]);
    t.teardown(() => Promise.allSettled([lenient.stop(), strict.stop()]));
    const token = await auth.issueToken([READ], { jwt: true });
    t.equal(await get(lenient, token), 200, 'no audience required: allowed, and written to Redis');
    await refused(t, strict, token, 'another audience required: refused, not read from Redis');
    t.equal(await get(lenient, token), 200, 'and the lenient replica still allows it');
  });

  t.test('a purge by a fingerprint that is not one is refused, here and in Redis alike', async (t) => {
    const raw = new Redis(redis.url, { lazyConnect: true });
    await raw.connect();
    t.teardown(() => raw.disconnect());
    const token = await auth.issueToken([READ]);
    t.equal(await get(a, token), 200);
    const key = `${keyPrefix}token:${createHash('sha256').update(token).digest('base64url')}`;
    t.equal(await raw.exists(key), 1, 'the validation is in Redis');
    // Locally a fingerprint needs 8 characters; Redis read `*` or `a` as a pattern of every key.
    for (const fingerprint of ['*', 'a', key.slice(-43, -36), 'abc?defgh', 'abcdefgh*']) {
      const response = await request(`${b.adminUrl}/cache/purge`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ fingerprint }) });
      t.equal(response.statusCode, 400, `fingerprint ${JSON.stringify(fingerprint)}: 400`);
      t.match(await response.body.text(), /fingerprint/, 'the error names the fingerprint');
    }
    t.equal(await raw.exists(key), 1, 'nothing purged in Redis');
    auth.resetCounts();
    t.equal(await get(b, token), 200);
    t.equal(auth.counts.introspection, 0, 'B still finds it in the shared cache');
  });

  t.test('with Redis stopped both replicas keep serving correctly, and share again when it returns', async (t) => {
    const cached = await auth.issueToken([READ]);
    t.equal(await get(a, cached), 200);
    await redis.stop();
    t.equal(await get(a, cached), 200, 'A: local cache');
    t.equal(await get(b, cached), 200, 'B: introspects by itself');
    const fresh = await auth.issueToken([READ]);
    t.equal(await get(a, fresh), 200, 'a new token is validated without Redis');
    const random = 'not-a-real-token-' + Date.now();
    up.reset();
    t.equal(await get(b, random), 401, 'never fails open');
    t.equal(up.requests.length, 0, 'nothing forwarded for the invalid token');
    // A purge cannot reach Redis nor the other replicas: done here, and said to be incomplete.
    const purge = await request(`${a.adminUrl}/cache/purge`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: cached }) });
    t.equal(purge.statusCode, 503, 'a purge that could not reach the other replicas is no success');
    t.equal(purge.headers['retry-after'], '5');
    t.match(await purge.body.json(), { purged: 1, error: /Redis/ }, 'purged here, and the body says where not');
    const cliConfig = join(dir, 'purge-a.json');
    writeFileSync(cliConfig, JSON.stringify({
      admin: { host: '127.0.0.1', port: Number(new URL(a.adminUrl).port) }, upstream: { url: up.origin }, openapi: { file: SHARED_OPENAPI },
      token: { jwt: { jwksUri: auth.jwksUri, issuer: auth.issuer } },
    }));
    const cli = spawnSync(process.execPath, [CLI, 'purge', '--config', cliConfig, '--token', '-'], { input: `${cached}\n`, encoding: 'utf8' });
    t.equal(cli.status, 1, 'scopegate purge exits 1');
    t.match(cli.stderr, /503/);
    await redis.start();
    // ioredis reconnects by itself (retry every <= 2 s).
    await new Promise((r) => setTimeout(r, 2500));
    const shared = await auth.issueToken([READ]);
    auth.resetCounts();
    t.equal(await get(a, shared), 200);
    t.equal(await get(b, shared), 200);
    t.equal(auth.counts.introspection, 1, 'shared again after Redis returned');
  });
}
