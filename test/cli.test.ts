/**
 * The command line as operators run it: `node dist/cli.js` spawned with a clean environment.
 * INTERFACE.md, "Command line": exit 0 on success, 2 on bad usage or bad config (every problem
 * printed with its key path), `explain` exits 0 whether the request would be allowed or not.
 */
import { spawnSync } from 'node:child_process';
import t from 'tap';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { loadConfig } from '../src/config.js';
import { loadTable } from '../src/runtime.js';
import { CLI, ensureBuilt, ROOT, runCli } from './helpers/cli.js';
import { B, OWN_OPENAPI, startTestGateway } from './helpers/gateway.js';
import { rawRequest } from './helpers/raw.js';
import { closedPort } from './gateway/support.js';
import { startRecordingUpstream } from './helpers/upstream.js';
import { bearer, send, startStack } from './helpers/stack.js';

const DEFAULT_CONFIG = join(ROOT, 'config', 'scopegate.yaml');
const TOKEN = { jwt: { jwksUri: 'https://as.example/jwks', issuer: 'https://as.example' } };
const tmp = mkdtempSync(join(tmpdir(), 'scopegate-cli-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

function writeTmp(name: string, content: string | object): string {
  const file = join(tmp, name);
  writeFileSync(file, typeof content === 'string' ? content : stringify(content));
  return file;
}

t.before(ensureBuilt);

/** A valid OpenAPI document padded past 16 MiB with a comment: its size alone refuses it. */
function bigOpenApi(): string {
  const file = join(tmp, 'big-doc.yaml');
  writeFileSync(file, `${stringify(SMALL_DOC)}# ${'x'.repeat(16 * 1024 * 1024)}\n`);
  return file;
}

/** A valid OpenAPI document whose path holds é written as one Latin-1 byte (0xE9). */
function latin1OpenApi(): string {
  const file = join(tmp, 'latin1-doc.yaml');
  const text = stringify(SMALL_DOC);
  const e = text.indexOf('/Users') + 3;
  writeFileSync(file, Buffer.concat([Buffer.from(text.slice(0, e)), Buffer.from([0xe9]), Buffer.from(text.slice(e + 1))]));
  return file;
}

const SMALL_DOC = { openapi: '3.0.3', components: { securitySchemes: { o: { type: 'oauth2', flows: { clientCredentials: { tokenUrl: 'https://as.example/token', scopes: { r: 'read' } } } } } }, paths: { '/Users': { get: { security: [{ o: ['r'] }] } } } };

/** A billion laughs: ten aliases of ten aliases of ... (the YAML library stops at 100 alias expansions). */
const BOMB = ['a: &a [x, x, x, x, x, x, x, x, x, x]', ...Array.from({ length: 9 }, (_, i) => `b${i}: &b${i} [${Array(10).fill(i === 0 ? '*a' : `*b${i - 1}`).join(', ')}]`)].join('\n') + '\n';

t.test('check with the default config: exit 0 and a one-line summary', async (t) => {
  const { code, stdout, stderr } = await runCli(['check']);
  t.equal(code, 0, stderr);
  t.equal(stderr, '');
  const lines = stdout.trimEnd().split('\n');
  t.equal(lines.length, 1, 'one line');
  t.match(lines[0], /^ok: config\/scopegate\.yaml: 31 operations \(26 scoped, 5 public\) from .*config\/scim-openapi\.yaml; /);
});

t.test('check refuses a bad config with exit 2, naming what is wrong', async (t) => {
  const missing = join(tmp, 'does-not-exist.yaml');
  const cases: Array<[name: string, args: string[], stderr: RegExp, env?: Record<string, string>]> = [
    ['missing file', ['check', '--config', missing], /does-not-exist\.yaml: cannot read the config file \(ENOENT\)/],
    ['missing file named by SCOPEGATE_CONFIG', ['check'], /does-not-exist\.yaml: cannot read the config file \(ENOENT\)/, { SCOPEGATE_CONFIG: missing }],
    ['YAML syntax error', ['check', '--config', writeTmp('syntax.yaml', 'listen:\n  port: 1\n  host: [unclosed\ntoken: {}\n')], /syntax\.yaml: syntax error at line \d+, column \d+/],
    ['unknown key', ['check', '--config', writeTmp('unknown.yaml', { token: { ...TOKEN, introspecton: {} } })], /^ {2}token\.introspecton: unknown key \(did you mean token\.introspection\?\)$/m],
    ['wrong type', ['check', '--config', writeTmp('type.yaml', { listen: { port: 'abc' }, token: TOKEN })], /^ {2}listen\.port: must be a port number/m],
    ['no token section', ['check', '--config', writeTmp('notoken.yaml', { listen: { port: 1 } })], /^ {2}token: /m],
    ['bad value of an environment variable', ['check', '--config', DEFAULT_CONFIG], /^ {2}listen\.port \(SCOPEGATE_LISTEN_PORT\): must be a port number/m, { SCOPEGATE_LISTEN_PORT: 'tcp://10.0.0.1:8080' }],
    ['broken OpenAPI file', ['check', '--config', writeTmp('badapi.yaml', { openapi: { file: writeTmp('badapi-doc.yaml', { swagger: '2.0', paths: {} }) }, token: TOKEN })], /openapi\.file: Swagger 2\.0 is not supported/],
    ['missing OpenAPI file', ['check', '--config', writeTmp('noapi.yaml', { openapi: { file: './absent-openapi.yaml' }, token: TOKEN })], /openapi\.file: cannot read .*absent-openapi\.yaml/],
    // The OpenAPI file is read at startup and at every reload: bounded, and UTF-8 text or nothing.
    ['OpenAPI file over 16 MiB', ['check', '--config', writeTmp('bigapi.yaml', { openapi: { file: bigOpenApi() }, token: TOKEN })], /^ {2}openapi\.file: \S*big-doc\.yaml is not a regular file or a pipe of at most 16777216 bytes$/m],
    ['OpenAPI file that is a device', ['check', '--config', writeTmp('zeroapi.yaml', { openapi: { file: '/dev/zero' }, token: TOKEN })], /^ {2}openapi\.file: \/dev\/zero is not a regular file or a pipe of at most 16777216 bytes$/m],
    ['OpenAPI file that is a directory', ['check', '--config', writeTmp('dirapi.yaml', { openapi: { file: tmp }, token: TOKEN })], /^ {2}openapi\.file: \S+ is not a regular file or a pipe of at most 16777216 bytes$/m],
    ['OpenAPI file with a Latin-1 byte', ['check', '--config', writeTmp('latin1api.yaml', { openapi: { file: latin1OpenApi() }, token: TOKEN })], /^ {2}openapi\.file: \S*latin1-doc\.yaml is not UTF-8 text$/m],
    // Deny by default: a file that declares no oauth2 security makes a gateway that checks nothing.
    // A problem inside the OpenAPI file names the config key that chose the file, then where in it.
    ['apiKey-only operation', ['check', '--config', writeTmp('api-key.yaml', { openapi: { file: writeTmp('key-doc.yaml', { openapi: '3.0.3', components: { securitySchemes: { k: { type: 'apiKey', in: 'header', name: 'k' } } }, paths: { '/a': { get: { security: [{ k: [] }] } } } }) }, token: TOKEN })], /^ {2}openapi\.file: GET \/a: can only be satisfied by k \(apiKey\)/m],
    ['OpenAPI file without oauth2 security', ['check', '--config', writeTmp('api-public.yaml', { openapi: { file: writeTmp('public-doc.yaml', { openapi: '3.0.3', paths: { '/Users': { get: {}, post: {} }, '/Groups': { get: { security: [] } } } }) }, token: TOKEN })], /^ {2}openapi\.file: no operation requires a token/m],
    // ... nor does a scoped openapi.extra entry beside it make it one: every operation of the file would be public.
    ['OpenAPI file without oauth2 security, with a scoped extra entry', ['check', '--config', writeTmp('api-public-extra.yaml', { openapi: { file: writeTmp('public-doc2.yaml', { openapi: '3.0.3', paths: { '/Users': { get: {}, post: {} } } }), extra: [{ method: 'GET', path: '/UpdatedUsers', scopes: ['https://jans.io/scim/users.read'] }] }, token: TOKEN })], /^ {2}openapi\.file: no operation requires a token \(openapi\.extra entries aside\)/m],
    // YAML that parses but cannot become a value: a config problem naming the file, not a crash (exit 1).
    ['unresolved alias', ['check', '--config', writeTmp('alias.yaml', 'listen: *nowhere\n')], /^ {2}\S*alias\.yaml: .*alias/m],
    ['alias bomb', ['check', '--config', writeTmp('bomb.yaml', BOMB)], /^ {2}\S*bomb\.yaml: .*alias/m],
    ['unresolved alias in the OpenAPI file', ['check', '--config', writeTmp('api-alias.yaml', { openapi: { file: writeTmp('alias-doc.yaml', 'openapi: 3.0.3\npaths: *nowhere\n') }, token: TOKEN })], /^ {2}openapi\.file: .*alias-doc\.yaml: .*alias/m],
    ['servers[0].url that is no URL', ['check', '--config', writeTmp('api-server.yaml', { openapi: { file: writeTmp('server-doc.yaml', { openapi: '3.0.3', servers: [{ url: 'https://[bad/v2' }], paths: { '/x': { get: { security: [] } } } }) }, token: TOKEN })], /^ {2}openapi\.file: servers\[0\]\.url: /m],
  ];
  for (const [name, args, expected, env] of cases) {
    const { code, stdout, stderr } = await runCli(args, env ? { env } : {});
    t.equal(code, 2, `${name}: exit 2`);
    t.match(stderr, expected, name);
    t.equal(stdout, '', `${name}: nothing on stdout`);
  }
});

t.test('unknown SCOPEGATE_* variables (Kubernetes service links) are warnings on stderr, not errors', async (t) => {
  const env = {
    SCOPEGATE_REDIS_SERVICE_HOST: '10.0.0.11', SCOPEGATE_REDIS_PORT: 'tcp://10.0.0.11:6379', SCOPEGATE_REDIS_PORT_6379_TCP_ADDR: '10.0.0.11',
    SCOPEGATE_LISTEN_PROT: '1',
  };
  const { code, stdout, stderr } = await runCli(['check', '--config', DEFAULT_CONFIG], { env });
  t.equal(code, 0, 'valid');
  t.match(stdout, /^ok: /);
  t.match(stderr, /^scopegate: warning: SCOPEGATE_REDIS_PORT: unknown environment variable, ignored \(a Kubernetes service link\?/m);
  t.match(stderr, /^scopegate: warning: SCOPEGATE_REDIS_SERVICE_HOST: /m);
  t.match(stderr, /^scopegate: warning: SCOPEGATE_LISTEN_PROT: unknown environment variable, ignored \(did you mean SCOPEGATE_LISTEN_PORT\?\)$/m);
  const invalid = await runCli(['check', '--config', writeTmp('warn-invalid.yaml', { listen: { port: 'abc' }, token: TOKEN })], { env });
  t.equal(invalid.code, 2, 'a bad config is still refused');
  t.match(invalid.stderr, /warning: SCOPEGATE_LISTEN_PROT: /, 'with the warnings');
  t.match(invalid.stderr, /^ {2}listen\.port: must be a port number/m);
});

t.test('a YAML syntax error names its line', async (t) => {
  const file = writeTmp('line3.yaml', 'listen:\n  port: 1\n  host: a: b\ntoken: {}\n');
  const { code, stderr } = await runCli(['check', '--config', file]);
  t.equal(code, 2);
  t.match(stderr, /line3\.yaml: syntax error at line 3, column 9\b/);
});

t.test('check prints every problem at once, each with its key path', async (t) => {
  const file = writeTmp('many.yaml', { lisen: {}, listen: { port: 'abc' }, upstream: { forwardAuthorization: 'yes' }, token: TOKEN });
  const { code, stderr } = await runCli(['check', '--config', file]);
  t.equal(code, 2);
  const problems = stderr.split('\n').filter((l) => l.startsWith('  ')).map((l) => l.trim()).sort();
  t.same(problems, [
    'lisen: unknown key (did you mean listen?)',
    'listen.port: must be a port number (0-65535)',
    'upstream.forwardAuthorization: must be true or false',
  ]);
});

t.test('check prints the OpenAPI file\'s problems with the config\'s', async (t) => {
  const problemsOf = (stderr: string) => stderr.split('\n').filter((l) => l.startsWith('  ')).map((l) => l.trim()).sort();
  const missing = writeTmp('api-missing.yaml', { openapi: { file: './absent-openapi.yaml' }, token: TOKEN });
  const both = await runCli(['check', '--config', missing], { env: { SCOPEGATE_LISTEN_PORT: 'abc' } });
  t.equal(both.code, 2);
  t.same(problemsOf(both.stderr), [
    'listen.port (SCOPEGATE_LISTEN_PORT): must be a port number (0-65535)',
    `openapi.file: cannot read ${join(tmp, 'absent-openapi.yaml')} (ENOENT)`,
  ], 'a bad variable and a missing OpenAPI file, together');
  const swagger = writeTmp('api-swagger.yaml', { listen: { port: 'abc' }, openapi: { file: writeTmp('swagger-doc.yaml', { swagger: '2.0', paths: {} }) }, token: TOKEN });
  const broken = await runCli(['check', '--config', swagger]);
  t.match(broken.stderr, /^ {2}listen\.port: must be a port number/m);
  t.match(broken.stderr, /^ {2}openapi\.file: Swagger 2\.0 is not supported/m, 'a broken OpenAPI file, with a config problem');
  const unusable = await runCli(['check', '--config', writeTmp('api-bad-extra.yaml', { openapi: { file: './absent-openapi.yaml', extra: 'nope' }, token: TOKEN })]);
  t.same(problemsOf(unusable.stderr), ['openapi.extra: must be a list of {method, path, scopes}'], 'not read when the keys it needs are wrong themselves');
  // serve refuses the same config with the same list (and exits 2 before listening).
  const served = await runCli(['serve', '--config', missing], { env: { SCOPEGATE_LISTEN_PORT: 'abc' } });
  t.equal(served.code, 2);
  t.same(problemsOf(served.stderr), problemsOf(both.stderr), 'serve: every problem, the OpenAPI file\'s too');
});

t.test('the binary runs as its interpreter line starts it: GNU env -S, node --no-memory-reducer', async (t) => {
  // npm links the `scopegate` binary to dist/cli.js; the kernel starts it as
  // `/usr/bin/env "-S node --no-memory-reducer" dist/cli.js ...` (the rest of the line is one
  // argument, which -S splits). node refuses a flag it does not know (exit 9): running proves the
  // line, and the flag, good on this machine's env and node.
  const first = readFileSync(CLI, 'utf8').split('\n', 1)[0]!;
  t.equal(first, '#!/usr/bin/env -S node --no-memory-reducer');
  const [interpreter, argument] = [first.slice(2, first.indexOf(' ')), first.slice(first.indexOf(' ') + 1)];
  const run = spawnSync(interpreter, [argument, CLI, 'routes', '--json'], { cwd: ROOT, encoding: 'utf8', env: { PATH: process.env.PATH } });
  t.equal(run.status, 0, run.stderr);
  t.equal(JSON.parse(run.stdout).length, 31, 'the table of the default config');
});

t.test('routes prints the 31 rows of the table', async (t) => {
  const { code, stdout, stderr } = await runCli(['routes']);
  t.equal(code, 0, stderr);
  const [header, ...rows] = stdout.trimEnd().split('\n');
  t.match(header, /^METHOD\s+PATH\s+SCOPES$/);
  t.equal(rows.length, 31, '31 rows');
  const printed = rows.map((row) => row.trim().split(/\s+/)).map(([method, path, ...scopes]) => `${method} ${path} ${scopes.join(' ')}`).sort();
  const config = loadConfig(DEFAULT_CONFIG, {});
  t.equal(config.openapi.file, OWN_OPENAPI, 'the default config reads config/scim-openapi.yaml');
  const table = loadTable(config);
  const expected = table.operations.map((o) => `${o.method} ${o.path} ${o.public ? 'public' : o.requirement.map((a) => a.join(' + ')).join(' | ')}`).sort();
  t.same(printed, expected);
  for (const row of [
    `GET ${B}/Users/{id} https://jans.io/scim/users.read`,
    `POST ${B}/Bulk https://jans.io/scim/bulk`,
    `POST ${B}/.search https://jans.io/scim/all-resources.search`,
    `GET ${B}/Schemas/{uri} public`,
  ]) t.ok(printed.includes(row), row);
});

t.test('explain says what a request would hit, or why it is refused; exit 0 either way', async (t) => {
  const cases: Array<[method: string, path: string, expected: RegExp[]]> = [
    ['GET', `${B}/Users/abc`, [/matches get-user-by-id/, /https:\/\/jans\.io\/scim\/users\.read/]],
    ['POST', `${B}/Users/.search`, [/matches search-user/, /users\.read/]],
    ['HEAD', `${B}/Groups/abc`, [/matches get-group-by-id/, /groups\.read/]],
    ['GET', `${B}/Schemas`, [/matches get-schemas/, /public/]],
    ['POST', `${B}/Bulk`, [/https:\/\/jans\.io\/scim\/bulk/, /inner operation/]],
    ['GET', `${B}/Users/../Groups`, [/refused 400/, /dot segment/]],
    ['GET', `${B}/Users/./abc`, [/refused 400/]],
    ['GET', `${B}/Users/%2e%2e/x`, [/refused 400/]],
    ['GET', `${B}//Users`, [/refused 400/]],
    ['get', `${B}/Users`, [/refused 400/]],
    ['TRACE', `${B}/Users`, [/refused 405/, /Allow: .*GET/]],
    ['TRACE', `${B}/Nope`, [/refused 405: TRACE is served nowhere/]],
    ['DELETE', `${B}/Users`, [/refused 405/]],
    ['GET', `${B}/Nope`, [/refused 404/]],
    ['GET', `${B}/users`, [/refused 404/]],
    ['GET', `${B}/Schemas?access_token=x`, [/refused 400/, /access_token in the query/]],
    ['GET', `${B}/Users?count=1&access_token=x`, [/refused/, /access_token in the query/, /401/]],
    // Absolute-form, as serve reads it with a Host of its own authority; userinfo is refused there too.
    ['GET', `http://scim.example:8080${B}/Schemas`, [/matches get-schemas/, /public/]],
    ['GET', `http://u@scim.example${B}/Schemas`, [/refused 400/]],
    ['GET', `${B}/Schemas/urn%3Aietf%3Aparams%3Ascim%3Aschemas%3Acore%3A2.0%3AUser`, [/matches get-schema-by-uri/]],
  ];
  for (const [method, path, expected] of cases) {
    const { code, stdout, stderr } = await runCli(['explain', method, path]);
    t.equal(code, 0, `${method} ${path}: exit 0`, { stderr });
    for (const re of expected) t.match(stdout, re, `${method} ${path}: ${re}`);
  }
  const refusedNotMatched = await runCli(['explain', 'GET', `${B}/Users/../Users/abc`]);
  t.notMatch(refusedNotMatched.stdout, /matches/, 'a refused target is never also matched');
});

t.test('every command answers --help with exit 0', async (t) => {
  for (const command of ['serve', 'check', 'routes', 'explain', 'demo', 'purge']) {
    const { code, stdout } = await runCli([command, '--help']);
    t.equal(code, 0, `${command} --help`);
    t.match(stdout, new RegExp(`^usage: scopegate ${command}\\b`), `${command} --help prints its usage`);
  }
  const main = await runCli(['--help']);
  t.equal(main.code, 0, '--help');
  t.match(main.stdout, /usage: scopegate <command>/);
});

t.test('bad usage exits 2', async (t) => {
  const cases: Array<[name: string, args: string[], stderr: RegExp]> = [
    ['unknown command', ['frobnicate'], /unknown command "frobnicate"/],
    ['a name every object has', ['toString'], /unknown command "toString"/],
    ['unknown option', ['routes', '--bogus'], /--bogus/],
    ['explain without a path', ['explain', 'GET'], /explain takes METHOD PATH/],
    ['check with a positional', ['check', 'extra'], /extra/],
    // Another command's option is not silently ignored: `serve --port` would not change the port.
    ['check with --json', ['check', '--json'], /'--json'/],
    ['check with --token', ['check', '--token', 'x'], /'--token'/],
    ['routes with --client-id', ['routes', '--client-id', 'c'], /'--client-id'/],
    ['explain with --port', ['explain', '--port', '1', 'GET', '/x'], /'--port'/],
    ['purge with --json', ['purge', '--json', '--token', 'x'], /'--json'/],
    ['serve with --port', ['serve', '--port', '1234', '--config', writeTmp('serve-discovery.yaml', { token: { issuer: 'http://127.0.0.1:1', jwt: {} } })], /'--port'/],
    // The last one would win in silence: a purge would drop one token of two, a check read another file.
    ['purge with --token twice', ['purge', '--token', 'a', '--token', 'b'], /--token given more than once/],
    ['purge with --client-id twice', ['purge', '--client-id', 'a', '--client-id=b'], /--client-id given more than once/],
    ['check with --config twice', ['check', '--config=absent.yaml', '-c', 'config/scopegate.yaml'], /--config given more than once/],
  ];
  for (const [name, args, expected] of cases) {
    const { code, stderr } = await runCli(args);
    t.equal(code, 2, `${name}: exit 2`);
    t.match(stderr, expected, name);
  }
  const none = await runCli([]);
  t.equal(none.code, 2, 'no command: exit 2');
  t.match(none.stdout, /usage: scopegate <command>/, 'no command: the usage');
});

t.test('SCOPEGATE_CONFIG chooses the config file when --config is absent', async (t) => {
  const file = writeTmp('from-env.yaml', {
    openapi: { file: OWN_OPENAPI, extra: [{ method: 'GET', path: '/UpdatedUsers', scopes: ['https://jans.io/scim/users.read'] }] },
    upstream: { url: 'http://from-env.example:8081' },
    token: TOKEN,
  });
  const env = { SCOPEGATE_CONFIG: file };
  const check = await runCli(['check'], { env });
  t.equal(check.code, 0, check.stderr);
  t.match(check.stdout, /32 operations \(27 scoped, 5 public\)/);
  t.match(check.stdout, /from-env\.example/);

  const explain = await runCli(['explain', 'GET', `${B}/UpdatedUsers`], { env });
  t.equal(explain.code, 0);
  t.match(explain.stdout, /matches GET \/jans-scim\/restv1\/v2\/UpdatedUsers/);

  const routes = await runCli(['routes', '--json'], { env });
  t.equal((JSON.parse(routes.stdout) as unknown[]).length, 32);

  const overridden = await runCli(['check', '--config', DEFAULT_CONFIG], { env });
  t.equal(overridden.code, 0);
  t.match(overridden.stdout, /31 operations/, '--config wins over SCOPEGATE_CONFIG');

  // An empty variable (a template that left it blank) is no file name: the default applies.
  const blank = await runCli(['check'], { env: { SCOPEGATE_CONFIG: '' } });
  t.equal(blank.code, 0, blank.stderr);
  t.match(blank.stdout, /^ok: config\/scopegate\.yaml: /);
  const empty = await runCli(['check', '--config', '']);
  t.equal(empty.code, 2, '--config with an empty name: bad usage');
  t.match(empty.stderr, /--config needs a file name/);
});

// A config rendered by a template tool and piped in (`envsubst < tmpl | scopegate check -c /dev/stdin`).
t.test('a config read from a pipe', async (t) => {
  // Through a shell pipe (a FIFO), as a template tool feeds it; the test runner's own stdin is a socket.
  const rendered = writeTmp('rendered.yaml', { openapi: { file: OWN_OPENAPI }, token: TOKEN });
  const piped = spawnSync('sh', ['-c', 'cat "$1" | "$2" "$3" check --config /dev/stdin', 'sh', rendered, process.execPath, CLI], { encoding: 'utf8' });
  t.equal(piped.status, 0, piped.stderr);
  t.match(piped.stdout, /^ok: \/dev\/stdin: 31 operations/);
  const device = await runCli(['check', '--config', '/dev/zero']);
  t.equal(device.code, 2, 'a device is no config file');
  t.match(device.stderr, /\/dev\/zero: not a config file/);
});

t.test('environment overrides reach the command line', async (t) => {
  const { code, stdout, stderr } = await runCli(['check'], { env: { SCOPEGATE_UPSTREAM_URL: 'http://jans-scim.internal:8080' } });
  t.equal(code, 0, stderr);
  t.match(stdout, /upstream http:\/\/jans-scim\.internal:8080$/m);
});

t.test('a config that leaves openapi.file at its default reads the bundled jans table', async (t) => {
  // Not a file that happens to sit next to the config or in the working directory: the bundled
  // config/scim-openapi.yaml, so that a config without an OpenAPI file still protects jans-scim.
  const dir = mkdtempSync(join(tmp, 'default-'));
  writeFileSync(join(dir, 'scim-openapi.yaml'), stringify({ openapi: '3.0.3', paths: { '/only': { get: { operationId: 'only', security: [] } } } }));
  writeFileSync(join(dir, 'scopegate.yaml'), stringify({ token: TOKEN }));
  const { code, stdout, stderr } = await runCli(['check', '--config', join(dir, 'scopegate.yaml')]);
  t.equal(code, 0, stderr);
  t.match(stdout, /31 operations \(26 scoped, 5 public\)/);
  t.match(stdout, /config\/scim-openapi\.yaml/);
});

t.test('explain gives the status the gateway answers, whatever the method', async (t) => {
  const up = await startRecordingUpstream();
  const gw = await startTestGateway({ upstream: { url: up.origin }, openapi: { file: OWN_OPENAPI }, token: { jwt: { jwksUri: 'http://127.0.0.1:1/jwks', issuer: 'https://as.example' } } });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const cases: Array<[method: string, path: string]> = [
    ['FOO', `${B}/Users`], ['CONNECT', `${B}/Users`], ['M-SEARCH', `${B}/Users`], ['PROPFIND', `${B}/Users`],
    ['TRACE', `${B}/Users`], ['get', `${B}/Users`], ['OPTIONS', `${B}/Users`], ['DELETE', `${B}/Schemas`], ['FOO', `${B}/Nope`],
    ['GET', `${B}/Schemas`],
  ];
  for (const [method, path] of cases) {
    const answered = await rawRequest(gw.port, `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
    const { code, stdout } = await runCli(['explain', '--config', gw.configFile, method, path]);
    t.equal(code, 0, `${method} ${path}: exit 0`);
    const said = /refused (\d{3})/.exec(stdout)?.[1] ?? (/answered by the gateway: (\d{3})/.exec(stdout)?.[1]) ?? (/matches/.test(stdout) ? 'forwarded' : stdout);
    t.equal(said, answered.status === 200 ? 'forwarded' : String(answered.status), `${method} ${path}: explain says what the gateway answers (${answered.status})`);
  }
  t.equal(up.requests.length, 1, 'only the public GET went upstream');
});

t.test('purge --token -: the token is read from standard input, never the command line', async (t) => {
  const stack = await startStack();
  t.teardown(() => stack.close());
  const config = writeTmp('purge-stdin.yaml', { admin: { host: '127.0.0.1', port: Number(new URL(stack.gw.adminUrl).port) }, token: TOKEN });
  t.equal((await send(stack, `GET ${B}/Users HTTP/1.1\r\nHost: x\r\n${bearer(stack.usersRead)}\r\n\r\n`)).status, 200, 'the token is validated and cached');
  const purged = await runCli(['purge', '--config', config, '--token', '-'], { input: `${stack.usersRead}\n` });
  t.equal(purged.code, 0, purged.stderr);
  t.same(JSON.parse(purged.stdout), { purged: 1 }, 'the cached validation of the token read from stdin is dropped');
  const before = stack.auth.counts.introspection;
  t.equal((await send(stack, `GET ${B}/Users HTTP/1.1\r\nHost: x\r\n${bearer(stack.usersRead)}\r\n\r\n`)).status, 200);
  t.equal(stack.auth.counts.introspection, before + 1, 'validated again');
  for (const input of ['', '\n', '   \nsecond-line']) {
    const empty = await runCli(['purge', '--config', config, '--token', '-'], { input });
    t.equal(empty.code, 2, `${JSON.stringify(input)}: bad usage`);
    t.match(empty.stderr, /no token on standard input/);
  }
});

t.test('purge: what the admin listener refuses as malformed is bad usage (exit 2), an unreachable one a runtime failure (exit 1)', async (t) => {
  const gw = await startTestGateway({ upstream: { url: 'http://127.0.0.1:1' }, token: TOKEN });
  t.teardown(() => gw.close());
  const config = writeTmp('purge.yaml', { admin: { host: '127.0.0.1', port: Number(new URL(gw.adminUrl).port) }, token: TOKEN });
  const ok = await runCli(['purge', '--config', config, '--client-id', 'c']);
  t.equal(ok.code, 0, ok.stderr);
  t.same(JSON.parse(ok.stdout), { purged: 0 });
  // A token or a fingerprint is base64url: it may begin with a dash, and is still the value.
  for (const args of [['--token', '-Xy9_token-value'], ['--fingerprint', '-abcdefgh123'], ['--client-id', '-client']]) {
    const dashed = await runCli(['purge', '-c', config, ...args]);
    t.equal(dashed.code, 0, `${args.join(' ')}: ${dashed.stderr}`);
    t.same(JSON.parse(dashed.stdout), { purged: 0 });
  }
  t.equal((await runCli(['purge', '--config', config, '--token'])).code, 2, '--token without a value: bad usage');
  const short = await runCli(['purge', '--config', config, '--fingerprint', 'abc']);
  t.equal(short.code, 2, 'a fingerprint that is not one: exit 2');
  t.match(short.stderr, /fingerprint: must be 8 to 43 base64url characters/);
  const huge = await runCli(['purge', '--config', config, '--client-id', 'c'.repeat(20000)]);
  t.equal(huge.code, 2, 'a client id larger than the admin listener takes (413): bad usage too');
  const closed = writeTmp('purge-closed.yaml', { admin: { host: '127.0.0.1', port: await closedPort() }, token: TOKEN });
  const down = await runCli(['purge', '--config', closed, '--client-id', 'c']);
  t.equal(down.code, 1, 'the admin listener unreachable: exit 1');
  t.match(down.stderr, /ECONNREFUSED/);
});

t.test('demo in an install without the optional dependencies (the image): a clear error, exit 1', async (t) => {
  await ensureBuilt();
  // A copy of the build beside a node_modules of every package but the demo's servers.
  const dir = mkdtempSync(join(tmpdir(), 'scopegate-prod-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  cpSync(join(ROOT, 'dist'), join(dir, 'dist'), { recursive: true });
  cpSync(join(ROOT, 'package.json'), join(dir, 'package.json'));
  mkdirSync(join(dir, 'node_modules'));
  for (const name of readdirSync(join(ROOT, 'node_modules'))) {
    if (name !== 'scimmy' && name !== 'oidc-provider') symlinkSync(join(ROOT, 'node_modules', name), join(dir, 'node_modules', name));
  }
  const result = spawnSync(process.execPath, [join(dir, 'dist', 'cli.js'), 'demo', '--port', '0'], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
  t.equal(result.status, 1, 'exit 1');
  t.match(result.stderr, /^scopegate: the demo needs the optional dependencies oidc-provider and scimmy \((scimmy|oidc-provider) is not installed\): run npm ci without --omit=optional\n$/, 'says what is missing and what to do, and nothing else');
});
