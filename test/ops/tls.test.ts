// HTTPS termination (listen.tls) and a verified https upstream (upstream.caFile): without the CA
// the upstream's certificate is refused (502), never silently accepted.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { Agent, request } from 'undici';
import { ensureBuilt, runCli } from '../helpers/cli.js';
import { B, SHARED_OPENAPI, startTestGateway } from '../helpers/gateway.js';

const dir = mkdtempSync(join(tmpdir(), 'scopegate-tls-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const cert = join(dir, 'cert.pem');
const key = join(dir, 'key.pem');
execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });

const token = { jwt: { jwksUri: 'http://127.0.0.1:1/jwks', issuer: 'https://issuer.test' } };

t.test('https on the proxy port and to the upstream, verified with caFile', async (t) => {
  const upstream = createServer({ cert: readFileSync(cert), key: readFileSync(key) }, (req, res) => {
    res.writeHead(200, { 'content-type': 'application/scim+json' });
    res.end(JSON.stringify({ path: req.url }));
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  const origin = `https://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  const verified = await startTestGateway({ listen: { tls: { certFile: cert, keyFile: key } }, upstream: { url: origin, caFile: cert }, token });
  const unverified = await startTestGateway({ upstream: { url: origin }, token });
  t.teardown(async () => {
    await verified.close();
    await unverified.close();
    upstream.close();
  });
  t.match(verified.url, /^https:/);
  const dispatcher = new Agent({ connect: { ca: readFileSync(cert) } });
  const ok = await request(`${verified.url}${B}/Schemas`, { dispatcher });
  t.equal(ok.statusCode, 200, 'TLS terminated, upstream verified with the CA');
  t.same(await ok.body.json(), { path: `${B}/Schemas` });

  const refused = await request(`${unverified.url}${B}/Schemas`);
  t.equal(refused.statusCode, 502, 'an unverifiable upstream certificate is refused');
  t.match(await refused.body.text(), /"status":"502"/);
  await dispatcher.close();
});

t.test('check and serve refuse a missing or garbage PEM file with exit 2, naming the key', async (t) => {
  await ensureBuilt();
  const garbage = join(dir, 'garbage.pem');
  writeFileSync(garbage, 'not a certificate\n');
  const cases: Array<[name: string, config: object, expected: RegExp]> = [
    ['missing certFile', { listen: { tls: { certFile: join(dir, 'absent.pem'), keyFile: key } } }, /^ {2}listen\.tls\.certFile: cannot read .*absent\.pem \(ENOENT\)$/m],
    ['garbage keyFile', { listen: { tls: { certFile: cert, keyFile: garbage } } }, /^ {2}listen\.tls\.keyFile: .*garbage\.pem holds no PEM private key/m],
    ['garbage caFile', { upstream: { caFile: garbage } }, /^ {2}upstream\.caFile: .*garbage\.pem holds no PEM certificate/m],
  ];
  for (const [name, config, expected] of cases) {
    const file = join(dir, 'scopegate.json');
    writeFileSync(file, JSON.stringify({ ...config, listen: { host: '127.0.0.1', port: 0, ...(config as { listen?: object }).listen }, admin: { host: '127.0.0.1', port: 0 }, openapi: { file: SHARED_OPENAPI }, token }));
    for (const command of ['check', 'serve']) {
      const { code, stderr } = await runCli([command, '--config', file]);
      t.equal(code, 2, `${command}, ${name}: exit 2`);
      t.match(stderr, expected, `${command}, ${name}: names the key`);
      t.notMatch(stderr, /error:[0-9A-F]{8}|ENOENT: no such file/, `${command}, ${name}: no raw OpenSSL or fs message`);
    }
  }
});
