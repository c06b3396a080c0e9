import t from 'tap';
import { startScimServer, type ScimServer } from '../src/demo/scim-server.js';

const USER_SCHEMA = 'urn:ietf:params:scim:schemas:core:2.0:User';
const LIST_RESPONSE = 'urn:ietf:params:scim:api:messages:2.0:ListResponse';

interface ScimResource {
  id: string;
  schemas: string[];
  userName?: string;
  displayName?: string;
  meta: { resourceType: string; location: string };
}
interface ListResponse {
  schemas: string[];
  totalResults: number;
  Resources: ScimResource[];
}

let server: ScimServer;

t.before(async () => {
  server = await startScimServer({ port: 0 });
});
t.teardown(() => server.close());

async function scim(method: string, path: string, body?: unknown): Promise<{ status: number; type: string | null; json: any }> {
  const res = await fetch(server.baseUrl + path, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/scim+json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, type: res.headers.get('content-type'), json: text ? JSON.parse(text) : undefined };
}

t.test('listens on 127.0.0.1 under the jans-scim base path', async (t) => {
  t.match(server.origin, /^http:\/\/127\.0\.0\.1:\d+$/);
  t.equal(server.baseUrl, server.origin + '/jans-scim/restv1/v2');
});

t.test('lists the seeded users', async (t) => {
  const { status, type, json } = await scim('GET', '/Users');
  t.equal(status, 200);
  t.equal(type, 'application/scim+json');
  const list = json as ListResponse;
  t.same(list.schemas, [LIST_RESPONSE]);
  t.ok(list.totalResults >= 3);
  const names = list.Resources.map((u) => u.userName);
  t.ok(names.includes('admin') && names.includes('jdoe'), 'admin and jdoe are seeded');
  t.ok(list.Resources[0]?.meta.location.startsWith(server.baseUrl + '/Users/'), 'locations use this server');
});

t.test('filter from the query string: displayName co "Admin"', async (t) => {
  const { status, json } = await scim('GET', '/Users?filter=' + encodeURIComponent('displayName co "Admin"'));
  t.equal(status, 200);
  const list = json as ListResponse;
  t.same(list.schemas, [LIST_RESPONSE]);
  t.equal(list.totalResults, 1);
  t.equal(list.Resources[0]?.displayName, 'Admin');

  const plus = await scim('GET', '/Users?filter=displayName+co+%22Admin%22');
  t.equal((plus.json as ListResponse).Resources[0]?.userName, 'admin', '+ decodes to a space');
});

t.test('create, get and delete a user', async (t) => {
  const created = await scim('POST', '/Users', { schemas: [USER_SCHEMA], userName: 'tcreate', displayName: 'T Create' });
  t.equal(created.status, 201);
  const user = created.json as ScimResource;
  t.equal(user.userName, 'tcreate');
  t.type(user.id, 'string');

  const got = await scim('GET', `/Users/${user.id}`);
  t.equal(got.status, 200);
  t.equal((got.json as ScimResource).displayName, 'T Create');

  const dup = await scim('POST', '/Users', { schemas: [USER_SCHEMA], userName: 'TCREATE' });
  t.equal(dup.status, 409, 'userName is unique (case-insensitive)');

  const deleted = await scim('DELETE', `/Users/${user.id}`);
  t.equal(deleted.status, 204);

  const gone = await scim('GET', `/Users/${user.id}`);
  t.equal(gone.status, 404);
  t.same(gone.json.schemas, ['urn:ietf:params:scim:api:messages:2.0:Error']);
  t.equal(gone.json.status, '404');
});

t.test('Bulk request with two POSTs', async (t) => {
  const { status, json } = await scim('POST', '/Bulk', {
    schemas: ['urn:ietf:params:scim:api:messages:2.0:BulkRequest'],
    Operations: [
      { method: 'POST', path: '/Users', bulkId: 'u1', data: { schemas: [USER_SCHEMA], userName: 'bulk1' } },
      { method: 'POST', path: '/Users', bulkId: 'u2', data: { schemas: [USER_SCHEMA], userName: 'bulk2' } },
    ],
  });
  t.equal(status, 200);
  t.same(json.schemas, ['urn:ietf:params:scim:api:messages:2.0:BulkResponse']);
  t.same(
    json.Operations.map((op: { status: string }) => op.status),
    ['201', '201'],
  );
  const found = await scim('GET', '/Users?filter=' + encodeURIComponent('userName sw "bulk"'));
  t.equal((found.json as ListResponse).totalResults, 2);
});

t.test('ServiceProviderConfig answers', async (t) => {
  const { status, type, json } = await scim('GET', '/ServiceProviderConfig');
  t.equal(status, 200);
  t.equal(type, 'application/scim+json');
  t.same(json.schemas, ['urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig']);
  t.equal(json.bulk.supported, true);
  t.equal(json.patch.supported, true);
});

t.test('unknown paths are 404', async (t) => {
  t.equal((await scim('GET', '/Nope')).status, 404);
  const outside = await fetch(server.origin + '/elsewhere');
  await outside.arrayBuffer();
  t.equal(outside.status, 404);
});

t.test('a second server in the same process has its own data', async (t) => {
  const other = await startScimServer();
  t.teardown(() => other.close());
  const res = await fetch(other.baseUrl + '/Users?filter=' + encodeURIComponent('userName sw "bulk"'));
  const list = (await res.json()) as ListResponse;
  t.equal(list.totalResults, 0);
});
