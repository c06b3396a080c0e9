// scopegate benchmark: `npm run bench` (builds first), or `node bench/run.js [options]`.
//
// Starts everything itself on 127.0.0.1, measures in alternating rounds with autocannon, prints a
// summary and writes bench/RESULTS.md (and bench/results.json). Every load loop is bounded in
// time; every child process is stopped by its own pid at the end (and on Ctrl-C).
//
// Throughput targets (each its own process, separate from this load generator):
//   direct                   bench/upstream.js: node:http answering a ~300-byte SCIM ListResponse
//   bare-proxy               bench/bare-proxy.js: Fastify + @fastify/http-proxy, same undici Pool options, no auth
//   scopegate-introspection  `scopegate serve`, one opaque token from the real oidc-provider, cache warm
//   scopegate-jwt            one JWT access token from the same AS, cache warm, sent to scopegate-introspection's
//                            processes (both verifiers configured; --separate-jwt: processes of its own)
//   scopegate-many-tokens    `scopegate serve`, --tokens distinct valid tokens in rotation, cache warm
//   nginx                    /usr/sbin/nginx, one worker, plain reverse proxy with an upstream keepalive pool
// Other measurements (names usable with --only / --skip):
//   startup     spawn -> "scopegate listening" with the jans table (../shared/jans-scim-openapi.yaml)
//   fixed-rate  p99 added over bare-proxy at a fixed request rate (autocannon overallRate, and paced)
//   coalesce    introspections per distinct token when --burst requests with one new token arrive at once
//   redis       the same across two replicas sharing a Redis (token used on A, then on B)
//   rss         RSS with token.cache.maxEntries filled with that many distinct valid tokens
import { randomBytes } from 'node:crypto';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { loadavg, tmpdir, userInfo } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import {
  BASE_PATH, BENCH, CLI, NGINX, binNodeArgs, ROOT, SHARED_OPENAPI, buildRequest, fmt, freePort, get, load, machineInfo, median,
  childPids, metrics, paced, procCpuSplit, procMemory, runScript, sleep, startNodeChild, startServe, stopChild, track, waitPort,
} from './lib.js';

// bare-proxy-jwt: bare-proxy sent the JWT target's (longer) Authorization header, the baseline of
// the same request as scopegate-jwt (the issue's ratio is against bare-proxy; both are reported).
// bare-proxy-hook: bare-proxy forwarding the way scopegate does (from its preHandler, bypassing
// @fastify/http-proxy's handler), the baseline of the same forwarding with no authorization.
//
// The order puts each judged pair side by side (bare-proxy between scopegate-introspection and
// scopegate-jwt): on this shared machine a slow spell of the host lasts tens of seconds and slows
// every part of a process alike (its kernel, V8 and JIT-code time in perf), so two targets
// measured seconds apart share it, and two measured half a round apart often do not.
//
// Forks (--forks, as JMH runs a benchmark in several JVMs): each proxy target runs as several
// processes of the same code and config, each measured in every round, and its figure is the
// median over all of them. Two identical processes here differ by 2-12% for a whole run (the fork
// spread of each run, README "What limits the ratios"): one process per target made a judged
// ratio a draw of which process came out slow. The spread between a target's forks is reported:
// it is the A/A control of the run.
const TARGETS = ['direct', 'nginx', 'bare-proxy-hook', 'scopegate-many-tokens', 'scopegate-introspection', 'bare-proxy', 'scopegate-jwt', 'bare-proxy-jwt'];
/** Targets run as --forks processes (bare-proxy-jwt: bare-proxy's forks sent the JWT). */
const FORKED = new Set(['bare-proxy-hook', 'scopegate-many-tokens', 'scopegate-introspection', 'bare-proxy', 'scopegate-jwt', 'bare-proxy-jwt', 'scopegate-nolog', 'scopegate-noident']);
/** How fork `fork` of `name` is named (its processes and files with `-`, the log lines with ` #`); the name alone when it runs once. */
const forkName = (name, fork, sep) => (FORKED.has(name) && opts.forks > 1 ? `${name}${sep}${fork}` : name);
const EXTRAS = ['startup', 'fixed-rate', 'coalesce', 'redis', 'rss'];
// Diagnostic targets, run only when named in --only: scopegate-introspection with log.level warn
// (no access line), to size what the access log costs, and with no identity headers.
const DIAG = ['scopegate-nolog', 'scopegate-noident'];

const HELP = `usage: node bench/run.js [options]     (npm run bench -- [options])

  --quick                      short smoke run: 2 rounds x 2 s, 1 s warm-up, RSS fill of 100,000 only
  --only a,b                   run only these targets / measurements
  --skip a,b                   run everything but these
                               targets: ${TARGETS.join(', ')}
                               measurements: ${EXTRAS.join(', ')}
                               diagnostic (only when named): ${DIAG.join(', ')}
  --rounds N                   alternating rounds per target           (BENCH_ROUNDS, default 5; quick 2)
  --forks N                    processes per proxy target, each measured every round; a target's
                               figure is the median over all forks and rounds (BENCH_FORKS, default 3; quick 1)
  --duration S                 seconds per round                       (BENCH_DURATION, default 5; quick 2)
  --warmup S                   warm-up seconds per target, not counted (BENCH_WARMUP, default 2; quick 1)
  --round-warmup S             load before each round, not counted     (BENCH_ROUND_WARMUP, default 1; quick 0.5):
                               a target idles while the others run (about 2 minutes between its rounds
                               in a full run, serpentine order), and its first second after such a
                               gap ran 20-30% slower, on every target
  --connections N              autocannon connections                  (BENCH_CONNECTIONS, default 50)
  --upstream-connections N     undici pool size (scopegate upstream.connections, bare-proxy) and
                               nginx upstream keepalive                (BENCH_UPSTREAM_CONNECTIONS, default 128)
  --tokens N                   distinct tokens of scopegate-many-tokens (BENCH_TOKENS, default 10000)
  --many-source fast|oidc      fast: opaque tokens answered by bench/fast-as.js (a tiny introspection
                               server that says active to tokens of a known form); oidc: tokens
                               issued by the real oidc-provider's token endpoint  (BENCH_MANY_SOURCE, default fast)
  --rate N                     fixed request rate of fixed-rate         (BENCH_RATE, default 1000)
  --rate-connections N         autocannon connections at that rate      (BENCH_RATE_CONNECTIONS, default 10)
  --rate-rounds N / --rate-duration S                                   (default 5 x 5 s; quick 2 x 2 s)
  --burst N                    concurrent requests per new token        (BENCH_BURST, default 200)
  --new-tokens N               new tokens in coalesce and redis         (BENCH_NEW_TOKENS, default 5)
  --rss N,N                    cache sizes to fill                      (BENCH_RSS, default 100000,1000000; quick 100000)
  --startup-runs N             (BENCH_STARTUP_RUNS, default 5)
  --access-log file|discard    scopegate's stdout (the access log): a file in the temp dir, or a
                               pipe read and dropped by the bench        (BENCH_ACCESS_LOG, default file)
  --out FILE                   results markdown (default bench/RESULTS.md); --no-write: print only
  --pin                        taskset: the bench process (load generator, the AS) and what it starts
                               (the upstream, the fast introspection server) on CPU 0, each measured
                               target (every thread of it) on CPU 1: no target shares a core with the
                               load generator or the upstream, and none migrates   (BENCH_PIN=1)
  --separate-jwt               scopegate-jwt in processes of its own (token.jwt only); by default it
                               is scopegate-introspection's processes (both verifiers configured)
                               sent the JWT, as bare-proxy-jwt is bare-proxy's  (BENCH_SEPARATE_JWT=1)
`;

// ---------------------------------------------------------------- options

