/**
 * The validation cache, counted at the real authorization server: concurrent first requests
 * coalesce into one introspection, later ones cost none; an entry ends (maxTtlSeconds) and a
 * revoked token is refused after it; negative results are kept; failures of the authorization
 * server are never kept.
 */
import t from 'tap';
import type { AuthServer } from '../../src/demo/auth-server.js';
import { B, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import type { RecordingUpstream } from '../helpers/upstream.js';
import {
  assertAuthServerDown, assertDenied, closedPort, type GatewayStack, INVALID_TOKEN, readText, send, sleep, startGatewayStack, startServer, tokenConfig,
} from './support.js';

const READ = 'https://jans.io/scim/users.read';
const USERS = `${B}/Users`;

let auth: AuthServer;
let up: RecordingUpstream;
let gw: TestGateway;
let stack: GatewayStack | undefined;

t.before(async () => {
  ({ auth, up, gw } = stack = await startGatewayStack());
});
t.teardown(() => stack?.close());

t.test('50 concurrent first requests: one introspection; a second burst: none', async (t) => {
  const token = await auth.issueToken([READ]);
  const before = auth.counts.introspection;
  const seenBefore = auth.introspected.length;
  up.reset();
  const first = await Promise.all(Array.from({ length: 50 }, () => send(gw.port, 'GET', USERS, { token })));
  t.same(first.map((r) => r.status), Array(50).fill(200), 'all 50 allowed');
  t.equal(auth.counts.introspection - before, 1, 'exactly one introspection call');
  t.same(auth.introspected.slice(seenBefore), [token], 'and it was for this token');
  t.equal(up.requests.length, 50, 'all 50 forwarded');

  const second = await Promise.all(Array.from({ length: 50 }, () => send(gw.port, 'GET', USERS, { token })));
  t.same(second.map((r) => r.status), Array(50).fill(200), 'all 50 allowed again');
  t.equal(auth.counts.introspection - before, 1, 'no further introspection');
});

t.test('a revoked token is allowed while cached, refused once its entry ends', async (t) => {
  const short = await startTestGateway({ upstream: { url: up.origin }, token: tokenConfig(auth, { cache: { maxTtlSeconds: 1 } }) });
  t.teardown(() => short.close());
  const token = await auth.issueToken([READ]);
  const before = auth.counts.introspection;
  up.reset();
  t.equal((await send(short.port, 'GET', USERS, { token })).status, 200, 'valid and now cached');
  await auth.revoke(token);
  t.equal((await send(short.port, 'GET', USERS, { token })).status, 200, 'still allowed from the cache (the documented trade-off)');
  t.equal(auth.counts.introspection - before, 1, 'served from the cache');
  t.equal(up.requests.length, 2);

  // The one real wait: the gateway's clock is the process clock, and maxTtlSeconds is 1.
  await sleep(1200);
  up.reset();
  const res = await send(short.port, 'GET', USERS, { token });
  assertDenied(t, res, 401, INVALID_TOKEN, up);
  t.equal(auth.counts.introspection - before, 2, 'the expired entry was validated again');
});

t.test('an unknown token: the negative result is cached', async (t) => {
  const token = `unknown-${Date.now()}-opaque-token`;
  const before = auth.counts.introspection;
  up.reset();
  for (let i = 0; i < 2; i++) assertDenied(t, await send(gw.port, 'GET', USERS, { token }), 401, INVALID_TOKEN, up);
  t.equal(auth.counts.introspection - before, 1, 'two requests, one introspection');
  t.same(auth.introspected.slice(-1), [token]);
});

t.test('concurrent requests with an unknown token: one introspection', async (t) => {
  const token = `unknown-${Date.now()}-burst`;
  const before = auth.counts.introspection;
  up.reset();
  const all = await Promise.all(Array.from({ length: 20 }, () => send(gw.port, 'GET', USERS, { token })));
  for (const res of all) assertDenied(t, res, 401, INVALID_TOKEN, up);
  t.equal(auth.counts.introspection - before, 1, 'coalesced');
});

t.test('an unreachable authorization server: 503 + Retry-After, nothing upstream', async (t) => {
  const port = await closedPort();
  const down = await startTestGateway({
    upstream: { url: up.origin },
    token: { introspection: { endpoint: `http://127.0.0.1:${port}/jans-auth/restv1/introspection`, clientId: 'c', clientSecret: 's' } },
  });
  t.teardown(() => down.close());
  up.reset();
  for (let i = 0; i < 2; i++) assertAuthServerDown(t, await send(down.port, 'GET', USERS, { token: 'some-opaque-token' }), up);
});

t.test('a failure of the authorization server is not cached', async (t) => {
  // First call 500, later calls a valid introspection answer: if the failure were cached, the
  // second request would be refused without a second call.
  let calls = 0;
  const as = await startServer((req, res) => {
    void readText(req).then(() => {
      calls += 1;
      if (calls === 1) {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end('{"error":"server_error"}');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ active: true, scope: READ, client_id: 'c', exp: Math.floor(Date.now() / 1000) + 60 }));
    });
  });
  t.teardown(() => as.close());
  const flaky = await startTestGateway({
    upstream: { url: up.origin },
    token: { introspection: { endpoint: `${as.origin}/introspection`, clientId: 'c', clientSecret: 's' } },
  });
  t.teardown(() => flaky.close());
  up.reset();
  assertAuthServerDown(t, await send(flaky.port, 'GET', USERS, { token: 'flaky-token' }), up);
  t.equal(calls, 1);
  const res = await send(flaky.port, 'GET', USERS, { token: 'flaky-token' });
  t.equal(res.status, 200, 'validated again, and allowed');
  t.equal(calls, 2, 'a second call went out');
  t.equal(up.requests.length, 1);
});
