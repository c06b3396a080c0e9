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
import { spawnSync } from 'node:child_process';
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
