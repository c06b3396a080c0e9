// Shared helpers of the benchmark scripts: child processes (each tracked and stopped by its own
// pid), `scopegate serve` as operators run it, autocannon runs with microsecond latencies, stats.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, fstatSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { cpus, freemem, loadavg, release, totalmem } from 'node:os';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import autocannon from 'autocannon';

const here = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(here, '..');
export const BENCH = here;
export const CLI = resolve(ROOT, 'dist', 'cli.js');

/**
 * The node flags of the `scopegate` binary: those its interpreter line gives
 * (`#!/usr/bin/env -S node --no-memory-reducer`). scopegate is started with them, as the binary
 * and the Dockerfile start it, and the bare proxies it is compared with are given the same.
 */
export function binNodeArgs(cli = CLI) {
  const first = readFileSync(cli, 'utf8').split('\n', 1)[0];
  const m = /^#!\S*env(?: -S)? node((?: --[a-z0-9-]+)*)$/.exec(first);
  if (!m) throw new Error(`${cli}: unexpected interpreter line: ${first}`);
  return m[1].split(' ').filter(Boolean);
}

/** The real jans-scim OpenAPI file, read where the project's tests read it (never copied). */
export const SHARED_OPENAPI = resolve(ROOT, '..', 'shared', 'jans-scim-openapi.yaml');
export const NGINX = '/usr/sbin/nginx';
export const BASE_PATH = '/jans-scim/restv1/v2';
const require = createRequire(import.meta.url);

// ---------------------------------------------------------------- child processes

const children = new Set();

/** Tracks a child so that it is stopped (by its pid) when the benchmark ends, however it ends. */
export function track(child, name) {
  const entry = { child, name };
  children.add(entry);
  child.once('exit', () => children.delete(entry));
  return child;
}

/** Stops one child by its pid: SIGTERM, then SIGKILL after `graceMs`. Resolves on exit. */
export function stopChild(child, graceMs = 5000, signal = 'SIGTERM') {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child?.exitCode ?? null);
  return new Promise((done) => {
    const timer = setTimeout(() => {
      try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ }
    }, graceMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      done(code);
    });
    try { process.kill(child.pid, signal); } catch { clearTimeout(timer); done(null); }
  });
}

/** Stops every tracked child, each by its own pid. */
export async function stopAll() {
  await Promise.all([...children].map(({ child }) => stopChild(child, 3000)));
}

/**
 * Runs a bench script's `main`. However it ends (done, failed: the error printed and exit code 1,
 * or SIGINT/SIGTERM: exit 130), the child processes are stopped, then the script's own `cleanup`
 * runs (its temporary files, its AS), once. `cleanup` must not throw.
 */
export async function runScript(main, cleanup = async () => {}) {
  let finished;
  const finish = () => (finished ??= stopAll().then(cleanup));
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.once(signal, () => {
      console.log(`\n${signal}: stopping the child processes`);
      void finish().finally(() => process.exit(130));
    });
  }
  try {
    await main();
  } catch (error) {
    console.error(error);
    process.exitCode = 1;
  } finally {
    await finish();
  }
}

/** Last resort on exit: SIGKILL what is left, by pid. */
process.on('exit', () => {
  for (const { child } of children) {
    try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ }
  }
});

/** Spawns `node script args` and resolves with the first JSON line it prints on stdout. */
export function startNodeChild(script, args = [], { name = script, timeoutMs = 15000, nodeArgs = [] } = {}) {
  const child = track(spawn(process.execPath, [...nodeArgs, script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }), name);
  return firstJsonLine(child, name, timeoutMs);
}

