/**
 * Templates of any OpenAPI file, as the router must read them: a parameter name is anything
 * OpenAPI allows (`{user-id}`, `{group.id}`: never a parameter followed by literal text), and two
 * templates of one method that a path can both match (`/files/{owner}/secret`,
 * `/files/public/{name}`) make that path need what each of them needs, since the upstream's
 * choice between them (JAX-RS: literal characters; RESTEasy: media types first) is not the
 * router's. Table, then a gateway with the real oidc-provider and a recording upstream.
 */
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { stringify } from 'yaml';
import { startAuthServer } from '../src/demo/auth-server.js';
import { operationsFrom } from '../src/scopes/openapi.js';
import { createTable, requirementOfMatch } from '../src/scopes/table.js';
import { assertScimError, BARE_CHALLENGE, insufficientScope, send } from './gateway/support.js';
import { accessLines, startTestGateway, tokenIssuer } from './helpers/gateway.js';
import { startRecordingUpstream } from './helpers/upstream.js';

const READ = 'https://jans.io/scim/users.read';
const WRITE = 'https://jans.io/scim/users.write';
const oauth = (...scopes: string[]) => ({ security: [{ oauth: scopes }] });
const DOC = {
  openapi: '3.0.3',
  info: { title: 'overlap', version: '1' },
  servers: [{ url: '/api' }],
  components: { securitySchemes: { oauth: { type: 'oauth2', flows: { clientCredentials: { tokenUrl: 'https://as.example/token', scopes: { [READ]: 'r', [WRITE]: 'w' } } } } } },
  paths: {
    '/users/{user-id}': { get: { operationId: 'get-user', ...oauth(READ) } },
    '/groups/{group.id}/members': { get: { operationId: 'get-members', ...oauth(READ) } },
    '/{collection}/{item}': { get: { operationId: 'get-anything', security: [] } },
    '/files/{owner}/secret': { get: { operationId: 'get-secret', ...oauth(WRITE) } },
    '/files/public/{name}': { get: { operationId: 'get-public-file', security: [] }, delete: { operationId: 'delete-public-file', ...oauth(READ) } },
    '/docs/public/{name}': { head: { operationId: 'head-public-doc', security: [] }, get: { operationId: 'get-public-doc', ...oauth(READ) } },
    '/docs/{owner}/secret': { get: { operationId: 'get-secret-doc', ...oauth(WRITE) } },
    '/files/{owner}/{name}': { delete: { operationId: 'delete-file', ...oauth(WRITE) } },
  },
};

t.test('the table: parameter names of any form, and the other operations a path matches', async (t) => {
  const table = createTable(operationsFrom(DOC));
  const found = (method: string, path: string) => {
    const m = table.match(method, path);
    if (m.kind !== 'found') return m.kind;
    return { id: m.operation.id, also: m.also?.map((o) => o.id) ?? [], requirement: requirementOfMatch(table, m.operation, m.also, false) ?? 'public' };
  };
  t.same(found('GET', '/api/users/42'), { id: 'get-user', also: [], requirement: [[READ]] }, '{user-id} matches any one segment, not only those ending in -id');
  t.same(found('GET', '/api/users/x-id'), { id: 'get-user', also: [], requirement: [[READ]] });
  t.same(found('GET', '/api/groups/7/members'), { id: 'get-members', also: [], requirement: [[READ]] }, '{group.id} too');
  t.same(found('GET', '/api/files/public/readme'), { id: 'get-public-file', also: [], requirement: 'public' }, 'a path only the public template matches stays public');
  t.same(found('GET', '/api/files/bob/secret'), { id: 'get-secret', also: [], requirement: [[WRITE]] });
  t.same(found('GET', '/api/files/public/secret'), { id: 'get-public-file', also: ['get-secret'], requirement: [[WRITE]] }, 'a path both match needs the protected one\'s scopes');
  t.same(found('HEAD', '/api/files/public/secret'), { id: 'get-public-file', also: ['get-secret'], requirement: [[WRITE]] }, 'HEAD, as GET');
  // A HEAD that matched a HEAD operation: the upstream may run another template's GET for it.
  t.same(found('HEAD', '/api/docs/public/secret'), { id: 'head-public-doc', also: ['get-secret-doc'], requirement: [[WRITE]] }, 'HEAD: the GET of another template that matches too');
  t.same(found('HEAD', '/api/docs/public/readme'), { id: 'head-public-doc', also: [], requirement: 'public' }, 'HEAD: not the GET of its own template (RESTEasy runs the HEAD)');
  t.same(found('GET', '/api/docs/public/readme'), { id: 'get-public-doc', also: [], requirement: [[READ]] });
  t.same(found('DELETE', '/api/files/public/x'), { id: 'delete-public-file', also: ['delete-file'], requirement: [[READ, WRITE].sort()] }, 'two protected ones: both requirements');
  t.same(found('DELETE', '/api/files/bob/x'), { id: 'delete-file', also: [], requirement: [[WRITE]] });
});

t.test('through the gateway', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'scopegate-overlap-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'api.yaml');
  writeFileSync(file, stringify(DOC));
  const auth = await startAuthServer();
  t.teardown(() => auth.close());
  const up = await startRecordingUpstream();
  t.teardown(() => up.close());
  const gw = await startTestGateway({
    openapi: { file },
    upstream: { url: up.origin },
    token: { introspection: { endpoint: auth.introspectionEndpoint, clientId: auth.clientId, clientSecret: auth.clientSecret } },
  });
  t.teardown(() => gw.close());
  const token = tokenIssuer(auth);

  for (const path of ['/api/users/42', '/api/files/public/secret']) {
    const res = await send(gw.port, 'GET', path);
    t.equal(res.status, 401, `${path} without a token: 401`);
    t.equal(res.headers['www-authenticate'], BARE_CHALLENGE);
    assertScimError(t, res, 401);
  }
  const reader = await token(READ);
  const refused = await send(gw.port, 'GET', '/api/files/public/secret', { token: reader });
  t.equal(refused.status, 403, 'a token without the secret\'s scope: 403');
  t.equal(refused.headers['www-authenticate'], insufficientScope(WRITE), 'naming the scope the other operation needs');
  assertScimError(t, refused, 403);
  t.equal(up.requests.length, 0, 'nothing reached the upstream');
  t.equal(accessLines(gw.logs).at(-1)?.operation, 'get-public-file', 'the access line names the operation the router matched');

  const writer = await token(WRITE);
  t.equal((await send(gw.port, 'GET', '/api/files/public/secret', { token: writer })).status, 200, 'with it: forwarded');
  t.equal((await send(gw.port, 'GET', '/api/users/42', { token: reader })).status, 200, '{user-id} with its scope: forwarded');
  t.equal((await send(gw.port, 'GET', '/api/files/public/readme')).status, 200, 'the public file: no token needed');
  t.same(up.requests.map((r) => r.url), ['/api/files/public/secret', '/api/users/42', '/api/files/public/readme']);
});
