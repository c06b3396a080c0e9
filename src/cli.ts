#!/usr/bin/env -S node --no-memory-reducer
/**
 * The process boundary: argv, environment, signals, exit codes. The only file that reads
 * process.env or exits. Exit 2: bad usage or bad config; exit 1: a runtime failure.
 *
 * The interpreter line gives node --no-memory-reducer (GNU env -S splits it): V8's memory reducer,
 * the full collections it runs once a process has idled for about 45 s, left the gateway's
 * request path slower for the rest of its life (41 -> 49 us of CPU a request measured here, the
 * bare proxies unchanged; README, Performance). A process started as `node dist/cli.js` runs
 * without it: the Dockerfile names it, and so should anything that starts the file with node.
 */
import { existsSync } from 'node:fs';
import { METHODS } from 'node:http';
import { parseArgs } from 'node:util';
import { request } from 'undici';
import { loadConfig, type Config } from './config.js';
import { ConfigError } from './errors.js';
import { parseTarget } from './request/target.js';
import { queryHasToken } from './token/bearer.js';
import { loadTable, withTableProblems } from './runtime.js';
import { isBulk } from './bulk.js';
import type { Operation } from './scopes/openapi.js';
import { requirementOf, requirementOfMatch } from './scopes/table.js';

const HELP: Record<string, string> = {
  main: `scopegate: OAuth 2.0 scope enforcement in front of an API that has none (jans-scim in BYPASS mode)

usage: scopegate <command> [options]

commands:
  serve     run the gateway and its admin listener until SIGTERM/SIGINT (SIGHUP reloads)
  check     validate the config and the OpenAPI file
  routes    print the endpoint-to-scope table (--json for automation)
  explain   tell which table entry METHOD PATH hits and what it needs
  demo      run a complete local stack: authorization server, SCIM server, gateway
  purge     drop cached token validations on every replica

Each command takes --help, and each but demo --config FILE (default: $SCOPEGATE_CONFIG, then config/scopegate.yaml).`,
  serve: 'usage: scopegate serve [--config FILE]\n\nRuns the gateway. SIGHUP reloads the config and the OpenAPI file (an invalid one is logged and the running one kept); SIGTERM/SIGINT finish in-flight requests and exit 0.',
  check: 'usage: scopegate check [--config FILE]\n\nValidates the config and the OpenAPI file and prints a one-line summary. Exit 0 valid, 2 invalid (every problem printed with its key path).',
  routes: 'usage: scopegate routes [--config FILE] [--json]\n\nPrints method, full path template and required scopes of every operation. --json prints [{"method","path","operationId","public","scopes"}], scopes being alternatives of scope lists that are all required.',
  explain: 'usage: scopegate explain [--config FILE] METHOD PATH\n\nTells which table entry a request would hit and what it needs, or why it is refused. No token involved; exit 0 either way.',
  demo: 'usage: scopegate demo [--port N]\n\nStarts, on localhost, an authorization server laid out like jans-auth, a SCIM server standing in for jans-scim in BYPASS mode, and the gateway in front of it; prints the client credentials and curl commands to try. Ctrl-C stops it.',
  purge: 'usage: scopegate purge [--config FILE] (--token T | --token - | --fingerprint F | --client-id C)\n\nAsks the admin listener (POST /cache/purge) to drop matching cached validations here, in Redis and on every replica.\n--token - reads the token from standard input (its first line), out of the process list and the shell history.',
};

class UsageError extends Error {}

/** Every option of the command line. */
const OPTIONS = {
  config: { type: 'string', short: 'c' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
  token: { type: 'string' }, fingerprint: { type: 'string' }, 'client-id': { type: 'string' }, port: { type: 'string' },
} as const;

/** The options each command takes, besides --help. */
const COMMAND_OPTIONS: Partial<Record<string, readonly (keyof typeof OPTIONS)[]>> = {
  serve: ['config'],
  check: ['config'],
  routes: ['config', 'json'],
  explain: ['config'],
  demo: ['port'],
  purge: ['config', 'token', 'fingerprint', 'client-id'],
};

/**
 * `--token -abc` as `--token=-abc`: the value of an option that takes one is the next argument,
 * whatever it begins with. A token or a fingerprint is base64url and may begin with a dash, which
 * parseArgs would otherwise refuse as an ambiguous option value.
 */
function attachValues(args: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--') {
      out.push(...args.slice(i));
      break;
    }
    const long = arg.startsWith('--') ? arg.slice(2) : Object.entries(OPTIONS).find(([, o]) => 'short' in o && arg === `-${o.short}`)?.[0];
    const option = long !== undefined && Object.hasOwn(OPTIONS, long) ? OPTIONS[long as keyof typeof OPTIONS] : undefined;
    if (option?.type === 'string' && i + 1 < args.length) out.push(`--${long}=${args[++i]!}`);
    else out.push(arg);
  }
  return out;
}

