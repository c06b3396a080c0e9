// CPU profile of `scopegate serve` under load: `npm run bench:profile` (builds first), or
// `node bench/profile.js [--target introspection|jwt] [--duration S] [--connections N]`.
//
// Starts the upstream (bench/upstream.js) and the real oidc-provider, runs
// `node --cpu-prof dist/cli.js serve` with one warm token, loads it with autocannon for
// --duration seconds, stops it (SIGTERM: the profile is written on exit), and summarises the
// samples taken during the load only (startup and warm-up excluded). The .cpuprofile is kept in
// bench/profiles/ (open it in Chrome DevTools or speedscope); the summary is printed and written
// to bench/PROFILE.md.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { parseArgs } from 'node:util';
import { analyse, format } from './cpuprofile.js';
import { BASE_PATH, BENCH, binNodeArgs, SHARED_OPENAPI, fmt, get, load, machineInfo, runScript, sleep, startNodeChild, startServe, stopChild } from './lib.js';

const { values } = parseArgs({
  options: {
    target: { type: 'string', default: 'introspection' },
    duration: { type: 'string', default: process.env.BENCH_PROFILE_DURATION ?? '10' },
    warmup: { type: 'string', default: '2' },
    connections: { type: 'string', default: '50' },
    interval: { type: 'string', default: '250' },
    top: { type: 'string', default: '30' },
    out: { type: 'string' },
    'access-log': { type: 'string', default: 'file' },
  },
});
if (!['introspection', 'jwt', 'bare', 'hook'].includes(values.target)) throw new Error('--target: introspection, jwt, bare or hook (bench/bare-proxy.js, and with --hook, for comparison)');
const bareTarget = values.target === 'bare' || values.target === 'hook';
const label = values.target === 'bare' ? 'bare-proxy' : values.target === 'hook' ? 'bare-proxy-hook' : `scopegate-${values.target}`;
const duration = Number(values.duration);
const PATH = `${BASE_PATH}/Users?count=10`;
const tmp = mkdtempSync(join(tmpdir(), 'scopegate-profile-'));
let auth;

await runScript(async () => {
  const machine = machineInfo();
  console.log(`profile: ${label}, ${duration} s x ${values.connections} connections; ${machine.cpu}, ${machine.cores} cores; load average ${machine.loadavg}`);
  const { info } = await startNodeChild(join(BENCH, 'upstream.js'), [], { name: 'upstream' });
  const { startAuthServer, SCIM_SCOPES } = await import('../dist/demo/auth-server.js');
  auth = await startAuthServer({ accessTokenTtlSeconds: 3600 });
  const token = values.target === 'jwt'
    ? { jwt: { jwksUri: auth.jwksUri, issuer: auth.issuer } }
    : { introspection: { endpoint: auth.introspectionEndpoint, clientId: auth.clientId, clientSecret: auth.clientSecret, authMethod: 'client_secret_basic' } };
  const config = join(tmp, 'scopegate.json');
  writeFileSync(config, JSON.stringify({
    listen: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 },
    upstream: { url: `http://127.0.0.1:${info.port}`, connections: 128 },
    openapi: { file: SHARED_OPENAPI },
    token: { ...token, cache: { maxTtlSeconds: 3600 } },
    log: { level: 'info' },
  }));
  const profDir = join(tmp, 'prof');
  mkdirSync(profDir);
  const profArgs = ['--cpu-prof', `--cpu-prof-dir=${profDir}`, `--cpu-prof-interval=${Number(values.interval)}`];
  let sg;
  if (bareTarget) {
    const bare = await startNodeChild(join(BENCH, 'bare-proxy.js'), ['--upstream', `http://127.0.0.1:${info.port}`, '--connections', '128', ...(values.target === 'hook' ? ['--hook'] : [])], { name: label, nodeArgs: [...binNodeArgs(), ...profArgs] });
    sg = { proxyUrl: `http://127.0.0.1:${bare.info.port}`, stop: () => stopChild(bare.child, 10000), stderr: () => '' };
  } else {
    sg = await startServe(config, { logFile: values['access-log'] === 'file' ? join(tmp, 'access.log') : 'pipe', nodeArgs: profArgs });
  }
  const bearer = await auth.issueToken([...SCIM_SCOPES], { jwt: values.target === 'jwt' });
  const headers = { authorization: `Bearer ${bearer}` };
  const first = await get(sg.proxyUrl + PATH, headers);
  if (first.status !== 200) throw new Error(`warm request answered ${first.status}: ${first.text}`);
  await load({ url: sg.proxyUrl + PATH, headers, connections: Number(values.connections), duration: Number(values.warmup) });
  await sleep(200);
  const start = process.hrtime.bigint() / 1000n;
  const r = await load({ url: sg.proxyUrl + PATH, headers, connections: Number(values.connections), duration });
  const end = process.hrtime.bigint() / 1000n;
  console.log(`load: ${fmt.rps(r.rps)} req/s, p50 ${fmt.ms(r.p50)} ms, p99 ${fmt.ms(r.p99)} ms, ${r.non2xx} non-2xx (profiler on: slower than unprofiled)`);
  const code = await sg.stop();
  if (code !== 0) throw new Error(`scopegate exited ${code}: ${sg.stderr()}`);
  const file = readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'));
  if (!file) throw new Error('no .cpuprofile written');
  const profile = JSON.parse(readFileSync(join(profDir, file), 'utf8'));
  let window = [Number(start), Number(end)];
  const last = profile.endTime;
  if (!(window[0] >= profile.startTime && window[0] <= last)) {
    console.log('(the profile clock does not match this process clock: analysing the whole profile)');
    window = undefined;
  }
  const keepDir = join(BENCH, 'profiles');
  mkdirSync(keepDir, { recursive: true });
  const kept = join(keepDir, `${label}.cpuprofile`);
  copyFileSync(join(profDir, file), kept);
  const text = [
    `# CPU profile of ${bareTarget ? `${label} (bench/bare-proxy.js${values.target === 'hook' ? ' --hook' : ''})` : label} under load`, '',
    `${new Date().toISOString()}; ${machine.cpu}, ${machine.cores} cores; node ${machine.node}; load average at start ${machine.loadavg}.`,
    (bareTarget
      ? `\`node --cpu-prof --cpu-prof-interval=${values.interval} bench/bare-proxy.js${values.target === 'hook' ? ' --hook' : ''}\` (no auth, no log); `
      : `\`node --cpu-prof --cpu-prof-interval=${values.interval} dist/cli.js serve\`, jans table, one warm ${values.target === 'jwt' ? 'JWT' : 'opaque'} token, access log to ${values['access-log'] === 'file' ? 'a file' : 'a pipe, dropped'}; `)
      + `autocannon ${values.connections} connections for ${duration} s on \`GET ${PATH}\`: ${fmt.rps(r.rps)} req/s with the profiler on. `
      + `Only samples taken during that load are counted${window ? '' : ' (clock mismatch: the whole profile is counted)'}. Raw profile: \`${relative(process.cwd(), kept)}\`.`, '',
    format(analyse(profile, window), { top: Number(values.top), ...(window ? { requests: r.total } : {}) }), '',
  ].join('\n');
  console.log(`\n${text}`);
  const out = values.out ?? join(BENCH, bareTarget ? `PROFILE-${label}.md` : values.target === 'jwt' ? 'PROFILE-jwt.md' : 'PROFILE.md');
  writeFileSync(out, text);
  console.log(`wrote ${relative(process.cwd(), out)} and ${relative(process.cwd(), kept)}`);
}, async () => {
  await auth?.close().catch(() => undefined);
  rmSync(tmp, { recursive: true, force: true });
});
