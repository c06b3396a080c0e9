// scopegate soak: `npm run soak -- --seconds N` (builds first; default 60 s), or `node bench/soak.js`.
//
// One process, everything on 127.0.0.1: the built gateway (dist/app.js), two real oidc-provider
// authorization servers (dist/demo/auth-server.js), a recording node:http upstream, and a load
// loop of --concurrency undici workers. For N seconds:
//   token churn       valid opaque tokens (issued all along), some revoked mid-run (then purged from
//                     the gateway's cache through POST /cache/purge, as an operator would), JWT access
//                     tokens of a 3-second-TTL authorization server used past their expiry, garbage
//   AS flaps          a TCP proxy in front of the introspection endpoint switches between
//                     pass-through and refusing (not listening) every few seconds
//   upstream restarts the upstream is closed and listens again on the same port every few seconds
// Then it prints: requests, wrongly allowed (the upstream received a request whose token was
// revoked, expired or garbage when it was sent: must be 0), unexpected 5xx (anything but a 503
// during an AS outage or a 502 during an upstream restart), RSS at start / peak / end,
// introspection calls per distinct token. Exit 1 when anything was wrongly allowed.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { connect, createServer as createTcpServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { startGateway } = await import(join(ROOT, 'dist', 'app.js'));
const { startAuthServer } = await import(join(ROOT, 'dist', 'demo', 'auth-server.js'));

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '60' },
    concurrency: { type: 'string', default: '20' },
    'as-up-ms': { type: 'string', default: '4000' },
    'as-down-ms': { type: 'string', default: '2000' },
    'upstream-every-ms': { type: 'string', default: '5000' },
    'upstream-down-ms': { type: 'string', default: '500' },
  },
});
const SECONDS = Number(args.seconds);
const CONCURRENCY = Number(args.concurrency);
if (!(SECONDS > 0) || !(CONCURRENCY > 0)) {
  console.error('usage: node bench/soak.js [--seconds N] [--concurrency C]');
  process.exit(2);
}
const AS_UP_MS = Number(args['as-up-ms']);
const AS_DOWN_MS = Number(args['as-down-ms']);
const UPSTREAM_EVERY_MS = Number(args['upstream-every-ms']);
const UPSTREAM_DOWN_MS = Number(args['upstream-down-ms']);
/** The breaker keeps failing fast for up to its cool-down (5 s) after the AS is back. */
const AS_RECOVERY_MS = 5000 + 1000;
/** Slack after an upstream restart (pooled connections to the old listener). */
const UPSTREAM_RECOVERY_MS = 1000;
const SHORT_TTL_SECONDS = 3;
const READ = 'https://jans.io/scim/users.read';
const PATH = '/jans-scim/restv1/v2/Users';

// A hard bound on the whole run, whatever hangs.
const watchdog = setTimeout(() => {
  console.error(`soak: still running ${SECONDS + 60} s after start; giving up`);
  process.exit(3);
}, (SECONDS + 60) * 1000);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const listen = (server, port) => new Promise((ok, fail) => {
  server.once('error', fail);
  server.listen(port, '127.0.0.1', () => {
    server.off('error', fail);
    ok(server.address().port);
  });
});

// ---------------------------------------------------------------- memory

const rss = { start: 0, peak: 0, end: 0 };
/** Heap after a full GC, when run with --expose-gc (a growing RSS alone may be V8 being lazy). */
const heapAfterGc = () => {
  if (typeof globalThis.gc !== 'function') return undefined;
  globalThis.gc();
  return process.memoryUsage().heapUsed;
};
const heap = { start: undefined, end: undefined };
const sampleRss = () => {
  const value = process.memoryUsage().rss;
  rss.peak = Math.max(rss.peak, value);
  return value;
};

// ---------------------------------------------------------------- the upstream (restartable)

/** soak id -> authorization header, for every request the upstream received. */
const reached = new Map();
const upstreamSockets = new Set();
const upstream = createHttpServer((req, res) => {
  reached.set(req.headers['x-soak-id'], req.headers.authorization ?? null);
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/scim+json' });
    res.end('{"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"totalResults":0,"Resources":[]}');
  });
});
upstream.keepAliveTimeout = 2000;
upstream.on('connection', (s) => {
  upstreamSockets.add(s);
  s.on('close', () => upstreamSockets.delete(s));
});
const upstreamPort = await listen(upstream, 0);
const upstreamDown = [];