function configPath(given: string | undefined): string {
  // An empty SCOPEGATE_CONFIG (a template that left it blank) names no file: the default applies.
  return given ?? (process.env.SCOPEGATE_CONFIG || 'config/scopegate.yaml');
}

function formatScopes(requirement: readonly (readonly string[])[], isPublic: boolean): string {
  if (isPublic) return 'public';
  return requirement.map((alt) => (alt.length === 0 ? '(any valid token)' : alt.join(' + '))).join(' | ');
}

/** Loads the config; what was ignored but may be a mistake goes to stderr (stdout stays the answer). */
function load(given: string | undefined): Config {
  const config = loadConfig(configPath(given), process.env);
  for (const warning of config.warnings) console.error(`scopegate: warning: ${warning}`);
  return config;
}

function check(values: { config?: string }): number {
  let config: Config;
  try {
    config = load(values.config);
  } catch (error) {
    // The OpenAPI file's problems are printed with the config's when the keys naming it are valid.
    throw withTableProblems(error);
  }
  const table = loadTable(config);
  const ops = table.operations;
  const scoped = ops.filter((o) => !o.public).length;
  const modes = [config.token.introspection ? `introspection (${config.token.introspection.authMethod})` : '', config.token.jwt ? 'jwt' : ''].filter(Boolean).join(' + ');
  console.log(`ok: ${configPath(values.config)}: ${ops.length} operations (${scoped} scoped, ${ops.length - scoped} public) from ${config.openapi.file}; tokens: ${modes}; upstream ${config.upstream.url}`);
  return 0;
}

function routes(values: { config?: string; json?: boolean }): number {
  const config = load(values.config);
  const table = loadTable(config);
  // What the gateway enforces: the root search's own scopes and, under search.rootRequiresReadScopes, the read scopes beside them.
  const scopes = (o: Operation) => requirementOf(table, o, config.search.rootRequiresReadScopes);
  if (values.json) {
    const rows = table.operations.map((o) => ({ method: o.method, path: o.path, operationId: o.operationId, public: o.public, scopes: scopes(o) }));
    console.log(JSON.stringify(rows, null, 2));
    return 0;
  }
  const width = Math.max(...table.operations.map((o) => o.path.length));
  console.log(`${'METHOD'.padEnd(7)} ${'PATH'.padEnd(width)}  SCOPES`);
  for (const o of table.operations) console.log(`${o.method.padEnd(7)} ${o.path.padEnd(width)}  ${formatScopes(scopes(o), o.public)}`);
  return 0;
}

