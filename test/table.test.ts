/**
 * The matcher over the jans-scim table: method + raw path -> operation, or 405 with Allow, or
 * 404. Literal segments win over templates, a template takes exactly one non-empty segment,
 * case matters, HEAD is GET, and one trailing slash is ignored the way RESTEasy ignores it.
 */
import t from 'tap';
import { operationsFrom, readOpenApiFile } from '../src/scopes/openapi.js';
import { createTable, type Match } from '../src/scopes/table.js';
import { B, SHARED_OPENAPI } from './helpers/gateway.js';

const table = createTable(operationsFrom(readOpenApiFile(SHARED_OPENAPI)));

/** What a match is expected to be: an operation label, the Allow set of a 405, or nothing. */
type Expect = { id: string } | { allow: string[] } | 'none';

/** A match reduced to what the tests compare; Allow is a set, so it is sorted. */
function outcome(match: Match): Expect {
  if (match.kind === 'none') return 'none';
  if (match.kind === 'method') return { allow: [...match.allow].sort() };
  return { id: match.operation.id };
}

function expected(e: Expect): Expect {
  if (e === 'none') return e;
  if ('allow' in e) return { allow: [...e.allow].sort() };
  return { id: e.id };
}

/** Every operation of JANS.md, with a concrete path that must reach it. */
const OWN_PATHS: Array<[method: string, path: string, expect: { id: string }]> = [
  ['GET', `${B}/Groups`, { id: 'get-groups' }],
  ['POST', `${B}/Groups`, { id: 'create-group' }],
  ['GET', `${B}/Groups/abc123`, { id: 'get-group-by-id' }],
  ['PUT', `${B}/Groups/abc123`, { id: 'update-group-by-id' }],
  ['DELETE', `${B}/Groups/abc123`, { id: 'delete-group-by-id' }],
  ['PATCH', `${B}/Groups/abc123`, { id: 'patch-group-by-id' }],
  ['POST', `${B}/Groups/.search`, { id: 'search-group' }],
  ['GET', `${B}/FidoDevices`, { id: 'get-fido-devices' }],
  ['GET', `${B}/FidoDevices/abc123`, { id: 'get-fido-device-by-id' }],
  ['PUT', `${B}/FidoDevices/abc123`, { id: 'update-fido-device-by-id' }],
  ['DELETE', `${B}/FidoDevices/abc123`, { id: 'delete-fido-device-by-id' }],
  ['POST', `${B}/FidoDevices/.search`, { id: 'search-fido-device' }],
  ['GET', `${B}/Fido2Devices`, { id: 'get-fido2-devices' }],
  ['GET', `${B}/Fido2Devices/abc123`, { id: 'get-fido2-device-by-id' }],
  ['PUT', `${B}/Fido2Devices/abc123`, { id: 'update-fido2-device-by-id' }],
  ['DELETE', `${B}/Fido2Devices/abc123`, { id: 'delete-fido2-device-by-id' }],
  ['POST', `${B}/Fido2Devices/.search`, { id: 'search-fido2-device' }],
  ['GET', `${B}/Users`, { id: 'get-users' }],
  ['POST', `${B}/Users`, { id: 'create-user' }],
  ['GET', `${B}/Users/abc123`, { id: 'get-user-by-id' }],
  ['PUT', `${B}/Users/abc123`, { id: 'update-user-by-id' }],
  ['DELETE', `${B}/Users/abc123`, { id: 'delete-user-by-id' }],
  ['PATCH', `${B}/Users/abc123`, { id: 'patch-user-by-id' }],
  ['POST', `${B}/Users/.search`, { id: 'search-user' }],
  ['POST', `${B}/.search`, { id: 'search-resources' }],
  ['POST', `${B}/Bulk`, { id: `POST ${B}/Bulk` }],
  ['GET', `${B}/ServiceProviderConfig`, { id: 'get-service-provider-config' }],
  ['GET', `${B}/ResourceTypes`, { id: 'get-resource-types' }],
  ['GET', `${B}/ResourceTypes/User`, { id: 'get-resource-type-by-id' }],
  ['GET', `${B}/Schemas`, { id: 'get-schemas' }],
  ['GET', `${B}/Schemas/urn:ietf:params:scim:schemas:core:2.0:User`, { id: 'get-schema-by-uri' }],
];

t.test('every one of the 31 operations matches its own method and a concrete path', async (t) => {
  t.equal(table.operations.length, 31);
  for (const [method, path, expect] of OWN_PATHS) {
    t.same(outcome(table.match(method, path)), expected(expect), `${method} ${path}`);
  }
  const reached = new Set(OWN_PATHS.map(([method, path]) => {
    const m = table.match(method, path);
    return m.kind === 'found' ? m.operation : undefined;
  }));
  t.equal(reached.size, 31, 'the rows reach 31 distinct operations: every entry of the table');
});

t.test('HEAD is matched as the GET operation of the same path', async (t) => {
  const gets = OWN_PATHS.filter(([method]) => method === 'GET');
  t.equal(gets.length, 13, '13 GET operations');
  for (const [, path, expect] of gets) t.same(outcome(table.match('HEAD', path)), expected(expect), `HEAD ${path}`);
});