const { values: argv } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' }, skip: { type: 'string' },
    rounds: { type: 'string' }, forks: { type: 'string' }, duration: { type: 'string' }, warmup: { type: 'string' }, 'round-warmup': { type: 'string' },
    connections: { type: 'string' }, 'upstream-connections': { type: 'string' },
    tokens: { type: 'string' }, 'many-source': { type: 'string' },
    rate: { type: 'string' }, 'rate-connections': { type: 'string' }, 'rate-rounds': { type: 'string' }, 'rate-duration': { type: 'string' },
    burst: { type: 'string' }, 'new-tokens': { type: 'string' }, rss: { type: 'string' }, 'startup-runs': { type: 'string' },
    'access-log': { type: 'string' }, out: { type: 'string' }, 'no-write': { type: 'boolean', default: false },
    pin: { type: 'boolean', default: false },
    'separate-jwt': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (argv.help) {
  process.stdout.write(HELP);
  process.exit(0);
}
const env = process.env;
const quick = argv.quick || env.BENCH_QUICK === '1';
const num = (flag, envName, full, short) => {
  const raw = argv[flag] ?? env[envName];
  const value = raw === undefined ? (quick ? short : full) : Number(raw);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${flag}: not a positive number: ${raw}`);
  if (['rounds', 'forks'].includes(flag) && !Number.isInteger(value)) throw new Error(`--${flag}: not a whole number: ${raw}`);
  return value;
};
const opts = {
  quick,
  rounds: num('rounds', 'BENCH_ROUNDS', 5, 2),
  forks: num('forks', 'BENCH_FORKS', 3, 1),
  duration: num('duration', 'BENCH_DURATION', 5, 2),
  warmup: num('warmup', 'BENCH_WARMUP', 2, 1),
  roundWarmup: num('round-warmup', 'BENCH_ROUND_WARMUP', 1, 0.5),
  connections: num('connections', 'BENCH_CONNECTIONS', 50, 50),
  upstreamConnections: num('upstream-connections', 'BENCH_UPSTREAM_CONNECTIONS', 128, 128),
  tokens: num('tokens', 'BENCH_TOKENS', 10000, 10000),
  manySource: argv['many-source'] ?? env.BENCH_MANY_SOURCE ?? 'fast',
  rate: num('rate', 'BENCH_RATE', 1000, 1000),
  rateConnections: num('rate-connections', 'BENCH_RATE_CONNECTIONS', 10, 10),
  rateRounds: num('rate-rounds', 'BENCH_RATE_ROUNDS', 5, 2),
  rateDuration: num('rate-duration', 'BENCH_RATE_DURATION', 5, 2),
  burst: num('burst', 'BENCH_BURST', 200, 200),
  newTokens: num('new-tokens', 'BENCH_NEW_TOKENS', 5, 5),
  rss: (argv.rss ?? env.BENCH_RSS ?? (quick ? '100000' : '100000,1000000')).split(',').map(Number).filter((n) => n > 0),
  startupRuns: num('startup-runs', 'BENCH_STARTUP_RUNS', 5, 5),
  accessLog: argv['access-log'] ?? env.BENCH_ACCESS_LOG ?? 'file',
  out: resolve(argv.out ?? env.BENCH_OUT ?? join(BENCH, 'RESULTS.md')),
  write: !argv['no-write'],
  pin: argv.pin || env.BENCH_PIN === '1',
  separateJwt: argv['separate-jwt'] || env.BENCH_SEPARATE_JWT === '1',
};
if (!['fast', 'oidc'].includes(opts.manySource)) throw new Error('--many-source: fast or oidc');
if (!['file', 'discard'].includes(opts.accessLog)) throw new Error('--access-log: file or discard');
const ALL = [...TARGETS, ...DIAG, ...EXTRAS];
const listOf = (s) => (s ? s.split(',').map((x) => x.trim()).filter(Boolean) : undefined);
const only = listOf(argv.only ?? env.BENCH_ONLY);
const skip = listOf(argv.skip ?? env.BENCH_SKIP) ?? [];
for (const n of [...(only ?? []), ...skip]) if (!ALL.includes(n)) throw new Error(`unknown name ${n}; known: ${ALL.join(', ')}`);
const wanted = (name) => (DIAG.includes(name) ? Boolean(only?.includes(name)) : !only || only.includes(name)) && !skip.includes(name);

if (!existsSync(CLI)) throw new Error(`${relative(ROOT, CLI)} is missing: run npm run build (npm run bench does)`);
if (!existsSync(SHARED_OPENAPI)) throw new Error(`${SHARED_OPENAPI} is missing`);

const PATH = `${BASE_PATH}/Users?count=10`;
const log = (...a) => console.log(...a);
const tmp = mkdtempSync(join(tmpdir(), 'scopegate-bench-'));
const startedAt = new Date();
const machine = machineInfo();
const results = { machine, startedAt: startedAt.toISOString(), settings: { ...opts, path: PATH }, targets: {}, rounds: [], notes: [] };

let auth;

// ---------------------------------------------------------------- shared pieces (started once, lazily)

const once = (fn) => {
  let p;
  return () => (p ??= fn());
};

const upstream = once(async () => {
  const { info, pid } = await startNodeChild(join(BENCH, 'upstream.js'), [], { name: 'upstream' });
  results.upstreamBytes = info.bytes;
  return { url: `http://127.0.0.1:${info.port}`, port: info.port, pid, bytes: info.bytes };
});

const authServer = once(async () => {
  const { startAuthServer, SCIM_SCOPES } = await import('../dist/demo/auth-server.js');
  // Tokens outlive the whole run; the AS runs in this process, idle while the cache is warm.
  auth = await startAuthServer({ accessTokenTtlSeconds: 4 * 3600 });
  return { auth, scopes: [...SCIM_SCOPES] };
});

const fastAs = once(async () => {
  const { info, pid } = await startNodeChild(join(BENCH, 'fast-as.js'), ['--ttl', String(4 * 3600)], { name: 'fast-as' });
  const url = `http://127.0.0.1:${info.port}`;
  return {
    url, pid, endpoint: `${url}/introspect`,
    count: async () => JSON.parse((await get(`${url}/stats`)).text).introspections,
  };
});

/** A scopegate config file: the jans table, listeners on port 0, the cache kept all run long. */
function writeConfig(name, { upstreamUrl, token, cache = {}, extra = {} }) {
  const file = join(tmp, `${name}.json`);
  writeFileSync(file, JSON.stringify({
    listen: { host: '127.0.0.1', port: 0 },
    admin: { host: '127.0.0.1', port: 0 },
    upstream: { url: upstreamUrl, connections: opts.upstreamConnections },
    openapi: { file: SHARED_OPENAPI },
    token: { ...token, cache: { maxEntries: 100000, maxTtlSeconds: 3600, negativeTtlSeconds: 5, ...cache } },
    log: { level: 'info' },
    ...extra,
  }, null, 2));
  return file;
}

/**
 * Node flags of the bare proxies: those the `scopegate` binary runs with (startServe gives them to
 * scopegate), so that the ratio compares the two under the same V8; BENCH_NODE_ARGS (space
 * separated) adds flags to every proxy process, scopegate and bare alike.
 */