function explain(values: { config?: string }, positionals: string[]): number {
  if (positionals.length !== 2) throw new UsageError('explain takes METHOD PATH');
  const [method, path] = positionals as [string, string];
  const config = load(values.config);
  const table = loadTable(config);
  const say = (line: string) => console.log(`${method} ${path}\n  ${line}`);
  // As the gateway: Node's HTTP parser refuses a method it does not know (lower-case ones
  // included) before the table is consulted, and CONNECT never reaches the table.
  if (!METHODS.includes(method)) {
    say('refused 400: not a method the HTTP parser knows (methods are case-sensitive; a non-canonical method is never forwarded)');
    return 0;
  }
  if (method === 'CONNECT') {
    say('refused 400: CONNECT is not served');
    return 0;
  }
  let target;
  try {
    // No Host here: an absolute-form target is explained as sent with a Host of its own authority.
    const authority = /^[Hh][Tt][Tt][Pp][Ss]?:\/\/([^/?#]*)/.exec(path)?.[1];
    target = parseTarget(path, authority, config.limits.targetBytes, table.encodable);
  } catch (error) {
    say(`refused ${(error as { statusCode?: number }).statusCode ?? 400}: ${(error as Error).message}`);
    return 0;
  }
  if (method === 'OPTIONS') {
    const m = table.match('OPTIONS', target.path);
    say(m.kind === 'none' ? 'refused 404: path not in the table' : `answered by the gateway: 204, Allow: ${m.kind === 'method' ? m.allow.join(', ') : 'OPTIONS'}; never forwarded`);
    return 0;
  }
  const match = table.match(method, target.path);
  if (match.kind === 'none' && method === 'TRACE') say('refused 405: TRACE is served nowhere; Allow: (none)');
  else if (match.kind === 'none') say('refused 404: path not in the table');
  else if (match.kind === 'method') say(`refused 405: method not in the table for this path; Allow: ${match.allow.join(', ')}`);
  else {
    const o = match.operation;
    // A token in the query is refused wherever it is sent (a public operation reads none, and would pass it on).
    if (queryHasToken(target.query)) {
      say(o.public && !match.also ? 'refused 400: access_token in the query (a token may only travel in the Authorization header)'
        : 'refused: access_token in the query (400 beside an Authorization header; without one, 401: no bearer token)');
      return 0;
    }
    const head = method === 'HEAD' && o.method === 'GET' ? ' (HEAD is authorised as GET)' : '';
    const requirement = requirementOfMatch(table, o, match.also, config.search.rootRequiresReadScopes);
    const needs = requirement === undefined ? 'public: forwarded without a token' : `needs a bearer token with ${formatScopes(requirement, false)}`;
    const also = match.also ? ` (the path matches ${match.also.map((a) => `${a.method} ${a.path}`).join(', ')} too, whose scopes it needs as well)` : '';
    const bulk = isBulk(o) && config.bulk.checkOperations ? '; and each inner operation\'s own scopes (bulk.checkOperations)' : '';
    say(`matches ${o.operationId ? `${o.operationId} (${o.method} ${o.path})` : `${o.method} ${o.path}`}${head}${also}: ${needs}${bulk}`);
  }
  return 0;
}

/** The first line of standard input, trimmed. */
async function firstLineOfStdin(): Promise<string> {
  let text = '';
  for await (const chunk of process.stdin) {
    text += String(chunk);
    if (text.includes('\n') || text.length > 65536) break;
  }
  return text.split(/\r?\n/, 1)[0]!.trim();
}

async function purge(values: { config?: string; token?: string; fingerprint?: string; 'client-id'?: string }): Promise<number> {
  // A token on the command line is in the process list and the shell history: `-` reads it from stdin.
  if (values.token === '-') {
    values = { ...values, token: await firstLineOfStdin() };
    if (!values.token) throw new UsageError('purge --token -: no token on standard input');
  }
  const given = [values.token ? { token: values.token } : undefined, values.fingerprint ? { fingerprint: values.fingerprint } : undefined, values['client-id'] ? { clientId: values['client-id'] } : undefined].filter(Boolean);
  if (given.length !== 1) throw new UsageError('purge takes exactly one of --token, --fingerprint, --client-id');
  const config = load(values.config);
  const host = config.admin.host.includes(':') ? `[${config.admin.host}]` : config.admin.host;
  const response = await request(`http://${host}:${config.admin.port}/cache/purge`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(given[0]), signal: AbortSignal.timeout(10000),
  });
  const text = await response.body.text();
  if (response.statusCode !== 200) {
    console.error(`scopegate purge: the admin listener answered ${response.statusCode}: ${text}`);
    // 400 or 413: what was given is malformed or too large (a fingerprint that is not one, a
    // client id of 100 kB), which is bad usage.
    return response.statusCode === 400 || response.statusCode === 413 ? 2 : 1;
  }
  console.log(text);
  return 0;
}

async function serve(values: { config?: string }): Promise<number> {
  const { startGateway } = await import('./app.js');
  // The stop signals are listened for from the start: one that arrives while the gateway starts
  // (discovery, the wait for Redis) is carried out as soon as it has started, rather than killing
  // it (their default). A SIGHUP meanwhile has nothing to reload: the config is being read.
  // They stay listened for while the gateway stops: a second one (a supervisor that repeats its
  // SIGTERM, Ctrl-C pressed twice) would otherwise kill the process, cutting the requests in
  // flight and losing the log lines not yet written. listen.shutdownTimeoutMs bounds the stop.
  const stopped = new Promise<string>((resolve) => {
    process.on('SIGTERM', resolve);
    process.on('SIGINT', resolve);
  });
  let reload = (): void => undefined;
  process.on('SIGHUP', () => reload());
  const gateway = await startGateway(configPath(values.config), { env: process.env });
  reload = () => void gateway.reload();
  const signal = await stopped;
  gateway.logger.info({ signal }, 'stopping: finishing in-flight requests');
  await gateway.close();
  // Past the shutdown deadline an upstream call may still hold a socket for a client that is gone
  // already: nothing is left worth waiting for (the logs are flushed), so the process ends now.
  process.exit(0);
}

async function demo(values: { port?: string }): Promise<number> {
  // Number() would read '' as 0 (any port) and 'abc' as NaN (which the config turns into 8080).
  if (values.port !== undefined && !(/^\d{1,5}$/.test(values.port) && Number(values.port) <= 65535)) {
    throw new UsageError('--port must be a port number (0-65535)');
  }
  let demoModule: typeof import('./demo/demo.js');
  try {
    demoModule = await import('./demo/demo.js');
  } catch (error) {
    // The demo's servers are optional dependencies, left out of a production install (the image).
    const missing = /Cannot find (?:package|module) '(oidc-provider|scimmy)'/.exec((error as Error).message)?.[1];
    if (missing === undefined) throw error;
    console.error(`scopegate: the demo needs the optional dependencies oidc-provider and scimmy (${missing} is not installed): run npm ci without --omit=optional`);
    return 1;
  }
  return demoModule.runDemo({ port: values.port === undefined ? 8080 : Number(values.port) });
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    console.log(HELP.main);
    return command === undefined ? 2 : 0;
  }
  // Own properties only: `toString` is no command.
  const names = Object.hasOwn(COMMAND_OPTIONS, command) ? COMMAND_OPTIONS[command] : undefined;
  if (!names) throw new UsageError(`unknown command "${command}"`);
  // Only the command's own options: another command's option (`serve --port`) is refused, not
  // silently ignored.
  const taken: readonly (keyof typeof OPTIONS)[] = ['help', ...names];
  const options = Object.fromEntries(taken.map((name) => [name, OPTIONS[name]]));
  const { values, positionals, tokens } = parseArgs({ args: attachValues(rest), allowPositionals: command === 'explain', options, strict: true, tokens: true }) as {
    values: { config?: string; json?: boolean; help?: boolean; token?: string; fingerprint?: string; 'client-id'?: string; port?: string };
    positionals: string[];
    tokens: Array<{ kind: string; name?: string }>;
  };
  // An option given twice is ambiguous (parseArgs keeps the last): `purge --token A --token B`
  // would drop A's revocation in silence, `--config a --config b` read another file than meant.
  const seen = new Set<string>();
  for (const token of tokens) {
    if (token.kind !== 'option' || token.name === undefined) continue;
    if (seen.has(token.name)) throw new UsageError(`--${token.name} given more than once`);
    seen.add(token.name);
  }
  if (values.help) {
    console.log(HELP[command]);
    return 0;
  }
  if (values.config === '') throw new UsageError('--config needs a file name');
  if (values.config !== undefined && !existsSync(values.config)) {
    throw new ConfigError([`${values.config}: cannot read the config file (ENOENT)`]);
  }
  switch (command) {
    case 'serve': return serve(values);
    case 'check': return check(values);
    case 'routes': return routes(values);
    case 'explain': return explain(values, positionals);
    case 'demo': return demo(values);
    case 'purge': return purge(values);
    default: throw new UsageError(`unknown command "${command}"`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    if (error instanceof ConfigError) {
      for (const warning of error.warnings) console.error(`scopegate: warning: ${warning}`);
      console.error(`scopegate: invalid configuration:\n${error.problems.map((p) => `  ${p}`).join('\n')}`);
      process.exitCode = 2;
    } else if (error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      console.error(`scopegate: ${(error as Error).message}\n(scopegate --help for usage)`);
      process.exitCode = 2;
    } else {
      console.error(`scopegate: ${(error as Error).message ?? String(error)}`);
      process.exitCode = 1;
    }
  },
);
