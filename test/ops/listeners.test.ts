// The two listeners: when one cannot bind, `scopegate serve` stops what it started (the other
// port included) and exits 1 naming the key and the address; `scopegate check` refuses (exit 2) a
// config whose admin listener would take the proxy listener's socket.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { CLI, ensureBuilt, runCli, type CliResult } from '../helpers/cli.js';
import { SHARED_OPENAPI } from '../helpers/gateway.js';
import { freePort } from '../helpers/redis.js';

const tmp = mkdtempSync(join(tmpdir(), 'scopegate-listeners-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
t.before(ensureBuilt);

const TOKEN = { jwt: { jwksUri: 'http://127.0.0.1:1/jwks', issuer: 'https://issuer.test' } };

function writeConfig(name: string, listen: object, admin: object): string {
  const file = join(tmp, name);
  writeFileSync(file, JSON.stringify({ listen, admin, openapi: { file: SHARED_OPENAPI }, token: TOKEN }));
  return file;
}

/** `scopegate serve`, killed (and reported as such) if it has not exited after `limitMs`. */
function serveUntilExit(file: string, limitMs = 15000): Promise<CliResult & { killed: boolean }> {
  const child = spawn(process.execPath, [CLI, 'serve', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let killed = false;
  child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const timer = setTimeout(() => {
    killed = true;
    child.kill('SIGKILL');
  }, limitMs);
  return new Promise((resolve) => child.on('close', (code) => {
    clearTimeout(timer);
    resolve({ code, stdout, stderr, killed });
  }));
}

async function occupy(): Promise<{ server: Server; port: number }> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as AddressInfo).port };
}

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(true));
  });
}

t.test('admin port in use: serve closes the proxy port and exits 1 naming admin.port', async (t) => {
  const busy = await occupy();
  t.teardown(() => busy.server.close());
  const proxyPort = await freePort();
  const result = await serveUntilExit(writeConfig('admin-busy.json', { host: '127.0.0.1', port: proxyPort }, { host: '127.0.0.1', port: busy.port }));
  t.notOk(result.killed, 'the process exited by itself');
  t.equal(result.code, 1, 'exit 1: a runtime failure');
  t.match(result.stderr, new RegExp(`admin\\.port: cannot listen on 127\\.0\\.0\\.1:${busy.port} \\(EADDRINUSE`), 'names the key and the address');
  t.ok(await refused(proxyPort), 'the proxy port is no longer served');
});

t.test('proxy port in use: serve exits 1 naming listen.port', async (t) => {
  const busy = await occupy();
  t.teardown(() => busy.server.close());
  const result = await serveUntilExit(writeConfig('listen-busy.json', { host: '127.0.0.1', port: busy.port }, { host: '127.0.0.1', port: 0 }));
  t.notOk(result.killed, 'the process exited by itself');
  t.equal(result.code, 1);
  t.match(result.stderr, new RegExp(`listen\\.port: cannot listen on 127\\.0\\.0\\.1:${busy.port} \\(EADDRINUSE`));
});

t.test('check refuses an admin listener on the proxy listener\'s socket', async (t) => {
  const cases: Array<[name: string, listen: object, admin: object]> = [
    ['same host and port', { host: '127.0.0.1', port: 18480 }, { host: '127.0.0.1', port: 18480 }],
    ['proxy on 0.0.0.0', { host: '0.0.0.0', port: 18480 }, { host: '127.0.0.1', port: 18480 }],
    ['admin on ::', { host: '127.0.0.1', port: 18480 }, { host: '::', port: 18480 }],
    ['localhost and 127.0.0.1', { host: 'localhost', port: 18480 }, { host: '127.0.0.1', port: 18480 }],
  ];
  for (const [name, listen, admin] of cases) {
    const { code, stderr } = await runCli(['check', '--config', writeConfig('same.json', listen, admin)]);
    t.equal(code, 2, `${name}: exit 2`);
    t.match(stderr, /^ {2}admin\.port: must differ from listen\.port: /m, `${name}: names admin.port`);
  }
  const apart: Array<[name: string, listen: object, admin: object]> = [
    ['different ports', { host: '0.0.0.0', port: 18480 }, { host: '0.0.0.0', port: 18490 }],
    ['different hosts, neither a wildcard', { host: '127.0.0.1', port: 18480 }, { host: '127.0.0.2', port: 18480 }],
    ['both on port 0', { host: '127.0.0.1', port: 0 }, { host: '127.0.0.1', port: 0 }],
  ];
  for (const [name, listen, admin] of apart) {
    const { code, stderr } = await runCli(['check', '--config', writeConfig('apart.json', listen, admin)]);
    t.equal(code, 0, `${name}: valid`, { stderr });
  }
});

t.test('an address that is not this machine\'s, or no address at all: serve exits 1 naming the host key', async (t) => {
  const cases: Array<[name: string, listen: object, admin: object, expected: RegExp]> = [
    ['listen.host not local', { host: '192.0.2.1', port: 0 }, { host: '127.0.0.1', port: 0 }, /listen\.host: cannot listen on 192\.0\.2\.1:0 \(EADDRNOTAVAIL/],
    ['admin.host unresolvable', { host: '127.0.0.1', port: 0 }, { host: 'no-such-host.invalid', port: 0 }, /admin\.host: cannot listen on no-such-host\.invalid:0 \((ENOTFOUND|EAI_AGAIN)/],
  ];
  for (const [name, listen, admin, expected] of cases) {
    const result = await serveUntilExit(writeConfig('host.json', listen, admin));
    t.notOk(result.killed, `${name}: the process exited by itself`);
    t.equal(result.code, 1, `${name}: exit 1`);
    t.match(result.stderr, expected, `${name}: names the host key`);
  }
});