const EXTRA_NODE_ARGS = (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
/** Read when a bare proxy starts: dist/ is built by then (`node bench/run.js --help` needs none). */
const proxyNodeArgs = () => [...binNodeArgs(), ...EXTRA_NODE_ARGS];

async function serve(name, configFile, more = {}) {
  const logFile = opts.accessLog === 'file' ? join(tmp, `${name}.log`) : 'pipe';
  return startServe(configFile, { logFile, name, ...more, nodeArgs: [...EXTRA_NODE_ARGS, ...(more.nodeArgs ?? [])] });
}


async function introspectionToken() {
  const { auth: a, scopes } = await authServer();
  return {
    introspection: { endpoint: a.introspectionEndpoint, clientId: a.clientId, clientSecret: a.clientSecret, authMethod: 'client_secret_basic' },
    issue: (jwt = false) => a.issueToken(scopes, { jwt }),
  };
}

/** The token section of scopegate-introspection (and its diagnostics): with token.jwt too, unless --separate-jwt. */
async function asScopegateIntrospection(introspection) {
  if (opts.separateJwt) return { introspection };
  const { auth: a } = await authServer();
  return { introspection, jwt: { jwksUri: a.jwksUri, issuer: a.issuer } };
}

async function expectOk(url, headers, what) {
  const r = await get(url, headers);
  if (r.status !== 200) throw new Error(`${what}: GET ${url} answered ${r.status}: ${r.text.slice(0, 300)}`);
}

// ---------------------------------------------------------------- targets

const prepared = new Map();

/** Fork `fork` (1 .. --forks) of target `name`, started once. */
async function prepare(name, fork = 1) {
  const key = `${name}#${fork}`;
  if (prepared.has(key)) return prepared.get(key);
  // Its processes, config and log file are named after it.
  const id = forkName(name, fork, '-');
  const p = (async () => {
    const up = await upstream();
    switch (name) {
      case 'direct': {
        const { issue } = await introspectionToken();
        const token = await issue();
        // The same request as every other target, Authorization included.
        return { url: up.url + PATH, headers: { authorization: `Bearer ${token}` }, pid: up.pid, note: `node:http, ${up.bytes}-byte SCIM ListResponse` };
      }
      case 'bare-proxy': {
        const { info, pid } = await startNodeChild(join(BENCH, 'bare-proxy.js'), ['--upstream', up.url, '--connections', String(opts.upstreamConnections)], { name: id, nodeArgs: proxyNodeArgs() });
        const { issue } = await introspectionToken();
        const token = await issue();
        return { url: `http://127.0.0.1:${info.port}${PATH}`, headers: { authorization: `Bearer ${token}` }, pid, note: `Fastify + @fastify/http-proxy, undici Pool connections ${opts.upstreamConnections}, pipelining 1, no auth, no access log` };
      }
      case 'scopegate-introspection': {
        const { introspection, issue } = await introspectionToken();
        // Paired (the default): these processes also verify JWTs, and scopegate-jwt is them sent
        // a JWT, as bare-proxy-jwt is bare-proxy's processes sent one.
        const sg = await serve(id, writeConfig(id, { upstreamUrl: up.url, token: await asScopegateIntrospection(introspection) }));
        const token = await issue();
        const headers = { authorization: `Bearer ${token}` };
        await expectOk(sg.proxyUrl + PATH, headers, name);
        return { url: sg.proxyUrl + PATH, headers, pid: sg.pid, sg, note: `opaque token (${token.length} characters) from the real oidc-provider (client_credentials), introspected once, then cached${opts.separateJwt ? '' : '; token.introspection and token.jwt both configured (scopegate-jwt is these processes sent a JWT)'}` };
      }
      case 'bare-proxy-hook': {
        const { info, pid } = await startNodeChild(join(BENCH, 'bare-proxy.js'), ['--upstream', up.url, '--connections', String(opts.upstreamConnections), '--hook'], { name: id, nodeArgs: proxyNodeArgs() });
        const { issue } = await introspectionToken();
        const token = await issue();
        return { url: `http://127.0.0.1:${info.port}${PATH}`, headers: { authorization: `Bearer ${token}` }, pid, note: 'bare-proxy forwarding as scopegate does: reply.from in the preHandler, raw path and query (http-proxy\'s handler and its re-resolution of the target skipped), no auth, no access log' };
      }
      case 'bare-proxy-jwt': {
        const bare = await prepare('bare-proxy', fork);
        const token = await (await introspectionToken()).issue(true);
        return { ...bare, headers: { authorization: `Bearer ${token}` }, note: `bare-proxy sent scopegate-jwt's request: a ${token.length}-character JWT in Authorization` };
      }
      case 'scopegate-nolog': {
        const { introspection: introspectionOnly, issue } = await introspectionToken();
        // Configured as scopegate-introspection is (both verifiers, unless --separate-jwt).
        const introspection = await asScopegateIntrospection(introspectionOnly);
        // No "listening" line at level warn: fixed ports, readiness from /healthz.
        const ports = { proxy: await freePort(), admin: await freePort() };
        const file = writeConfig(id, { upstreamUrl: up.url, token: introspection, extra: { log: { level: 'warn' }, listen: { host: '127.0.0.1', port: ports.proxy }, admin: { host: '127.0.0.1', port: ports.admin } } });
        const sg = await serve(id, file, { ports });
        const token = await issue();
        const headers = { authorization: `Bearer ${token}` };
        await expectOk(sg.proxyUrl + PATH, headers, name);
        return { url: sg.proxyUrl + PATH, headers, pid: sg.pid, sg, note: 'diagnostic: scopegate-introspection with log.level warn (no access lines)' };
      }
      case 'scopegate-noident': {
        const { introspection: introspectionOnly, issue } = await introspectionToken();
        const introspection = await asScopegateIntrospection(introspectionOnly);
        const sg = await serve(id, writeConfig(id, { upstreamUrl: up.url, token: introspection, extra: { upstream: { url: up.url, connections: opts.upstreamConnections, identityHeaders: false } } }));
        const token = await issue();
        const headers = { authorization: `Bearer ${token}` };
        await expectOk(sg.proxyUrl + PATH, headers, name);
        return { url: sg.proxyUrl + PATH, headers, pid: sg.pid, sg, note: 'diagnostic: scopegate-introspection with upstream.identityHeaders false (no X-Scopegate-* headers upstream)' };
      }
      case 'scopegate-jwt': {
        const { issue } = await introspectionToken();
        const { auth: a } = await authServer();
        const sg = opts.separateJwt
          ? await serve(id, writeConfig(id, { upstreamUrl: up.url, token: { jwt: { jwksUri: a.jwksUri, issuer: a.issuer } } }))
          : (await prepare('scopegate-introspection', fork)).sg;
        const token = await issue(true);
        const headers = { authorization: `Bearer ${token}` };
        await expectOk(sg.proxyUrl + PATH, headers, name);
        const how = opts.separateJwt ? 'its own processes (token.jwt only)' : "scopegate-introspection's processes sent it";
        return { url: sg.proxyUrl + PATH, headers, pid: sg.pid, sg, shared: !opts.separateJwt, note: `RS256 JWT access token (${token.length} characters) from the real oidc-provider (resource indicator), verified once, then cached; ${how}` };
      }
      case 'scopegate-many-tokens': {
        // The same tokens for every fork.
        const { introspection, tokens, note } = await manyTokens();
        const sg = await serve(id, writeConfig(id, { upstreamUrl: up.url, token: { introspection }, cache: { maxEntries: Math.max(100000, 2 * tokens.length) } }));
        const buffers = tokens.map((t) => buildRequest(sg.proxyUrl + PATH, { authorization: `Bearer ${t}` }));
        await expectOk(sg.proxyUrl + PATH, { authorization: `Bearer ${tokens[0]}` }, name);
        // Fill the cache: every token once (each connection walks its own slice of the rotation).
        const fill = await load({ url: sg.proxyUrl + PATH, connections: Math.min(opts.connections, 50), amount: tokens.length, buffers, maxSeconds: 600 });
        const entries = (await metrics(sg.adminUrl)).get('scopegate_token_cache_entries');
        log(`  ${id}: cache filled with ${entries} entries (${fill.total} requests, ${fill.non2xx} non-2xx, ${fmt.rps(fill.rps)} req/s while filling)`);
        if (entries < tokens.length) results.notes.push(`${id}: only ${entries} of ${tokens.length} tokens were cached before measuring`);
        return { url: sg.proxyUrl + PATH, buffers, pid: sg.pid, sg, note };
      }
      case 'nginx': {
        if (!existsSync(NGINX)) return undefined;
        return { ...(await startNginx(up)), headers: { authorization: `Bearer ${await (await introspectionToken()).issue()}` } };
      }
      default:
        throw new Error(name);
    }
  })();
  prepared.set(key, p);
  return p;
}

/** scopegate-many-tokens' tokens and where they are introspected, made once for all its forks. */
const manyTokens = once(async () => {
  const started = performance.now();
  if (opts.manySource === 'fast') {
    const fast = await fastAs();
    return {
      introspection: { endpoint: fast.endpoint, clientId: 'bench', clientSecret: 'bench', authMethod: 'client_secret_basic' },
      tokens: Array.from({ length: opts.tokens }, (_, i) => `sgb-${i}-${randomBytes(12).toString('base64url')}`),
      note: `${opts.tokens} distinct opaque tokens answered active by bench/fast-as.js (a tiny introspection server for tokens of a known form, not the real AS), in rotation; cache filled before measuring`,
    };
  }
  const t = await introspectionToken();
  const tokens = [];
  let next = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (next < opts.tokens) {
      next += 1;
      tokens.push(await t.issue());
    }
  }));
  return {
    introspection: t.introspection, tokens,
    note: `${opts.tokens} distinct opaque tokens issued by the real oidc-provider's token endpoint (${((performance.now() - started) / 1000).toFixed(1)} s to issue), in rotation; cache filled before measuring`,
  };
});

async function startNginx(up) {
  const dir = join(tmp, 'nginx');
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const conf = join(dir, 'nginx.conf');
  const root = typeof process.getuid === 'function' && process.getuid() === 0;
  writeFileSync(conf, `# scopegate benchmark: nginx as a plain reverse proxy, one worker
daemon off;
master_process on;
worker_processes 1;
${root ? `user ${userInfo().username};\n` : ''}pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log ${dir}/access.log combined buffer=64k flush=1s;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 65s;
  upstream scim {
    server 127.0.0.1:${up.port};
    keepalive ${opts.upstreamConnections};
    keepalive_requests 1000000;
    keepalive_timeout 60s;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://scim;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`);
  const check = spawnSync(NGINX, ['-t', '-p', `${dir}/`, '-c', conf, '-e', `${dir}/error.log`], { encoding: 'utf8' });
  if (check.status !== 0) throw new Error(`nginx -t failed: ${check.stderr}`);
  const child = track(spawn(NGINX, ['-p', `${dir}/`, '-c', conf, '-e', `${dir}/error.log`], { stdio: ['ignore', 'ignore', 'pipe'] }), 'nginx');
  await waitPort(port);
  await sleep(200);
  return { url: `http://127.0.0.1:${port}${PATH}`, pid: child.pid, pids: [child.pid, ...childPids(child.pid)], child, note: `nginx, 1 worker, upstream keepalive ${opts.upstreamConnections}, access log buffered to a file` };
}

// ---------------------------------------------------------------- throughput rounds

/** One round on a target; also the CPU time its own process(es) used per request. */
async function runTarget(name, t, seconds) {
  const pids = t.pids ?? [t.pid];
  // One read of each /proc/<pid>/stat per instant: user and system time together.
  const cpu = () => pids.reduce((a, p) => {
    const { user, system } = procCpuSplit(p);
    return { total: a.total + user + system, system: a.system + system };
  }, { total: 0, system: 0 });
  const before = cpu();
  const r = await load({ url: t.url, connections: opts.connections, duration: seconds, ...(t.buffers ? { buffers: t.buffers } : { headers: t.headers }) });
  const after = cpu();
  r.cpuUs = ((after.total - before.total) * 1e6) / Math.max(1, r.total);
  r.systemUs = ((after.system - before.system) * 1e6) / Math.max(1, r.total);
  return r;
}

