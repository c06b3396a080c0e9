// Summarises a V8 .cpuprofile (node --cpu-prof): self time by function and by owner (scopegate's
// own files, each package, node core, V8/native, GC, idle), and inclusive time of scopegate's
// functions. Optionally restricted to a time window (the load phase).
//
//   node bench/cpuprofile.js FILE.cpuprofile [--top 30]
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ROOT } from './lib.js';

/** Who a call frame belongs to. */
export function ownerOf(frame) {
  const url = frame.url ?? '';
  if (!url) {
    if (/^\((garbage collector|program|idle|root)\)$/.test(frame.functionName)) return frame.functionName;
    return '(V8 builtins / native)';
  }
  let path = url;
  if (url.startsWith('file://')) {
    try { path = fileURLToPath(url); } catch { /* keep */ }
  }
  const nm = path.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const rest = path.slice(nm + '/node_modules/'.length).split('/');
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  if (path.startsWith(`${ROOT}/dist/`)) return `scopegate ${relative(ROOT, path)}`;
  if (path.startsWith(`${ROOT}/`)) return relative(ROOT, path);
  if (url.startsWith('node:')) {
    const m = /^node:(?:internal\/)?([^/]+)/.exec(url);
    return `node:${m ? m[1] : url.slice(5)}`;
  }
  return path;
}

function label(frame) {
  const name = frame.functionName || '(anonymous)';
  const url = frame.url ?? '';
  if (!url) return name;
  let path = url;
  if (url.startsWith('file://')) {
    try { path = fileURLToPath(url); } catch { /* keep */ }
  }
  const nm = path.lastIndexOf('/node_modules/');
  const short = nm >= 0 ? path.slice(nm + '/node_modules/'.length) : path.startsWith(`${ROOT}/`) ? relative(ROOT, path) : path;
  return `${name} ${short}:${frame.lineNumber + 1}`;
}

/**
 * Analyses a profile. `window` = [startUs, endUs] in the profile's clock (CLOCK_MONOTONIC
 * microseconds, like process.hrtime): samples outside are ignored.
 */
export function analyse(profile, window) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map();
  let t = profile.startTime;
  let total = 0;
  let inWindow = 0;
  const counted = new Map();
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i] ?? 0;
    const dt = profile.timeDeltas[i + 1] ?? 0;
    if (window && (t < window[0] || t > window[1])) continue;
    inWindow += 1;
    total += dt;
    const id = profile.samples[i];
    self.set(id, (self.get(id) ?? 0) + dt);
    // inclusive: every distinct function on the stack gets the sample once
    const seen = new Set();
    for (let n = id; n !== undefined; n = parent.get(n)) {
      const key = label(byId.get(n).callFrame);
      if (seen.has(key)) continue;
      seen.add(key);
      counted.set(key, (counted.get(key) ?? 0) + dt);
    }
  }
  const fnSelf = new Map();
  const ownerSelf = new Map();
  for (const [id, us] of self) {
    const frame = byId.get(id).callFrame;
    const key = label(frame);
    const owner = ownerOf(frame);
    const e = fnSelf.get(key) ?? { fn: key, owner, us: 0 };
    e.us += us;
    fnSelf.set(key, e);
    ownerSelf.set(owner, (ownerSelf.get(owner) ?? 0) + us);
  }
  const busy = total - (ownerSelf.get('(idle)') ?? 0);
  return {
    totalUs: total, busyUs: busy, samples: inWindow,
    functions: [...fnSelf.values()].sort((a, b) => b.us - a.us),
    owners: [...ownerSelf].map(([owner, us]) => ({ owner, us })).sort((a, b) => b.us - a.us),
    inclusive: [...counted].map(([fn, us]) => ({ fn, us })).sort((a, b) => b.us - a.us),
  };
}

