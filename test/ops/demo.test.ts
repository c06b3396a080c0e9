// `scopegate demo` as a newcomer runs it: a child process that prints the client credentials and
// the two curl commands of the jans docs; the same requests get a ListResponse with "Admin", and
// 401 without a token.
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type AddressInfo } from 'node:net';
import t from 'tap';
import { request } from 'undici';
import { CLI } from '../helpers/process.js';
import { freePort } from '../helpers/redis.js';

t.test('the demo prints working commands', async (t) => {
  const port = await freePort();
  // Its own temporary folder, to see what the demo leaves there.
  const tmp = mkdtempSync(join(tmpdir(), 'scopegate-demo-test-'));
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
  const child = spawn(process.execPath, [CLI, 'demo', '--port', String(port)], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TMPDIR: tmp } });
  t.teardown(() => {
    child.kill('SIGTERM');
  });
  let out = '';
  child.stdout.on('data', (c: Buffer) => {
    out += c.toString();
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`demo did not start: ${out}`)), 30000);
    child.stdout.on('data', () => {
      if (out.includes('Ctrl-C stops the demo')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => reject(new Error(`demo exited ${code}: ${out}`)));
  });
  const id = /SCIM client id:\s+(\S+)/.exec(out)?.[1];
  const secret = /SCIM client secret:\s+(\S+)/.exec(out)?.[1];
  const tokenCurl = /curl -u '([^']+)' -d grant_type=client_credentials -d scope='([^']+)' (\S+)/.exec(out);
  const scimCurl = /curl -G -H 'Authorization: Bearer \.\.\.' --data-urlencode 'filter=displayName co "Admin"' (\S+)/.exec(out);
  t.ok(id && secret, 'prints the client id and secret');
  t.ok(tokenCurl, 'prints the token request');
  t.ok(scimCurl, 'prints the SCIM request');
  t.equal(tokenCurl![1], `${id}:${secret}`);
  t.equal(new URL(scimCurl![1]!).port, String(port));

  // 1. The token request, as curl sends it: Basic credentials and a form body.
  const tokenResponse = await request(tokenCurl![3]!, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(tokenCurl![1]!).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', scope: tokenCurl![2]! }).toString(),
  });
  t.equal(tokenResponse.statusCode, 200);
  const { access_token: token } = (await tokenResponse.body.json()) as { access_token: string };
  t.type(token, 'string');

  // 2. curl -G --data-urlencode 'filter=displayName co "Admin"' encodes the query like this.
  const url = `${scimCurl![1]}?filter=displayName%20co%20%22Admin%22`;
  const list = await request(url, { headers: { authorization: `Bearer ${token}` } });
  const body = await list.body.text();
  t.equal(list.statusCode, 200);
  t.match(body, /urn:ietf:params:scim:api:messages:2\.0:ListResponse/);
  t.match(body, /"displayName":"Admin"/);
  // The resources' locations name the gateway, not the SCIM server behind it.
  const locations = [...body.matchAll(/"location":"([^"]+)"/g)].map((m) => m[1]!);
  t.ok(locations.length > 0, 'the resources have locations');
  t.ok(locations.every((l) => l.startsWith(scimCurl![1]!)), `they name the gateway (${locations[0]})`);

  const anonymous = await request(url);
  t.equal(anonymous.statusCode, 401);
  t.match(anonymous.headers['www-authenticate'], /^Bearer realm="scopegate"$/);
  t.match(await anonymous.body.text(), /"status":"401"/);

  // The demo's config holds the client secret: gone once the demo stops.
  t.equal(readdirSync(tmp).filter((name) => name.startsWith('scopegate-demo-')).length, 1, 'the config is in the temporary folder while the demo runs');
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  t.equal(await exited, 0, 'Ctrl-C (SIGTERM): exit 0');
  t.same(readdirSync(tmp).filter((name) => name.startsWith('scopegate-demo-')), [], 'and is removed when it stops');
});

/** `scopegate demo ARGS` to its end, killed (and failed) if it is still running after `timeoutMs`. */
function runDemo(args: string[], timeoutMs = 20000): Promise<{ code: number | null; stderr: string; hung: boolean }> {
  const child = spawn(process.execPath, [CLI, 'demo', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve({ code: null, stderr, hung: true });
    }, timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr, hung: false });
    });
  });
}

t.test('the demo on a port already in use exits 1 naming listen.port, instead of running on without a gateway', async (t) => {
  const taken = createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  t.teardown(() => taken.close());
  const { port } = taken.address() as AddressInfo;
  const { code, stderr, hung } = await runDemo(['--port', String(port)]);
  t.notOk(hung, 'the demo ends');
  t.equal(code, 1);
  t.match(stderr, new RegExp(`listen\\.port: cannot listen on 127\\.0\\.0\\.1:${port} \\(EADDRINUSE`));
});

t.test('demo --port takes a port number: anything else is bad usage (exit 2)', async (t) => {
  for (const port of ['abc', '', '8080x', '65536', '1.5']) {
    const { code, stderr, hung } = await runDemo(['--port', port], 10000);
    t.notOk(hung, `--port '${port}': the demo ends`);
    t.equal(code, 2, `--port '${port}': exit 2`);
    t.match(stderr, /--port must be a port number \(0-65535\)/, `--port '${port}': says why`);
  }
});