t.test('path and method cases', async (t) => {
  const cases: Array<[name: string, method: string, path: string, expect: Expect]> = [
    // A literal segment wins over a template, whatever the template's method set.
    ['literal .search over {id}', 'POST', `${B}/Users/.search`, { id: 'search-user' }],
    ['literal .search over {id} (Groups)', 'POST', `${B}/Groups/.search`, { id: 'search-group' }],
    ['literal ResourceTypes over nothing else', 'GET', `${B}/ResourceTypes`, { id: 'get-resource-types' }],

    // Path in the table, method not: 405 with the methods that path does have.
    ['PUT on a collection', 'PUT', `${B}/Users`, { allow: ['GET', 'POST', 'HEAD', 'OPTIONS'] }],
    ['TRACE on a collection', 'TRACE', `${B}/Users`, { allow: ['GET', 'POST', 'HEAD', 'OPTIONS'] }],
    ['OPTIONS is never an operation', 'OPTIONS', `${B}/Users`, { allow: ['GET', 'POST', 'HEAD', 'OPTIONS'] }],
    ['POST on a resource', 'POST', `${B}/Users/abc123`, { allow: ['GET', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS'] }],
    ['PATCH on a FIDO device (not in the file)', 'PATCH', `${B}/FidoDevices/abc123`, { allow: ['GET', 'PUT', 'DELETE', 'HEAD', 'OPTIONS'] }],
    ['an unknown method', 'FOO', `${B}/Groups/abc123`, { allow: ['GET', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS'] }],
    ['GET on POST-only /Bulk: no GET, so no HEAD', 'GET', `${B}/Bulk`, { allow: ['POST', 'OPTIONS'] }],
    ['HEAD on POST-only /Bulk', 'HEAD', `${B}/Bulk`, { allow: ['POST', 'OPTIONS'] }],
    ['DELETE on POST-only root /.search', 'DELETE', `${B}/.search`, { allow: ['POST', 'OPTIONS'] }],
    ['DELETE on a discovery endpoint', 'DELETE', `${B}/Schemas`, { allow: ['GET', 'HEAD', 'OPTIONS'] }],
    ['lower-case method is another method', 'get', `${B}/Users`, { allow: ['GET', 'POST', 'HEAD', 'OPTIONS'] }],

    // Not in the table at all.
    ['unknown resource type', 'GET', `${B}/Nope`, 'none'],
    ['unknown path, unknown method', 'FOO', `${B}/Nope`, 'none'],
    ['the base path itself', 'GET', B, 'none'],
    ['the base path with a slash', 'GET', `${B}/`, 'none'],
    ['the root', 'GET', '/', 'none'],
    ['without the base path', 'GET', '/Users', 'none'],
    ['another base path', 'GET', '/jans-scim/restv1/v1/Users', 'none'],
    ['scim-configuration is not in the file', 'GET', '/jans-scim/restv1/scim-configuration', 'none'],
    ['UpdatedUsers is not in the file', 'GET', `${B}/UpdatedUsers`, 'none'],

    // Extra trailing segments.
    ['collection + segment + segment', 'GET', `${B}/ServiceProviderConfig/x`, 'none'],
    ['resource + segment', 'GET', `${B}/Users/abc123/extra`, 'none'],
    ['.search + segment', 'POST', `${B}/Users/.search/x`, 'none'],
    ['Bulk + segment', 'POST', `${B}/Bulk/x`, 'none'],
    ['schema by uri + segment', 'GET', `${B}/Schemas/a/b`, 'none'],

    // Case matters: RESTEasy matches paths case-sensitively.
    ['lower-case collection', 'GET', `${B}/users`, 'none'],
    ['upper-case collection', 'GET', `${B}/USERS`, 'none'],
    ['lower-case resource', 'GET', `${B}/users/abc123`, 'none'],
    ['upper-case base path', 'GET', '/JANS-SCIM/restv1/v2/Users', 'none'],
    ['.SEARCH', 'POST', `${B}/Users/.SEARCH`, { allow: ['GET', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS'] }],

    // One trailing slash is ignored: it never becomes an empty {id}.
    ['/Users/ is the collection', 'GET', `${B}/Users/`, { id: 'get-users' }],
    ['/Users/ POST is create-user', 'POST', `${B}/Users/`, { id: 'create-user' }],
    ['/Users/abc123/ is the resource', 'GET', `${B}/Users/abc123/`, { id: 'get-user-by-id' }],
    ['/Users/.search/ is the search', 'POST', `${B}/Users/.search/`, { id: 'search-user' }],
    ['/ServiceProviderConfig/', 'GET', `${B}/ServiceProviderConfig/`, { id: 'get-service-provider-config' }],

    // A template is exactly one non-empty segment.
    ['two segments for {id}', 'GET', `${B}/Users/a/b`, 'none'],
    ['two segments for {id}, PUT', 'PUT', `${B}/Groups/a/b`, 'none'],
    ['an empty {id} behind a trailing slash', 'GET', `${B}/Users//`, 'none'],
    ['an empty {resource} behind a trailing slash', 'GET', `${B}/ResourceTypes//`, 'none'],
  ];
  for (const [name, method, path, expect] of cases) {
    t.same(outcome(table.match(method, path)), expected(expect), `${name}: ${method} ${path}`);
  }
});

t.test('HEAD is GET even when another path declares its own HEAD operation', async (t) => {
  const mixed = createTable(operationsFrom({
    openapi: '3.0.3',
    paths: {
      '/probe': { head: { operationId: 'head-probe' } },
      '/items': { get: { operationId: 'get-items' } },
    },
  }));
  t.same(outcome(mixed.match('HEAD', '/probe')), expected({ id: 'head-probe' }), 'the declared HEAD');
  t.same(outcome(mixed.match('HEAD', '/items')), expected({ id: 'get-items' }), 'HEAD /items runs GET /items');
  t.same(outcome(mixed.match('GET', '/probe')), expected({ allow: ['HEAD', 'OPTIONS'] }), 'GET where only HEAD is declared');
});

t.test('the table is frozen', async (t) => {
  t.ok(Object.isFrozen(table), 'the table');
  t.ok(Object.isFrozen(table.operations), 'its operations list');
  t.ok(table.operations.every((o) => Object.isFrozen(o) && Object.isFrozen(o.requirement)), 'every operation and requirement');
});

t.test('reserved characters a path may carry percent-encoded: those no literal segment holds', async (t) => {
  const RESERVED = ":@!$&'()*+,=";
  const encodable = (table: { encodable: readonly boolean[] }) => [...Array(128).keys()].filter((i) => table.encodable[i]).map((i) => String.fromCharCode(i)).sort().join('');
  t.equal(encodable(table), [...RESERVED].sort().join(''), 'the jans table: all of them (its literals hold none), never `;`, `%`, `/` or an unreserved character');
  // Literal segments that hold `@` and `!` beside a `{name}` template (`:` and `*` cannot stand in
  // a literal: find-my-way reads them as a parameter and a wildcard).
  const custom = createTable(operationsFrom({
    openapi: '3.0.3',
    paths: {
      '/v1/{name}': { get: { operationId: 'get-thing', security: [{ o: ['read'] }] } },
      '/v1/things@batch': { get: { operationId: 'batch', security: [{ o: ['batch'] }] } },
      '/v1/a!b': { get: { operationId: 'bang', security: [{ o: ['read'] }] } },
    },
    components: { securitySchemes: { o: { type: 'oauth2', flows: {} } } },
  }));
  t.equal(encodable(custom), [...RESERVED.replace('@', '').replace('!', '')].sort().join(''), '`@` and `!` stand in literals there: their encodings would not be read alike, so they are refused');

  const { parseTarget } = await import('../src/request/target.js');
  const parse = (target: string, on: { encodable: readonly boolean[] } = table) => {
    try {
      return parseTarget(target, undefined, 8192, on.encodable).path;
    } catch (error) {
      return (error as Error).message;
    }
  };
  const urn = 'urn%3Aietf%3Aparams%3Ascim%3Aschemas%3Acore%3A2.0%3AUser';
  t.equal(parse(`${B}/Schemas/${urn}`), `${B}/Schemas/${urn}`, 'a schema URN as encodeURIComponent writes it');
  t.same(outcome(table.match('GET', `${B}/Schemas/${urn}`)), { id: 'get-schema-by-uri' }, '... is the schema-by-uri operation');
  for (const id of ['a%40b', 'a%2Bb', 'a%2bb', '%21%24%26%27%28%29%2A%2C%3D', 'a%3ab']) {
    t.equal(parse(`${B}/Users/${id}`), `${B}/Users/${id}`, `${id}: accepted as it is`);
    t.same(outcome(table.match('DELETE', `${B}/Users/${id}`)), { id: 'delete-user-by-id' }, `${id}: an id`);
  }
  t.same(outcome(table.match('GET', `${B}/Us%3Aers`)), 'none', 'an encoded `:` in a literal position matches no literal');
  for (const refused of [`${B}/Users/a%3Bb`, `${B}/%55sers`, `${B}/Users/a%2Db`, `${B}/Users/%2Esearch`]) {
    t.match(parse(refused), /percent-encod/, `${refused}: still refused`);
  }
  // Without a table (the default), every character that may stand raw is refused encoded.
  t.match(parse(`${B}/Users/a%40b`, { encodable: new Array<boolean>(128).fill(false) }), /non-canonical percent-encoding/, 'no table: refused');
  t.match(parse('/v1/things%40batch', custom), /non-canonical percent-encoding/, 'the custom table: `things%40batch` is refused, not read as `things@batch` by one and as a {name} by the other');
  t.match(parse('/v1/a%21b', custom), /non-canonical percent-encoding/, 'nor `a%21b`');
  t.equal(parse('/v1/a%2Cb', custom), '/v1/a%2Cb', 'a `,`, which no literal holds, is accepted');
  t.same(outcome(custom.match('GET', '/v1/a%2Cb')), { id: 'get-thing' });
});
