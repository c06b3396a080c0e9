// SIGTERM while a kept-alive connection is busy: the request in flight finishes, and a request
// that comes after it on the same connection is the gateway's own 503 (a SCIM error with
// Retry-After and Connection: close), counted in the access log like any other answer: never
// Fastify's JSON 503, never forwarded. A request whose client has gone does not hold the stop, and
// a connection is closed as its last answer ends, so that the drain ends with the last answer,
// not at a keep-alive timeout.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { request } from 'undici';
import { B, SHARED_OPENAPI, startTestGateway } from '../helpers/gateway.js';
import { CLI, startServe } from '../helpers/process.js';
import { assertScimError } from '../gateway/support.js';
import { converse, settle } from '../helpers/stack.js';
import { startRecordingUpstream } from '../helpers/upstream.js';

/**
 * A recording upstream that answers `{}` after `delayMs(url)`, and `scopegate serve` in front of
 * it (tokens: a JWT verifier that never needs its JWKS here, as every request of these tests is
 * public), with `listen` merged over the listener.
 */
async function serveBehindSlowUpstream(t: Test, delayMs: (url: string) => number, listen: Record<string, unknown> = {}) {
  const up = await startRecordingUpstream();
  up.respond = (req, res) => {
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'application/scim+json', 'content-length': '2' });
      res.end('{}');
    }, delayMs(req.url ?? ''));
  };
  t.teardown(() => up.close());
  const dir = mkdtempSync(join(tmpdir(), 'scopegate-shutdown-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'scopegate.json');
  writeFileSync(file, JSON.stringify({
    listen: { host: '127.0.0.1', port: 0, ...listen }, admin: { host: '127.0.0.1', port: 0 },
    upstream: { url: up.origin }, openapi: { file: SHARED_OPENAPI },
    token: { jwt: { jwksUri: 'http://127.0.0.1:1/jwks', issuer: 'https://issuer.test' } },
  }));
  return { up, serve: await startServe(file) };
}

t.test('a request on a kept-alive connection after SIGTERM: a SCIM 503, logged, not forwarded', async (t) => {
  const { up, serve } = await serveBehindSlowUpstream(t, () => 600);
  const c = await converse(serve.port);
  c.write(`GET ${B}/Schemas HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
  while (up.requests.length === 0) await settle(10);
  serve.child.kill('SIGTERM');
  await settle(100);
  c.write(`GET ${B}/ServiceProviderConfig HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
  t.ok(await c.waitFor(/HTTP\/1\.1 200 [^]*\r\n\r\n\{\}HTTP\/1\.1 \d{3}[^]*\r\n\r\n[^]*\}/, 5000), 'both answered');
  const second = c.data.slice(c.data.indexOf('{}HTTP/1.1') + 2);
  t.match(second, /^HTTP\/1\.1 503 /, 'the second: 503');
  t.match(second, /\r\ncontent-type: application\/scim\+json\r\n/i, 'a SCIM error');
  t.match(second, /\r\nretry-after: \d+\r\n/i, 'Retry-After');
  t.match(second, /\r\nconnection: close\r\n/i, 'the connection closes');
  t.match(second, /"status":"503"/);
  t.notMatch(second, /\r\nwww-authenticate:/i, 'no challenge');
  t.equal(up.requests.length, 1, 'only the first reached the upstream');
  t.equal(await serve.exited, 0, 'exit code 0');
  const access = serve.lines.filter((l) => l.includes('"msg":"access"'));
  t.equal(access.length, 2, 'one access line each');
  t.match(JSON.parse(access[1]!), { method: 'GET', path: `${B}/ServiceProviderConfig`, status: 503, decision: 'deny' }, 'the line names the request it refused');
  c.end();
});

t.test('SIGTERM and SIGHUP while the gateway starts (discovery pending): held, then a clean stop with exit 0', async (t) => {
  // A discovery document that takes 1.5 s to come: the signals arrive before the gateway listens.
  let asked = 0;
  const discovery = createServer((_req, res) => {
    asked += 1;
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ issuer: `http://127.0.0.1:${(discovery.address() as AddressInfo).port}`, jwks_uri: 'http://127.0.0.1:1/jwks' }));
    }, 1500);
  });
  await new Promise<void>((resolve) => discovery.listen(0, '127.0.0.1', resolve));
  t.teardown(() => discovery.close());
  const dir = mkdtempSync(join(tmpdir(), 'scopegate-startsignal-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'scopegate.json');
  writeFileSync(file, JSON.stringify({
    listen: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 }, openapi: { file: SHARED_OPENAPI },
    token: { issuer: `http://127.0.0.1:${(discovery.address() as AddressInfo).port}`, jwt: {} },
  }));
  const child = spawn(process.execPath, [CLI, 'serve', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  while (asked === 0) await settle(20);
  child.kill('SIGHUP');
  child.kill('SIGTERM');
  const { code, signal } = await exited;
  t.equal(signal, null, 'not killed by a signal');
  t.equal(code, 0, 'exit code 0');
  t.match(out, /"scopegate listening"/, 'it started');
  t.match(out, /"listener":"proxy","msg":"Server listening at http:\/\/127\.0\.0\.1:\d+"\}\n[^\n]*"listener":"admin","msg":"Server listening at /, 'the listeners\' startup lines, the proxy\'s then the admin\'s');
  t.match(out, /"signal":"SIGTERM"[^\n]*stopping/, 'then stopped on the held SIGTERM');
});

t.test('while requests in flight finish after SIGTERM, the admin listener still answers: /healthz 200, /readyz 503, /metrics', async (t) => {
  const { up, serve } = await serveBehindSlowUpstream(t, () => 1500);
  const admin = async (path: string) => {
    const r = await request(`${serve.adminUrl}${path}`).catch((error: Error & { code?: string }) => ({ statusCode: error.code ?? error.message, body: null }));
    return { status: r.statusCode, body: r.body ? await r.body.text() : '' };
  };
  const inFlight = request(`${serve.proxyUrl}${B}/Schemas`);
  while (up.requests.length === 0) await settle(10);
  serve.child.kill('SIGTERM');
  await settle(300);
  t.equal((await admin('/healthz')).status, 200, '/healthz: the process runs');
  const ready = await admin('/readyz');
  t.equal(ready.status, 503, '/readyz: not ready, so that no new request is sent here');
  t.match(ready.body, /stopping/);
  t.match((await admin('/metrics')).body, /^# TYPE scopegate_requests_total counter$/m, '/metrics can still be scraped');
  t.equal((await inFlight).statusCode, 200, 'the request in flight finished');
  t.equal(await serve.exited, 0, 'exit code 0');
});

t.test('a request whose client went away does not hold the stop: the upstream\'s late answer has nobody to go to', async (t) => {
  const up = await startRecordingUpstream();
  // An upstream that never answers (upstream.timeoutMs is 30 s).
  up.respond = () => undefined;
  const gw = await startTestGateway({ upstream: { url: up.origin }, token: { jwt: { jwksUri: 'http://127.0.0.1:1/jwks', issuer: 'https://issuer.test' } } });
  t.teardown(() => up.close());
  const c = await converse(gw.port);
  c.write(`GET ${B}/Schemas HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
  while (up.requests.length === 0) await settle(10);
  c.end();
  await settle(100);
  const started = Date.now();
  await gw.close();
  const tookMs = Date.now() - started;
  t.ok(tookMs < 1000, `closed at once (${tookMs} ms), not at the shutdown deadline (3000 ms)`);
  t.notOk(gw.logs.some((l) => l.includes('shutdown deadline reached')), 'no request was in flight to cut');
  const lines = gw.logs.filter((l) => l.includes('"msg":"access"'));
  t.equal(lines.length, 1, 'one access line');
  t.match(lines[0], /"status":499/, 'its line was written as the client left');
});

t.test('connections are closed as their last answers end the drain: the process exits with the last of them, not at a keep-alive timeout or the deadline', async (t) => {
  // The first request is answered at once, before SIGTERM; the others 400 ms after it.
  const { up, serve } = await serveBehindSlowUpstream(t, (url) => (url.endsWith('/Schemas') ? 0 : 400), { shutdownTimeoutMs: 20000 });
  const get = (path: string) => `GET ${B}${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`;
  // Kept alive: one answered before SIGTERM and idle since, one whose answer is still to come,
  // and one with two requests pipelined.
  const idle = await converse(serve.port);
  idle.write(get('/Schemas'));
  t.ok(await idle.waitFor(/\r\n\r\n\{\}$/), 'the first connection is answered and idle');
  const busy = await converse(serve.port);
  busy.write(get('/ResourceTypes'));
  const pipelined = await converse(serve.port);
  pipelined.write(get('/ServiceProviderConfig') + get('/ResourceTypes/User'));
  while (up.requests.length < 3) await settle(10);
  const started = Date.now();
  serve.child.kill('SIGTERM');
  for (const [name, c, answers] of [['busy', busy, 1], ['pipelined', pipelined, 2]] as const) {
    t.ok(await c.waitClose(3000), `${name}: the connection closes after its answers`);
    const heads = c.data.split('\r\n\r\n').filter((part) => /^(?:\{\})?HTTP\/1\.1 /.test(part));
    t.equal(heads.length, answers, `${name}: every answer owed`);
  }
  t.ok(idle.closed, 'the idle connection is closed');
  t.equal(await serve.exited, 0, 'exit code 0');
  const ms = Date.now() - started;
  t.ok(ms < 3000, `the process exits with the last answer (${ms} ms), not at the keep-alive timeout`);
  t.notOk(serve.lines.some((l) => l.includes('shutdown deadline reached')), 'no deadline warning: nothing was in flight');
});

// A connection closed after its answer reads on for a while (the lingering close, src/server.ts):
// one whose client keeps its side open does not hold the stop up.
t.test('a connection lingering after its answer does not hold the stop', async (t) => {
  const up = await startRecordingUpstream();
  t.teardown(() => up.close());
  const gw = await startTestGateway({ upstream: { url: up.origin }, token: { jwt: { jwksUri: 'http://127.0.0.1:1/jwks', issuer: 'https://issuer.test' } } });
  let closed = false;
  t.teardown(() => (closed ? undefined : gw.close()));
  const c = await converse(gw.port, { allowHalfOpen: true });
  t.teardown(() => c.end());
  // Refused before its body is read (no token): the answer says Connection: close, and the
  // gateway reads on; the client sends part of its body and keeps its side open.
  c.write(`PUT ${B}/Users/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/scim+json\r\nContent-Length: 1000000\r\n\r\n${'x'.repeat(1000)}`);
  t.ok(await c.waitFor(/\r\n\r\n[^]*"status":"401"/), 'the answer');
  const res = c.response();
  assertScimError(t, res, 401);
  t.equal(res.headers['www-authenticate'], 'Bearer realm="scopegate"');
  t.equal(res.headers.connection, 'close');
  t.equal(up.requests.length, 0, 'nothing upstream');
  const started = Date.now();
  await gw.close();
  closed = true;
  const ms = Date.now() - started;
  t.ok(ms < 2500, `the stop took ${ms} ms, not the 5 s of the lingering nor the 3 s deadline`);
  t.notOk(gw.logs.some((l) => /shutdown deadline reached/.test(l)), 'no deadline reached');
});
