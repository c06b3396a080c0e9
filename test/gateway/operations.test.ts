/**
 * Every one of the 31 operations of jans' own OpenAPI file, with an opaque token (introspection)
 * and with a JWT access token: the right scope is forwarded with the identical request line and
 * body; a sibling scope is a 403 naming the required scope, and the upstream sees nothing; no token
 * is a bare 401; the five discovery operations are public.
 */
import t from 'tap';
import { SCIM_SCOPES, type AuthServer } from '../../src/demo/auth-server.js';
import { operationsFrom, readOpenApiFile, type Operation } from '../../src/scopes/openapi.js';
import { B, SHARED_OPENAPI, type TestGateway } from '../helpers/gateway.js';
import type { RecordingUpstream } from '../helpers/upstream.js';
import { assertDenied, BARE_CHALLENGE, type GatewayStack, insufficientScope, send, startGatewayStack } from './support.js';

const operations: readonly Operation[] = operationsFrom(readOpenApiFile(SHARED_OPENAPI));
const S = (name: string) => `https://jans.io/scim/${name}`;
const MODES = ['opaque', 'jwt'] as const;
type Mode = (typeof MODES)[number];

/** Values for the path parameters of the file. */
const PARAMS: Record<string, string> = {
  id: '8d5f1a2c-7b3e-4c9d-a1f0-2e6b9c4d7a10',
  resource: 'User',
  uri: 'urn:ietf:params:scim:schemas:core:2.0:User',
};
/** A query with percent-encoding and sub-delims: it must arrive byte for byte, not re-encoded. */
const QUERY = '?filter=userName%20eq%20%22bjensen%22&attributes=id,userName&count=10';

function fill(template: string): string {
  return template.replace(/\{([^}]+)\}/g, (_, name: string) => {
    const value = PARAMS[name];
    if (value === undefined) throw new Error(`no value for {${name}} in ${template}`);
    return value;
  });
}

