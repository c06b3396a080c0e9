// A/B of two builds of scopegate, with the stock bare proxy as the reference, side by side.
//
//   node bench/compare.js [--base REV] [--token opaque|jwt] [--forks 3] [--rounds 5] [--duration 5]
//
// `base` is scopegate built from git revision REV (default HEAD~1) in a temporary worktree, `head`
// the working tree's own build (dist/, made by `npm run bench:compare`), `bare-proxy` the stock
// @fastify/http-proxy (bench/bare-proxy.js). Each runs as --forks processes, all alive at once;
// every process is measured in every round (serpentine order, one uncounted second of load
// first), and a target's figure is the median over its forks and rounds. What a change to the
// gateway costs or saves is the difference between base and head in the same run: two full
// `npm run bench` runs on this machine differ by more than most single changes.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { BASE_PATH, BENCH, CLI, binNodeArgs, ROOT, SHARED_OPENAPI, freePort, load, machineInfo, median, procCpuSplit, runScript, startNodeChild, startServe } from './lib.js';

const { values } = parseArgs({
  options: {
    base: { type: 'string', default: 'HEAD~1' },
    token: { type: 'string', default: 'opaque' },
    forks: { type: 'string', default: '3' },
    rounds: { type: 'string', default: '5' },
    duration: { type: 'string', default: '5' },
    connections: { type: 'string', default: '50' },
  },
});
const whole = (name) => {
  const n = Number(values[name]);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name}: a whole number, 1 or more`);
  return n;
};
const forks = whole('forks');
const rounds = whole('rounds');
const duration = whole('duration');
const connections = whole('connections');
if (!['opaque', 'jwt'].includes(values.token)) throw new Error('--token: opaque or jwt');
const PATH = `${BASE_PATH}/Users?count=10`;
const tmp = mkdtempSync(join(tmpdir(), 'scopegate-compare-'));
const worktree = join(tmp, 'base');
let auth;

await runScript(async () => {
  const rev = execFileSync('git', ['rev-parse', '--short', values.base], { cwd: ROOT, encoding: 'utf8' }).trim();
  console.log(`compare: base ${values.base} (${rev}) against the working tree, ${values.token} token; ${forks} forks x ${rounds} rounds x ${duration} s; ${machineInfo().cpu}`);
  execFileSync('git', ['worktree', 'add', '--detach', worktree, rev], { cwd: ROOT, stdio: 'ignore' });
  symlinkSync(join(ROOT, 'node_modules'), join(worktree, 'node_modules'));
  execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], { cwd: worktree, stdio: 'inherit' });

  const { info } = await startNodeChild(join(BENCH, 'upstream.js'), [], { name: 'upstream' });
  const upstream = `http://127.0.0.1:${info.port}`;
  const { startAuthServer, SCIM_SCOPES } = await import('../dist/demo/auth-server.js');
  auth = await startAuthServer({ accessTokenTtlSeconds: 3600 });
  const jwt = values.token === 'jwt';
  const bearer = await auth.issueToken([...SCIM_SCOPES], { jwt });
  const token = jwt
    ? { jwt: { jwksUri: auth.jwksUri, issuer: auth.issuer } }
    : { introspection: { endpoint: auth.introspectionEndpoint, clientId: auth.clientId, clientSecret: auth.clientSecret, authMethod: 'client_secret_basic' } };

  const builds = [['base', join(worktree, 'dist', 'cli.js')], ['head', CLI]];
  const targets = [];
  for (let fork = 0; fork < forks; fork++) {
    for (const [name, cli] of builds) {
      const ports = { proxy: await freePort(), admin: await freePort() };
      const config = join(tmp, `${name}-${fork}.json`);
      writeFileSync(config, JSON.stringify({
        listen: { host: '127.0.0.1', port: ports.proxy }, admin: { host: '127.0.0.1', port: ports.admin },
        upstream: { url: upstream, connections: 128 }, openapi: { file: SHARED_OPENAPI },
        token: { ...token, cache: { maxTtlSeconds: 3600 } }, log: { level: 'info' },
      }));
      const sg = await startServe(config, { logFile: join(tmp, `${name}-${fork}.log`), name: `${name}#${fork}`, ports, cli });
      targets.push({ name, fork, url: sg.proxyUrl + PATH, pid: sg.pid, rows: [] });
    }
    const bare = await startNodeChild(join(BENCH, 'bare-proxy.js'), ['--upstream', upstream, '--connections', '128'], { name: `bare-proxy#${fork}`, nodeArgs: binNodeArgs() });
    targets.push({ name: 'bare-proxy', fork, url: `http://127.0.0.1:${bare.info.port}${PATH}`, pid: bare.pid, rows: [] });
  }
  const headers = { authorization: `Bearer ${bearer}` };
  const cpu = (pid) => {
    const { user, system } = procCpuSplit(pid);
    return user + system;
  };
  for (let round = 0; round < rounds; round++) {
    for (const target of round % 2 === 0 ? targets : [...targets].reverse()) {
      await load({ url: target.url, connections, duration: 1, headers });
      const before = cpu(target.pid);
      const r = await load({ url: target.url, connections, duration, headers });
      if (r.non2xx > 0) throw new Error(`${target.name}#${target.fork}: ${r.non2xx} answers other than 2xx`);
      target.rows.push({ rps: r.total / duration, us: ((cpu(target.pid) - before) * 1e6) / r.total });
    }
    console.log(`round ${round + 1}/${rounds} done`);
  }

  const summary = {};
  for (const target of targets) {
    console.log(`${`${target.name}#${target.fork}`.padEnd(14)} ${target.rows.map((row) => `${row.us.toFixed(0)} µs ${(row.rps / 1000).toFixed(1)}k`).join(' | ')}`);
    (summary[target.name] ??= []).push(...target.rows);
  }
  const figure = (name) => ({ rps: median(summary[name].map((row) => row.rps)), us: median(summary[name].map((row) => row.us)) });
  const base = figure('base');
  const head = figure('head');
  const bare = figure('bare-proxy');
  console.log('');
  for (const [name, f] of [['base', base], ['head', head], ['bare-proxy', bare]]) console.log(`${name.padEnd(10)} ${Math.round(f.rps).toLocaleString('en-US').padStart(7)} req/s  ${f.us.toFixed(1)} µs/request`);
  console.log(`\nhead / base ${(head.rps / base.rps).toFixed(3)} (req/s), ${(head.us - base.us).toFixed(1)} µs/request`);
  console.log(`base / bare-proxy ${(base.rps / bare.rps).toFixed(3)}, head / bare-proxy ${(head.rps / bare.rps).toFixed(3)}`);
}, async () => {
  await auth?.close().catch(() => undefined);
  try {
    execFileSync('git', ['worktree', 'remove', '--force', worktree], { cwd: ROOT, stdio: 'ignore' });
  } catch { /* never added */ }
  rmSync(tmp, { recursive: true, force: true });
});