/** Every thread of `pid` onto `cpu` (--pin). */
function pinTo(pid, cpu) {
  const r = spawnSync('taskset', ['-a', '-p', '-c', String(cpu), String(pid)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`--pin: taskset failed for pid ${pid}: ${r.stderr || r.error}`);
}

async function throughput() {
  const names = [...TARGETS, ...DIAG].filter(wanted);
  if (names.length === 0) return;
  const forkNote = opts.forks > 1 ? `, ${opts.forks} processes (forks) of each proxy target` : '';
  log(`\n== throughput: ${names.length} targets${forkNote}, ${opts.rounds} rounds in serpentine order x ${opts.duration} s, ${opts.connections} connections (warm-up ${opts.warmup} s each, and ${opts.roundWarmup} s before each round)`);
  // One pass through the targets per fork (direct and nginx, one process each, in the first):
  // within a pass the judged pairs stay side by side.
  const ready = [];
  for (let fork = 1; fork <= opts.forks; fork++) {
    for (const name of names) {
      if (fork > 1 && !FORKED.has(name)) continue;
      const t = await prepare(name, fork);
      if (!t) {
        log(`  ${name}: skipped (${NGINX} not found)`);
        results.notes.push(`${name}: skipped, ${NGINX} not found`);
        continue;
      }
      results.targets[name] ??= { note: t.note, rounds: [] };
      // direct is the upstream itself: it stays on CPU 0 for the others.
      if (opts.pin && name !== 'direct') for (const pid of t.pids ?? [t.pid]) pinTo(pid, 1);
      const label = forkName(name, fork, ' #');
      ready.push({ label, name, fork, t });
    }
  }
  for (const { label, name, t } of ready) {
    const w = await runTarget(name, t, opts.warmup);
    log(`  warm-up ${label.padEnd(28)} ${fmt.rps(w.rps).padStart(8)} req/s${w.non2xx || w.errors ? `  (${w.non2xx} non-2xx, ${w.errors} errors: ${JSON.stringify(w.statuses)})` : ''}`);
  }
  for (let round = 1; round <= opts.rounds; round++) {
    // Serpentine order (A B C, C B A, A B C ...): in a fixed order the targets late in a round
    // would always run late, and a drift within a round (the machine is shared) would land on
    // them alone; reversed every other round, each target's mean position is the same.
    const order = round % 2 === 1 ? ready : [...ready].reverse();
    for (const [position, { label, name, fork, t }] of order.entries()) {
      await runTarget(name, t, opts.roundWarmup);
      const r = await runTarget(name, t, opts.duration);
      Object.assign(r, { round, fork, position: position + 1 });
      results.targets[name].rounds.push(r);
      const bad = r.non2xx || r.errors ? `  !! ${r.non2xx} non-2xx, ${r.errors} errors ${JSON.stringify(r.statuses)}` : '';
      log(`  round ${round}/${opts.rounds} ${label.padEnd(28)} ${fmt.rps(r.rps).padStart(8)} req/s  p50 ${fmt.ms(r.p50)} ms  p99 ${fmt.ms(r.p99)} ms  cpu ${r.cpuUs.toFixed(0)} us/req (system ${r.systemUs.toFixed(0)})${bad}`);
    }
  }
  for (const { name, t } of ready) {
    // A process two targets share (scopegate-jwt on scopegate-introspection's) is counted once.
    if (t.sg && !(t.shared && ready.some((r) => r.name === 'scopegate-introspection'))) {
      // Integrity: the measured rounds must have been cache hits (counters summed over the forks).
      const m = await metrics(t.sg.adminUrl);
      const sum = (prefix) => [...m].filter(([k]) => k.startsWith(prefix)).reduce((a, [, v]) => a + v, 0);
      const c = results.targets[name].cache ??= { hits: 0, misses: 0, introspections: 0, jwksFetches: 0, processes: 0 };
      c.hits += m.get('scopegate_token_cache_total{result="hit"}') ?? 0;
      c.misses += m.get('scopegate_token_cache_total{result="miss"}') ?? 0;
      c.introspections += sum('scopegate_introspection_requests_total');
      c.jwksFetches += sum('scopegate_jwks_fetches_total');
      c.processes += 1;
    }
  }
  for (const name of new Set(ready.map((x) => x.name))) {
    const target = results.targets[name];
    const rs = target.rounds;
    Object.assign(target, {
      rps: median(rs.map((r) => r.rps)), p50: median(rs.map((r) => r.p50)), p99: median(rs.map((r) => r.p99)), cpuUs: median(rs.map((r) => r.cpuUs)),
      minRps: Math.min(...rs.map((r) => r.rps)), maxRps: Math.max(...rs.map((r) => r.rps)),
      non2xx: rs.reduce((a, r) => a + r.non2xx, 0), errors: rs.reduce((a, r) => a + r.errors, 0),
    });
    // The A/A control: each fork's own medians, and their spread (fastest over slowest), how far
    // two identical processes came out apart with nothing between them in this run.
    const forks = [...new Set(rs.map((r) => r.fork))];
    if (forks.length > 1) {
      target.forks = forks.map((fork) => {
        const own = rs.filter((r) => r.fork === fork);
        return { fork, rps: median(own.map((r) => r.rps)), cpuUs: median(own.map((r) => r.cpuUs)) };
      });
      const rps = target.forks.map((f) => f.rps);
      target.spread = Math.max(...rps) / Math.min(...rps);
    }
  }
}

// ---------------------------------------------------------------- startup

async function startup() {
  log(`\n== startup: spawn -> "scopegate listening" with the jans table, ${opts.startupRuns} runs`);
  const file = writeConfig('startup', {
    upstreamUrl: 'http://127.0.0.1:9',
    // Never called at startup (no discovery: the endpoint is given).
    token: { introspection: { endpoint: 'http://127.0.0.1:9/introspection', clientId: 'bench', clientSecret: 'bench' } },
  });
  const runs = [];
  for (let i = 0; i < opts.startupRuns; i++) {
    const sg = await startServe(file, { logFile: 'pipe', name: 'startup' });
    runs.push(sg.startupMs);
    await sg.stop();
  }
  const nodeRuns = [];
  for (let i = 0; i < opts.startupRuns; i++) {
    const t0 = performance.now();
    spawnSync(process.execPath, ['-e', '0']);
    nodeRuns.push(performance.now() - t0);
  }
  results.startup = { runs, median: median(runs), nodeBaseline: median(nodeRuns) };
  log(`  median ${fmt.ms(results.startup.median)} ms (runs: ${runs.map((x) => x.toFixed(0)).join(', ')} ms); node -e 0 alone: ${fmt.ms(results.startup.nodeBaseline)} ms`);
}

// ---------------------------------------------------------------- fixed rate

async function fixedRate() {
  log(`\n== fixed-rate: ${opts.rate} req/s, bare-proxy vs scopegate-introspection, ${opts.rateRounds} alternating rounds x ${opts.rateDuration} s`);
  const pair = [['bare-proxy', await prepare('bare-proxy')], ['scopegate-introspection', await prepare('scopegate-introspection')]];
  const out = { autocannon: {}, paced: {} };
  for (const [name] of pair) { out.autocannon[name] = []; out.paced[name] = []; }
  // Warm both (JIT, pools) at the rate.
  for (const [, t] of pair) {
    await load({ url: t.url, headers: t.headers, connections: opts.rateConnections, amount: opts.rate, overallRate: opts.rate, maxSeconds: 30 });
    await paced({ url: t.url, headers: t.headers, rate: opts.rate, duration: 1 });
  }
  for (let round = 1; round <= opts.rateRounds; round++) {
    for (const [name, t] of pair) {
      // amount = rate x duration: exactly `rate` requests in each of `duration` seconds.
      const a = await load({ url: t.url, headers: t.headers, connections: opts.rateConnections, amount: Math.round(opts.rate * opts.rateDuration), overallRate: opts.rate, maxSeconds: opts.rateDuration + 30 });
      const p = await paced({ url: t.url, headers: t.headers, rate: opts.rate, duration: opts.rateDuration });
      out.autocannon[name].push(a);
      out.paced[name].push(p);
      const bad = (r) => (r.non2xx || r.errors ? ` !! ${r.non2xx} non-2xx ${r.errors} errors` : '');
      log(`  round ${round}/${opts.rateRounds} ${name.padEnd(24)} autocannon: ${a.total} req p50 ${fmt.ms(a.p50)} p99 ${fmt.ms(a.p99)} ms${bad(a)} | paced: ${fmt.rps(p.rps)} req/s p50 ${fmt.ms(p.p50)} p99 ${fmt.ms(p.p99)} ms${bad(p)}`);
    }
  }
  const summary = {};
  for (const kind of ['autocannon', 'paced']) {
    const b = out[kind]['bare-proxy'];
    const s = out[kind]['scopegate-introspection'];
    summary[kind] = {
      bare: { rps: median(b.map((r) => r.rps)), p50: median(b.map((r) => r.p50)), p99: median(b.map((r) => r.p99)) },
      scopegate: { rps: median(s.map((r) => r.rps)), p50: median(s.map((r) => r.p50)), p99: median(s.map((r) => r.p99)) },
      addedP99PerRound: s.map((r, i) => r.p99 - b[i].p99),
    };
    summary[kind].addedP99 = summary[kind].scopegate.p99 - summary[kind].bare.p99;
    summary[kind].addedP50 = summary[kind].scopegate.p50 - summary[kind].bare.p50;
    log(`  ${kind.padEnd(10)} p99 added ${fmt.ms(summary[kind].addedP99)} ms (bare ${fmt.ms(summary[kind].bare.p99)} -> scopegate ${fmt.ms(summary[kind].scopegate.p99)}), p50 added ${fmt.ms(summary[kind].addedP50)} ms`);
  }
  results.fixedRate = { rounds: out, summary };
}

// ---------------------------------------------------------------- coalescing

/** `n` connections opened first, then one request written on each at once; resolves with the statuses. */
async function burst(url, token, n) {
  const u = new URL(url);
  const sockets = await Promise.all(Array.from({ length: n }, () => new Promise((ok, fail) => {
    const s = connect(Number(u.port), u.hostname);
    s.once('connect', () => ok(s));
    s.once('error', fail);
  })));
  const request = `GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`;
  const answers = sockets.map((s) => new Promise((ok) => {
    let data = '';
    s.setEncoding('latin1');
    s.setTimeout(15000, () => s.destroy());
    s.on('data', (c) => { data += c; });
    s.on('error', () => undefined);
    s.once('close', () => ok(Number(data.slice(9, 12)) || 0));
  }));
  for (const s of sockets) s.write(request);
  return Promise.all(answers);
}

const tally = (statuses) => statuses.reduce((m, s) => ({ ...m, [s]: (m[s] ?? 0) + 1 }), {});

async function coalesce() {
  log(`\n== coalesce: ${opts.burst} requests at once with each of ${opts.newTokens} new tokens (real oidc-provider, counted at the AS)`);
  const up = await upstream();
  const { auth: a } = await authServer();
  const { introspection, issue } = await introspectionToken();
  const sg = await serve('coalesce', writeConfig('coalesce', { upstreamUrl: up.url, token: { introspection } }));
  const perToken = [];
  const statuses = {};
  for (let i = 0; i < opts.newTokens; i++) {
    const token = await issue();
    a.resetCounts();
    const answers = await burst(sg.proxyUrl + PATH, token, opts.burst);
    await sleep(50);
    perToken.push(a.counts.introspection);
    for (const [k, v] of Object.entries(tally(answers))) statuses[k] = (statuses[k] ?? 0) + v;
  }
  const total = perToken.reduce((x, y) => x + y, 0);
  results.coalesce = { perToken, statuses, ratio: total / opts.newTokens };
  log(`  introspections per distinct token: ${results.coalesce.ratio.toFixed(2)} (per token: ${perToken.join(', ')}); statuses ${JSON.stringify(statuses)}`);
  await sg.stop();
}

// ---------------------------------------------------------------- two replicas sharing Redis

async function redisShared() {
  const has = spawnSync('redis-server', ['--version']).status === 0;
  if (!has) {
    log('\n== redis: skipped (redis-server not found)');
    results.redis = { skipped: 'redis-server not found' };
    return;
  }
  log(`\n== redis: two replicas sharing a Redis, ${opts.newTokens} new tokens used on A then on B (real oidc-provider)`);
  const port = await freePort();
  const redis = track(spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' }), 'redis');
  await waitPort(port);
  const up = await upstream();
  const { auth: a } = await authServer();
  const { introspection, issue } = await introspectionToken();
  const token = { introspection };
  const cache = { redis: { url: `redis://127.0.0.1:${port}`, keyPrefix: 'scopegate-bench:' } };
  const A = await serve('replica-a', writeConfig('replica-a', { upstreamUrl: up.url, token, cache }));
  const B = await serve('replica-b', writeConfig('replica-b', { upstreamUrl: up.url, token, cache }));
  const sequential = [];
  const statuses = {};
  const note = (s) => { statuses[s] = (statuses[s] ?? 0) + 1; };
  for (let i = 0; i < opts.newTokens; i++) {
    const t = await issue();
    a.resetCounts();
    note((await get(A.proxyUrl + PATH, { authorization: `Bearer ${t}` })).status);
    note((await get(B.proxyUrl + PATH, { authorization: `Bearer ${t}` })).status);
    sequential.push(a.counts.introspection);
  }
  // For information: half the burst on A and half on B at the same moment (no cross-replica lock).
  const together = [];
  for (let i = 0; i < opts.newTokens; i++) {
    const t = await issue();
    a.resetCounts();
    const half = Math.max(1, Math.floor(opts.burst / 2));
    const answers = (await Promise.all([burst(A.proxyUrl + PATH, t, half), burst(B.proxyUrl + PATH, t, half)])).flat();
    answers.forEach(note);
    await sleep(50);
    together.push(a.counts.introspection);
  }
  const m = await metrics(B.adminUrl);
  const hits = m.get('scopegate_redis_events_total{event="hit"}') ?? 0;
  const sum = (xs) => xs.reduce((x, y) => x + y, 0);
  results.redis = {
    sequential, ratio: sum(sequential) / opts.newTokens, together, togetherRatio: sum(together) / opts.newTokens, statuses, replicaBRedisHits: hits,
  };
  log(`  A then B: ${results.redis.ratio.toFixed(2)} introspections per distinct token (per token: ${sequential.join(', ')}); B's Redis hits: ${hits}`);
  log(`  A and B at once (${Math.floor(opts.burst / 2)} + ${Math.floor(opts.burst / 2)}): ${results.redis.togetherRatio.toFixed(2)} per token (per token: ${together.join(', ')}); statuses ${JSON.stringify(statuses)}`);
  await Promise.all([A.stop(), B.stop()]);
  await stopChild(redis);
}

// ---------------------------------------------------------------- RSS with a full cache

async function rss() {
  log(`\n== rss: token cache filled to ${opts.rss.map((n) => n.toLocaleString('en-US')).join(' and ')} entries (bench/fast-as.js, 403 path: validated and cached, never forwarded)`);
  const up = await upstream();
  const fast = await fastAs();
  results.rss = [];
  for (const size of opts.rss) {
    const name = `rss-${size}`;
    const file = writeConfig(name, {
      upstreamUrl: up.url,
      token: { introspection: { endpoint: fast.endpoint, clientId: 'bench', clientSecret: 'bench' } },
      cache: { maxEntries: size, maxTtlSeconds: 4 * 3600 },
    });
    // The access log of a million requests is piped and dropped rather than written to disk.
    const sg = await startServe(file, { logFile: 'pipe', name, nodeArgs: ['--expose-gc', '--import', pathToFileURL(join(BENCH, 'gc-preload.js')).href] });
    const fullGc = async () => {
      const seen = sg.stderr().split('bench-gc-done').length;
      process.kill(sg.pid, 'SIGUSR2');
      for (let waited = 0; sg.stderr().split('bench-gc-done').length === seen && waited < 30000; waited += 50) await sleep(50);
      await sleep(200);
    };
    const url = `${sg.proxyUrl}${BASE_PATH}/Groups`;
    const salt = randomBytes(6).toString('base64url');
    const head = `GET ${BASE_PATH}/Groups HTTP/1.1\r\nHost: ${new URL(sg.proxyUrl).host}\r\nConnection: keep-alive\r\nAuthorization: Bearer fill-${salt}-`;
    let i = 0;
    const next = () => Buffer.from(`${head}${i++}\r\n\r\n`, 'latin1');
    const probe = await get(url, { authorization: `Bearer fill-${salt}-probe` });
    if (probe.status !== 403) throw new Error(`rss: the fill path answered ${probe.status}, not 403: ${probe.text.slice(0, 200)}`);
    await fullGc();
    const before = procMemory(sg.pid);
    const beforeMetrics = await metrics(sg.adminUrl);
    const t0 = performance.now();
    // 48 connections: below token.introspection.maxConcurrent (64), so no fill request is refused.
    const fill = await load({ url, connections: 48, amount: size, next, maxSeconds: Math.ceil(size / 200) + 120 });
    const fillSeconds = (performance.now() - t0) / 1000;
    await sleep(2000);
    const after = procMemory(sg.pid);
    const m = await metrics(sg.adminUrl);
    await fullGc();
    const afterGc = procMemory(sg.pid);
    const mGc = await metrics(sg.adminUrl);
    const entries = mGc.get('scopegate_token_cache_entries');
    const r = {
      maxEntries: size, entries, requests: fill.total, statuses: fill.statuses, fillSeconds, fillRate: fill.total / fillSeconds,
      rssBefore: before.rss, rss: after.rss, hwm: after.hwm, rssAfterGc: afterGc.rss,
      metricRss: m.get('scopegate_process_resident_memory_bytes'),
      heapUsedBefore: beforeMetrics.get('scopegate_nodejs_heap_size_used_bytes'),
      heapUsed: m.get('scopegate_nodejs_heap_size_used_bytes'), heapUsedAfterGc: mGc.get('scopegate_nodejs_heap_size_used_bytes'),
    };
    r.bytesPerEntry = (r.rssAfterGc - r.rssBefore) / Math.max(1, entries - 1);
    r.heapPerEntry = (r.heapUsedAfterGc - r.heapUsedBefore) / Math.max(1, entries - 1);
    results.rss.push(r);
    log(`  maxEntries ${size.toLocaleString('en-US')}: ${entries} entries after ${fill.total} requests in ${fillSeconds.toFixed(1)} s (${fmt.rps(r.fillRate)}/s, ${JSON.stringify(fill.statuses)})`);
    log(`    VmRSS ${fmt.mb(r.rss)} MiB 2 s after the fill (peak ${fmt.mb(r.hwm)}), ${fmt.mb(r.rssAfterGc)} MiB after a full GC; before the fill ${fmt.mb(r.rssBefore)} MiB`);
    log(`    heap used ${fmt.mb(r.heapUsed)} MiB after the fill, ${fmt.mb(r.heapUsedAfterGc)} MiB after a full GC, ${fmt.mb(r.heapUsedBefore)} MiB before; per entry (after GC): ~${Math.round(r.bytesPerEntry)} B RSS, ~${Math.round(r.heapPerEntry)} B heap`);
    await sg.stop();
  }
}

// ---------------------------------------------------------------- report

const TARGET_LINES = [];
function verdict(ok) {
  return ok === undefined ? 'n/a' : ok ? 'met' : 'NOT met';
}

function report() {
  const t = results.targets;
  const rr0 = (n) => Boolean(t[n]?.rps);
  const ratio = (a, b) => (t[a]?.rps && t[b]?.rps ? t[a].rps / t[b].rps : NaN);
  const sgs = ['scopegate-introspection', 'scopegate-jwt', 'scopegate-many-tokens'].filter((n) => t[n]?.rps);
  // CPU efficiency: the other's CPU time per request over this one's (what the req/s ratio would be
  // if both were CPU-bound on a core of their own); far less sensitive to a busy machine.
  const eff = (a, b) => (t[a]?.cpuUs && t[b]?.cpuUs ? t[b].cpuUs / t[a].cpuUs : NaN);
  results.ratios = Object.fromEntries(sgs.map((n) => [n, {
    bare: ratio(n, 'bare-proxy'), direct: ratio(n, 'direct'), nginx: ratio(n, 'nginx'),
    cpuBare: eff(n, 'bare-proxy'), cpuDirect: eff(n, 'direct'), cpuNginx: eff(n, 'nginx'),
  }]));
  // The same ratio round by round (each round's scopegate against the bare proxy of the same fork
  // and round, measured next to it): how far the headline ratio of medians moves with the machine.
  // For information; the targets are judged on the ratio of medians.
  const paired = (a, b) => (t[a]?.rounds ?? []).map((r) => r.rps / t[b]?.rounds.find((x) => x.round === r.round && x.fork === r.fork)?.rps).filter(Number.isFinite);
  for (const n of sgs) results.ratios[n].barePerRound = paired(n, 'bare-proxy');
  if (t['bare-proxy-jwt']?.rps && rr0('scopegate-jwt')) {
    results.ratios['scopegate-jwt'].bareJwt = ratio('scopegate-jwt', 'bare-proxy-jwt');
    results.ratios['scopegate-jwt'].cpuBareJwt = eff('scopegate-jwt', 'bare-proxy-jwt');
  }
  // What the JWT itself adds, in the same process (paired: scopegate-jwt on scopegate-introspection's
  // processes, bare-proxy-jwt on bare-proxy's): CPU us per request, JWT minus opaque, fork by fork
  // and round by round; the difference between processes is out of it.
  const extra = (jwtName, opaqueName) => median((t[jwtName]?.rounds ?? []).map((r) => r.cpuUs - t[opaqueName]?.rounds.find((x) => x.round === r.round && x.fork === r.fork)?.cpuUs).filter(Number.isFinite));
  if (!opts.separateJwt && rr0('scopegate-jwt') && rr0('scopegate-introspection')) results.jwtExtraUs = { scopegate: extra('scopegate-jwt', 'scopegate-introspection'), bare: rr0('bare-proxy-jwt') && rr0('bare-proxy') ? extra('bare-proxy-jwt', 'bare-proxy') : NaN };
  // Authorization's own cost: each scopegate target against the bare proxy that forwards as it does.
  if (rr0('bare-proxy-hook')) {
    for (const n of sgs) {
      results.ratios[n].bareHook = ratio(n, 'bare-proxy-hook');
      results.ratios[n].cpuBareHook = eff(n, 'bare-proxy-hook');
    }
  }
  const forked = Object.entries(t).filter(([, x]) => x.forks);
  const chk = (label, value, ok, shown) => TARGET_LINES.push({ label, value: shown ?? value, verdict: verdict(Number.isFinite(value) || typeof value === 'boolean' ? ok : undefined) });
  const rr = results.ratios;
  chk('scopegate-introspection / bare-proxy >= 0.95', rr['scopegate-introspection']?.bare, rr['scopegate-introspection']?.bare >= 0.95, fmt.ratio(rr['scopegate-introspection']?.bare));
  chk('scopegate-jwt / bare-proxy >= 0.95', rr['scopegate-jwt']?.bare, rr['scopegate-jwt']?.bare >= 0.95, fmt.ratio(rr['scopegate-jwt']?.bare));
  chk('scopegate-many-tokens / bare-proxy >= 0.85', rr['scopegate-many-tokens']?.bare, rr['scopegate-many-tokens']?.bare >= 0.85, fmt.ratio(rr['scopegate-many-tokens']?.bare));
  const same = rr['scopegate-jwt']?.bareJwt;
  chk('(same request) scopegate-jwt / bare-proxy-jwt >= 0.95', same, same >= 0.95, fmt.ratio(same));
  for (const n of ['scopegate-introspection', 'scopegate-jwt']) {
    const v = rr[n]?.bareHook;
    if (v !== undefined) chk(`(same forwarding) ${n} / bare-proxy-hook >= 0.95`, v, v >= 0.95, fmt.ratio(v));
  }
  for (const n of sgs) chk(`${n} / nginx >= 0.35`, rr[n]?.nginx, rr[n]?.nginx >= 0.35, fmt.ratio(rr[n]?.nginx));
  // The same targets judged by CPU time per request (robust to a busy machine), for information.
  for (const [n, other, min] of [['scopegate-introspection', 'bare-proxy', 0.95], ['scopegate-jwt', 'bare-proxy', 0.95], ['scopegate-many-tokens', 'bare-proxy', 0.85], ...sgs.map((x) => [x, 'nginx', 0.35])]) {
    const v = rr[n]?.[other === 'nginx' ? 'cpuNginx' : 'cpuBare'];
    if (Number.isFinite(v)) chk(`(CPU efficiency) ${n} vs ${other} >= ${min}`, v, v >= min, fmt.ratio(v));
  }
  const fr = results.fixedRate?.summary;
  chk(`p99 added at ${opts.rate} req/s <= 1 ms (autocannon overallRate)`, fr?.autocannon.addedP99, fr?.autocannon.addedP99 <= 1, fr ? `${fmt.ms(fr.autocannon.addedP99)} ms` : undefined);
  chk(`p99 added at ${opts.rate} req/s <= 1 ms (paced)`, fr?.paced.addedP99, fr?.paced.addedP99 <= 1, fr ? `${fmt.ms(fr.paced.addedP99)} ms` : undefined);
  chk(`introspections per distinct token, ${opts.burst} at once = 1.00`, results.coalesce?.ratio, results.coalesce?.ratio === 1, results.coalesce ? results.coalesce.ratio.toFixed(2) : undefined);
  chk('introspections per distinct token, replica A then B (Redis) = 1.00', results.redis?.ratio, results.redis?.ratio === 1, results.redis?.ratio !== undefined ? results.redis.ratio.toFixed(2) : undefined);
  const million = results.rss?.find((r) => r.maxEntries === 1000000);
  chk('RSS with 1,000,000 entries < 400 MB', million?.rss, million ? million.rss < 400e6 : undefined, million ? `${(million.rss / 1e6).toFixed(0)} MB (${fmt.mb(million.rss)} MiB)` : 'not measured in this run');

  const L = [];
  L.push('# scopegate benchmark results', '');
  L.push(`Generated by \`bench/run.js\` (${opts.quick ? '**--quick smoke run**' : 'full run'}) on ${startedAt.toISOString()}.`, '');
  if (opts.quick) L.push('> A --quick run on a machine shared with other test suites: indicative only, not the numbers to judge by.', '');
  L.push('## Machine', '');
  L.push(`- CPU: ${machine.cpu}, ${machine.cores} cores`, `- Memory: ${machine.memory}`);
  L.push(`- Node ${machine.node}; nginx ${machine.nginx}; redis-server ${machine.redis}`);
  L.push(`- autocannon ${machine.autocannon}, fastify ${machine.fastify}, @fastify/http-proxy ${machine.httpProxy}, undici ${machine.undici}`);
  L.push(`- Kernel ${machine.kernel}; hypervisor: ${machine.hypervisor}`);
  L.push(`- Host speed at start: \`node -e 0\` ${machine.nodeStartMs.toFixed(0)} ms, one system call (fstat) ${(machine.syscallNs / 1000).toFixed(2)} µs (medians; see bench/README.md)`);
  L.push(`- Load average at start: ${machine.loadavg}; at end: ${loadavg().map((x) => x.toFixed(2)).join(' ')}`, '');
  L.push('## Settings', '');
  L.push(`- Request: \`GET ${PATH}\` with \`Authorization: Bearer <token>\` (the same request to every target, scopegate-jwt and bare-proxy-jwt with a JWT, the others with an opaque token; upstream answers a ${results.upstreamBytes ?? '~300'}-byte SCIM ListResponse)`);
  if (t['scopegate-jwt'] && !opts.separateJwt) L.push("- **scopegate-jwt is scopegate-introspection's processes sent the JWT** (configured with both `token.introspection` and `token.jwt`, as a deployment that accepts both kinds is), as bare-proxy-jwt is bare-proxy's processes sent it: the JWT's own cost is measured on the same processes as the opaque token's, without the difference between two processes of one code (the A/A spread below); `--separate-jwt` gives scopegate-jwt processes of its own (`token.jwt` only)");
  if (opts.forks > 1) L.push(`- **${opts.forks} processes (forks) of each proxy target** (${[...FORKED].filter((n) => t[n]).join(', ')}; bare-proxy-jwt is bare-proxy's forks sent the JWT), each measured in every round, as JMH runs a benchmark in several JVMs: two identical processes here differ by 2-12% for a whole run, so a target's figure is the median over all its forks and rounds (${opts.forks} x ${opts.rounds} = ${opts.forks * opts.rounds} measurements). A round is one pass through the targets per fork, judged pairs side by side in each pass; direct and nginx, one process each, in the first`);
  L.push(`- ${opts.rounds} rounds x ${opts.duration} s per target${opts.forks > 1 ? ' and fork' : ''}, in serpentine order (the listed order, then reversed, and so on: no target always runs late in a round), ${opts.connections} connections, pipelining 1, ${opts.warmup} s warm-up per process and ${opts.roundWarmup} s of uncounted load before each measurement (a process idles while the others run; the first second after that gap ran 20-30% slower on every target); medians`);
  if (opts.pin) L.push('- **Pinned** (`--pin`): the bench process (autocannon, the AS), the upstream and the fast introspection server on CPU 0; each measured target, every thread of it, on CPU 1 (direct, the upstream itself, on CPU 0 with the load generator)');
  L.push(`- Latency: autocannon's per-response hrtime (float ms), nearest-rank percentiles per round`);
  L.push(`- upstream pool: ${opts.upstreamConnections} connections (scopegate \`upstream.connections\`, bare-proxy's undici Pool, nginx \`keepalive\`)`);
  L.push(`- scopegate: \`node ${proxyNodeArgs().map((a) => `${a} `).join('')}dist/cli.js serve\` (the binary's node flags${EXTRA_NODE_ARGS.length ? ' and BENCH_NODE_ARGS' : ''}; the bare proxies were given the same), jans table (\`../shared/jans-scim-openapi.yaml\`), log level info, access log ${opts.accessLog === 'file' ? 'to a file' : 'piped and dropped'}, \`token.cache.maxTtlSeconds: 3600\` (entries outlive the run)`);
  L.push(`- Each target, the upstream and the fast introspection server run in their own processes; autocannon and the oidc-provider AS run in the bench process (the AS is idle while the cache is warm). The machine has ${machine.cores} cores: load generator, proxy and upstream share them.`);
  L.push('');
  if (Object.keys(t).length) {
    L.push(`## Throughput and latency (median of ${opts.forks > 1 ? 'forks and rounds' : 'rounds'})`, '');
    L.push('| target | req/s | min..max req/s | p50 ms | p99 ms | CPU us/req | non-2xx | errors | what |', '|---|---:|---:|---:|---:|---:|---:|---:|---|');
    for (const [n, x] of Object.entries(t)) {
      L.push(`| ${n} | ${fmt.rps(x.rps)} | ${fmt.rps(x.minRps)}..${fmt.rps(x.maxRps)} | ${fmt.ms(x.p50)} | ${fmt.ms(x.p99)} | ${x.cpuUs.toFixed(0)} | ${x.non2xx} | ${x.errors} | ${x.note} |`);
    }
    L.push('', `CPU us/req: user + system CPU time of the target's own process(es) (/proc/<pid>/stat; nginx: master + worker; direct: the upstream) per response, median of ${opts.forks > 1 ? 'forks and rounds' : 'rounds'}.`);
    L.push('');
    if (sgs.length) {
      L.push('| ratio | req/s / bare-proxy | / direct | / nginx | CPU efficiency vs bare-proxy | vs direct | vs nginx |', '|---|---:|---:|---:|---:|---:|---:|');
      for (const n of sgs) L.push(`| ${n} | ${fmt.ratio(rr[n].bare)} | ${fmt.ratio(rr[n].direct)} | ${fmt.ratio(rr[n].nginx)} | ${fmt.ratio(rr[n].cpuBare)} | ${fmt.ratio(rr[n].cpuDirect)} | ${fmt.ratio(rr[n].cpuNginx)} |`);
      L.push('', 'CPU efficiency = the other target\'s CPU us/req / this one\'s: the req/s ratio to expect when each is CPU-bound on a core of its own.');
      L.push('', `req/s / bare-proxy round by round (each measurement against bare-proxy's of the same round${opts.forks > 1 ? ' and fork, measured next to it' : ''}; for information, the targets are judged on the ratio of medians above): ${sgs.map((n) => `${n} ${rr[n].barePerRound.map(fmt.ratio).join(', ')} (median ${fmt.ratio(median(rr[n].barePerRound))})`).join('; ')}.`);
      const j = rr['scopegate-jwt'];
      if (j?.bareJwt !== undefined) L.push('', `scopegate-jwt against bare-proxy sent the same JWT header (bare-proxy-jwt): req/s ${fmt.ratio(j.bareJwt)}, CPU efficiency ${fmt.ratio(j.cpuBareJwt)}.`);
      const x = results.jwtExtraUs;
      if (x) L.push('', `What the ${t['scopegate-jwt'].note.match(/\((\d+) characters\)/)?.[1] ?? ''}-character JWT adds over the opaque token in the same process (CPU us per request, JWT minus opaque, median of the pairs measured in one round on one fork): scopegate ${x.scopegate.toFixed(1)}, bare-proxy ${Number.isFinite(x.bare) ? x.bare.toFixed(1) : '-'}.`);
      if (forked.length) {
        L.push('', 'The A/A control, the forks of each target (identical processes: the same code, config and token) by their own medians; the spread is the fastest over the slowest, how far apart two processes with nothing between them came out in this run:', '');
        L.push('| target | req/s of each fork | CPU us/req of each fork | spread |', '|---|---|---|---:|');
        for (const [n, x] of forked) L.push(`| ${n} | ${x.forks.map((f) => fmt.rps(f.rps)).join(', ')} | ${x.forks.map((f) => f.cpuUs.toFixed(0)).join(', ')} | ${fmt.ratio(x.spread)} |`);
      }
      const hooked = Object.entries(results.ratios).filter(([, r]) => r.bareHook !== undefined);
      if (hooked.length) {
        L.push('', 'Against bare-proxy-hook, the bare proxy that forwards as scopegate does (so only what authorization, the access line, metrics and identity headers cost shows): '
          + `${hooked.map(([n, r]) => `${n} req/s ${fmt.ratio(r.bareHook)}, CPU efficiency ${fmt.ratio(r.cpuBareHook)}`).join('; ')}.`);
      }
      L.push('');
    }
    const cached = Object.entries(t).filter(([, x]) => x.cache);
    if (cached.length) {
      L.push('Cache counters of each scopegate process over its whole life (fill and warm-up included), from its /metrics:', '');
      for (const [n, x] of cached) L.push(`- ${n}${x.cache.processes > 1 ? ` (${x.cache.processes} processes together)` : ''}${n === 'scopegate-introspection' && t['scopegate-jwt'] && !opts.separateJwt ? ', with scopegate-jwt (the same processes)' : ''}: ${x.cache.hits} hits, ${x.cache.misses} misses, ${x.cache.introspections} introspection calls, ${x.cache.jwksFetches} JWKS fetches`);
      L.push('');
    }
    L.push('<details><summary>Every round</summary>', '', '| target | round | fork | position in the round | req/s | p50 ms | p99 ms | CPU us/req | of which system | non-2xx |', '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const [n, x] of Object.entries(t)) x.rounds.forEach((r) => L.push(`| ${n} | ${r.round} | ${r.fork} | ${r.position} | ${fmt.rps(r.rps)} | ${fmt.ms(r.p50)} | ${fmt.ms(r.p99)} | ${r.cpuUs.toFixed(0)} | ${r.systemUs.toFixed(0)} | ${r.non2xx} |`));
    L.push('', '</details>', '');
  }
  if (results.fixedRate) {
    const s = results.fixedRate.summary;
    L.push(`## p99 added at a fixed ${opts.rate} req/s (bare-proxy vs scopegate-introspection, ${opts.rateRounds} alternating rounds x ${opts.rateDuration} s)`, '');
    L.push('| generator | bare p50 | bare p99 | scopegate p50 | scopegate p99 | p99 added | p99 added per round |', '|---|---:|---:|---:|---:|---:|---|');
    for (const k of ['autocannon', 'paced']) {
      L.push(`| ${k === 'autocannon' ? `autocannon overallRate, ${opts.rateConnections} connections` : 'paced (1 request per 1/rate s, node:http keep-alive)'} | ${fmt.ms(s[k].bare.p50)} | ${fmt.ms(s[k].bare.p99)} | ${fmt.ms(s[k].scopegate.p50)} | ${fmt.ms(s[k].scopegate.p99)} | **${fmt.ms(s[k].addedP99)}** | ${s[k].addedP99PerRound.map(fmt.ms).join(', ')} |`);
    }
    L.push('', `autocannon's overallRate releases each connection's share of the second as one back-to-back burst at the start of every second, so its latencies are those of a ${opts.rateConnections}-connection burst; the paced generator spreads requests evenly. Times in ms.`, '');
  }
  if (results.coalesce) {
    L.push('## Introspection coalescing', '');
    L.push(`${opts.burst} requests with the same new opaque token, connections opened first and the requests written at once; introspection calls counted at the (real oidc-provider) AS: **${results.coalesce.ratio.toFixed(2)} per distinct token** over ${opts.newTokens} tokens (per token: ${results.coalesce.perToken.join(', ')}); statuses ${JSON.stringify(results.coalesce.statuses)}.`, '');
  }
  if (results.redis) {
    L.push('## Two replicas sharing Redis', '');
    if (results.redis.skipped) L.push(`Skipped: ${results.redis.skipped}.`, '');
    else {
      L.push(`A token used on replica A, then on replica B (\`token.cache.redis\`): **${results.redis.ratio.toFixed(2)} introspections per distinct token** over ${opts.newTokens} tokens (per token: ${results.redis.sequential.join(', ')}); replica B's Redis hits: ${results.redis.replicaBRedisHits}.`, '');
      L.push(`For information, ${Math.floor(opts.burst / 2)} requests on A and ${Math.floor(opts.burst / 2)} on B at the same moment: ${results.redis.togetherRatio.toFixed(2)} per token (per token: ${results.redis.together.join(', ')}) — each replica coalesces its own callers; there is no lock across replicas. Statuses ${JSON.stringify(results.redis.statuses)}.`, '');
    }
  }
  if (results.rss?.length) {
    L.push('## Memory with a full token cache', '');
    L.push('Filled through `GET /Groups` with tokens holding only users.read: each token is introspected (bench/fast-as.js) and cached, then refused 403, so the fill never reaches the upstream. Measured 2 s after the fill.', '');
    L.push('| maxEntries | entries | fill time s | fill req/s | VmRSS MiB (before) | VmHWM MiB | heap used MiB (before) | RSS B/entry | heap B/entry |', '|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const r of results.rss) {
      L.push(`| ${r.maxEntries.toLocaleString('en-US')} | ${r.entries} | ${r.fillSeconds.toFixed(1)} | ${fmt.rps(r.fillRate)} | ${fmt.mb(r.rss)} (${fmt.mb(r.rssBefore)}) | ${fmt.mb(r.hwm)} | ${fmt.mb(r.heapUsed)} (${fmt.mb(r.heapUsedBefore)}) | ${Math.round(r.bytesPerEntry)} | ${Math.round(r.heapPerEntry)} |`);
    }
    if (!million) L.push('', '1,000,000 entries not measured in this run (`--rss 100000,1000000`, the default outside --quick).');
    L.push('');
  }
  if (results.startup) {
    L.push('## Startup', '');
    L.push(`\`scopegate serve\` with the jans table, from spawn to the "scopegate listening" line: **median ${fmt.ms(results.startup.median)} ms** over ${opts.startupRuns} runs (${results.startup.runs.map((x) => x.toFixed(0)).join(', ')} ms); \`node -e 0\` alone: ${fmt.ms(results.startup.nodeBaseline)} ms.`, '');
  }
  L.push('## Targets', '', '| target | measured | verdict |', '|---|---:|---|');
  for (const x of TARGET_LINES) L.push(`| ${x.label} | ${x.value ?? '-'} | ${x.verdict} |`);
  L.push('');
  if (results.notes.length) L.push('## Notes', '', ...results.notes.map((n) => `- ${n}`), '');
  L.push(`Re-run: \`npm run bench\` (full: ${opts.quick ? '3 forks x 5 rounds x 5 s' : `${opts.forks} forks x ${opts.rounds} rounds x ${opts.duration} s`}), \`npm run bench -- --quick\`, \`npm run bench -- --only scopegate-introspection,bare-proxy\`; \`node bench/run.js --help\`.`, '');
  return L.join('\n');
}

// ---------------------------------------------------------------- main

async function main() {
  log(`scopegate bench${quick ? ' (--quick)' : ''}: ${machine.cpu}, ${machine.cores} cores, ${machine.memory}; node ${machine.node}; nginx ${machine.nginx}; load average ${machine.loadavg}; hypervisor ${machine.hypervisor}; node -e 0 ${machine.nodeStartMs.toFixed(0)} ms, fstat ${(machine.syscallNs / 1000).toFixed(2)} us`);
  log(`temp dir ${tmp}`);
  // Children inherit the affinity: the upstream and the fast AS share CPU 0 with the load generator.
  if (opts.pin) pinTo(process.pid, 0);
  if (wanted('startup')) await startup();
  await throughput();
  if (wanted('fixed-rate')) await fixedRate();
  if (wanted('coalesce')) await coalesce();
  if (wanted('redis')) await redisShared();
  if (wanted('rss')) await rss();

  const text = report();
  log('\n== summary');
  const t = results.targets;
  if (Object.keys(t).length) {
    log(`  ${'target'.padEnd(24)} ${'req/s'.padStart(8)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)} ${'CPU us/req'.padStart(11)}`);
    for (const [n, x] of Object.entries(t)) log(`  ${n.padEnd(24)} ${fmt.rps(x.rps).padStart(8)} ${fmt.ms(x.p50).padStart(8)} ${fmt.ms(x.p99).padStart(8)} ${x.cpuUs.toFixed(0).padStart(11)}${x.non2xx || x.errors ? `  (${x.non2xx} non-2xx, ${x.errors} errors)` : ''}`);
    for (const [n, x] of Object.entries(t)) if (x.cache) log(`  ${n.padEnd(24)} cache: ${x.cache.hits} hits, ${x.cache.misses} misses, ${x.cache.introspections} introspections, ${x.cache.jwksFetches} JWKS fetches over the whole run`);
    for (const [n, r] of Object.entries(results.ratios)) log(`  ${n.padEnd(24)} req/s: /bare-proxy ${fmt.ratio(r.bare)}  /direct ${fmt.ratio(r.direct)}  /nginx ${fmt.ratio(r.nginx)}   CPU efficiency: vs bare-proxy ${fmt.ratio(r.cpuBare)}  vs direct ${fmt.ratio(r.cpuDirect)}  vs nginx ${fmt.ratio(r.cpuNginx)}${r.bareHook !== undefined ? `   /bare-proxy-hook ${fmt.ratio(r.bareHook)} (CPU ${fmt.ratio(r.cpuBareHook)})` : ''}`);
    for (const [n, r] of Object.entries(results.ratios)) if (r.barePerRound.length) log(`  ${n.padEnd(24)} req/s / bare-proxy round by round: ${r.barePerRound.map(fmt.ratio).join(', ')}`);
    if (results.jwtExtraUs) log(`  the JWT over the opaque token in the same process: scopegate ${results.jwtExtraUs.scopegate.toFixed(1)} us/req, bare-proxy ${Number.isFinite(results.jwtExtraUs.bare) ? results.jwtExtraUs.bare.toFixed(1) : '-'} us/req`);
    for (const [n, x] of Object.entries(t)) if (x.forks) log(`  A/A control ${n.padEnd(24)} forks ${x.forks.map((f) => `${fmt.rps(f.rps)} (${f.cpuUs.toFixed(0)} us)`).join(', ')}; spread ${fmt.ratio(x.spread)}`);
  }
  log('  targets:');
  for (const x of TARGET_LINES) log(`    ${x.verdict.padEnd(8)} ${x.label}: ${x.value ?? '-'}`);
  if (opts.write) {
    writeFileSync(opts.out, text);
    writeFileSync(opts.out.replace(/\.md$/, '.json'), JSON.stringify(results, (k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2));
    log(`\nwrote ${relative(process.cwd(), opts.out)} and ${relative(process.cwd(), opts.out.replace(/\.md$/, '.json'))}`);
  }
}

await runScript(main, async () => {
  await auth?.close().catch(() => undefined);
  rmSync(tmp, { recursive: true, force: true });
});
