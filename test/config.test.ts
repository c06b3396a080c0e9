/**
 * loadConfig(file, env): defaults for every key, paths resolved against the config file's
 * folder, YAML and JSON, `SCOPEGATE_*` overrides, and problems: every one listed at once, by key
 * path, with "did you mean", and never with a secret in them.
 */
import t, { type Test } from 'tap';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { stringify } from 'yaml';
import { configReference, loadConfig, schema, type Config } from '../src/config.js';
import { ConfigError } from '../src/errors.js';
import { leaves } from '../src/schema.js';
import { loadTable } from '../src/runtime.js';
import { OWN_OPENAPI, SHARED_OPENAPI } from './helpers/gateway.js';
import { pki, writePem } from './helpers/pki.js';

/** The smallest valid token section. */
const JWT = { jwt: { jwksUri: 'https://as.example/jwks', issuer: 'https://as.example' } };
/** A distinctive secret: no problem message may ever contain it. */
const SECRET = 'S3cr3t-Never-Print-7f3a9c';

const tmp = mkdtempSync(join(tmpdir(), 'scopegate-config-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
let counter = 0;
/** Writes a config (text as is, an object as YAML or JSON by extension) into a fresh folder. */
function write(content: string | object, name = 'scopegate.yaml'): string {
  const dir = join(tmp, String(++counter));
  const file = join(dir, name);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, typeof content === 'string' || Buffer.isBuffer(content) ? content : name.endsWith('.json') ? JSON.stringify(content, null, 2) : stringify(content));
  return file;
}

/** The ConfigError `fn` throws; fails the test (with what was loaded) when it throws nothing. */
function configError(t: Test, fn: () => unknown): ConfigError {
  let loaded: unknown;
  try {
    loaded = fn();
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  t.fail('expected a ConfigError', { loaded });
  return new ConfigError([]);
}

/** The problems of loading `content` with `env`. */
function problems(t: Test, content: string | object, env: Record<string, string> = {}, name?: string): readonly string[] {
  const file = write(content, name);
  return configError(t, () => loadConfig(file, env)).problems;
}

/** The value at a dotted key path. */
function at(value: unknown, path: string): unknown {
  return path.split('.').reduce<unknown>((node, key) => (node === undefined || node === null ? undefined : (node as Record<string, unknown>)[key]), value);
}

t.test('every optional key takes the default of the reference', async (t) => {
  // Every optional section present with only what it requires, so every default shows.
  const given: Record<string, unknown> = {
    'listen.tls.certFile': 'tls/cert.pem',
    'listen.tls.keyFile': 'tls/key.pem',
    'token.issuer': 'https://as.example',
    'token.introspection.clientId': 'gateway',
    'token.introspection.clientSecret': 'not-a-default',
    'token.cache.redis.url': 'redis://127.0.0.1:6379',
  };
  const file = write({
    listen: { tls: { certFile: 'tls/cert.pem', keyFile: 'tls/key.pem' } },
    token: { issuer: 'https://as.example', introspection: { clientId: 'gateway', clientSecret: 'not-a-default' }, jwt: {}, cache: { redis: { url: 'redis://127.0.0.1:6379' } } },
  });
  writePem(join(dirname(file), 'tls', 'cert.pem'), pki().cert);
  writePem(join(dirname(file), 'tls', 'key.pem'), pki().key);
  const config = loadConfig(file, {});
  const kinds = new Map(leaves(schema).map(([key, leaf]) => [key, leaf.kind]));
  let defaults = 0;
  for (const row of configReference()) {
    if (row.key in given) continue;
    const value = at(config, row.key);
    if (row.default === '(none)') {
      t.equal(value, undefined, `${row.key}: no default, absent`);
      continue;
    }
    t.not(row.default, '(required)', `${row.key}: a required key is given above`);
    if (row.key === 'listen.shutdownTimeoutMs') {
      t.equal(value, 30000 + 5000, 'listen.shutdownTimeoutMs defaults to upstream.timeoutMs + 5000');
      defaults++;
      continue;
    }
    if (row.key === 'openapi.file') {
      t.equal(value, OWN_OPENAPI, 'openapi.file defaults to the bundled config/scim-openapi.yaml, wherever the config is');
      defaults++;
      continue;
    }
    const expected = JSON.parse(row.default) as unknown;
    // A path default is relative to the config file, like a path written in it.
    t.same(value, kinds.get(row.key) === 'path' ? resolve(dirname(file), expected as string) : expected, `${row.key} = ${row.default}`);
    defaults++;
  }
  t.ok(defaults >= 30, `${defaults} defaults checked`);
});

t.test('relative paths resolve against the config file\'s folder, not the working directory', async (t) => {
  const secret = write('from-file\n', 'secrets/client.txt');
  const absoluteKey = writePem(join(tmp, 'absolute', 'key.pem'), pki().key);
  const file = write({
    listen: { tls: { certFile: 'tls/cert.pem', keyFile: absoluteKey } },
    upstream: { caFile: '../ca.pem' },
    openapi: { file: './api/scim.yaml' },
    token: { caFile: 'as/ca.pem', introspection: { endpoint: 'https://as.example/introspect', clientId: 'gw', clientSecretFile: secret } },
  });
  const dir = dirname(file);
  writePem(join(dir, 'tls', 'cert.pem'), pki().cert);
  writePem(join(dir, '..', 'ca.pem'), pki().cert);
  writePem(join(dir, 'as', 'ca.pem'), pki().cert);
  t.not(dir, process.cwd());
  const config = loadConfig(file, {});
  const cases: Array<[key: string, expected: string]> = [
    ['listen.tls.certFile', join(dir, 'tls', 'cert.pem')],
    ['listen.tls.keyFile', absoluteKey],
    ['upstream.caFile', resolve(dir, '..', 'ca.pem')],
    ['token.caFile', join(dir, 'as', 'ca.pem')],
    ['openapi.file', join(dir, 'api', 'scim.yaml')],
    ['token.introspection.clientSecretFile', secret],
    ['file', file],
  ];
  for (const [key, expected] of cases) t.equal(at(config, key), expected, key);

  const relativeSecret = write({ token: { introspection: { endpoint: 'https://as.example/i', clientId: 'gw', clientSecretFile: 'client.txt' } } });
  writeFileSync(join(dirname(relativeSecret), 'client.txt'), 'next-to-the-config\n');
  t.equal(loadConfig(relativeSecret, {}).token.introspection?.clientSecret, 'next-to-the-config', 'a relative clientSecretFile is read from the config folder');
});

t.test('listen.shutdownTimeoutMs: by default long enough for any request the upstream may answer', async (t) => {
  t.equal(loadConfig(write({ upstream: { timeoutMs: 60000 }, token: JWT }), {}).listen.shutdownTimeoutMs, 65000, 'upstream.timeoutMs + 5000');
  t.equal(loadConfig(write({ upstream: { timeoutMs: 60000 }, token: JWT }), { SCOPEGATE_UPSTREAM_TIMEOUT_MS: '1000' }).listen.shutdownTimeoutMs, 6000, 'from the upstream.timeoutMs in effect');
  t.equal(loadConfig(write({ listen: { shutdownTimeoutMs: 0 }, token: JWT }), {}).listen.shutdownTimeoutMs, 0, 'set: taken as is');
  t.equal(loadConfig(write({ token: JWT }), { SCOPEGATE_LISTEN_SHUTDOWN_TIMEOUT_MS: '1500' }).listen.shutdownTimeoutMs, 1500, 'from the environment');
  t.same(problems(t, { listen: { shutdownTimeoutMs: -1 }, token: JWT }), ['listen.shutdownTimeoutMs: must be an integer from 0 to 2147483647']);
  t.equal(loadConfig(write({ upstream: { timeoutMs: 2 ** 31 - 1 }, token: JWT }), {}).listen.shutdownTimeoutMs, 2 ** 31 - 1, 'never past what a timer holds');
});

// A black-box audit: 0 passed check and reload, and serve then failed (exit 1) in Fastify's own
// words, naming neither the key nor the variable.
t.test('limits.bodyBytes: at least 1', async (t) => {
  t.same(problems(t, { limits: { bodyBytes: 0 }, token: JWT }), ['limits.bodyBytes: must be an integer >= 1']);
  t.same(problems(t, { token: JWT }, { SCOPEGATE_LIMITS_BODY_BYTES: '0' }), ['limits.bodyBytes (SCOPEGATE_LIMITS_BODY_BYTES): must be an integer >= 1']);
  t.equal(loadConfig(write({ limits: { bodyBytes: 1 }, token: JWT }), {}).limits.bodyBytes, 1, '1 is accepted');
});

t.test('limits.bufferedBytes: at least limits.bodyBytes', async (t) => {
  t.equal(loadConfig(write({ token: JWT }), {}).limits.bufferedBytes, 64 * 1024 * 1024, '64 MiB by default');
  t.equal(loadConfig(write({ limits: { bodyBytes: 100, bufferedBytes: 100 }, token: JWT }), {}).limits.bufferedBytes, 100, 'equal is enough');
  t.same(problems(t, { limits: { bodyBytes: 1000, bufferedBytes: 999 }, token: JWT }), ['limits.bufferedBytes: must be at least limits.bodyBytes (1000), or no body of the largest size could ever be read']);
  t.same(problems(t, { token: JWT }, { SCOPEGATE_LIMITS_BUFFERED_BYTES: '1024' }), ['limits.bufferedBytes (SCOPEGATE_LIMITS_BUFFERED_BYTES): must be at least limits.bodyBytes (3072000), or no body of the largest size could ever be read'], 'naming the variable');
});

t.test('YAML and JSON files load to the same config', async (t) => {
  const content = {
    listen: { host: '0.0.0.0', port: 8443 },
    upstream: { url: 'http://jans-scim:8080', identityHeaders: false },
    openapi: { file: 'scim.yaml', extra: [{ method: 'GET', path: '/UpdatedUsers', scopes: ['https://jans.io/scim/users.read'] }] },
    token: { introspection: { endpoint: 'https://as.example/i', authMethod: 'bearer_token' }, jwt: { jwksUri: 'https://as.example/jwks', issuer: 'https://as.example', audience: ['a', 'b'] } },
  };
  const fromYaml = loadConfig(write(content, 'c.yaml'), {});
  const fromJson = loadConfig(write(content, 'c.json'), {});
  const { file: yamlFile, openapi: yamlApi, ...yamlRest } = fromYaml;
  const { file: jsonFile, openapi: jsonApi, ...jsonRest } = fromJson;
  t.match(yamlFile, /c\.yaml$/);
  t.match(jsonFile, /c\.json$/);
  t.same(yamlRest, jsonRest);
  t.same(yamlApi.extra, jsonApi.extra);
  t.same(yamlRest.listen, { host: '0.0.0.0', port: 8443, shutdownTimeoutMs: 35000, maxConnections: 0 });
  t.same(yamlApi.extra, [{ method: 'GET', path: '/UpdatedUsers', scopes: ['https://jans.io/scim/users.read'], public: false }]);

  const handWritten = write([
    '# comments, flow style and block style',
    'listen: { port: 8443 }   # inline comment',
    'token:',
    '  jwt:',
    '    jwksUri: https://as.example/jwks',
    '    issuer: "https://as.example"',
    '    audience:',
    '      - a',
    '',
  ].join('\n'));
  const config = loadConfig(handWritten, {});
  t.equal(config.listen.port, 8443);
  t.same(config.token.jwt?.audience, ['a']);
});

t.test('SCOPEGATE_* environment variables override the file', async (t) => {
  const base = {
    listen: { port: 8080 },
    token: { introspection: { endpoint: 'https://as.example/i', clientId: 'gw', clientSecret: 'from-file' }, jwt: { jwksUri: 'https://as.example/jwks', issuer: 'https://as.example' } },
  };
  const cases: Array<[env: Record<string, string>, key: string, expected: unknown]> = [
    [{ SCOPEGATE_LISTEN_PORT: '1234' }, 'listen.port', 1234],
    [{ SCOPEGATE_LISTEN_HOST: '0.0.0.0' }, 'listen.host', '0.0.0.0'],
    [{ SCOPEGATE_TOKEN_INTROSPECTION_CLIENT_SECRET: 'from-env' }, 'token.introspection.clientSecret', 'from-env'],
    [{ SCOPEGATE_UPSTREAM_FORWARD_AUTHORIZATION: 'false' }, 'upstream.forwardAuthorization', false],
    [{ SCOPEGATE_UPSTREAM_FORWARD_AUTHORIZATION: ' false ' }, 'upstream.forwardAuthorization', false],
    [{ SCOPEGATE_UPSTREAM_TIMEOUT_MS: '500' }, 'upstream.timeoutMs', 500],
    [{ SCOPEGATE_UPSTREAM_TIMEOUT_MS: ' 500 ' }, 'upstream.timeoutMs', 500],
    [{ SCOPEGATE_TOKEN_JWT_AUDIENCE: 'a, b,c' }, 'token.jwt.audience', ['a', 'b', 'c']],
    [{ SCOPEGATE_TOKEN_JWT_AUDIENCE: '["a, b", "c"]' }, 'token.jwt.audience', ['a, b', 'c']],
    [{ SCOPEGATE_OPENAPI_BASE_PATH: '/scim/v2' }, 'openapi.basePath', '/scim/v2'],
    [{ SCOPEGATE_OPENAPI_EXTRA: '[{"method":"GET","path":"/UpdatedUsers","scopes":["s"]}]' }, 'openapi.extra', [{ method: 'GET', path: '/UpdatedUsers', scopes: ['s'], public: false }]],
    [{ SCOPEGATE_TOKEN_CACHE_REDIS_URL: 'redis://cache:6379' }, 'token.cache.redis', { url: 'redis://cache:6379', keyPrefix: 'scopegate:' }],
    [{ SCOPEGATE_CONFIG: '/elsewhere.yaml', PATH: '/bin', HOME: '/root' }, 'listen.port', 8080],
  ];
  const file = write(base);
  for (const [env, key, expected] of cases) {
    t.same(at(loadConfig(file, env), key), expected, `${Object.keys(env).join(', ')} -> ${key}`);
  }
});

t.test('bad values from the environment are problems naming the key and the variable', async (t) => {
  const cases: Array<[env: Record<string, string>, expected: string[]]> = [
    [{ SCOPEGATE_LISTEN_PORT: 'abc' }, ['listen.port (SCOPEGATE_LISTEN_PORT): must be a port number (0-65535)']],
    [{ SCOPEGATE_UPSTREAM_IDENTITY_HEADERS: 'yes' }, ['upstream.identityHeaders (SCOPEGATE_UPSTREAM_IDENTITY_HEADERS): must be true or false']],
    [{ SCOPEGATE_TOKEN_JWT_AUDIENCE: '[1, 2]' }, ['token.jwt.audience (SCOPEGATE_TOKEN_JWT_AUDIENCE): must be a list of non-empty strings']],
    [{ SCOPEGATE_TOKEN_JWT_ALGORITHMS: '' }, ['token.jwt.algorithms (SCOPEGATE_TOKEN_JWT_ALGORITHMS): must name at least one value']],
    [{ SCOPEGATE_ADMIN_PORT: '8080', SCOPEGATE_LISTEN_PORT: '8080' }, ['admin.port (SCOPEGATE_ADMIN_PORT): must differ from listen.port: admin 127.0.0.1:8080 and listen 127.0.0.1:8080 cannot both be bound (listen.port from SCOPEGATE_LISTEN_PORT)']],
    // A Service named scopegate-admin would inject this: a known key, a bad value, and a hint.
    [{ SCOPEGATE_ADMIN_PORT: 'tcp://10.0.0.12:9090' }, ['admin.port (SCOPEGATE_ADMIN_PORT): must be a port number (0-65535) (SCOPEGATE_ADMIN_PORT looks like a Kubernetes service link: set enableServiceLinks: false in the pod spec, or rename the Service)']],
  ];
  for (const [env, expected] of cases) t.same(problems(t, { token: JWT }, env), expected, Object.keys(env).join(', '));
  t.same(problems(t, { listen: { port: 'abc' }, token: JWT }), ['listen.port: must be a port number (0-65535)'], 'a value from the file names no variable');
  t.same(problems(t, { listen: 5, token: JWT }, { SCOPEGATE_LISTEN_PORT: '1', SCOPEGATE_LISTEN_HOST: 'h' }), ['listen: must be a mapping of keys'], 'variables under a section that is no mapping: one problem, once');
});

t.test('unknown SCOPEGATE_* variables are warnings, never applied', async (t) => {
  // The variables Kubernetes injects for deploy/kubernetes/redis.yaml's Service scopegate-redis.
  const serviceLinks = {
    SCOPEGATE_REDIS_SERVICE_HOST: '10.0.0.11',
    SCOPEGATE_REDIS_SERVICE_PORT: '6379',
    SCOPEGATE_REDIS_PORT: 'tcp://10.0.0.11:6379',
    SCOPEGATE_REDIS_PORT_6379_TCP: 'tcp://10.0.0.11:6379',
    SCOPEGATE_REDIS_PORT_6379_TCP_PROTO: 'tcp',
    SCOPEGATE_REDIS_PORT_6379_TCP_PORT: '6379',
    SCOPEGATE_REDIS_PORT_6379_TCP_ADDR: '10.0.0.11',
  };
  const file = write({ token: { ...JWT, cache: { redis: { url: 'redis://scopegate-redis:6379' } } } });
  const config = loadConfig(file, { ...serviceLinks, SCOPEGATE_LISTEN_PROT: '1', SCOPEGATE_NOTHING_LIKE_IT_AT_ALL: '1', SCOPEGATE_CONFIG: file });
  t.same(config.token.cache.redis, { url: 'redis://scopegate-redis:6379', keyPrefix: 'scopegate:' }, 'SCOPEGATE_REDIS_PORT is not read as a token.cache.redis key');
  t.equal(config.listen.port, 8080, 'nothing applied to listen.port');
  const link = '(a Kubernetes service link? enableServiceLinks: false in the pod spec turns them off)';
  t.same([...config.warnings].sort(), [
    ...Object.keys(serviceLinks).map((name) => `${name}: unknown environment variable, ignored ${link}`),
    'SCOPEGATE_LISTEN_PROT: unknown environment variable, ignored (did you mean SCOPEGATE_LISTEN_PORT?)',
    'SCOPEGATE_NOTHING_LIKE_IT_AT_ALL: unknown environment variable, ignored',
  ].sort());
  t.same(loadConfig(file, {}).warnings, [], 'no warning without such variables');
  const refused = configError(t, () => loadConfig(file, { SCOPEGATE_LISTEN_PROT: '1', SCOPEGATE_LISTEN_PORT: 'x' }));
  t.same(refused.warnings, ['SCOPEGATE_LISTEN_PROT: unknown environment variable, ignored (did you mean SCOPEGATE_LISTEN_PORT?)'], 'a refused config carries its warnings too');
});

t.test('unknown keys are refused, with the nearest known key suggested', async (t) => {
  const cases: Array<[content: object, expected: string]> = [
    [{ token: { ...JWT, introspecton: {} } }, 'token.introspecton: unknown key (did you mean token.introspection?)'],
    [{ lisen: { port: 1 }, token: JWT }, 'lisen: unknown key (did you mean listen?)'],
    [{ upstream: { timeout: 5 }, token: JWT }, 'upstream.timeout: unknown key (did you mean upstream.timeoutMs?)'],
    [{ zzzzzzzzzzzz: 1, token: JWT }, 'zzzzzzzzzzzz: unknown key'],
    [{ openapi: { extra: [{ method: 'GET', path: '/x', scope: ['s'] }] }, token: JWT }, 'openapi.extra[0].scope: unknown key (did you mean openapi.extra[0].scopes?)'],
  ];
  for (const [content, expected] of cases) {
    const listed = problems(t, content);
    t.ok(listed.includes(expected), expected, { listed });
  }
});

t.test('an empty config file is refused, not read as every default; `{}` is every default', async (t) => {
  // The token section from the environment: only the file's emptiness can be at fault.
  const env = { SCOPEGATE_TOKEN_JWT_JWKS_URI: 'https://as.example/jwks', SCOPEGATE_TOKEN_JWT_ISSUER: 'https://as.example' };
  for (const [name, content] of [['nothing', ''], ['blank lines', '\n  \n'], ['a comment', '# rendered by the template\n'], ['a document marker', '---\n']] as const) {
    const file = write(content, `empty-${name.replace(/ /g, '-')}.yaml`);
    t.same(configError(t, () => loadConfig(file, env)).problems, [`${file}: the config file is empty (whitespace or comments only); write {} to take every default`], name);
  }
  const config = loadConfig(write('{}\n', 'braces.yaml'), env);
  t.equal(config.upstream.url, 'http://127.0.0.1:8081', '`{}`: the defaults');
  t.equal(config.token.jwt?.issuer, 'https://as.example', '`{}`: and the environment');
});

t.test('one YAML mistake is a few problems, not the echoes of all the lines after it', async (t) => {
  // An unquoted `{` in a flow mapping: the parser reports each token after it.
  const extra = Array.from({ length: 20 }, (_, i) => `    - { method: GET, path: /A${i}, scopes: [x] }`).join('\n');
  const listed = problems(t, `openapi:\n  extra:\n    - { method: GET, path: /Users/{uid}, scopes: [x] }\n${extra}\ntoken: {jwt: {jwksUri: https://as.example/jwks}}\n`);
  t.equal(listed.length, 6, 'five errors and a count of the rest');
  t.match(listed[0], /: syntax error at line 3, column \d+: /, 'the first names its line');
  t.match(listed[5], /: \d+ more syntax errors after these \(often the echoes of the first\)$/);
  // Independent mistakes below the cap are each listed.
  t.equal(problems(t, 'listen: {port: 1}\nlisten: {port: 2}\n').filter((p) => /syntax error/.test(p)).length, 1, 'one duplicate key, one problem');
});

t.test('a host to bind: IP addresses of either family and host names', async (t) => {
  // Docker Compose service names may hold underscores; a final dot is a fully qualified name.
  for (const host of ['127.0.0.1', '0.0.0.0', '::', '::1', '::ffff:127.0.0.1', 'localhost', 'localhost.', 'scopegate-0.scopegate.svc.cluster.local', 'pod1', 'scim_gateway']) {
    const config = loadConfig(write({ listen: { host }, admin: { host, port: 9091 }, token: JWT }), {});
    t.equal(config.listen.host, host, `${host}: listen`);
    t.equal(config.admin.host, host, `${host}: admin`);
  }
});

t.test('an upstream on another host may share the listener\'s port', async (t) => {
  t.ok(loadConfig(write({ listen: { host: '0.0.0.0', port: 8080 }, upstream: { url: 'http://jans-scim:8080' }, token: JWT }), {}), 'another host, the same port');
  t.ok(loadConfig(write({ listen: { host: '127.0.0.1', port: 8080 }, upstream: { url: 'http://10.0.0.5:8080' }, token: JWT }), {}));
  t.ok(loadConfig(write({ listen: { host: '127.0.0.1', port: 8080 }, upstream: { url: 'http://127.0.0.2:8080' }, token: JWT }), {}), 'another loopback address than the listener\'s');
});

t.test('wrong types and values name the key and what it must be', async (t) => {
  const introspection = { endpoint: 'https://as.example/i', clientId: 'gw', clientSecret: 's' };
  const cases: Array<[content: object, expected: string[]]> = [
    [{ listen: { port: 'abc' }, token: JWT }, ['listen.port: must be a port number (0-65535)']],
    [{ listen: { port: 70000 }, token: JWT }, ['listen.port: must be a port number (0-65535)']],
    [{ listen: 5, token: JWT }, ['listen: must be a mapping of keys']],
    [{ upstream: { forwardAuthorization: 'yes' }, token: JWT }, ['upstream.forwardAuthorization: must be true or false']],
    [{ upstream: { url: 'ftp://jans' }, token: JWT }, ['upstream.url: must be a URL (http or https)']],
    [{ upstream: { url: 'http://jans:8080/jans-scim' }, token: JWT }, ['upstream.url: must be an origin (scheme, host, port): the request path is forwarded as received']],
    [{ upstream: { url: 'http://user:pw@jans:8080' }, token: JWT }, ['upstream.url: must be an origin (scheme, host, port): the request path is forwarded as received']],
    // The gateway forwarding to itself: each request came back to it until the upstream timeout.
    [{ upstream: { url: 'http://localhost:8080' }, token: JWT }, ['upstream.url: names the gateway\'s own listen listener (127.0.0.1:8080); the upstream is jans-scim']],
    [{ listen: { host: '0.0.0.0', port: 8443 }, upstream: { url: 'http://127.0.0.1:8443' }, token: JWT }, ['upstream.url: names the gateway\'s own listen listener (0.0.0.0:8443); the upstream is jans-scim']],
    [{ upstream: { url: 'http://127.0.0.1:9090' }, token: JWT }, ['upstream.url: names the gateway\'s own admin listener (127.0.0.1:9090); the upstream is jans-scim']],
    ...['http://0.0.0.0:8080', 'http://[::ffff:127.0.0.1]:8080', 'http://LOCALHOST.:8080'].map((url): [object, string[]] => [{ upstream: { url }, token: JWT }, ['upstream.url: names the gateway\'s own listen listener (127.0.0.1:8080); the upstream is jans-scim']]),
    [{ upstream: { timeoutMs: 0 }, token: JWT }, ['upstream.timeoutMs: must be an integer from 1 to 2147483647']],
    // A host to bind is an IP address or a host name: what `check` passes, `serve` can bind (a
    // port, a scheme or brackets failed only at startup), and `127.1` or `0` (digits and dots that
    // are no IPv4 address) would slip past the check that the two listeners differ.
    ...['127.0.0.1:8080', 'http://0.0.0.0', '[::1]', '999.1.1.1', '127.1', '0', ' ', '@@bad@@', 'a..b', '-pod'].map((host): [object, string[]] =>
      [{ admin: { host }, token: JWT }, [`admin.host: must be an IP address (127.0.0.1, 0.0.0.0, ::) or a host name, without port, scheme or brackets (got ${JSON.stringify(host)})`]]),
    [{ listen: { host: 8080 }, token: JWT }, ['listen.host: must be an IP address (127.0.0.1, 0.0.0.0, ::) or a host name, without port, scheme or brackets (got number)']],
    // A key written with no value (a template that rendered to nothing) is not a wish for the default.
    [{ upstream: { url: null }, token: JWT }, ['upstream.url: has no value (remove the key to take its default)']],
    [{ listen: { port: null }, openapi: { file: null }, token: JWT }, ['listen.port: has no value (remove the key to take its default)', 'openapi.file: has no value (remove the key to take its default)']],
    // A bigger cache than memory holds failed at startup (an array too long) or after minutes (out of memory).
    [{ token: { ...JWT, cache: { maxEntries: 4294967296 } } }, ['token.cache.maxEntries: must be an integer from 1 to 10000000']],
    [{ token: { ...JWT, cache: { redis: { url: 'redis://127.0.0.1:6379/abc' } } } }, ['token.cache.redis.url: the path must be a database number (/0, /1, ...)']],
    // Node's timers hold at most 2^31-1 ms: a longer one fires after 1 ms (a shutdown that cuts
    // every request at once, introspections that all time out).
    [{ upstream: { timeoutMs: 2 ** 31 }, token: JWT }, ['upstream.timeoutMs: must be an integer from 1 to 2147483647']],
    [{ listen: { shutdownTimeoutMs: 3000000000 }, token: JWT }, ['listen.shutdownTimeoutMs: must be an integer from 0 to 2147483647']],
    [{ limits: { requestTimeoutMs: 2 ** 31 }, token: JWT }, ['limits.requestTimeoutMs: must be an integer from 1 to 2147483647']],
    [{ token: { introspection: { ...introspection, timeoutMs: 2 ** 31 } } }, ['token.introspection.timeoutMs: must be an integer from 1 to 2147483647']],
    // No algorithm or no typ accepted: every JWT would be refused.
    [{ token: { jwt: { ...JWT.jwt, algorithms: [] } } }, ['token.jwt.algorithms: must name at least one value']],
    [{ token: { jwt: { ...JWT.jwt, types: [] } } }, ['token.jwt.types: must name at least one value']],
    [{ token: { introspection: { ...introspection, endpoint: 'not a url' } } }, ['token.introspection.endpoint: must be a URL']],
    [{ token: { introspection: { ...introspection, authMethod: 'magic' } } }, ['token.introspection.authMethod: must be one of client_secret_basic, client_secret_post, bearer_token']],
    // What a bad authMethod needs is unknown: no guess at missing credentials besides.
    [{ token: { introspection: { endpoint: 'https://as.example/i', authMethod: 'private_key_jwt' } } }, ['token.introspection.authMethod: must be one of client_secret_basic, client_secret_post, bearer_token']],
    [{ token: { ...JWT, cache: { redis: { url: 'http://cache' } } } }, ['token.cache.redis.url: must be a URL (redis or rediss)']],
    [{ token: { jwt: { ...JWT.jwt, algorithms: ['RS256', 'HS256'] } } }, ['token.jwt.algorithms: may only contain RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA']],
    [{ token: { jwt: { ...JWT.jwt, clockToleranceSeconds: 301 } } }, ['token.jwt.clockToleranceSeconds: must be an integer from 0 to 300']],
    [{ log: { level: 'loud' }, token: JWT }, ['log.level: must be one of fatal, error, warn, info, debug, trace, silent']],
    [{ openapi: { extra: [{ method: 'GET', path: 'UpdatedUsers' }] }, token: JWT }, ['openapi.extra[0].path: must be a path starting with /', 'openapi.extra[0].scopes: must name at least one scope (or set public: true)']],
    // The realm is written into every challenge: a character Node refuses in a header value would
    // turn every 401 and 403 into Fastify's own error, without its challenge.
    ...['a"b', 'a\\b', 'scim\u0001gw', 'a\r\nX-Injected: 1', 'a\tb', 'r\u00e9alm', 'a\u2028b', 'a\u007fb'].map((realm): [object, string[]] =>
      [{ token: { ...JWT, realm } }, ['token.realm: must be printable ASCII (spaces allowed), without " or \\']]),
  ];
  for (const [content, expected] of cases) t.same(problems(t, content), expected, expected.join('; '));
});

t.test('every problem of a file is listed at once', async (t) => {
  const content = [
    'lisen: { port: 1 }',
    'listen: { port: abc }',
    'upstream: { url: not-a-url, forwardAuthorization: yes }',
    'token:',
    '  introspecton: {}',
    '  jwt: { jwksUri: "https://as.example/jwks", issuer: "https://as.example", clockToleranceSeconds: 9999 }',
    '',
  ].join('\n');
  t.same([...problems(t, content, { SCOPEGATE_UPSTREAM_TIMEOUT_MS: 'soon' })].sort(), [
    'lisen: unknown key (did you mean listen?)',
    'listen.port: must be a port number (0-65535)',
    'token.introspecton: unknown key (did you mean token.introspection?)',
    'token.jwt.clockToleranceSeconds: must be an integer from 0 to 300',
    'upstream.forwardAuthorization: must be true or false',
    'upstream.timeoutMs (SCOPEGATE_UPSTREAM_TIMEOUT_MS): must be an integer from 1 to 2147483647',
    'upstream.url: must be a URL',
  ].sort());
});

t.test('a realm of printable ASCII and spaces is taken as written', async (t) => {
  for (const realm of ['scopegate', 'SCIM gateway (prod) #1', "!#$%&'()*+,-./:;<=>?@[]^_`{|}~"]) {
    t.equal(loadConfig(write({ token: { ...JWT, realm } }), {}).token.realm, realm, realm);
  }
});

t.test('files are read, and their problems listed, whatever else is wrong', async (t) => {
  const missing = join(tmp, 'no-such-file');
  const introspection = { endpoint: 'https://as.example/i', clientId: 'gw', clientSecretFile: missing };
  t.same([...problems(t, { listen: { port: 'abc' }, token: { introspection } })].sort(), [
    'listen.port: must be a port number (0-65535)',
    'token.introspection.clientSecretFile: cannot read the file it names (ENOENT)',
  ], 'the secret file beside a bad port');
  t.same([...problems(t, { listen: { tls: { certFile: missing } }, token: JWT })].sort(), [
    `listen.tls.certFile: cannot read ${missing} (ENOENT)`,
    'listen.tls.keyFile: is required',
  ], 'the certificate beside a missing key');
  t.same([...problems(t, { listen: { tls: { keyFile: missing } }, token: JWT })].sort(), [
    'listen.tls.certFile: is required',
    'listen.tls.keyFile: cannot read the file it names (ENOENT)',
  ], 'the key beside a missing certificate');
});

t.test('problems between keys are listed together with problems of single keys', async (t) => {
  // INTERFACE.md: `check` prints every problem. A typo must not hide the missing token section.
  const listed = problems(t, { listen: { port: 'abc' } });
  t.ok(listed.includes('listen.port: must be a port number (0-65535)'), 'the type problem', { listed });
  t.ok(listed.some((p) => p.startsWith('token: ')), 'and the missing token section', { listed });
});

t.test('a config without a token section names `token`', async (t) => {
  const cases: Array<[name: string, content: string | object]> = [
    ['no token key', { listen: { port: 1 } }],
    ['an empty mapping', '{}\n'],
    ['an empty token section', { token: {} }],
    ['token: with nothing under it', 'token:\n'],
    ['only a cache', { token: { cache: { maxEntries: 10 } } }],
  ];
  for (const [name, content] of cases) {
    const listed = problems(t, content);
    t.equal(listed.length, 1, name, { listed });
    t.match(listed[0], /^token: /, name);
  }
});

t.test('a secret never appears in a problem', async (t) => {
  const introspection = (extra: string) => `token:\n  introspection:\n${extra}`;
  const cases: Array<[name: string, content: string, env?: Record<string, string>]> = [
    ['next to other problems', `listen: {port: abc}\nbogus: 1\n${introspection(`    clientSecret: ${SECRET}\n    clientId: 5\n    endpoint: not-a-url\n`)}`],
    ['the secret of the wrong type', introspection(`    clientSecret: [${SECRET}]\n    endpoint: not-a-url\n`)],
    ['the secret under a misspelled key', introspection(`    clientSecrte: ${SECRET}\n    endpoint: https://as.example/i\n`)],
    ['syntax error: unterminated quote on the secret', introspection(`    clientSecret: "${SECRET}\n    clientId: gw\n`)],
    ['syntax error: the secret twice', introspection(`    clientSecret: ${SECRET}\n    clientSecret: ${SECRET}\n`)],
    ['syntax error: a mapping in the secret', introspection(`    clientSecret: ${SECRET}: ${SECRET}\n`)],
    ['syntax error in JSON', `{"token": {"introspection": {"clientSecret": "${SECRET}" "clientId": 1}}`],
    // The YAML parser quotes the token it stumbled on: here the secret, after a flow mapping gone wrong.
    ['syntax error: a broken flow mapping before the secret', `listen: {port: /a/{x}}\ntoken: {introspection: {endpoint: https://a.example/i, clientId: c, clientSecret: ${SECRET}}}`],
    ['syntax error: the secret written as an alias', introspection(`    clientSecret: *${SECRET}\n`)],
    ['the issuer with a password in it', `token: {issuer: "https://user:${SECRET}@as.example", jwt: {}}`],
    ['the JWKS URL with a password in it', `token: {jwt: {jwksUri: "https://user:${SECRET}@as.example/jwks", issuer: "https://as.example"}}`],
    ['the introspection endpoint with a password in it', introspection(`    endpoint: https://user:${SECRET}@as.example/i\n    clientId: gw\n    clientSecret: s\n`)],
    ['both clientSecret and clientSecretFile', introspection(`    clientSecret: ${SECRET}\n    clientSecretFile: /etc/hostname\n    endpoint: https://as.example/i\n    clientId: gw\n`)],
    ['the secret from the environment', `listen: {port: abc}\n${introspection('    endpoint: nope\n')}`, { SCOPEGATE_TOKEN_INTROSPECTION_CLIENT_SECRET: SECRET, SCOPEGATE_LISTEN_PORT: 'x' }],
    ['the secret in a misspelled variable, next to a problem', `listen: {port: abc}\ntoken: {jwt: {jwksUri: "https://a/j", issuer: "https://a"}}`, { SCOPEGATE_TOKEN_INTROSPECTION_CLIENT_SECRETT: SECRET }],
    ['the secret as a tls key path that is wrong', `listen: {tls: {keyFile: ${SECRET}}}\ntoken: {jwt: {jwksUri: "https://a/j", issuer: "https://a"}}`],
    ['the secret as the tls key path, with a certificate', `listen: {tls: {keyFile: ${SECRET}, certFile: /etc/hostname}}\ntoken: {jwt: {jwksUri: "https://a/j", issuer: "https://a"}}`],
    ['the secret as the path of its file', `listen: {port: abc}\n${introspection(`    clientSecretFile: ${SECRET}\n    clientId: gw\n    endpoint: https://as.example/i\n`)}`],
    ['the secret as the path of its file, from the environment', introspection('    clientId: gw\n    endpoint: https://as.example/i\n'), { SCOPEGATE_TOKEN_INTROSPECTION_CLIENT_SECRET_FILE: SECRET }],
  ];
  for (const [name, content, env] of cases) {
    const error = configError(t, () => loadConfig(write(content), env ?? {}));
    t.ok(error.problems.length > 0, `${name}: refused`);
    const text = [String(error), error.stack ?? '', ...error.problems, ...error.warnings].join('\n');
    t.notMatch(text, SECRET, `${name}: the secret is not in the error`);
  }
  const warned = loadConfig(write(`token: {jwt: {jwksUri: "https://a/j", issuer: "https://a"}}`), { SCOPEGATE_TOKEN_INTROSPECTION_CLIENT_SECRETT: SECRET });
  t.equal(warned.warnings.length, 1, 'a misspelled variable is a warning');
  t.notMatch(warned.warnings.join('\n'), SECRET, 'the warning names the variable, never its value');

  const secretFile = write(`${SECRET}\n`, 'secret.txt');
  const error = configError(t, () => loadConfig(write({ listen: { port: 'abc' }, token: { introspection: { endpoint: 'nope', clientId: 'gw', clientSecretFile: secretFile } } }), {}));
  t.notMatch([String(error), ...error.problems].join('\n'), SECRET, 'the content of clientSecretFile is not in the error');
});

t.test('clientSecretFile is read (one line, trimmed), and its problems name the key', async (t) => {
  const introspection = (extra: object) => ({ token: { introspection: { endpoint: 'https://as.example/i', clientId: 'gw', ...extra } } });
  const secret = write('  the-secret  \n', 'secret.txt');
  const config = loadConfig(write(introspection({ clientSecretFile: secret })), {});
  t.equal(config.token.introspection?.clientSecret, 'the-secret');
  t.equal(config.token.introspection?.clientSecretFile, secret);

  const empty = write('\n', 'empty.txt');
  const missing = join(dirname(empty), 'missing.txt');
  const cases: Array<[name: string, content: object, expected: RegExp]> = [
    ['an empty file', introspection({ clientSecretFile: empty }), /^token\.introspection\.clientSecretFile: the file is empty$/],
    ['a missing file', introspection({ clientSecretFile: missing }), /^token\.introspection\.clientSecretFile: cannot read the file it names \(ENOENT\)$/],
    ['both ways at once', introspection({ clientSecretFile: secret, clientSecret: 'x' }), /^token\.introspection\.clientSecretFile: give clientSecret or clientSecretFile, not both$/],
    ['neither, with client_secret_basic', introspection({}), /^token\.introspection\.clientSecret: is required with authMethod client_secret_basic/],
    // Sent as read, each would be another secret than the file's: U+FFFD for a bad byte, an inner newline.
    ['two lines', introspection({ clientSecretFile: write('first\nsecond\n', 'two-lines.txt') }), /^token\.introspection\.clientSecretFile: the file holds more than one line/],
    ['bytes that are not UTF-8', introspection({ clientSecretFile: write(Buffer.from([0x53, 0x33, 0xff, 0xfe]), 'latin.bin') }), /^token\.introspection\.clientSecretFile: the file is not UTF-8 text$/],
    ['a directory', introspection({ clientSecretFile: dirname(empty) }), /^token\.introspection\.clientSecretFile: the file it names is not a regular file/],
  ];
  for (const [name, content, expected] of cases) {
    const listed = problems(t, content);
    t.ok(listed.some((p) => expected.test(p)), name, { listed });
  }
});

t.test('the PEM files of listen.tls, upstream.caFile and token.caFile are read and parsed at load', async (t) => {
  const dir = join(tmp, 'pem');
  const cert = writePem(join(dir, 'cert.pem'), pki().cert);
  const key = writePem(join(dir, 'key.pem'), pki().key);
  const chain = writePem(join(dir, 'chain.pem'), pki().cert + pki().cert);
  const other = writePem(join(dir, 'other.pem'), pki().otherKey);
  const garbage = writePem(join(dir, 'garbage.pem'), '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n');
  const text = writePem(join(dir, 'text.pem'), 'hello\n');
  const missing = join(dir, 'missing.pem');
  const config = (tls: object | undefined, caFile?: string) => ({ ...(tls ? { listen: { tls } } : {}), ...(caFile ? { upstream: { caFile } } : {}), token: JWT });
  t.ok(loadConfig(write(config({ certFile: chain, keyFile: key }, chain)), {}), 'a chain and its key, a CA bundle');
  const cases: Array<[name: string, content: object, expected: string[]]> = [
    ['missing certificate', config({ certFile: missing, keyFile: key }), [`listen.tls.certFile: cannot read ${missing} (ENOENT)`]],
    // The value of the key's path may be a secret pasted in its place: never repeated unread.
    ['missing key', config({ certFile: cert, keyFile: missing }), ['listen.tls.keyFile: cannot read the file it names (ENOENT)']],
    ['garbage certificate', config({ certFile: garbage, keyFile: key }), [`listen.tls.certFile: certificate 1 of ${garbage} cannot be parsed`]],
    ['no certificate at all', config({ certFile: text, keyFile: key }), [`listen.tls.certFile: ${text} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`]],
    ['a certificate as the key', config({ certFile: cert, keyFile: cert }), [`listen.tls.keyFile: ${cert} holds no PEM private key that can be read without a passphrase`]],
    ['the key of another certificate', config({ certFile: cert, keyFile: other }), ['listen.tls.keyFile: does not match the certificate of listen.tls.certFile']],
    ['missing CA file', config(undefined, missing), [`upstream.caFile: cannot read ${missing} (ENOENT)`]],
    ['garbage CA file', config(undefined, text), [`upstream.caFile: ${text} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`]],
    ['missing authorization server CA file', { token: { ...JWT, caFile: missing } }, [`token.caFile: cannot read ${missing} (ENOENT)`]],
    ['garbage authorization server CA file', { token: { ...JWT, caFile: garbage } }, [`token.caFile: certificate 1 of ${garbage} cannot be parsed`]],
  ];
  t.ok(loadConfig(write({ token: { ...JWT, caFile: chain } }), {}), 'an authorization server CA bundle');
  for (const [name, content, expected] of cases) t.same(problems(t, content), expected, name);
  t.same(problems(t, { listen: { port: 'abc', tls: { certFile: missing, keyFile: key } }, token: JWT }).slice().sort(), [
    'listen.port: must be a port number (0-65535)',
    `listen.tls.certFile: cannot read ${missing} (ENOENT)`,
  ], 'listed with the other problems');
  t.same(problems(t, config({ certFile: missing, keyFile: key }), { SCOPEGATE_LISTEN_TLS_CERT_FILE: missing }), [`listen.tls.certFile (SCOPEGATE_LISTEN_TLS_CERT_FILE): cannot read ${missing} (ENOENT)`], 'naming the variable that set the path');
  const keyText = pki().key;
  for (const listed of [problems(t, config({ certFile: key, keyFile: cert }))]) t.notMatch(listed.join('\n'), keyText.split('\n')[1]!, 'no key material in a problem');
});

t.test('a problem from a variable names it, also inside a list it set or beside another key', async (t) => {
  t.same(problems(t, { token: JWT }, { SCOPEGATE_OPENAPI_EXTRA: '[{"method":"get","path":"/x","scopes":["s"]}]' }).map((p) => p.split(':')[0]),
    ['openapi.extra[0].method (SCOPEGATE_OPENAPI_EXTRA)'], 'an element of the list the variable set');
  const clash = problems(t, { token: JWT }, { SCOPEGATE_LISTEN_PORT: '9090' });
  t.equal(clash.length, 1);
  t.match(clash[0], /^admin\.port: must differ from listen\.port: .* \(listen\.port from SCOPEGATE_LISTEN_PORT\)$/, 'the other key, and the variable that set it');
});

t.test('a problem of the OpenAPI file names the variable that chose the file, or its base path', async (t) => {
  const loadWith = (env: Record<string, string>) => {
    try {
      loadTable(loadConfig(write({ token: JWT }), env));
      return [];
    } catch (error) {
      return [...(error as ConfigError).problems];
    }
  };
  t.match(loadWith({ SCOPEGATE_OPENAPI_FILE: './absent-openapi.yaml' }), [/^openapi\.file \(SCOPEGATE_OPENAPI_FILE\): cannot read .*absent-openapi\.yaml/]);
  t.match(loadWith({ SCOPEGATE_OPENAPI_BASE_PATH: '/a/../b' }), [/^openapi\.basePath \(SCOPEGATE_OPENAPI_BASE_PATH\): /]);
  t.same(loadWith({}), [], 'the default file loads');
  t.same(loadWith({ SCOPEGATE_OPENAPI_FILE: SHARED_OPENAPI }), [], 'the shared file loads');
});

t.test('a config file is a regular file (or a pipe) of UTF-8 text, at most 1 MiB', async (t) => {
  const cases: Array<[name: string, file: string, expected: RegExp]> = [
    // Read, /dev/zero took gigabytes and never ended.
    ['a device', '/dev/zero', /^\/dev\/zero: not a config file \(a regular file or a pipe of at most 1048576 bytes\)$/],
    ['a directory', tmp, /: not a config file/],
    ['over 1 MiB', write(`# ${'x'.repeat(1024 * 1024)}\n`, 'big.yaml'), /: not a config file/],
    ['bytes that are not UTF-8', write(Buffer.from('listen: {host: "127.0.0.1\xff"}\n', 'latin1'), 'latin.yaml'), /: the config file is not UTF-8 text$/],
  ];
  for (const [name, file, expected] of cases) {
    const error = configError(t, () => loadConfig(file, {}));
    t.match(error.problems.join('\n'), expected, name);
  }
});

t.test('the result is frozen, all the way down', async (t) => {
  const config = loadConfig(write({
    listen: { tls: { certFile: writePem(join(tmp, 'frozen', 'c.pem'), pki().cert), keyFile: writePem(join(tmp, 'frozen', 'k.pem'), pki().key) } },
    openapi: { extra: [{ method: 'GET', path: '/x', scopes: ['s'] }] },
    token: { introspection: { endpoint: 'https://as.example/i', clientId: 'gw', clientSecretFile: write('s\n', 's.txt') }, ...JWT, cache: { redis: { url: 'redis://r:6379' } } },
  }), {});
  const unfrozen: string[] = [];
  const walk = (value: unknown, path: string) => {
    if (typeof value !== 'object' || value === null) return;
    if (!Object.isFrozen(value)) unfrozen.push(path || '(root)');
    for (const [k, v] of Object.entries(value)) walk(v, path ? `${path}.${k}` : k);
  };
  walk(config, '');
  t.same(unfrozen, [], 'every object and array is frozen');
  t.throws(() => {
    (config.listen as { port: number }).port = 1;
  }, TypeError);
  t.throws(() => {
    (config.token.jwt!.algorithms as string[]).push('none');
  }, TypeError);
  t.throws(() => {
    (config.token.introspection as { clientSecret?: string }).clientSecret = 'changed';
  }, TypeError);
});

t.test('a config problem is a ConfigError naming the file when the file cannot be read', async (t) => {
  const file = join(tmp, 'absent.yaml');
  t.same(configError(t, () => loadConfig(file, {})).problems, [`${file}: cannot read the config file (ENOENT)`]);
  const config: Config = loadConfig(write({ token: JWT }), {});
  t.equal(config.listen.port, 8080, 'a minimal valid file loads');
});
