// token.issuer alone: the introspection endpoint and the JWKS are read from the issuer's
// /.well-known/openid-configuration at startup; an issuer that cannot be read stops the start.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { startAuthServer } from '../../src/demo/auth-server.js';
import { http11, rawRequest } from '../helpers/raw.js';
import { B, SHARED_OPENAPI, startTestGateway } from '../helpers/gateway.js';
import { CLI } from '../helpers/process.js';
import { startRecordingUpstream } from '../helpers/upstream.js';
import { spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { closedPort } from './support.js';

const READ = 'https://jans.io/scim/users.read';

t.test('endpoints come from the issuer\'s discovery document', async (t) => {
  const auth = await startAuthServer();
  const up = await startRecordingUpstream();
  const gw = await startTestGateway({
    upstream: { url: up.origin },
    token: { issuer: auth.issuer, introspection: { clientId: auth.clientId, clientSecret: auth.clientSecret }, jwt: {} },
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
    await auth.close();
  });
  for (const jwt of [false, true]) {
    const token = await auth.issueToken([READ], { jwt });
    up.reset();
    const res = await rawRequest(gw.port, http11('GET', `${B}/Users`, [`Authorization: Bearer ${token}`]));
    t.equal(res.status, 200, `${jwt ? 'JWT' : 'opaque'} token validated through discovered endpoints`);
    t.equal(up.requests.length, 1);
  }
  t.ok(auth.counts.introspection >= 1, 'the discovered introspection endpoint was called');
  t.ok(auth.counts.jwks >= 1, 'the discovered JWKS was fetched');
});

t.test('an issuer that cannot be read is a runtime failure: exit 1, the issuer named', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'scopegate-discovery-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'scopegate.json');
  const port = await closedPort();
  writeFileSync(file, JSON.stringify({
    listen: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 }, openapi: { file: SHARED_OPENAPI },
    token: { issuer: `http://127.0.0.1:${port}`, jwt: {} },
  }));
  const run = spawnSync(process.execPath, [CLI, 'serve', '--config', file], { encoding: 'utf8', timeout: 30000 });
  t.equal(run.status, 1);
  t.match(run.stderr, /token\.issuer: cannot read http:\/\/127\.0\.0\.1:\d+\/\.well-known\/openid-configuration/);
});

// OpenID Connect Discovery section 4.3, RFC 8414 section 3.3: the document must name the issuer
// it was fetched for; one that names another (or none) is not that issuer's, and its endpoints
// are not used. A config that points at the wrong document: exit 2, token.issuer named.
t.test('a discovery document that names another issuer, or none, is refused: exit 2', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'scopegate-discovery-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  let named: unknown;
  const server = createServer((_req, res) => {
    const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({
      ...(named === undefined ? {} : { issuer: named }),
      jwks_uri: `${origin}/jwks`, introspection_endpoint: `${origin}/introspect`,
    }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const file = join(dir, 'scopegate.json');
  writeFileSync(file, JSON.stringify({
    listen: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 }, openapi: { file: SHARED_OPENAPI },
    upstream: { url: 'http://127.0.0.1:9' }, token: { issuer, jwt: {} },
  }));
  // Asynchronous: the document is served by this process.
  const serve = () => new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [CLI, 'serve', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30000);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
  for (const [name, value, pattern] of [
    ['another issuer', 'https://evil.example', /token\.issuer: the discovery document at http:\/\/127\.0\.0\.1:\d+\/\.well-known\/openid-configuration names another issuer, "https:\/\/evil\.example"/],
    ['no issuer', undefined, /token\.issuer: the discovery document at .* names no issuer/],
    ['an issuer that only starts like it', `${issuer}.evil`, /names another issuer/],
    // Identical: token.issuer is also what every JWT's iss must equal, exactly.
    ['the issuer with a trailing slash', `${issuer}/`, /names another issuer/],
  ] as const) {
    named = value;
    const run = await serve();
    t.equal(run.status, 2, `${name}: exit 2`);
    t.match(run.stderr + run.stdout, pattern, `${name}: token.issuer named, and why`);
  }
  // Control: the same document naming this issuer is used.
  named = issuer;
  const gw = await startTestGateway({ upstream: { url: 'http://127.0.0.1:9' }, token: { issuer, jwt: {} } });
  t.ok(gw.port > 0, 'the issuer\'s own document: the gateway starts');
  await gw.close();
});
