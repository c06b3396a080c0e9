/**
 * OpenAPI document -> endpoint-to-scope table: the 31 jans-scim operations, and the security
 * semantics of OpenAPI 3.0/3.1 (global and overriding security, OR, AND, optional, schemes the
 * gateway cannot check), $refs, base paths, `extra`, and the documents that must be refused.
 */
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { OpenApiError } from '../src/errors.js';
import { operationsFrom, readOpenApiFile, type Operation, type TableOptions } from '../src/scopes/openapi.js';
import { ensureBuilt, runCli } from './helpers/cli.js';
import { OWN_OPENAPI, SHARED_OPENAPI } from './helpers/gateway.js';

/** A row of `scopegate routes --json`. */
interface Route {
  method: string;
  path: string;
  operationId: string | null;
  public: boolean;
  scopes: string[][];
}

/** JANS.md, "All operations": the 31 operations of jans-scim-openapi.yaml, written out. */
const JANS: Route[] = [
  { method: 'GET', path: '/jans-scim/restv1/v2/Groups', operationId: 'get-groups', public: false, scopes: [['https://jans.io/scim/groups.read']] },
  { method: 'POST', path: '/jans-scim/restv1/v2/Groups', operationId: 'create-group', public: false, scopes: [['https://jans.io/scim/groups.write']] },
  { method: 'GET', path: '/jans-scim/restv1/v2/Groups/{id}', operationId: 'get-group-by-id', public: false, scopes: [['https://jans.io/scim/groups.read']] },
  { method: 'PUT', path: '/jans-scim/restv1/v2/Groups/{id}', operationId: 'update-group-by-id', public: false, scopes: [['https://jans.io/scim/groups.write']] },
  { method: 'DELETE', path: '/jans-scim/restv1/v2/Groups/{id}', operationId: 'delete-group-by-id', public: false, scopes: [['https://jans.io/scim/groups.write']] },
  { method: 'PATCH', path: '/jans-scim/restv1/v2/Groups/{id}', operationId: 'patch-group-by-id', public: false, scopes: [['https://jans.io/scim/groups.write']] },
  { method: 'POST', path: '/jans-scim/restv1/v2/Groups/.search', operationId: 'search-group', public: false, scopes: [['https://jans.io/scim/groups.read']] },
  { method: 'GET', path: '/jans-scim/restv1/v2/FidoDevices', operationId: 'get-fido-devices', public: false, scopes: [['https://jans.io/scim/fido.read']] },
  { method: 'GET', path: '/jans-scim/restv1/v2/FidoDevices/{id}', operationId: 'get-fido-device-by-id', public: false, scopes: [['https://jans.io/scim/fido.read']] },
  { method: 'PUT', path: '/jans-scim/restv1/v2/FidoDevices/{id}', operationId: 'update-fido-device-by-id', public: false, scopes: [['https://jans.io/scim/fido.write']] },
  { method: 'DELETE', path: '/jans-scim/restv1/v2/FidoDevices/{id}', operationId: 'delete-fido-device-by-id', public: false, scopes: [['https://jans.io/scim/fido.write']] },
  { method: 'POST', path: '/jans-scim/restv1/v2/FidoDevices/.search', operationId: 'search-fido-device', public: false, scopes: [['https://jans.io/scim/fido.read']] },
  { method: 'GET', path: '/jans-scim/restv1/v2/Fido2Devices', operationId: 'get-fido2-devices', public: false, scopes: [['https://jans.io/scim/fido2.read']] },
  { method: 'GET', path: '/jans-scim/restv1/v2/Fido2Devices/{id}', operationId: 'get-fido2-device-by-id', public: false, scopes: [['https://jans.io/scim/fido2.read']] },
  { method: 'PUT', path: '/jans-scim/restv1/v2/Fido2Devices/{id}', operationId: 'update-fido2-device-by-id', public: false, scopes: [['https://jans.io/scim/fido2.write']] },
  { method: 'DELETE', path: '/jans-scim/restv1/v2/Fido2Devices/{id}', operationId: 'delete-fido2-device-by-id', public: false, scopes: [['https://jans.io/scim/fido2.write']] },
  { method: 'POST', path: '/jans-scim/restv1/v2/Fido2Devices/.search', operationId: 'search-fido2-device', public: false, scopes: [['https://jans.io/scim/fido2.read']] },
  { method: 'GET', path: '/jans-scim/restv1/v2/Users', operationId: 'get-users', public: false, scopes: [['https://jans.io/scim/users.read']] },
  { method: 'POST', path: '/jans-scim/restv1/v2/Users', operationId: 'create-user', public: false, scopes: [['https://jans.io/scim/users.write']] },
  { method: 'GET', path: '/jans-scim/restv1/v2/Users/{id}', operationId: 'get-user-by-id', public: false, scopes: [['https://jans.io/scim/users.read']] },
  { method: 'PUT', path: '/jans-scim/restv1/v2/Users/{id}', operationId: 'update-user-by-id', public: false, scopes: [['https://jans.io/scim/users.write']] },
  { method: 'DELETE', path: '/jans-scim/restv1/v2/Users/{id}', operationId: 'delete-user-by-id', public: false, scopes: [['https://jans.io/scim/users.write']] },
  { method: 'PATCH', path: '/jans-scim/restv1/v2/Users/{id}', operationId: 'patch-user-by-id', public: false, scopes: [['https://jans.io/scim/users.write']] },
  { method: 'POST', path: '/jans-scim/restv1/v2/Users/.search', operationId: 'search-user', public: false, scopes: [['https://jans.io/scim/users.read']] },
  { method: 'POST', path: '/jans-scim/restv1/v2/.search', operationId: 'search-resources', public: false, scopes: [['https://jans.io/scim/all-resources.search']] },
  { method: 'POST', path: '/jans-scim/restv1/v2/Bulk', operationId: null, public: false, scopes: [['https://jans.io/scim/bulk']] },
  { method: 'GET', path: '/jans-scim/restv1/v2/ServiceProviderConfig', operationId: 'get-service-provider-config', public: true, scopes: [] },
  { method: 'GET', path: '/jans-scim/restv1/v2/ResourceTypes', operationId: 'get-resource-types', public: true, scopes: [] },
  { method: 'GET', path: '/jans-scim/restv1/v2/ResourceTypes/{resource}', operationId: 'get-resource-type-by-id', public: true, scopes: [] },
  { method: 'GET', path: '/jans-scim/restv1/v2/Schemas', operationId: 'get-schemas', public: true, scopes: [] },
  { method: 'GET', path: '/jans-scim/restv1/v2/Schemas/{uri}', operationId: 'get-schema-by-uri', public: true, scopes: [] },
];