async function restartUpstream() {
  const window = { from: Date.now(), to: Infinity };
  upstreamDown.push(window);
  await new Promise((r) => {
    upstream.close(() => r());
    for (const s of upstreamSockets) s.destroy();
  });
  await sleep(UPSTREAM_DOWN_MS);
  await listen(upstream, upstreamPort);
  window.to = Date.now();
}

// ---------------------------------------------------------------- authorization servers

const as = await startAuthServer();
const shortAs = await startAuthServer({ accessTokenTtlSeconds: SHORT_TTL_SECONDS });
const asUrl = new URL(as.introspectionEndpoint);

/** The flapping TCP proxy in front of the introspection endpoint: pass-through or not listening. */
const proxySockets = new Set();
const asProxy = createTcpServer((client) => {
  const server = connect(Number(asUrl.port), asUrl.hostname);
  proxySockets.add(client);
  proxySockets.add(server);
  const drop = () => {
    client.destroy();
    server.destroy();
    proxySockets.delete(client);
    proxySockets.delete(server);
  };
  client.on('error', drop).on('close', drop);
  server.on('error', drop).on('close', drop);
  client.pipe(server).pipe(client);
});
const asProxyPort = await listen(asProxy, 0);
const asDown = [];

async function flapAs() {
  const window = { from: Date.now(), to: Infinity };
  asDown.push(window);
  await new Promise((r) => {
    asProxy.close(() => r());
    for (const s of proxySockets) s.destroy();
  });
  await sleep(AS_DOWN_MS);
  await listen(asProxy, asProxyPort);
  window.to = Date.now();
}

// ---------------------------------------------------------------- the gateway

const dir = mkdtempSync(join(tmpdir(), 'scopegate-soak-'));
const configFile = join(dir, 'scopegate.json');
writeFileSync(configFile, JSON.stringify({
  listen: { host: '127.0.0.1', port: 0 },
  admin: { host: '127.0.0.1', port: 0 },
  upstream: { url: `http://127.0.0.1:${upstreamPort}`, timeoutMs: 5000 },
  openapi: { file: join(ROOT, 'config', 'scim-openapi.yaml') },
  token: {
    introspection: {
      endpoint: `http://127.0.0.1:${asProxyPort}${asUrl.pathname}`,
      clientId: as.clientId, clientSecret: as.clientSecret, authMethod: 'client_secret_basic', timeoutMs: 1000,
    },
    // Expired means expired: no clock tolerance, so "sent after exp" is a precise verdict.
    jwt: { jwksUri: shortAs.jwksUri, issuer: shortAs.issuer, clockToleranceSeconds: 0 },
    cache: { maxTtlSeconds: 300, negativeTtlSeconds: 5 },
  },
  log: { level: 'warn' },
}, null, 2));
const logLevels = { warn: 0, error: 0, fatal: 0 };
const gateway = await startGateway(configFile, {
  env: {},
  logDestination: {
    write(line) {
      const level = /"level":(\d+)/.exec(line)?.[1];
      if (level === '40') logLevels.warn += 1;
      else if (level === '50') logLevels.error += 1;
      else if (level === '60') logLevels.fatal += 1;
    },
  },
});

// ---------------------------------------------------------------- tokens

/** token -> { kind, issuedAt, revokedAt?, exp? } */
const tokens = new Map();
const validOpaque = [];
const revoked = [];
const shortJwts = [];

async function issueOpaque() {
  const token = await as.issueToken([READ]);
  tokens.set(token, { kind: 'opaque' });
  validOpaque.push(token);
  if (validOpaque.length > 40) validOpaque.shift();
}

async function issueShortJwt() {
  const token = await shortAs.issueToken([READ], { jwt: true });
  const payload = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
  tokens.set(token, { kind: 'jwt', exp: payload.exp });
  shortJwts.push(token);
  if (shortJwts.length > 20) shortJwts.shift();
}

async function revokeOne() {
  if (validOpaque.length < 5) return;
  const token = validOpaque.splice(Math.floor(Math.random() * validOpaque.length), 1)[0];
  await as.revoke(token);
  const purge = await request(`${gateway.adminUrl}/cache/purge`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token }),
  });
  await purge.body.text();
  // From now on the token must never reach the upstream again.
  tokens.get(token).revokedAt = Date.now();
  revoked.push(token);
}

function garbage() {
  const token = Math.random() < 0.7
    ? randomBytes(24).toString('base64url')
    : `${randomBytes(20).toString('base64url')}.${randomBytes(40).toString('base64url')}.${randomBytes(30).toString('base64url')}`;
  tokens.set(token, { kind: 'garbage' });
  return token;
}