function firstJsonLine(child, name, timeoutMs) {
  return new Promise((resolvePromise, reject) => {
    let buffer = '';
    let stderr = '';
    const timer = setTimeout(() => reject(new Error(`${name} did not start in ${timeoutMs} ms: ${stderr}`)), timeoutMs);
    child.stderr.on('data', (c) => { stderr += c; });
    const onData = (c) => {
      buffer += c;
      const i = buffer.indexOf('\n');
      if (i < 0) return;
      clearTimeout(timer);
      child.stdout.off('data', onData);
      child.stdout.resume();
      try {
        resolvePromise({ child, pid: child.pid, info: JSON.parse(buffer.slice(0, i)) });
      } catch (error) {
        reject(new Error(`${name}: unexpected first line ${buffer.slice(0, i)} (${error.message})`));
      }
    };
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited ${code}: ${stderr}`));
    });
  });
}

/** A free loopback port (for the few programs that cannot listen on port 0 and report it). */
export function freePort() {
  return new Promise((resolvePromise, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePromise(port));
    });
  });
}

/** Resolves once something accepts connections on 127.0.0.1:port. */
export function waitPort(port, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolvePromise, reject) => {
    const attempt = () => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => { socket.destroy(); resolvePromise(); });
      socket.once('error', () => {
        socket.destroy();
        if (Date.now() > deadline) reject(new Error(`nothing listens on ${port} after ${timeoutMs} ms`));
        else setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * `node [nodeArgs] dist/cli.js serve --config FILE`, the way operators run it. stdout (pino access
 * lines) goes to `logFile` so that the load generator does not pay for reading it; the
 * "scopegate listening" line is read back from that file. With logFile 'pipe' the lines come
 * through a pipe instead (startup timing), and `spawnedAt` is performance.now() at spawn.
 */
export async function startServe(configFile, { logFile, nodeArgs = [], env = {}, timeoutMs = 30000, name = 'scopegate', ports, cli = CLI } = {}) {
  if (ports) return startServeOnPorts(configFile, { logFile, nodeArgs, env, timeoutMs, name, ports, cli });
  const piped = logFile === 'pipe';
  const fd = piped ? 'pipe' : openSync(logFile, 'a');
  const spawnedAt = performance.now();
  const child = track(spawn(process.execPath, [...binNodeArgs(cli), ...nodeArgs, cli, 'serve', '--config', configFile], {
    env: { ...process.env, ...env }, stdio: ['ignore', fd, 'pipe'],
  }), name);
  if (!piped) closeSync(fd);
  let stderr = '';
  child.stderr.on('data', (c) => { stderr += c; });
  const exited = new Promise((done) => child.once('exit', (code) => done(code)));
  const line = await new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => { cleanup(); reject(new Error(`${name} did not start in ${timeoutMs} ms: ${stderr}`)); }, timeoutMs);
    let poll;
    const cleanup = () => { clearTimeout(timer); clearInterval(poll); };
    void exited.then((code) => { cleanup(); reject(new Error(`${name} exited ${code}: ${stderr}`)); });
    const found = (text) => {
      const at = text.indexOf('"scopegate listening"');
      if (at < 0) return false;
      const start = text.lastIndexOf('\n', at) + 1;
      const end = text.indexOf('\n', at);
      cleanup();
      resolvePromise({ text: text.slice(start, end < 0 ? undefined : end), at: performance.now() });
      return true;
    };
    if (piped) {
      // Once the line is seen, the rest of stdout is read and dropped (never buffered).
      let buffer = '';
      child.stdout.setEncoding('utf8');
      const onData = (c) => {
        buffer += c;
        if (!found(buffer)) return;
        buffer = '';
        child.stdout.off('data', onData);
        child.stdout.resume();
      };
      child.stdout.on('data', onData);
    } else {
      poll = setInterval(() => {
        try { found(readFileSync(logFile, 'utf8')); } catch { /* not yet */ }
      }, 20);
    }
  });
  const parsed = JSON.parse(line.text);
  return {
    child, pid: child.pid, proxyUrl: parsed.proxy, adminUrl: parsed.admin, exited, startupMs: line.at - spawnedAt,
    stderr: () => stderr,
    stop: (signal = 'SIGTERM') => stopChild(child, 10000, signal),
  };
}

/**
 * The same for a config whose log level hides the "listening" line: its listeners are on the
 * fixed `ports` {proxy, admin}, and readiness is the admin /healthz answering.
 */
async function startServeOnPorts(configFile, { logFile, nodeArgs, env, timeoutMs, name, ports, cli }) {
  const spawnedAt = performance.now();
  const fd = logFile === 'pipe' ? 'ignore' : openSync(logFile, 'a');
  const child = track(spawn(process.execPath, [...binNodeArgs(cli), ...nodeArgs, cli, 'serve', '--config', configFile], {
    env: { ...process.env, ...env }, stdio: ['ignore', fd, 'pipe'],
  }), name);
  if (typeof fd === 'number') closeSync(fd);
  let stderr = '';
  child.stderr.on('data', (c) => { stderr += c; });
  const exited = new Promise((done) => child.once('exit', (code) => done(code)));
  const adminUrl = `http://127.0.0.1:${ports.admin}`;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${name} exited ${child.exitCode}: ${stderr}`);
    try {
      if ((await get(`${adminUrl}/healthz`, {}, 1000)).status === 200) break;
    } catch { /* not yet */ }
    if (Date.now() > deadline) throw new Error(`${name} did not start in ${timeoutMs} ms: ${stderr}`);
    await sleep(25);
  }
  await waitPort(ports.proxy, 5000);
  return {
    child, pid: child.pid, proxyUrl: `http://127.0.0.1:${ports.proxy}`, adminUrl, exited, startupMs: performance.now() - spawnedAt,
    stderr: () => stderr,
    stop: (signal = 'SIGTERM') => stopChild(child, 10000, signal),
  };
}

// ---------------------------------------------------------------- HTTP one-offs

/** One GET; resolves with {status, text}. Bounded in time. */
export async function get(url, headers = {}, timeoutMs = 10000) {
  const response = await fetch(url, { headers, signal: AbortSignal.timeout(timeoutMs) });
  return { status: response.status, text: await response.text() };
}

/** The admin /metrics as a map `name{labels}` -> number. */
export async function metrics(adminUrl) {
  const { text } = await get(`${adminUrl}/metrics`);
  const out = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

/** VmRSS and VmHWM of a process, in bytes, from /proc/<pid>/status. */
export function procMemory(pid) {
  try {
    const text = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (key) => Number((new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text) ?? [])[1]) * 1024;
    return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
  } catch {
    return { rss: NaN, hwm: NaN };
  }
}

/** User and system CPU seconds `pid` has used so far, its threads included; NaN if gone. */
export function procCpuSplit(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state): utime is field 14, stime field 15
    return { user: Number(fields[11]) / CLK_TCK, system: Number(fields[12]) / CLK_TCK };
  } catch {
    return { user: NaN, system: NaN };
  }
}
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/** The pids whose parent is `pid` (nginx's worker under its master). */
export function childPids(pid) {
  const out = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(entry));
    } catch { /* gone */ }
  }
  return out;
}

