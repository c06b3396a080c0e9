// `scopegate serve` under signals: SIGHUP reloads a valid config (swapped whole) and keeps the
// running one when the new one is invalid; SIGTERM finishes the request in flight and exits 0.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { request } from 'undici';
import { B, SHARED_OPENAPI } from '../helpers/gateway.js';
import { startServe } from '../helpers/process.js';
import { startRecordingUpstream } from '../helpers/upstream.js';

const baseConfig = (upstream: string, extra: unknown[] = []) => ({
  listen: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 },
  upstream: { url: upstream }, openapi: { file: SHARED_OPENAPI, extra },
  token: { jwt: { jwksUri: 'http://127.0.0.1:1/jwks', issuer: 'https://issuer.test' } },
});

async function status(url: string): Promise<number> {
  const r = await request(url);
  await r.body.text();
  return r.statusCode;
}

function waitForLine(lines: string[], pattern: RegExp, timeoutMs = 5000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const look = () => {
      const found = lines.find((l) => pattern.test(l));
      if (found) resolve(found);
      else if (Date.now() > deadline) reject(new Error(`no line matching ${pattern}`));
      else setTimeout(look, 20);
    };
    look();
  });
}

t.test('SIGHUP reloads a valid config and keeps the running one when the new one is invalid', async (t) => {
  const up = await startRecordingUpstream();
  const dir = mkdtempSync(join(tmpdir(), 'scopegate-hup-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'scopegate.json');
  writeFileSync(file, JSON.stringify(baseConfig(up.origin)));
  const serve = await startServe(file);
  t.teardown(async () => {
    await serve.stop();
    await up.close();
  });
  t.equal(await status(`${serve.proxyUrl}${B}/Ping`), 404, 'not in the table yet');

  writeFileSync(file, JSON.stringify(baseConfig(up.origin, [{ method: 'GET', path: '/Ping', public: true }])));
  serve.child.kill('SIGHUP');
  await waitForLine(serve.lines, /reloaded config/);
  t.equal(await status(`${serve.proxyUrl}${B}/Ping`), 200, 'the new public operation is served');
  t.equal(up.requests.at(-1)?.url, `${B}/Ping`);

  writeFileSync(file, JSON.stringify({ ...baseConfig(up.origin), upstrem: {} }));
  serve.child.kill('SIGHUP');
  const refused = await waitForLine(serve.lines, /reload refused/);
  t.match(refused, /upstrem: unknown key \(did you mean upstream\?\)/, 'the error names the key');
  t.equal(await status(`${serve.proxyUrl}${B}/Ping`), 200, 'the running config is kept');
  t.equal(serve.child.exitCode, null, 'still running');

  // A problem in the config and one in the OpenAPI file it names: both listed, as check lists them.
  const open = join(dir, 'open.yaml');
  writeFileSync(open, 'openapi: 3.0.3\ninfo: { title: t, version: "1" }\npaths:\n  /Users:\n    get: { responses: { "200": { description: ok } } }\n');
  const before = serve.lines.length;
  const both = baseConfig(up.origin);
  writeFileSync(file, JSON.stringify({ ...both, upstream: { url: up.origin, timeoutMs: -1 }, openapi: { file: open } }));
  serve.child.kill('SIGHUP');
  let line: string | undefined;
  for (let i = 0; i < 250 && line === undefined; i++) {
    line = serve.lines.slice(before).find((l) => /reload refused/.test(l));
    if (line === undefined) await new Promise((r) => setTimeout(r, 20));
  }
  if (line === undefined) throw new Error('no second reload refused line');
  const problems = (JSON.parse(line) as { problems: string[] }).problems;
  t.ok(problems.some((p) => p.startsWith('upstream.timeoutMs')), 'the config\'s problem');
  t.ok(problems.some((p) => p.startsWith('openapi.file') && /no operation requires a token/.test(p)), 'the OpenAPI file\'s problem');
  t.equal(await status(`${serve.proxyUrl}${B}/Ping`), 200, 'the running config is kept');
});

/** `scopegate serve` in front of an upstream that answers `body` after `delayMs`; `patch` is merged over the config. */
async function serveSlowUpstream(t: Test, delayMs: number, body: string, patch: (config: ReturnType<typeof baseConfig>, origin: string) => object = (c) => c) {
  const up = await startRecordingUpstream();
  up.respond = (_req, res) => {
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'application/scim+json' });
      res.end(body);
    }, delayMs);
  };
  const dir = mkdtempSync(join(tmpdir(), 'scopegate-term-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'scopegate.json');
  writeFileSync(file, JSON.stringify(patch(baseConfig(up.origin), up.origin)));
  const serve = await startServe(file);
  t.teardown(() => up.close());
  return { up, serve };
}

t.test('SIGTERM lets the request in flight finish, then exits 0', async (t) => {
  const { up, serve } = await serveSlowUpstream(t, 700, '{"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"totalResults":0}');
  const inFlight = request(`${serve.proxyUrl}${B}/Schemas`);
  while (up.requests.length === 0) await new Promise((r) => setTimeout(r, 10));
  serve.child.kill('SIGTERM');
  const response = await inFlight;
  t.equal(response.statusCode, 200, 'the request in flight completed');
  t.equal(response.headers.connection, 'close', 'its answer says the connection ends with it');
  t.equal(response.headers['keep-alive'], undefined, 'no keep-alive promised');
  t.match(await response.body.text(), /ListResponse/);
  t.equal(await serve.exited, 0, 'exit code 0');
});

t.test('SIGTERM or SIGINT again while stopping changes nothing: the request in flight finishes, exit 0', async (t) => {
  const { up, serve } = await serveSlowUpstream(t, 700, '{"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"totalResults":0}');
  const inFlight = request(`${serve.proxyUrl}${B}/Schemas`);
  while (up.requests.length === 0) await new Promise((r) => setTimeout(r, 10));
  serve.child.kill('SIGTERM');
  await waitForLine(serve.lines, /stopping: finishing in-flight requests/);
  serve.child.kill('SIGTERM');
  serve.child.kill('SIGINT');
  const response = await inFlight;
  t.equal(response.statusCode, 200, 'the request in flight completed');
  t.match(await response.body.text(), /ListResponse/);
  t.equal(await serve.exited, 0, 'exit code 0, not the signal\'s');
  const access = serve.lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'access');
  t.match(access, [{ path: `${B}/Schemas`, status: 200 }], 'its access line was written');
});