const pick = (list) => list[Math.floor(Math.random() * list.length)];

/**
 * What the token was when a request carrying it was sent. Only `valid` and `expiring` (valid when
 * sent, but within a second of its exp, so a refusal is fine too) may be forwarded.
 */
function stateAt(token, at) {
  const info = tokens.get(token);
  if (!info || info.kind === 'garbage') return 'garbage';
  if (info.revokedAt !== undefined && at >= info.revokedAt) return 'revoked';
  if (info.exp !== undefined && at >= info.exp * 1000) return 'expired';
  if (info.exp !== undefined && at >= info.exp * 1000 - 1000) return 'expiring';
  return 'valid';
}
const MAY_PASS = new Set(['valid', 'expiring']);

function chooseToken() {
  const r = Math.random();
  if (r < 0.45 && validOpaque.length) return pick(validOpaque);
  if (r < 0.60 && revoked.length) return pick(revoked);
  if (r < 0.80 && shortJwts.length) return pick(shortJwts);
  return garbage();
}

// ---------------------------------------------------------------- load

const client = new Agent({ connections: CONCURRENCY, keepAliveTimeout: 4000 });
const results = [];
let nextId = 0;

async function one() {
  const token = chooseToken();
  const id = String(++nextId);
  const sentAt = Date.now();
  const result = { id, token, sentAt, state: stateAt(token, sentAt), status: 0, doneAt: 0, error: undefined };
  try {
    const res = await request(`${gateway.proxyUrl}${PATH}`, {
      dispatcher: client, headers: { authorization: `Bearer ${token}`, 'x-soak-id': id },
      headersTimeout: 15000, bodyTimeout: 15000,
    });
    result.status = res.statusCode;
    await res.body.text();
  } catch (error) {
    result.error = error.code ?? error.message;
  }
  result.doneAt = Date.now();
  results.push(result);
}

// ---------------------------------------------------------------- run

for (let i = 0; i < 30; i++) await issueOpaque();
for (let i = 0; i < 5; i++) await issueShortJwt();
heap.start = heapAfterGc();
rss.start = sampleRss();
as.resetCounts();

const started = Date.now();
const deadline = started + SECONDS * 1000;
let stopping = false;
const background = [];
const every = (ms, fn) => {
  const timer = setInterval(() => {
    if (stopping) return;
    background.push(fn().catch((error) => console.error(`soak: background task failed: ${error.message}`)));
  }, ms);
  return timer;
};
const timers = [
  setInterval(sampleRss, 250),
  every(1000, issueOpaque),
  every(1000, issueShortJwt),
  every(2000, revokeOne),
  every(UPSTREAM_EVERY_MS, restartUpstream),
];
// The AS flaps on its own cycle: up AS_UP_MS, down AS_DOWN_MS.
const asCycle = (async () => {
  while (!stopping) {
    await sleep(AS_UP_MS);
    if (stopping || Date.now() + AS_DOWN_MS > deadline) break;
    await flapAs();
  }
})();

const progress = setInterval(() => {
  const s = Math.round((Date.now() - started) / 1000);
  console.log(`  ${s}s  requests ${results.length}  rss ${(sampleRss() / 1048576).toFixed(0)} MiB`);
}, 5000);

await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
  while (Date.now() < deadline) await one();
}));
stopping = true;
for (const timer of timers) clearInterval(timer);
clearInterval(progress);
await asCycle;
await Promise.allSettled(background);

// ---------------------------------------------------------------- verdicts

const overlaps = (r, windows, slackMs) => windows.some((w) => r.sentAt <= w.to + slackMs && r.doneAt >= w.from);
const wronglyAllowed = [];
for (const r of results) {
  if (!reached.has(r.id)) continue;
  if (reached.get(r.id) !== `Bearer ${r.token}`) wronglyAllowed.push({ ...r, why: 'the upstream saw another credential' });
  else if (!MAY_PASS.has(r.state)) wronglyAllowed.push({ ...r, why: r.state });
}
const unexpected5xx = results.filter((r) => r.status >= 500 && !(
  (r.status === 503 && overlaps(r, asDown, AS_RECOVERY_MS))
  || (r.status === 502 && overlaps(r, upstreamDown, UPSTREAM_RECOVERY_MS))));
const clientErrors = results.filter((r) => r.error !== undefined);
const validRefused = results.filter((r) => r.state === 'valid' && (r.status === 401 || r.status === 403));
const unexpectedErrors = clientErrors.filter((r) => !overlaps(r, upstreamDown, UPSTREAM_RECOVERY_MS));

