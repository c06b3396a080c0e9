// /readyz follows the authorization server: 200 while introspection can work, 503 once it stops
// answering (a probe older than a few seconds is repeated; an open circuit breaker is checked at
// once), 200 again when it is back. A real oidc-provider is stopped and restarted on its port; the
// admin listener is the real one, around a runtime whose clock the test moves.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { pino } from 'pino';
import { request } from 'undici';
import { buildAdmin } from '../../src/admin.js';
import { InvalidToken } from '../../src/errors.js';
import { loadConfig } from '../../src/config.js';
import { createMetrics } from '../../src/metrics.js';
import { READY_MAX_AGE_MS } from '../../src/readiness.js';
import { createRuntime } from '../../src/runtime.js';
import { startAuthServer, type AuthServer } from '../../src/demo/auth-server.js';
import { SHARED_OPENAPI } from '../helpers/gateway.js';

const tmp = mkdtempSync(join(tmpdir(), 'scopegate-ready-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

async function readyz(url: string): Promise<number> {
  const response = await request(`${url}/readyz`);
  await response.body.text();
  return response.statusCode;
}

t.test('/readyz: 200, then 503 while the authorization server is down, then 200 again', async (t) => {
  const clientSecret = 'readiness-secret';
  let auth: AuthServer = await startAuthServer({ clientSecret });
  const port = Number(new URL(auth.issuer).port);
  const file = join(tmp, 'scopegate.json');
  writeFileSync(file, JSON.stringify({
    openapi: { file: SHARED_OPENAPI },
    token: { introspection: { endpoint: auth.introspectionEndpoint, clientId: auth.clientId, clientSecret, timeoutMs: 1000 } },
  }));
  const config = loadConfig(file, {});
  let clock = Date.now();
  const runtime = createRuntime(config, { introspection: auth.introspectionEndpoint }, createMetrics({ cacheEntries: () => 0, bodyBytesHeld: () => 0 }, false), { now: () => clock });
  const admin = buildAdmin({ current: () => runtime, metrics: createMetrics({ cacheEntries: () => 0, bodyBytesHeld: () => 0 }, false), logger: pino({ level: 'silent' }) });
  await admin.listen({ host: '127.0.0.1', port: 0 });
  const { port: adminPort } = admin.server.address() as { port: number };
  const url = `http://127.0.0.1:${adminPort}`;
  t.teardown(async () => {
    await admin.close();
    runtime.close();
    await auth.close();
  });
  const calls = () => auth.counts.introspection;

  t.equal(await readyz(url), 200, 'ready: the endpoint answered the probe');
  t.equal(calls(), 1, 'one probe');
  t.same(await Promise.all(Array.from({ length: 20 }, () => readyz(url))), Array(20).fill(200), 'still ready');
  t.equal(calls(), 1, 'a fresh probe is reused: no call for 20 checks');
  clock += READY_MAX_AGE_MS;
  t.same(await Promise.all(Array.from({ length: 20 }, () => readyz(url))), Array(20).fill(200), 'ready after a new probe');
  t.equal(calls(), 2, 'concurrent checks share one probe');

  // The authorization server goes away: noticed at the next probe, a few seconds later at most.
  await auth.close();
  clock += READY_MAX_AGE_MS;
  t.equal(await readyz(url), 503, 'not ready once the endpoint stops answering');
  t.equal(await readyz(url), 503, 'still not ready (the failed probe is believed for a while)');

  // Back on the same port: ready at the next probe.
  auth = await startAuthServer({ clientSecret, port });
  t.equal(await readyz(url), 503, 'a failed probe is not repeated at once (no flood of the AS)');
  t.equal(calls(), 0, 'no call yet to the restarted server');
  clock += READY_MAX_AGE_MS;
  t.equal(await readyz(url), 200, 'ready again');
  t.equal(calls(), 1);

  // Real introspections fail: after five in a row the breaker opens, and /readyz says so at once,
  // without waiting for the age of the last good probe.
  const token = await auth.issueToken(['https://jans.io/scim/users.read']);
  t.ok((await runtime.verifier.verify(token)).principal, 'a real introspection succeeds');
  await auth.close();
  for (let i = 0; i < 5; i++) await runtime.verifier.verify(`not-cached-${i}`).catch(() => undefined);
  t.equal(await readyz(url), 503, 'an open circuit breaker: not ready at once');
  auth = await startAuthServer({ clientSecret, port });
  clock += READY_MAX_AGE_MS;
  t.equal(await readyz(url), 200, 'the probe that succeeds closes the breaker: ready');
  t.ok((await runtime.verifier.verify(await auth.issueToken(['https://jans.io/scim/users.read']))).principal, 'and requests are introspected again');
});

t.test('/readyz is 503 when the gateway\'s own credentials are refused', async (t) => {
  const auth = await startAuthServer();
  const file = join(tmp, 'refused.json');
  writeFileSync(file, JSON.stringify({
    openapi: { file: SHARED_OPENAPI },
    token: { introspection: { endpoint: auth.introspectionEndpoint, clientId: auth.clientId, clientSecret: 'wrong' } },
  }));
  const runtime = createRuntime(loadConfig(file, {}), { introspection: auth.introspectionEndpoint }, createMetrics({ cacheEntries: () => 0, bodyBytesHeld: () => 0 }, false));
  t.teardown(async () => {
    runtime.close();
    await auth.close();
  });
  t.equal(await runtime.ready(), false, 'token validation cannot work');
});

// A black-box audit: in bearer_token mode an endpoint answering 200 with an HTML page was called
// ready, while every token got a 503 from it.
t.test('/readyz: a 200 that is no introspection answer is not ready, in either mode', async (t) => {
  let answer: { status: number; body: string; type: string } = { status: 200, body: '<html>garbage</html>', type: 'text/html' };
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(answer.status, { 'content-type': answer.type });
      res.end(answer.body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}/introspection`;
  const runtimeWith = (name: string, introspection: Record<string, unknown>) => {
    const file = join(tmp, `${name}.json`);
    writeFileSync(file, JSON.stringify({ openapi: { file: SHARED_OPENAPI }, token: { introspection: { endpoint, ...introspection } } }));
    const runtime = createRuntime(loadConfig(file, {}), { introspection: endpoint }, createMetrics({ cacheEntries: () => 0, bodyBytesHeld: () => 0 }, false));
    t.teardown(() => runtime.close());
    return runtime;
  };
  const cases: Array<[name: string, status: number, body: string, type: string, bearerReady: boolean, basicReady: boolean]> = [
    ['200 HTML', 200, '<html>garbage</html>', 'text/html', false, false],
    ['200 JSON array', 200, '[1,2]', 'application/json', false, false],
    ['200 JSON without active', 200, '{"error":"x"}', 'application/json', false, false],
    ['200 naming active twice', 200, '{"active":false,"active":true}', 'application/json', false, false],
    ['200 inactive (the probe token is no token)', 200, '{"active":false}', 'application/json', true, true],
    ['401 access_denied (jans refuses a token its own introspection)', 401, '{"error":"access_denied"}', 'application/json', true, false],
  ];
  for (const [i, [name, status, body, type, bearerReady, basicReady]] of cases.entries()) {
    answer = { status, body, type };
    // A new runtime per case: a probe's outcome is believed for a few seconds.
    t.equal(await runtimeWith(`bearer-${i}`, { authMethod: 'bearer_token' }).ready(), bearerReady, `bearer_token, ${name}: ${bearerReady ? 'ready' : 'not ready'}`);
    t.equal(await runtimeWith(`basic-${i}`, { clientId: 'c', clientSecret: 's' }).ready(), basicReady, `client_secret_basic, ${name}: ${basicReady ? 'ready' : 'not ready'}`);
  }

  // A request's token answered so is refused (401, SECURITY.md I02), and that refusal does not
  // tell readiness the server works: its probe is asked, and refuses the same answer.
  for (const [i, body] of ['{"error":"server_error"}', '{"active":"true"}', '{"active":null}', '{}'].entries()) {
    answer = { status: 200, body, type: 'application/json' };
    const runtime = runtimeWith(`request-first-${i}`, { clientId: 'c', clientSecret: 's' });
    const refusal = await runtime.verifier.verify(`token-${i}`).then(() => undefined, (error: unknown) => error);
    t.ok(refusal instanceof InvalidToken, `${body}: the token is refused as invalid`);
    t.equal(await runtime.ready(), false, `${body}: not ready after a request met it`);
  }
  answer = { status: 200, body: '{"active":false}', type: 'application/json' };
  const control = runtimeWith('request-first-control', { clientId: 'c', clientSecret: 's' });
  await control.verifier.verify('token-control').catch(() => undefined);
  t.equal(await control.ready(), true, 'control: an inactive answer shows the server working');
});