t.test('SIGTERM: a request still in flight at listen.shutdownTimeoutMs is cut, logged, and the process exits 0', async (t) => {
  const { up, serve } = await serveSlowUpstream(t, 4000, '{}', (config, origin) => ({
    ...config, listen: { ...config.listen, shutdownTimeoutMs: 300 }, upstream: { url: origin, timeoutMs: 10000 },
  }));
  const inFlight = request(`${serve.proxyUrl}${B}/Schemas`).then((r) => r.statusCode, (error: Error & { code?: string }) => error.code ?? error.message);
  while (up.requests.length === 0) await new Promise((r) => setTimeout(r, 10));
  const started = Date.now();
  serve.child.kill('SIGTERM');
  t.equal(await inFlight, 'UND_ERR_SOCKET', 'the connection is closed, without a response');
  t.ok(Date.now() - started < 2500, 'at the deadline, not when the upstream answers');
  t.equal(await serve.exited, 0, 'exit code 0');
  t.ok(Date.now() - started < 3500, 'the process does not wait for the upstream either');
  const lines = serve.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  t.ok(lines.some((l) => l.msg === 'shutdown deadline reached: closing the connections of requests still in flight' && l.shutdownTimeoutMs === 300), 'the deadline is logged');
  const access = lines.filter((l) => l.msg === 'access');
  t.equal(access.length, 1, 'one access line');
  t.match(access[0], { path: `${B}/Schemas`, operation: 'get-schemas', status: 499, reason: /^connection closed before the response was complete/ });
});