const USER = JSON.stringify({ schemas: ['urn:ietf:params:scim:schemas:core:2.0:User'], userName: 'bjensen', name: { givenName: 'Barbara' } });
const GROUP = JSON.stringify({ schemas: ['urn:ietf:params:scim:schemas:core:2.0:Group'], displayName: 'Tour Guides' });
const PATCH = JSON.stringify({ schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'], Operations: [{ op: 'replace', path: 'displayName', value: 'x' }] });
const SEARCH = JSON.stringify({ schemas: ['urn:ietf:params:scim:api:messages:2.0:SearchRequest'], filter: 'id pr', count: 1 });
const DEVICE = JSON.stringify({ schemas: ['urn:ietf:params:scim:schemas:core:2.0:FidoDevice'], id: PARAMS.id, displayName: 'key' });
/** A small Bulk whose inner operations need users.write and groups.write (the gateway's default check). */
const BULK = JSON.stringify({
  schemas: ['urn:ietf:params:scim:api:messages:2.0:BulkRequest'],
  Operations: [
    { method: 'POST', path: '/Users', bulkId: 'u1', data: JSON.parse(USER) as unknown },
    { method: 'POST', path: '/Groups', bulkId: 'g1', data: { ...(JSON.parse(GROUP) as object), members: [{ value: 'bulkId:u1' }] } },
  ],
});
const BULK_EMPTY = JSON.stringify({ schemas: ['urn:ietf:params:scim:api:messages:2.0:BulkRequest'], Operations: [] });
const BULK_SCOPES = [S('bulk'), S('users.write'), S('groups.write')];

function isBulk(op: Operation): boolean {
  return op.method === 'POST' && op.path === `${B}/Bulk`;
}

function bodyFor(op: Operation): string | undefined {
  if (op.method === 'GET' || op.method === 'DELETE') return undefined;
  if (isBulk(op)) return BULK;
  if (op.path.endsWith('/.search')) return SEARCH;
  if (op.method === 'PATCH') return PATCH;
  if (op.path.includes('/Groups')) return GROUP;
  if (op.path.includes('/Users')) return USER;
  return DEVICE;
}

/** The one scope the file requires (JANS.md: every protected operation names exactly one). */
function requiredScope(op: Operation): string {
  const only = op.requirement.length === 1 && op.requirement[0]!.length === 1 ? op.requirement[0]![0] : undefined;
  if (only === undefined) throw new Error(`${op.id}: expected exactly one scope, got ${JSON.stringify(op.requirement)}`);
  return only;
}

/** The scope most easily confused with the required one: read for write and back, a user scope otherwise. */
function siblingScope(scope: string): string {
  if (scope.endsWith('.read')) return scope.replace(/\.read$/, '.write');
  if (scope.endsWith('.write')) return scope.replace(/\.write$/, '.read');
  return scope === S('bulk') ? S('users.write') : S('users.read');
}

t.test('the table read from jans-scim-openapi.yaml', async (t) => {
  t.equal(operations.length, 31, '31 operations');
  t.equal(operations.filter((o) => o.public).length, 5, '5 public (discovery)');
  t.equal(operations.filter((o) => !o.public).length, 26, '26 protected');
  t.same(new Set(operations.filter((o) => !o.public).map(requiredScope)), new Set(SCIM_SCOPES), 'the ten SCIM scopes, each used');
  t.ok(operations.every((o) => o.path.startsWith(`${B}/`)), 'every path under the base path');
});

t.test('every operation, opaque and JWT tokens', async (t) => {
  let auth: AuthServer;
  let up: RecordingUpstream;
  let gw: TestGateway;
  let stack: GatewayStack | undefined;
  const tokens = new Map<string, string>();
  const tokenOf = (mode: Mode, scopes: readonly string[]): string => {
    const token = tokens.get(`${mode} ${scopes.join(' ')}`);
    if (!token) throw new Error(`no ${mode} token for ${scopes.join(' ')}`);
    return token;
  };

  t.before(async () => {
    ({ auth, up, gw } = stack = await startGatewayStack());
    // One token per scope set and mode, issued once for the whole file.
    const sets: string[][] = [...SCIM_SCOPES.map((s) => [s]), BULK_SCOPES];
    await Promise.all(MODES.flatMap((mode) => sets.map(async (scopes) => {
      tokens.set(`${mode} ${scopes.join(' ')}`, await auth.issueToken(scopes, { jwt: mode === 'jwt' }));
    })));
  });
  t.teardown(() => stack?.close());

  t.test('tokens are of the kind they claim', async (t) => {
    for (const scope of SCIM_SCOPES) {
      t.notMatch(tokenOf('opaque', [scope]), /\./, 'opaque token is not a JWS');
      t.match(tokenOf('jwt', [scope]), /^[\w-]+\.[\w-]+\.[\w-]+$/, 'JWT token is a compact JWS');
    }
  });

  for (const op of operations) {
    const target = fill(op.path) + QUERY;
    const body = bodyFor(op);

    if (op.public) {
      t.test(`${op.method} ${op.path} is public`, async (t) => {
        for (const token of [undefined, tokenOf('opaque', [S('users.read')]), tokenOf('jwt', [S('bulk')])]) {
          up.reset();
          const res = await send(gw.port, op.method, target, { ...(token ? { token } : {}) });
          t.equal(res.status, 200, `forwarded ${token ? 'with' : 'without'} a token`);
          t.equal(up.requests.length, 1, 'one request upstream');
          t.equal(up.requests[0]?.method, op.method, 'same method');
          t.equal(up.requests[0]?.url, target, 'same raw target, query included');
        }
      });
      continue;
    }

    const scope = requiredScope(op);
    const sibling = siblingScope(scope);
    t.test(`${op.method} ${op.path} needs ${scope}`, async (t) => {
      t.test('no token: 401 with a bare challenge', async (t) => {
        up.reset();
        const res = await send(gw.port, op.method, target, { ...(body !== undefined ? { body } : {}) });
        assertDenied(t, res, 401, BARE_CHALLENGE, up);
      });

      for (const mode of MODES) {
        t.test(`${mode}: the right scope is forwarded unchanged`, async (t) => {
          up.reset();
          const token = tokenOf(mode, isBulk(op) ? BULK_SCOPES : [scope]);
          const res = await send(gw.port, op.method, target, { token, ...(body !== undefined ? { body } : {}) });
          t.equal(res.status, 200, `allowed: ${res.body.slice(0, 200)}`);
          t.equal(up.requests.length, 1, 'exactly one request upstream');
          const got = up.requests[0];
          t.equal(got?.method, op.method, 'the same method');
          t.equal(got?.url, target, 'the same raw target, query byte for byte');
          t.equal(got?.body.toString('utf8'), body ?? '', 'the same body');
          t.equal(got?.headers.authorization, `Bearer ${token}`, 'the canonical Authorization header');
        });

        t.test(`${mode}: another scope (${sibling}) is a 403 naming ${scope}`, async (t) => {
          up.reset();
          const res = await send(gw.port, op.method, target, { token: tokenOf(mode, [sibling]), ...(body !== undefined ? { body } : {}) });
          assertDenied(t, res, 403, insufficientScope(scope), up);
        });
      }
    });
  }

  t.test('POST /Bulk', async (t) => {
    for (const mode of MODES) {
      t.test(`${mode}: a bulk-only token with an empty Operations list is forwarded`, async (t) => {
        up.reset();
        const res = await send(gw.port, 'POST', `${B}/Bulk`, { token: tokenOf(mode, [S('bulk')]), body: BULK_EMPTY });
        t.equal(res.status, 200, res.body.slice(0, 200));
        t.equal(up.requests.length, 1);
        t.equal(up.requests[0]?.body.toString('utf8'), BULK_EMPTY, 'the checked bytes are the forwarded bytes');
      });

      t.test(`${mode}: a bulk-only token cannot write users and groups through Bulk`, async (t) => {
        up.reset();
        const res = await send(gw.port, 'POST', `${B}/Bulk`, { token: tokenOf(mode, [S('bulk')]), body: BULK });
        const challenge = res.headers['www-authenticate'] ?? '';
        assertDenied(t, res, 403, challenge, up);
        t.match(challenge, /^Bearer realm="scopegate", error="insufficient_scope", scope="[^"]+"$/);
        const named = new Set((/scope="([^"]+)"/.exec(challenge)?.[1] ?? '').split(' '));
        t.same(named, new Set(BULK_SCOPES), 'names bulk and each inner operation\'s scope');
      });
    }
  });
});