const byStatus = {};
for (const r of results) {
  const key = r.error !== undefined ? `error ${r.error}` : String(r.status);
  byStatus[key] = (byStatus[key] ?? 0) + 1;
}
const byState = {};
for (const r of results) {
  const row = (byState[r.state] ??= {});
  const key = r.error !== undefined ? 'error' : String(r.status);
  row[key] = (row[key] ?? 0) + 1;
}

// Introspection calls per distinct token, as the authorization server counted them.
const calls = new Map();
for (const token of as.introspected) {
  if (token.startsWith('scopegate-readiness-')) continue;
  calls.set(token, (calls.get(token) ?? 0) + 1);
}
const perKind = {};
for (const [token, n] of calls) {
  const info = tokens.get(token);
  const kind = !info ? 'other' : info.kind === 'garbage' ? 'garbage' : info.revokedAt !== undefined ? 'revoked' : 'valid';
  const row = (perKind[kind] ??= { tokens: 0, calls: 0, max: 0 });
  row.tokens += 1;
  row.calls += n;
  row.max = Math.max(row.max, n);
}
const totalCalls = [...calls.values()].reduce((a, b) => a + b, 0);

rss.end = sampleRss();
heap.end = heapAfterGc();
const mib = (n) => `${(n / 1048576).toFixed(1)} MiB`;
const elapsed = (Date.now() - started) / 1000;
console.log('');
console.log(`scopegate soak: ${SECONDS} s, ${CONCURRENCY} workers`);
console.log(`  requests            ${results.length} (${(results.length / SECONDS).toFixed(0)}/s)`);
console.log(`  by status           ${JSON.stringify(byStatus)}`);
console.log(`  by token state      ${JSON.stringify(byState)}`);
console.log(`  reached upstream    ${reached.size}`);
console.log(`  wrongly allowed     ${wronglyAllowed.length}`);
console.log(`  unexpected 5xx      ${unexpected5xx.length}`);
console.log(`  valid refused       ${validRefused.length} (401/403 for a token valid when sent, not within 1 s of its exp)`);
console.log(`  client errors       ${clientErrors.length} (${unexpectedErrors.length} outside an upstream restart)`);
console.log(`  AS outages          ${asDown.length} (${AS_DOWN_MS} ms each)   upstream restarts ${upstreamDown.length} (${UPSTREAM_DOWN_MS} ms each)`);
console.log(`  tokens              ${validOpaque.length + revoked.length} opaque in play, ${revoked.length} revoked, ${shortJwts.length} short JWTs, ${[...tokens.values()].filter((i) => i.kind === 'garbage').length} garbage`);
console.log(`  introspection calls ${totalCalls} for ${calls.size} distinct tokens (${calls.size ? (totalCalls / calls.size).toFixed(2) : '0'} per token)`);
for (const [kind, row] of Object.entries(perKind)) {
  console.log(`    ${kind.padEnd(9)} ${row.tokens} tokens, ${row.calls} calls, ${(row.calls / row.tokens).toFixed(2)} per token, max ${row.max}`);
}
console.log(`  RSS                 start ${mib(rss.start)}, peak ${mib(rss.peak)}, end ${mib(rss.end)}`);
if (heap.start !== undefined) console.log(`  heap after GC       start ${mib(heap.start)}, end ${mib(heap.end)} (includes this script's own records)`);
console.log(`  gateway log lines   warn ${logLevels.warn}, error ${logLevels.error}, fatal ${logLevels.fatal}`);
for (const r of wronglyAllowed.slice(0, 10)) {
  console.log(`  WRONGLY ALLOWED id ${r.id} (${r.why}) sent ${r.sentAt - started} ms status ${r.status}`);
}
for (const r of unexpected5xx.slice(0, 10)) {
  console.log(`  unexpected ${r.status} id ${r.id} (${r.state}) sent ${r.sentAt - started} ms, took ${r.doneAt - r.sentAt} ms`);
}
console.log(`  elapsed             ${elapsed.toFixed(1)} s`);

// ---------------------------------------------------------------- teardown

await client.close();
await gateway.close();
await new Promise((r) => {
  asProxy.close(() => r());
  for (const s of proxySockets) s.destroy();
});
await new Promise((r) => {
  upstream.close(() => r());
  for (const s of upstreamSockets) s.destroy();
});
await as.close();
await shortAs.close();
rmSync(dir, { recursive: true, force: true });
clearTimeout(watchdog);
process.exitCode = wronglyAllowed.length > 0 ? 1 : 0;