// ---------------------------------------------------------------- load

/** A growable array of latencies (ms, float). */
class Samples {
  constructor() { this.data = new Float64Array(1 << 16); this.length = 0; }
  push(v) {
    if (this.length === this.data.length) {
      const next = new Float64Array(this.data.length * 2);
      next.set(this.data);
      this.data = next;
    }
    this.data[this.length++] = v;
  }
  sorted() { return this.data.slice(0, this.length).sort(); }
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

export function median(values) {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

/** The request autocannon would send, prebuilt (same builder, same headers). */
export function buildRequest(url, headers) {
  const build = require('autocannon/lib/httpRequestBuilder.js');
  const u = new URL(url);
  return build({ hostname: u.hostname, port: u.port, path: u.pathname + u.search, method: 'GET' })({ headers });
}

/**
 * One autocannon run. Latencies are recorded from autocannon's per-response hrtime duration
 * (float ms), not from its integer-millisecond histogram, so sub-millisecond differences show.
 * `buffers`: prebuilt requests rotated per request, each connection starting at its own offset
 * (the rotation costs the load generator nothing). `next`: a function returning the next request
 * buffer (cache fill). Always bounded in time (`maxSeconds`).
 */
export async function load({ url, connections = 50, duration, amount, headers = {}, buffers, next, overallRate, maxSeconds }) {
  const samples = new Samples();
  const statuses = {};
  let ok = 0;
  const options = { url, connections, pipelining: 1, headers, timeout: 10 };
  if (amount) options.amount = amount;
  else options.duration = duration;
  if (overallRate) options.overallRate = overallRate;
  if (buffers) {
    let client = 0;
    const stride = Math.max(1, Math.floor(buffers.length / connections));
    options.setupClient = (c) => {
      let i = (client++ * stride) % buffers.length;
      c.getRequestBuffer = () => {
        const b = buffers[i];
        i = i + 1 === buffers.length ? 0 : i + 1;
        return b;
      };
    };
  } else if (next) {
    // autocannon calls getRequestBuffer exactly once per request written (httpClient._doRequest).
    options.setupClient = (c) => { c.getRequestBuffer = next; };
  }
  const started = performance.now();
  let last = started;
  const instance = autocannon(options);
  instance.on('response', (_client, status, _bytes, ms) => {
    samples.push(ms);
    statuses[status] = (statuses[status] ?? 0) + 1;
    if (status >= 200 && status < 300) ok += 1;
    last = performance.now();
  });
  const bound = (maxSeconds ?? (duration ?? 60) + 15) * 1000;
  const guard = setTimeout(() => instance.stop(), bound);
  let result;
  try {
    result = await new Promise((resolvePromise, reject) => instance.then(resolvePromise, reject));
  } finally {
    clearTimeout(guard);
  }
  const elapsed = (last - started) / 1000;
  const sorted = samples.sorted();
  const total = sorted.length;
  return {
    rps: total / Math.max(elapsed, 1e-9),
    okRps: ok / Math.max(elapsed, 1e-9),
    total, ok, elapsed, statuses,
    errors: result.errors, timeouts: result.timeouts, non2xx: total - ok,
    p50: percentile(sorted, 50), p90: percentile(sorted, 90), p99: percentile(sorted, 99), max: sorted[total - 1] ?? NaN,
    mean: total ? sorted.reduce((a, b) => a + b, 0) / total : NaN,
  };
}

// ---------------------------------------------------------------- machine

export function machineInfo() {
  const cpu = cpus();
  let nginx = 'not installed';
  if (existsSync(NGINX)) {
    const r = spawnSync(NGINX, ['-v'], { encoding: 'utf8' });
    nginx = (r.stderr || r.stdout).trim().replace(/^nginx version:\s*/, '');
  }
  let redis = 'not installed';
  const rv = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
  if (rv.status === 0) redis = (/v=(\S+)/.exec(rv.stdout) ?? [])[1] ?? rv.stdout.trim();
  const pkg = (name) => {
    try { return JSON.parse(readFileSync(resolve(ROOT, 'node_modules', name, 'package.json'), 'utf8')).version; } catch { return '?'; }
  };
  return {
    cpu: cpu[0]?.model ?? 'unknown', cores: cpu.length,
    memory: `${(totalmem() / 2 ** 30).toFixed(1)} GiB (free at start ${(freemem() / 2 ** 30).toFixed(1)} GiB)`,
    node: process.version, nginx, redis,
    autocannon: pkg('autocannon'), fastify: pkg('fastify'), undici: pkg('undici'), httpProxy: pkg('@fastify/http-proxy'),
    loadavg: loadavg().map((x) => x.toFixed(2)).join(' '),
    kernel: release(), hypervisor: hypervisor(), ...hostSpeed(),
  };
}

/** The hypervisor the kernel reports (`dmesg`, when readable), else whether the CPU says it runs under one. */
function hypervisor() {
  const r = spawnSync('dmesg', [], { encoding: 'utf8', maxBuffer: 64 * 2 ** 20 });
  const named = r.status === 0 ? /Hypervisor detected: (.+)/.exec(r.stdout) : null;
  if (named) return named[1].trim();
  try {
    return /^flags\s*:.*\bhypervisor\b/m.test(readFileSync('/proc/cpuinfo', 'utf8')) ? 'yes (not named)' : 'none';
  } catch {
    return 'unknown';
  }
}

/**
 * Two readings that tell one host's speed from another's, where req/s alone cannot: how long
 * `node -e 0` takes (median of 5), and what one system call costs (fstat, median of 5 x 20,000).
 * A host where system calls cost several times more (a guest under a paravirtual hypervisor with
 * page-table isolation, say) slows a proxy, whose every request is four of them, far more than it
 * slows plain computation, and not every target alike.
 */
function hostSpeed() {
  const median = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const starts = [];
  for (let i = 0; i < 5; i++) {
    const t0 = process.hrtime.bigint();
    spawnSync(process.execPath, ['-e', '0']);
    starts.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  const calls = [];
  for (let i = 0; i < 5; i++) {
    const t0 = process.hrtime.bigint();
    for (let j = 0; j < 20000; j++) fstatSync(1);
    calls.push(Number(process.hrtime.bigint() - t0) / 20000);
  }
  return { nodeStartMs: median(starts), syscallNs: median(calls) };
}

export const fmt = {
  rps: (x) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : '-'),
  ms: (x) => (Number.isFinite(x) ? x.toFixed(2) : '-'),
  ratio: (x) => (Number.isFinite(x) ? x.toFixed(2) : '-'),
  mb: (x) => (Number.isFinite(x) ? (x / 2 ** 20).toFixed(1) : '-'),
};

/**
 * An open-loop, evenly paced GET generator (node:http, keep-alive): request k is sent at
 * t0 + k/rate (a 1 ms timer releases whatever is due), unlike autocannon's `overallRate`, which
 * releases each connection's quota for the second as one back-to-back burst at the start of each
 * second. Latency is measured from the moment a request is handed to the socket pool to the end
 * of its response. Bounded in time.
 */
export async function paced({ url, headers = {}, rate, duration, maxSockets = 64 }) {
  const { Agent, request } = await import('node:http');
  const agent = new Agent({ keepAlive: true, maxSockets });
  const u = new URL(url);
  const samples = new Samples();
  const statuses = {};
  let errors = 0;
  let ok = 0;
  const total = Math.max(1, Math.round(rate * duration));
  let sent = 0;
  let done = 0;
  const t0 = performance.now();
  await new Promise((resolveAll) => {
    const guard = setTimeout(() => resolveAll(), (duration + 15) * 1000);
    const finish = () => {
      if (++done === total) { clearTimeout(guard); resolveAll(); }
    };
    const fire = () => {
      const start = performance.now();
      const req = request({ host: u.hostname, port: u.port, path: u.pathname + u.search, method: 'GET', headers, agent }, (res) => {
        res.resume();
        res.once('end', () => {
          samples.push(performance.now() - start);
          statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1;
          if (res.statusCode >= 200 && res.statusCode < 300) ok += 1;
          finish();
        });
      });
      req.setTimeout(10000, () => req.destroy(new Error('timeout')));
      req.once('error', () => { errors += 1; finish(); });
      req.end();
    };
    const tick = () => {
      const due = Math.min(total, Math.floor(((performance.now() - t0) * rate) / 1000) + 1);
      while (sent < due) { sent += 1; fire(); }
      if (sent < total) setTimeout(tick, 1);
    };
    tick();
  });
  const elapsed = (performance.now() - t0) / 1000;
  agent.destroy();
  const sorted = samples.sorted();
  return {
    rps: sorted.length / elapsed, total: sorted.length, ok, errors, statuses, non2xx: sorted.length - ok,
    p50: percentile(sorted, 50), p90: percentile(sorted, 90), p99: percentile(sorted, 99), max: sorted[sorted.length - 1] ?? NaN,
  };
}