/** Markdown/plain-text report of an analysis. */
export function format(a, { top = 30, requests } = {}) {
  const pct = (us) => `${((100 * us) / Math.max(1, a.busyUs)).toFixed(1)}%`;
  const per = (us) => (requests ? ` | ${(us / requests).toFixed(2)}` : '');
  const perHead = requests ? ' | us/request |' : ' |';
  const perRule = requests ? '---:|' : '';
  const L = [];
  L.push(`samples ${a.samples}, ${(a.totalUs / 1e6).toFixed(2)} s profiled, ${(a.busyUs / 1e6).toFixed(2)} s not idle (percentages are of the non-idle time)${requests ? `; ${requests} requests answered in the window: ${(a.busyUs / requests).toFixed(1)} us of main-thread time per request` : ''}`, '');
  L.push('### Self time by owner', '', `| owner | self ms | %${perHead}`, `|---|---:|---:|${perRule}`);
  for (const o of a.owners) if (o.owner !== '(idle)') L.push(`| ${o.owner} | ${(o.us / 1000).toFixed(0)} | ${pct(o.us)}${per(o.us)} |`);
  const sum = (pred) => a.owners.filter((o) => pred(o.owner)).reduce((x, o) => x + o.us, 0);
  const own = sum((o) => o.startsWith('scopegate '));
  L.push('', `scopegate's own code (dist/*.js) self time: ${pct(own)}; fastify + @fastify/*: ${pct(sum((o) => o === 'fastify' || o.startsWith('@fastify/') || o === 'find-my-way' || o === 'light-my-request' || o === 'avvio' || o === 'fast-json-stringify'))}; undici: ${pct(sum((o) => o === 'undici'))}; pino + sonic-boom: ${pct(sum((o) => o === 'pino' || o === 'sonic-boom' || o === 'fast-redact' || o === '@pinojs/redact' || o === 'quick-format-unescaped' || o === 'atomic-sleep'))}; prom-client: ${pct(sum((o) => o === 'prom-client'))}; lru-cache: ${pct(sum((o) => o === 'lru-cache'))}; node core: ${pct(sum((o) => o.startsWith('node:')))}; V8 builtins/native: ${pct(sum((o) => o === '(V8 builtins / native)'))}; GC: ${pct(sum((o) => o === '(garbage collector)'))}`, '');
  L.push(`### Top ${top} functions by self time`, '', `| self ms | %${requests ? ' | us/request' : ''} | function | owner |`, `|---:|---:|${perRule}---|---|`);
  for (const f of a.functions.filter((x) => x.owner !== '(idle)').slice(0, top)) L.push(`| ${(f.us / 1000).toFixed(0)} | ${pct(f.us)}${per(f.us)} | \`${f.fn}\` | ${f.owner} |`);
  L.push('', "### scopegate's own functions (self time)", '', `| self ms | %${requests ? ' | us/request' : ''} | function |`, `|---:|---:|${perRule}---|`);
  for (const f of a.functions.filter((x) => x.owner.startsWith('scopegate ')).slice(0, 25)) L.push(`| ${(f.us / 1000).toFixed(0)} | ${pct(f.us)}${per(f.us)} | \`${f.fn}\` |`);
  L.push('', "### Inclusive time (self + callees) of scopegate's functions", '', `| total ms | %${requests ? ' | us/request' : ''} | function |`, `|---:|---:|${perRule}---|`);
  for (const f of a.inclusive.filter((x) => /(^|\s)dist\//.test(x.fn)).slice(0, 25)) L.push(`| ${(f.us / 1000).toFixed(0)} | ${pct(f.us)}${per(f.us)} | \`${f.fn}\` |`);
  return L.join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '30' } } });
  if (positionals.length !== 1) {
    console.error('usage: node bench/cpuprofile.js FILE.cpuprofile [--top N]');
    process.exit(2);
  }
  const profile = JSON.parse(readFileSync(positionals[0], 'utf8'));
  console.log(format(analyse(profile), { top: Number(values.top) }));
}