const byRoute = (a: { method: string; path: string }, b: { method: string; path: string }) =>
  `${a.path} ${a.method}`.localeCompare(`${b.path} ${b.method}`);
const sorted = <T extends { method: string; path: string }>(rows: readonly T[]): T[] => [...rows].sort(byRoute);

/** An operation as a plain row, in the shape `routes --json` prints. */
const asRoute = (o: Operation): Route => ({
  method: o.method, path: o.path, operationId: o.operationId, public: o.public, scopes: o.requirement.map((a) => [...a]),
});

const tmp = mkdtempSync(join(tmpdir(), 'scopegate-openapi-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
function writeTmp(name: string, text: string): string {
  const file = join(tmp, name);
  writeFileSync(file, text);
  return file;
}

/** The problems of an OpenApiError thrown by `fn` (an empty list when nothing was thrown). */
function problemsOf(fn: () => unknown): readonly string[] {
  try {
    fn();
  } catch (error) {
    if (error instanceof OpenApiError) return error.problems;
    throw error;
  }
  return [];
}

t.before(ensureBuilt);

t.test('routes --json over the shared jans-scim file prints the 31 operations of JANS.md', async (t) => {
  t.equal(JANS.length, 31);
  t.equal(JANS.filter((r) => !r.public).length, 26, 'JANS.md: 26 scoped');
  t.equal(JANS.filter((r) => r.public).length, 5, 'JANS.md: 5 public');
  const config = writeTmp('shared.yaml', stringify({
    openapi: { file: SHARED_OPENAPI },
    token: { jwt: { jwksUri: 'https://as.example/jwks', issuer: 'https://as.example' } },
  }));
  const { code, stdout, stderr } = await runCli(['routes', '--json', '--config', config]);
  t.equal(code, 0, stderr);
  t.equal(stderr, '');
  const rows = JSON.parse(stdout) as Route[];
  t.same(sorted(rows), sorted(JANS), 'the whole table, nothing more, nothing less');
  t.strictSame(Object.keys(rows[0] ?? {}).sort(), ['method', 'operationId', 'path', 'public', 'scopes'], 'exactly the documented keys');
});

t.test('routes --json honours openapi.basePath and openapi.extra from the config', async (t) => {
  const config = writeTmp('based.yaml', stringify({
    openapi: {
      file: SHARED_OPENAPI,
      basePath: '/scim/v2/',
      extra: [
        { method: 'GET', path: '/UpdatedUsers', scopes: ['https://jans.io/scim/users.read'] },
        { method: 'GET', path: '/health', public: true, operationId: 'health' },
      ],
    },
    token: { jwt: { jwksUri: 'https://as.example/jwks', issuer: 'https://as.example' } },
  }));
  const { code, stdout, stderr } = await runCli(['routes', '--json', '--config', config]);
  t.equal(code, 0, stderr);
  const rows = JSON.parse(stdout) as Route[];
  const expected = [
    ...JANS.map((r) => ({ ...r, path: r.path.replace('/jans-scim/restv1/v2', '/scim/v2') })),
    { method: 'GET', path: '/scim/v2/UpdatedUsers', operationId: null, public: false, scopes: [['https://jans.io/scim/users.read']] },
    { method: 'GET', path: '/scim/v2/health', operationId: 'health', public: true, scopes: [] },
  ];
  t.same(sorted(rows), sorted(expected));
});

t.test('our config/scim-openapi.yaml yields the same table as the shared jans file', async (t) => {
  const own = operationsFrom(readOpenApiFile(OWN_OPENAPI));
  const shared = operationsFrom(readOpenApiFile(SHARED_OPENAPI));
  t.equal(own.length, 31);
  t.same(sorted(own), sorted(shared));
  t.same(sorted(own.map(asRoute)), sorted(JANS));
});

/**
 * One OpenAPI 3.1 document that uses every security form the gateway reads. `aliased` is a
 * local $ref to a security scheme, `/shared` a local $ref to a path item (3.1 components.pathItems).
 */
const DOC_31 = {
  openapi: '3.1.0',
  info: { title: 'security forms', version: '1' },
  servers: [{ url: 'https://{host}/api/{version}', variables: { host: { default: 'api.example' }, version: { default: 'v2', enum: ['v1', 'v2'] } } }],
  security: [{ oauth: ['global.read'] }],
  components: {
    securitySchemes: {
      oauth: { type: 'oauth2', flows: { clientCredentials: { tokenUrl: 'https://as.example/token', scopes: {} } } },
      oauth2b: { type: 'oauth2', flows: { clientCredentials: { tokenUrl: 'https://as2.example/token', scopes: {} } } },
      oidc: { type: 'openIdConnect', openIdConnectUrl: 'https://as.example/.well-known/openid-configuration' },
      key: { type: 'apiKey', in: 'header', name: 'X-Api-Key' },
      aliased: { $ref: '#/components/securitySchemes/oauth' },
    },
    pathItems: {
      Shared: { get: { operationId: 'get-shared', security: [{ aliased: ['shared.read'] }] } },
    },
  },
  paths: {
    '/things': {
      get: { operationId: 'list-things' },
      post: { operationId: 'create-thing', security: [{ oauth: ['things.write'] }] },
    },
    '/things/{id}': {
      parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
      get: { operationId: 'get-thing', security: [] },
      put: { operationId: 'put-thing', security: [{ oauth: ['a'] }, { oauth: ['b'] }] },
      delete: { operationId: 'delete-thing', security: [{ oauth: ['a', 'b'] }] },
      patch: { operationId: 'patch-thing', security: [{ oauth: ['a'], oauth2b: ['c'] }] },
    },
    '/optional': { get: { operationId: 'optional', security: [{}, { oauth: ['x'] }] } },
    '/oidc': { get: { operationId: 'oidc', security: [{ oidc: ['openid', 'oidc.read'] }] } },
    '/either': { get: { operationId: 'either', security: [{ key: [] }, { oauth: ['either.read'] }] } },
    '/shared': { $ref: '#/components/pathItems/Shared' },
  },
};

const DOC_31_TABLE: Route[] = [
  { method: 'GET', path: '/api/v2/things', operationId: 'list-things', public: false, scopes: [['global.read']] },
  { method: 'POST', path: '/api/v2/things', operationId: 'create-thing', public: false, scopes: [['things.write']] },
  { method: 'GET', path: '/api/v2/things/{id}', operationId: 'get-thing', public: true, scopes: [] },
  { method: 'PUT', path: '/api/v2/things/{id}', operationId: 'put-thing', public: false, scopes: [['a'], ['b']] },
  { method: 'DELETE', path: '/api/v2/things/{id}', operationId: 'delete-thing', public: false, scopes: [['a', 'b']] },
  { method: 'PATCH', path: '/api/v2/things/{id}', operationId: 'patch-thing', public: false, scopes: [['a', 'c']] },
  { method: 'GET', path: '/api/v2/optional', operationId: 'optional', public: true, scopes: [] },
  { method: 'GET', path: '/api/v2/oidc', operationId: 'oidc', public: false, scopes: [['openid', 'oidc.read']] },
  { method: 'GET', path: '/api/v2/either', operationId: 'either', public: false, scopes: [['either.read']] },
  { method: 'GET', path: '/api/v2/shared', operationId: 'get-shared', public: false, scopes: [['shared.read']] },
];

t.test('an OpenAPI 3.1 document, as JSON and as YAML, gives the same table', async (t) => {
  const variants = [
    { name: 'doc.json', text: JSON.stringify(DOC_31, null, 2) },
    { name: 'doc.yaml', text: stringify(DOC_31) },
  ];
  for (const { name, text } of variants) {
    const operations = operationsFrom(readOpenApiFile(writeTmp(name, text)));
    t.same(sorted(operations.map(asRoute)), sorted(DOC_31_TABLE), name);
  }
});

t.test('an OpenAPI 3.2 document gives the table its 3.1 twin gives', async (t) => {
  const doc32 = {
    ...DOC_31, openapi: '3.2.0', $self: 'https://api.example/openapi.json',
    components: {
      ...DOC_31.components,
      // 3.2's device flow beside the others: the scopes are what the operations name.
      securitySchemes: { ...DOC_31.components.securitySchemes, oauth: { type: 'oauth2', flows: { deviceAuthorization: { deviceAuthorizationUrl: 'https://as.example/device', tokenUrl: 'https://as.example/token', scopes: {} } } } },
    },
  };
  t.same(sorted(operationsFrom(doc32).map(asRoute)), sorted(DOC_31_TABLE));
});

t.test('security forms, one at a time', async (t) => {
  const schemes = DOC_31.components.securitySchemes;
  const cases: Array<{ name: string; global?: unknown; security?: unknown; public: boolean; scopes: string[][] }> = [
    { name: 'no security anywhere = public', public: true, scopes: [] },
    { name: 'global security applies', global: [{ oauth: ['g'] }], public: false, scopes: [['g']] },
    { name: 'operation overrides global', global: [{ oauth: ['g'] }], security: [{ oauth: ['o'] }], public: false, scopes: [['o']] },
    { name: 'security: [] makes an operation public under a global', global: [{ oauth: ['g'] }], security: [], public: true, scopes: [] },
    { name: 'two requirement objects: OR', security: [{ oauth: ['a'] }, { oauth: ['b'] }], public: false, scopes: [['a'], ['b']] },
    { name: 'two scopes in one object: AND', security: [{ oauth: ['a', 'b'] }], public: false, scopes: [['a', 'b']] },
    { name: 'two oauth2 schemes in one object: AND of both', security: [{ oauth: ['a'], oauth2b: ['b'] }], public: false, scopes: [['a', 'b']] },
    { name: '{} among the alternatives: optional security = public', security: [{ oauth: ['a'] }, {}], public: true, scopes: [] },
    { name: 'global {} = public', global: [{}], public: true, scopes: [] },
    { name: 'openIdConnect scheme carries scopes', security: [{ oidc: ['openid', 'profile'] }], public: false, scopes: [['openid', 'profile']] },
    { name: 'apiKey OR oauth2: only the oauth2 alternative', security: [{ key: [] }, { oauth: ['a'] }], public: false, scopes: [['a']] },
    { name: 'oauth2 with no scopes: any valid token', security: [{ oauth: [] }], public: false, scopes: [[]] },
    { name: 'a $ref security scheme', security: [{ aliased: ['r'] }], public: false, scopes: [['r']] },
  ];
  for (const c of cases) {
    const doc = {
      openapi: '3.1.0',
      components: { securitySchemes: schemes },
      ...(c.global === undefined ? {} : { security: c.global }),
      paths: { '/x': { get: { operationId: 'x', ...(c.security === undefined ? {} : { security: c.security }) } } },
    };
    const [operation, ...rest] = operationsFrom(doc);
    t.equal(rest.length, 0, c.name);
    t.same(operation && { public: operation.public, scopes: operation.requirement }, { public: c.public, scopes: c.scopes }, c.name);
  }
});

t.test('base path: servers[0].url, server variables, and the openapi.basePath override', async (t) => {
  const cases: Array<{ name: string; servers?: unknown; options?: TableOptions; path: string }> = [
    { name: 'no servers: no base', path: '/x' },
    { name: 'absolute URL', servers: [{ url: 'https://scim.example.org/jans-scim/restv1/v2' }], path: '/jans-scim/restv1/v2/x' },
    { name: 'absolute URL, trailing slash', servers: [{ url: 'https://h.example/base/' }], path: '/base/x' },
    { name: 'absolute URL, origin only', servers: [{ url: 'https://h.example' }], path: '/x' },
    { name: 'only servers[0] counts', servers: [{ url: 'https://a.example/first' }, { url: 'https://b.example/second' }], path: '/first/x' },
    {
      name: 'absolute URL with variables',
      servers: [{ url: '{scheme}://{host}:{port}/{context}/v2', variables: { scheme: { default: 'https' }, host: { default: 'h.example' }, port: { default: '8443' }, context: { default: 'scim' } } }],
      path: '/scim/v2/x',
    },
    { name: 'relative URL', servers: [{ url: '/api/v1' }], path: '/api/v1/x' },
    { name: 'relative URL with a variable', servers: [{ url: '/{context}/v1', variables: { context: { default: 'svc' } } }], path: '/svc/v1/x' },
    { name: 'override wins over servers', servers: [{ url: 'https://h.example/base' }], options: { basePath: '/other' }, path: '/other/x' },
    { name: 'override, trailing slash', servers: [{ url: 'https://h.example/base' }], options: { basePath: '/other/' }, path: '/other/x' },
    { name: 'override "/" = no base', servers: [{ url: 'https://h.example/base' }], options: { basePath: '/' }, path: '/x' },
  ];
  for (const c of cases) {
    const doc = { openapi: '3.0.3', ...(c.servers === undefined ? {} : { servers: c.servers }), paths: { '/x': { get: {} } } };
    t.same(operationsFrom(doc, c.options).map((o) => o.path), [c.path], c.name);
  }
});

t.test('extra operations join the table under the base path', async (t) => {
  const doc = { openapi: '3.0.3', servers: [{ url: 'https://h.example/base' }], paths: { '/Users': { get: { operationId: 'get-users', security: [] } } } };
  const operations = operationsFrom(doc, {
    extra: [
      { method: 'GET', path: '/UpdatedUsers', scopes: ['https://jans.io/scim/users.read'], public: false },
      { method: 'DELETE', path: '/UserTokens/{id}', operationId: 'delete-user-tokens', scopes: ['https://jans.io/scim/tokens', 'x'], public: false },
      { method: 'GET', path: '/health', scopes: [], public: true },
    ],
  });
  t.same(sorted(operations.map(asRoute)), sorted([
    { method: 'GET', path: '/base/Users', operationId: 'get-users', public: true, scopes: [] },
    { method: 'GET', path: '/base/UpdatedUsers', operationId: null, public: false, scopes: [['https://jans.io/scim/users.read']] },
    { method: 'DELETE', path: '/base/UserTokens/{id}', operationId: 'delete-user-tokens', public: false, scopes: [['https://jans.io/scim/tokens', 'x']] },
    { method: 'GET', path: '/base/health', operationId: null, public: true, scopes: [] },
  ]));
  t.equal(operations.find((o) => o.path === '/base/UpdatedUsers')?.id, 'GET /base/UpdatedUsers', 'an operation without id is labelled METHOD path');
});

t.test('documents that cannot become a table with certainty are refused, naming the problem', async (t) => {
  const schemes = DOC_31.components.securitySchemes;
  const doc = (paths: unknown, more: Record<string, unknown> = {}) => ({ openapi: '3.1.0', components: { securitySchemes: schemes }, paths, ...more });
  const cases: Array<{ name: string; doc: unknown; options?: TableOptions; problem: RegExp }> = [
    { name: 'apiKey-only operation', doc: doc({ '/secret': { get: { operationId: 'get-secret', security: [{ key: [] }] } } }), problem: /^GET \/secret: .*key \(apiKey\).*cannot check/ },
    { name: 'apiKey AND oauth2 in one object', doc: doc({ '/secret': { get: { security: [{ key: [], oauth: ['a'] }] } } }), problem: /^GET \/secret: .*apiKey/ },
    { name: 'http basic only', doc: doc({ '/secret': { put: { security: [{ basic: [] }] } } }, { components: { securitySchemes: { basic: { type: 'http', scheme: 'basic' } } } }), problem: /^PUT \/secret: .*basic \(http\)/ },
    { name: 'undefined scheme', doc: doc({ '/a': { get: { security: [{ nope: ['a'] }] } } }), problem: /^GET \/a: security scheme "nope" is not defined/ },
    { name: 'undefined scheme in the global security', doc: doc({ '/a': { get: {} } }, { security: [{ nope: [] }] }), problem: /^GET \/a: security scheme "nope" is not defined/ },
    { name: 'conflicting templates, same method', doc: doc({ '/a/{x}': { get: {} }, '/a/{y}': { get: {} } }), problem: /^GET \/a\/\{y\}: conflicts with GET \/a\/\{x\}/ },
    { name: 'extra conflicting with the document', doc: doc({ '/a/{id}': { get: {} } }), options: { extra: [{ method: 'GET', path: '/a/{other}', scopes: ['s'], public: false }] }, problem: /^openapi\.extra\[0\]: conflicts with GET \/a\/\{id\}/ },
    { name: 'swagger 2.0', doc: { swagger: '2.0', info: { title: 'x', version: '1' }, paths: { '/a': { get: {} } } }, problem: /Swagger 2.0 is not supported/ },
    { name: 'openapi: 3.0 unquoted (a number)', doc: { openapi: 3.0, info: { title: 'x', version: '1' }, paths: { '/a': { get: {} } } }, problem: /"openapi" is the number 3, not a version string: write it quoted, with its patch number/ },
    { name: 'openapi 4.0.0', doc: { openapi: '4.0.0', info: { title: 'x', version: '1' }, paths: { '/a': { get: {} } } }, problem: /unsupported "openapi" version "4\.0\.0"/ },
    { name: 'partial template segment', doc: doc({ '/a/{id}.json': { get: {} } }), problem: /^paths\.\/a\/\{id\}\.json: segment "\{id\}\.json" is neither a literal nor a whole \{parameter\}/ },
    { name: 'dot segment in a template', doc: doc({ '/a/../b': { get: {} } }), problem: /dot segment/ },
    { name: 'unresolvable $ref', doc: doc({ '/a': { $ref: '#/components/pathItems/Nope' } }), problem: /\$ref #\/components\/pathItems\/Nope does not resolve/ },
    { name: 'external $ref', doc: doc({ '/a': { $ref: 'other.yaml#/paths/a' } }), problem: /only local \$refs/ },
    { name: 'TRACE operation', doc: doc({ '/a': { get: {}, trace: {} } }), problem: /never forwards TRACE/ },
    // OpenAPI 3.2's QUERY and other methods: never served, so refused as TRACE is.
    { name: 'OpenAPI 3.2 QUERY operation', doc: { ...doc({ '/a': { get: {}, query: {} } }), openapi: '3.2.0' }, problem: /^paths\.\/a\.query: the gateway forwards GET, PUT, POST, DELETE, PATCH and HEAD only/ },
    { name: 'OpenAPI 3.2 additionalOperations', doc: { ...doc({ '/a': { get: {}, additionalOperations: { COPY: {} } } }), openapi: '3.2.0' }, problem: /^paths\.\/a\.additionalOperations: the gateway forwards/ },
    { name: 'query in a 3.1 document (no such field there)', doc: doc({ '/a': { get: {}, query: {} } }), problem: /^paths\.\/a: unknown field "query"/ },
    { name: 'openapi 3.3.0', doc: { ...doc({ '/a': { get: {} } }), openapi: '3.3.0' }, problem: /unsupported "openapi" version "3\.3\.0" \(3\.0\.x, 3\.1\.x or 3\.2\.x\)/ },
    { name: 'no operations at all', doc: doc({}), problem: /no operations/ },
    // A base path no request can match (the grammar refuses it) would make a table that serves nothing;
    // a `{...}` in it would match any segment.
    { name: 'basePath with a dot segment', doc: doc({ '/a': { get: {} } }), options: { basePath: '/a/../b' }, problem: /^openapi\.basePath: dot segment/ },
    { name: 'basePath with an empty segment', doc: doc({ '/a': { get: {} } }), options: { basePath: '/a//b' }, problem: /^openapi\.basePath: empty path segment/ },
    { name: 'basePath with a space', doc: doc({ '/a': { get: {} } }), options: { basePath: '/a b' }, problem: /^openapi\.basePath: segment "a b" is not a literal path segment/ },
    { name: 'basePath with a query', doc: doc({ '/a': { get: {} } }), options: { basePath: '/a?x=1' }, problem: /^openapi\.basePath: segment "a\?x=1"/ },
    { name: 'basePath with a template', doc: doc({ '/a': { get: {} } }), options: { basePath: '/{tenant}/v2' }, problem: /^openapi\.basePath: segment "\{tenant\}"/ },
    { name: 'servers[0].url with a dot segment', doc: doc({ '/a': { get: {} } }, { servers: [{ url: '/api/../v2' }] }), problem: /^openapi\.file: servers\[0\]\.url: dot segment/ },
    // A URL parser resolves dot segments: read as written, they are refused in an absolute URL too.
    { name: 'absolute servers[0].url with a dot segment', doc: doc({ '/a': { get: {} } }, { servers: [{ url: 'https://h.example/a/../b' }] }), problem: /^openapi\.file: servers\[0\]\.url: dot segment/ },
    { name: 'absolute servers[0].url with %2e%2e', doc: doc({ '/a': { get: {} } }, { servers: [{ url: 'https://h.example/a/%2e%2e/b' }] }), problem: /^openapi\.file: servers\[0\]\.url: segment "%2e%2e"/ },
    { name: 'server variable without a default', doc: doc({ '/a': { get: {} } }, { servers: [{ url: '/{base}/v2', variables: { base: { enum: ['x'] } } }] }), problem: /^openapi\.file: servers\[0\]\.url: server variable "base" has no default/ },
    { name: 'servers not a list', doc: doc({ '/a': { get: {} } }, { servers: { url: '/api' } }), problem: /^openapi\.file: servers: must be a list/ },
    { name: 'servers[0].url not a string', doc: doc({ '/a': { get: {} } }, { servers: [{ url: 5 }] }), problem: /^openapi\.file: servers\[0\]\.url: must be a string/ },
    { name: 'path item servers under another base', doc: doc({ '/a': { servers: [{ url: '/other' }], get: {} } }, { servers: [{ url: '/api' }] }), problem: /^paths\.\/a\.servers: serves under \/other, not under the base path of the file's servers \(\/api\)/ },
    { name: 'operation servers under another base', doc: doc({ '/a': { get: { servers: [{ url: 'https://h.example/other' }] } } }, { servers: [{ url: '/api' }] }), problem: /^GET \/a: servers: serves under \/other/ },
    // Fields OpenAPI does not define would be dropped, and the operation they were meant to protect left public or out.
    { name: 'a misspelt security field', doc: doc({ '/a': { get: { Security: [{ oauth: ['a'] }] } } }), problem: /^GET \/a: unknown field "Security" \(did you mean security\?\)/ },
    { name: 'security on the path item', doc: doc({ '/a': { security: [{ oauth: ['a'] }], get: {}, delete: {} } }), problem: /^paths\.\/a: unknown field "security"/ },
    { name: 'an upper-case method', doc: doc({ '/a': { GET: { security: [{ oauth: ['a'] }] }, get: { security: [{ oauth: ['a'] }] } } }), problem: /^paths\.\/a: unknown field "GET" \(did you mean get\?\)/ },
    { name: 'a $ref in place of an operation', doc: doc({ '/a': { get: { $ref: '#/x-ops/G' } } }, { 'x-ops': { G: { security: [{ oauth: ['a'] }] } } }), problem: /^GET \/a: unknown field "\$ref"/ },
    { name: 'operations beside a $ref path item', doc: doc({ '/a': { $ref: '#/x-items/A', delete: {} } }, { 'x-items': { A: { get: { security: [{ oauth: ['a'] }] } } } }), problem: /^paths\.\/a: fields beside \$ref \(delete\)/ },
    { name: 'a path item that is not a mapping', doc: doc({ '/a': 'get', '/b': { get: { security: [{ oauth: ['a'] }] } } }), problem: /^paths\.\/a: the path item is not a mapping/ },
    { name: 'an undefined scheme after {}', doc: doc({ '/a': { get: { security: [{}, { nope: [] }] } } }), problem: /^GET \/a: security scheme "nope" is not defined/ },
    { name: 'an operationId twice', doc: doc({ '/a': { get: { operationId: 'x', security: [] } }, '/b': { get: { operationId: 'x', security: [{ oauth: ['a'] }] } } }), problem: /^GET \/b: operationId "x" is also GET \/a's/ },
    { name: 'a parameter twice in a template', doc: doc({ '/u/{id}/{id}': { get: {} } }), problem: /^paths\.\/u\/\{id\}\/\{id\}: parameter \{id\} appears twice/ },
    { name: 'a $ref that is not a JSON pointer', doc: doc({ '/a': { $ref: '#/x-a/%ZZ' } }, { 'x-a': {} }), problem: /^paths\.\/a: \$ref #\/x-a\/%ZZ is not a valid JSON pointer/ },
    {
      name: 'a $ref chain too long',
      doc: doc({ '/a': { $ref: '#/x-chain/c0' } }, { 'x-chain': Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`c${i}`, i === 4999 ? { get: {} } : { $ref: `#/x-chain/c${i + 1}` }])) }),
      problem: /^paths\.\/a: a chain of more than 64 \$refs/,
    },
  ];
  for (const c of cases) {
    const problems = problemsOf(() => operationsFrom(c.doc, c.options));
    t.ok(problems.some((p) => c.problem.test(p)), c.name, { problems, expected: c.problem });
  }
});

t.test('what OpenAPI allows beside the fields it defines is read', async (t) => {
  const schemes = DOC_31.components.securitySchemes;
  const operations = operationsFrom({
    openapi: '3.0.3',
    servers: [{ url: 'https://h.example/api' }],
    components: { securitySchemes: schemes },
    paths: {
      'x-note': 'extensions stand among the paths',
      '/a': { 'x-owner': 'team', servers: [{ url: '/api' }], get: { 'x-codegen-request-body-name': 'body', servers: [], security: [{ oauth: ['a'] }] } },
    },
  });
  t.same(operations.map(asRoute), [{ method: 'GET', path: '/api/a', operationId: null, public: false, scopes: [['a']] }], 'x- keys ignored; servers under the same base, or an empty list, accepted');
  // OpenAPI says a string; YAML reads `default: 8443` as a number, which means the same.
  const numeric = operationsFrom({ openapi: '3.0.3', servers: [{ url: 'https://h.example:{port}/v{major}', variables: { port: { default: 8443 }, major: { default: 2 } } }], paths: { '/x': { get: {} } } });
  t.same(numeric.map((o) => o.path), ['/v2/x'], 'a numeric server variable default');
  // YAML merge keys, as YAML 1.1 tools read them: the merged security protects the operation.
  const file = writeTmp('merge.yaml', [
    'openapi: 3.0.3',
    'components: {securitySchemes: {oauth: {type: oauth2, flows: {clientCredentials: {tokenUrl: "https://as.example/t", scopes: {a: a}}}}}}',
    'x-secured: &secured',
    '  security: [{oauth: [a]}]',
    'paths:',
    '  /merged:',
    '    get:',
    '      <<: *secured',
    '      operationId: merged',
  ].join('\n'));
  t.same(operationsFrom(readOpenApiFile(file)).map(asRoute), [{ method: 'GET', path: '/merged', operationId: 'merged', public: false, scopes: [['a']] }], 'a merged security is the operation\'s');
});

t.test('every problem of a document is listed at once', async (t) => {
  const problems = problemsOf(() => operationsFrom({
    openapi: '3.0.3',
    paths: { '/a/{id}.json': { get: {} }, '/b': { get: { security: [{ nope: [] }] } } },
  }));
  t.equal(problems.length, 2, 'both problems', { problems });
});

t.test('a YAML syntax error in the OpenAPI file names the line', async (t) => {
  const file = writeTmp('broken.yaml', 'openapi: 3.0.3\npaths:\n  /a:\n    get: {\n');
  const problems = problemsOf(() => readOpenApiFile(file));
  t.match(problems.join('\n'), /^openapi\.file: .*broken\.yaml: syntax error at line \d+/);
  t.match(problemsOf(() => readOpenApiFile(join(tmp, 'absent.yaml'))).join('\n'), /^openapi\.file: cannot read .*absent\.yaml \(ENOENT\)/);
  // JSON is read by the strict JSON parser: its errors name the line too, and a member named twice
  // is refused as the YAML parser refuses a key twice (which one would win is the loader's guess).
  const json = writeTmp('broken.json', '{\n  "openapi": "3.0.3",\n  "paths": {\n    "/a": {"get": {}},\n  }\n}\n');
  t.match(problemsOf(() => readOpenApiFile(json)).join('\n'), /^openapi\.file: .*broken\.json: syntax error at line 5, column 3/);
  const twice = writeTmp('twice.json', '{"openapi": "3.0.3", "paths": {"/a": {"get": {"security": []}, "get": {"security": [{"o": ["a"]}]}}}}');
  t.match(problemsOf(() => readOpenApiFile(twice)).join('\n'), /^openapi\.file: .*twice\.json: syntax error at line 1, column \d+: duplicate member "get"/);
});
