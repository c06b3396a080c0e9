/**
 * POST /Bulk without privilege escalation (JANS.md "Bulk"; JANS.md section 5 item 2). jans-scim
 * checks only `bulk` and runs the inner operations as plain Java calls, so the gateway must
 * require `bulk` AND every inner operation's own scope, refuse (400) what it cannot classify with
 * certainty, and forward exactly the bytes it checked. Every request goes over raw TCP so the
 * bytes sent are the bytes the gateway reads, against the real oidc-provider and a recording
 * upstream, all on 127.0.0.1 port 0.
 */
import t, { type Test } from 'tap';
import { startAuthServer } from '../src/demo/auth-server.js';
import { accessLines, B, startTestGateway, tokenIssuer } from './helpers/gateway.js';
import type { RawResponse } from './helpers/raw.js';
import { request, send } from './helpers/send.js';
import { assertScimError } from './gateway/support.js';
import { startRecordingUpstream } from './helpers/upstream.js';

const BULK_REQUEST = 'urn:ietf:params:scim:api:messages:2.0:BulkRequest';
const USER_SCHEMA = 'urn:ietf:params:scim:schemas:core:2.0:User';
const GROUP_SCHEMA = 'urn:ietf:params:scim:schemas:core:2.0:Group';
const scim = (name: string): string => `https://jans.io/scim/${name}`;
const BULK = scim('bulk');
const USERS_WRITE = scim('users.write');
const GROUPS_WRITE = scim('groups.write');
const FIDO_WRITE = scim('fido.write');
const FIDO2_WRITE = scim('fido2.write');
const ALL = ['users.read', 'users.write', 'groups.read', 'groups.write', 'fido.read', 'fido.write', 'fido2.read', 'fido2.write', 'all-resources.search', 'bulk'].map(scim);
/** jans bulkMaxPayloadSize, the default `limits.bodyBytes`. */
const LIMIT = 3072000;
const BULK_PATH = `${B}/Bulk`;

/** One inner operation as a client writes it. */
type Op = Record<string, unknown>;

const auth = await startAuthServer();
t.teardown(() => auth.close());
const up = await startRecordingUpstream();
t.teardown(() => up.close());
const tokenConfig = { introspection: { endpoint: auth.introspectionEndpoint, clientId: auth.clientId, clientSecret: auth.clientSecret } };
const gw = await startTestGateway({ upstream: { url: up.origin }, token: tokenConfig });
t.teardown(() => gw.close());

/** A real opaque token holding exactly `scopes` (one per scope set, reused). */
const token = tokenIssuer(auth);

/** A SCIM BulkRequest body holding `ops`. */
function bulkBody(ops: Op[]): string {
  return JSON.stringify({ schemas: [BULK_REQUEST], Operations: ops });
}

interface PostOptions {
  /** Request-target (default the Bulk path). */
  target?: string;
  /** Content-Type; null sends none. */
  contentType?: string | null;
  /** Send the body with Transfer-Encoding: chunked. */
  chunked?: boolean;
  headers?: string[];
}

/** The request bytes of a Bulk POST (Content-Length, or chunked). */
function frame(bearer: string | undefined, body: Buffer, opts: PostOptions): Buffer {
  const headers = [...(opts.headers ?? [])];
  if (bearer !== undefined) headers.push(`Authorization: Bearer ${bearer}`);
  const contentType = opts.contentType === undefined ? 'application/scim+json' : opts.contentType;
  if (contentType !== null) headers.push(`Content-Type: ${contentType}`);
  return request('POST', opts.target ?? BULK_PATH, headers, body, opts.chunked);
}

/** POSTs `body` over raw TCP to the default gateway (or `port`). */
function post(bearer: string | undefined, body: string | Buffer, opts: PostOptions = {}, port = gw.port): Promise<RawResponse> {
  return send(port, frame(bearer, Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8'), opts));
}

function challengeScopes(res: RawResponse): string[] | undefined {
  const m = /^Bearer realm="scopegate", error="insufficient_scope", scope="([^"]*)"$/.exec(res.headers['www-authenticate'] ?? '');
  return m ? m[1]!.split(' ').sort() : undefined;
}

/** A 403 naming exactly `scopes` (in any order) in the challenge; nothing reached the upstream. */
function assertInsufficient(t: Test, res: RawResponse, scopes: readonly string[]): void {
  assertScimError(t, res, 403);
  t.match(res.headers['www-authenticate'] ?? '', /^Bearer realm="scopegate", error="insufficient_scope", scope="[^"]+"$/, 'insufficient_scope challenge');
  t.same(challengeScopes(res), [...scopes].sort(), 'the challenge names the scopes needed');
  t.equal(up.requests.length, 0, 'the upstream received nothing');
}

/** A 400 (or other status without a challenge); nothing reached the upstream. */
function assertRefused(t: Test, res: RawResponse, status = 400): void {
  assertScimError(t, res, status);
  t.equal(res.headers['www-authenticate'], undefined, 'no challenge: the token is not at fault');
  t.equal(up.requests.length, 0, 'the upstream received nothing');
}

/** Forwarded once, as POST to the Bulk path, with exactly `sent` as body and a matching Content-Length. */
function assertForwarded(t: Test, res: RawResponse, sent: Buffer): void {
  t.equal(res.status, 200, 'the upstream answered');
  t.equal(up.requests.length, 1, 'one request upstream');
  const got = up.requests[0];
  if (!got) return;
  t.equal(got.method, 'POST');
  t.equal(got.url, BULK_PATH);
  t.ok(got.complete, 'the body arrived whole');
  t.ok(got.body.equals(sent), `body byte-identical (${got.body.length} of ${sent.length} bytes)`);
  t.equal(got.headers['content-length'], String(sent.length), 'Content-Length is the byte length');
  t.equal(got.headers['transfer-encoding'], undefined, 'not chunked upstream');
}

/** One valid Bulk POST /Users whose body is exactly `size` bytes, non-ASCII included. */
function sized(size: number): Buffer {
  const make = (pad: string) => bulkBody([{ method: 'POST', path: '/Users', bulkId: 'big', data: { schemas: [USER_SCHEMA], userName: 'big', description: `Grüße 😀 ${pad}` } }]);
  const body = Buffer.from(make(''), 'utf8');
  const out = Buffer.from(make('x'.repeat(size - body.length)), 'utf8');
  if (out.length !== size) throw new Error(`sized body is ${out.length}, wanted ${size}`);
  return out;
}

/** Resolves once `predicate` holds (the access line is written as the response closes, after the reply). */
async function until(predicate: () => boolean, timeoutMs = 3000): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 10));
  }
  return true;
}

/** The access line of the next Bulk request answered after `from` log lines. */
async function bulkAccessLine(logs: string[], from: number): Promise<Record<string, unknown> | undefined> {
  const find = () => accessLines(logs.slice(from)).find((l) => l.path === BULK_PATH);
  await until(() => find() !== undefined);
  return find();
}

t.beforeEach(() => up.reset());

t.test('a bulk-only token cannot write any resource through /Bulk', async (t) => {
  const bulkOnly = await token(BULK);
  const cases: Array<[string, Op, string]> = [
    ['create a user', { method: 'POST', path: '/Users', bulkId: 'u1', data: { schemas: [USER_SCHEMA], userName: 'mallory' } }, USERS_WRITE],
    ['replace a user', { method: 'PUT', path: '/Users/2819c223', data: { schemas: [USER_SCHEMA], userName: 'admin', active: true } }, USERS_WRITE],
    ['patch a user', { method: 'PATCH', path: '/Users/2819c223', data: { schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'], Operations: [{ op: 'replace', path: 'active', value: false }] } }, USERS_WRITE],
    ['delete a user', { method: 'DELETE', path: '/Users/2819c223' }, USERS_WRITE],
    ['create a group', { method: 'POST', path: '/Groups', bulkId: 'g1', data: { schemas: [GROUP_SCHEMA], displayName: 'admins' } }, GROUPS_WRITE],
    ['replace a group', { method: 'PUT', path: '/Groups/e9e30dba', data: { schemas: [GROUP_SCHEMA], displayName: 'admins' } }, GROUPS_WRITE],
    ['patch a group', { method: 'PATCH', path: '/Groups/e9e30dba', data: { schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'], Operations: [{ op: 'add', path: 'members', value: [{ value: '2819c223' }] }] } }, GROUPS_WRITE],
    ['delete a group', { method: 'DELETE', path: '/Groups/e9e30dba' }, GROUPS_WRITE],
    ['replace a Fido2 device', { method: 'PUT', path: '/Fido2Devices/d1', data: {} }, FIDO2_WRITE],
    ['delete a Fido2 device', { method: 'DELETE', path: '/Fido2Devices/d1' }, FIDO2_WRITE],
    ['delete a Fido U2F device', { method: 'DELETE', path: '/FidoDevices/d1' }, FIDO_WRITE],
  ];
  for (const [name, op, needed] of cases) {
    await t.test(name, async (t) => {
      up.reset();
      const res = await post(bulkOnly, bulkBody([op]));
      assertInsufficient(t, res, [BULK, needed]);
    });
  }

  // jans upper-cases an inner method before it reads it (BulkWebService.prepareRequest): `delete`
  // runs a DELETE there, and needs the DELETE's scope here.
  for (const [method, path, needed] of [['delete', '/Users/2819c223', USERS_WRITE], ['Delete', '/Groups/e9e30dba', GROUPS_WRITE], ['post', '/Users', USERS_WRITE], ['pAtCh', '/Users/2819c223', USERS_WRITE], ['dElEtE', '/Fido2Devices/d1', FIDO2_WRITE]] as const) {
    await t.test(`a method written ${method} is ${method.toUpperCase()}, and needs its scope`, async (t) => {
      up.reset();
      const op = { method, path, ...(method === 'post' ? { bulkId: 'x', data: { schemas: [USER_SCHEMA], userName: 'x' } } : method === 'pAtCh' ? { data: {} } : {}) };
      assertInsufficient(t, await post(bulkOnly, bulkBody([op])), [BULK, needed]);
      const sent = Buffer.from(bulkBody([op]));
      assertForwarded(t, await post(await token(BULK, needed), sent), sent);
    });
  }

  await t.test('also when the Bulk target has a trailing slash or a query', async (t) => {
    for (const target of [`${BULK_PATH}/`, `${BULK_PATH}?failOnErrors=1`]) {
      up.reset();
      const res = await post(bulkOnly, bulkBody([{ method: 'DELETE', path: '/Users/2819c223' }]), { target });
      assertInsufficient(t, res, [BULK, USERS_WRITE]);
    }
  });

  // The check must not depend on the Content-Type: Fastify parses text/plain into a string itself.
  for (const contentType of [null, 'text/plain', 'text/plain; charset=utf-8', 'application/octet-stream', 'application/json']) {
    await t.test(`also with ${contentType === null ? 'no Content-Type' : `Content-Type: ${contentType}`}`, async (t) => {
      up.reset();
      const res = await post(bulkOnly, bulkBody([{ method: 'DELETE', path: '/Users/2819c223' }]), { contentType });
      t.equal(up.requests.length, 0, 'the upstream received nothing');
      if (res.status === 403) assertInsufficient(t, res, [BULK, USERS_WRITE]);
      else assertRefused(t, res, res.status === 415 ? 415 : 400);
    });
  }

  await t.test('a write scope without bulk is not enough either', async (t) => {
    const res = await post(await token(USERS_WRITE), bulkBody([{ method: 'DELETE', path: '/Users/2819c223' }]));
    assertInsufficient(t, res, [BULK]);
  });

  await t.test('no token: 401 before the body is looked at', async (t) => {
    const res = await post(undefined, '{"Operations": not json');
    assertScimError(t, res, 401);
    t.equal(res.headers['www-authenticate'], 'Bearer realm="scopegate"');
    t.equal(up.requests.length, 0, 'the upstream received nothing');
  });
});

t.test('a Bulk body in a media type other than JSON is 415 and never forwarded', async (t) => {
  const writer = await token(BULK, USERS_WRITE);
  for (const contentType of [null, 'text/plain', 'application/octet-stream', 'application/xml']) {
    up.reset();
    const res = await post(writer, contentType === null ? '' : '{"Operations":[{"method":"DELETE","path":"/Users/1"}]}', { contentType });
    assertRefused(t, res, 415);
  }
});

t.test('a Bulk body with a Content-Encoding is 415 and never forwarded: the bytes checked are the bytes the upstream reads', async (t) => {
  const writer = await token(BULK, USERS_WRITE);
  const body = bulkBody([{ method: 'DELETE', path: '/Users/1' }]);
  for (const coding of ['gzip', 'br', 'deflate', 'identity, gzip', 'x-anything']) {
    up.reset();
    const res = await post(writer, body, { headers: [`Content-Encoding: ${coding}`] });
    assertRefused(t, res, 415);
    t.match(JSON.parse(res.body).detail, /without a Content-Encoding/, coding);
  }
  // identity is no coding at all.
  up.reset();
  const res = await post(writer, body, { headers: ['Content-Encoding: identity'] });
  t.equal(res.status, 200, 'Content-Encoding: identity is forwarded');
  t.equal(up.requests.length, 1);
});

t.test('bulk + users.write: Users operations pass, Groups operations do not', async (t) => {
  const userWriter = await token(BULK, USERS_WRITE);
  // Odd but valid formatting and non-ASCII text: any re-serialisation would change these bytes.
  const usersBody = `{\t"schemas" : ["${BULK_REQUEST}"],\r\n "failOnErrors":1,
 "Operations":[
  {"method":"POST","path":"/Users","bulkId":"qwerty","data":{"schemas":["${USER_SCHEMA}"],"userName":"Jöns 😀","name":{"givenName":"J\\u00f6ns"}}},
  {"method":"PUT","path":"/Users/b7c14771","version":"W/\\"3694e05e9dff591\\"","data":{"schemas":["${USER_SCHEMA}"],"userName":"bjensen","active":true}},
  {"method":"PATCH","path":"/Users/b7c14771","data":{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"nickName","value":"Babs"}]}},
  {"method":"DELETE","path":"/Users/e9e30dba"}
 ]  }\n`;
  const sent = Buffer.from(usersBody, 'utf8');

  await t.test('Users operations are forwarded byte-identical', async (t) => {
    const res = await post(userWriter, sent);
    assertForwarded(t, res, sent);
    t.equal(up.requests[0]?.headers.authorization, `Bearer ${userWriter}`, 'the checked token goes along');
  });

  await t.test('a chunked Bulk body is forwarded with a Content-Length', async (t) => {
    const res = await post(userWriter, sent, { chunked: true });
    assertForwarded(t, res, sent);
  });

  await t.test('Content-Type: application/json is forwarded byte-identical too', async (t) => {
    const res = await post(userWriter, sent, { contentType: 'application/json' });
    assertForwarded(t, res, sent);
  });

  for (const op of [
    { method: 'POST', path: '/Groups', data: { schemas: [GROUP_SCHEMA], displayName: 'x' } },
    { method: 'PUT', path: '/Groups/e9e30dba', data: { schemas: [GROUP_SCHEMA], displayName: 'x' } },
    { method: 'PATCH', path: '/Groups/e9e30dba', data: {} },
    { method: 'DELETE', path: '/Groups/e9e30dba' },
  ]) {
    await t.test(`${op.method} ${op.path} is refused`, async (t) => {
      const res = await post(userWriter, bulkBody([op]));
      assertInsufficient(t, res, [BULK, GROUPS_WRITE]);
    });
  }
});

t.test('mixed bodies and absolute paths', async (t) => {
  const mixed = bulkBody([
    { method: 'POST', path: '/Users', bulkId: 'u1', data: { schemas: [USER_SCHEMA], userName: 'alice' } },
    { method: 'DELETE', path: '/Groups/e9e30dba' },
  ]);
  const needed = [BULK, USERS_WRITE, GROUPS_WRITE];

  await t.test('Users + Groups with only users.write: 403 naming every scope needed', async (t) => {
    assertInsufficient(t, await post(await token(BULK, USERS_WRITE), mixed), needed);
  });
  await t.test('Users + Groups with only groups.write: 403', async (t) => {
    assertInsufficient(t, await post(await token(BULK, GROUPS_WRITE), mixed), needed);
  });
  await t.test('Users + Groups with both write scopes but no bulk: 403', async (t) => {
    assertInsufficient(t, await post(await token(USERS_WRITE, GROUPS_WRITE), mixed), [BULK]);
  });
  await t.test('Users + Groups with bulk and both write scopes: forwarded', async (t) => {
    const res = await post(await token(...needed), mixed);
    assertForwarded(t, res, Buffer.from(mixed));
  });

  const absoluteUsers = bulkBody([
    { method: 'POST', path: `http://scim.example.com${B}/Users`, data: { schemas: [USER_SCHEMA], userName: 'abs' } },
    { method: 'DELETE', path: `https://scim.example.com:8443${B}/Users/e9e30dba` },
  ]);
  await t.test('absolute paths are classified like relative ones: bulk-only is refused', async (t) => {
    assertInsufficient(t, await post(await token(BULK), absoluteUsers), [BULK, USERS_WRITE]);
  });
  await t.test('absolute Users paths with users.write: forwarded', async (t) => {
    const res = await post(await token(BULK, USERS_WRITE), absoluteUsers);
    assertForwarded(t, res, Buffer.from(absoluteUsers));
  });
  await t.test('an absolute Groups path needs groups.write', async (t) => {
    const body = bulkBody([{ method: 'PATCH', path: `http://scim.example.com${B}/Groups/e9e30dba`, data: {} }]);
    assertInsufficient(t, await post(await token(BULK, USERS_WRITE), body), [BULK, GROUPS_WRITE]);
  });

  for (const path of [
    'http://scim.example.com/other/Users',
    'http://scim.example.com/jans-scim/restv1/v1/Users',
    `http://scim.example.com${B}Users`,
    'http://scim.example.com/Users',
    `http://scim.example.com/x${B}/Users`,
  ]) {
    await t.test(`an absolute path outside the base is 400: ${path}`, async (t) => {
      const body = bulkBody([{ method: 'POST', path, data: { schemas: [USER_SCHEMA], userName: 'x' } }]);
      assertRefused(t, await post(await token(...ALL), body));
    });
  }
});

t.test('bulkId references', async (t) => {
  const chain = bulkBody([
    { method: 'POST', path: '/Users', bulkId: 'u1', data: { schemas: [USER_SCHEMA], userName: 'alice' } },
    { method: 'POST', path: '/Groups', bulkId: 'g1', data: { schemas: [GROUP_SCHEMA], displayName: 'team', members: [{ type: 'User', value: 'bulkId:u1' }] } },
    { method: 'PATCH', path: '/Groups/bulkId:g1', data: { schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'], Operations: [{ op: 'add', path: 'members', value: [{ value: 'bulkId:u1' }] }] } },
  ]);

  await t.test('a chain of definitions and references with bulk + users.write + groups.write: forwarded', async (t) => {
    const res = await post(await token(BULK, USERS_WRITE, GROUPS_WRITE), chain);
    assertForwarded(t, res, Buffer.from(chain));
  });
  await t.test('the same chain with bulk + users.write only: 403', async (t) => {
    assertInsufficient(t, await post(await token(BULK, USERS_WRITE), chain), [BULK, USERS_WRITE, GROUPS_WRITE]);
  });

  const all = await token(...ALL);
  const refused: Array<[string, Op[]]> = [
    ['a reference in data to an undefined bulkId', [
      { method: 'POST', path: '/Groups', bulkId: 'g1', data: { schemas: [GROUP_SCHEMA], displayName: 'team', members: [{ value: 'bulkId:nobody' }] } },
    ]],
    ['a reference in a path to an undefined bulkId', [
      { method: 'POST', path: '/Users', bulkId: 'u1', data: { schemas: [USER_SCHEMA], userName: 'alice' } },
      { method: 'DELETE', path: '/Users/bulkId:u2' },
    ]],
    ['a repeated bulkId', [
      { method: 'POST', path: '/Users', bulkId: 'u1', data: { schemas: [USER_SCHEMA], userName: 'alice' } },
      { method: 'POST', path: '/Users', bulkId: 'u1', data: { schemas: [USER_SCHEMA], userName: 'bob' } },
    ]],
    ['a bulkId repeated across resource types', [
      { method: 'POST', path: '/Users', bulkId: 'x', data: { schemas: [USER_SCHEMA], userName: 'alice' } },
      { method: 'POST', path: '/Groups', bulkId: 'x', data: { schemas: [GROUP_SCHEMA], displayName: 'team' } },
    ]],
  ];
  for (const [name, ops] of refused) {
    await t.test(`${name}: 400`, async (t) => {
      assertRefused(t, await post(all, bulkBody(ops)));
    });
  }
});

t.test('malformed Bulk bodies are 400 and never forwarded', async (t) => {
  const all = await token(...ALL);
  const user = `{"schemas":["${USER_SCHEMA}"],"userName":"u"}`;
  const good = `{"method":"POST","path":"/Users","data":${user}}`;
  const withOps = (ops: string): string => `{"schemas":["${BULK_REQUEST}"],"Operations":[${ops}]}`;
  const utf16le = (s: string): Buffer => Buffer.from(s, 'utf16le');
  const utf16be = (s: string): Buffer => {
    const le = utf16le(s);
    for (let i = 0; i < le.length; i += 2) [le[i], le[i + 1]] = [le[i + 1]!, le[i]!];
    return le;
  };
  const cases: Array<[string, string | Buffer, PostOptions?]> = [
    // framing and encoding
    ['an empty body', ''],
    ['truncated JSON', `{"Operations":[${good}`],
    ['trailing data after the object', `${withOps(good)} {}`],
    ['a JSON comment', `{/* x */"Operations":[${good}]}`],
    ['single-quoted strings', `{'Operations':[${good}]}`],
    ['a top-level array', `[${withOps(good)}]`],
    ['a top-level string', '"Operations"'],
    ['bytes that are not UTF-8', Buffer.concat([Buffer.from(`{"Operations":[{"method":"POST","path":"/Users","data":{"userName":"`), Buffer.from([0xe9]), Buffer.from('"}}]}')])],
    ['an encoded surrogate (CESU-8)', Buffer.concat([Buffer.from('{"Operations":[{"method":"POST","path":"/Users","data":{"userName":"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}}]}')])],
    ['an overlong UTF-8 encoding', Buffer.concat([Buffer.from('{"Operations":[{"method":"POST","path":"/Users","data":{"userName":"'), Buffer.from([0xc0, 0xaf]), Buffer.from('"}}]}')])],
    ['a UTF-8 byte order mark', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(withOps(good))])],
    ['UTF-16LE without BOM', utf16le(withOps(good))],
    ['UTF-16LE with BOM', Buffer.concat([Buffer.from([0xff, 0xfe]), utf16le(withOps(good))])],
    ['UTF-16BE without BOM', utf16be(withOps(good))],
    ['UTF-16BE with BOM', Buffer.concat([Buffer.from([0xfe, 0xff]), utf16be(withOps(good))])],
    // the Operations member
    ['no Operations member', `{"schemas":["${BULK_REQUEST}"]}`],
    ['both Operations and operations', `{"Operations":[${good}],"operations":[]}`],
    ['both operations and Operations (reversed)', `{"operations":[],"Operations":[${good}]}`],
    ['Operations twice', `{"Operations":[],"Operations":[${good}]}`],
    ['Operations as an object', `{"Operations":${good}}`],
    ['Operations as a string', '{"Operations":"[]"}'],
    ['Operations null', '{"Operations":null}'],
    // duplicate keys anywhere (case-insensitive): the last would win in Jackson
    ['duplicate method in an operation', withOps(`{"method":"GET","path":"/Users","method":"POST","data":${user}}`)],
    ['method and Method in an operation', withOps(`{"method":"POST","Method":"DELETE","path":"/Users","data":${user}}`)],
    ['path and PATH in an operation', withOps(`{"method":"DELETE","path":"/Groups/1","PATH":"/Users/1"}`)],
    ['duplicate schemas at the top level', `{"schemas":[],"SCHEMAS":["${BULK_REQUEST}"],"Operations":[${good}]}`],
    ['duplicate keys inside data', withOps(`{"method":"POST","path":"/Users","data":{"userName":"a","UserName":"b"}}`)],
    ['duplicate keys deep inside data', withOps(`{"method":"POST","path":"/Users","data":{"userName":"a","name":{"givenName":"x","givenName":"y"}}}`)],
    ['duplicate keys in schemas', `{"schemas":[{"a":1,"A":2}],"Operations":[${good}]}`],
    // data is not built (bulkId references aside), but checked to the same grammar, depth and names
    ...[
      ['truncated', '{"userName":"a"'],
      ['a single-quoted string', "{'userName':'a'}"],
      ['a bad escape', '{"userName":"a\\x"}'],
      ['a raw control character', '{"userName":"a\u0001"}'],
      ['a number with a leading zero', '{"n":01}'],
      ['a literal misspelt', '{"active":tru}'],
      ['a missing comma', '{"a":1 "b":2}'],
      ['a trailing comma', '{"a":[1,2,]}'],
      ['a member name that is not a string', '{a:1}'],
      ['nesting deeper than 64', `{"a":${'['.repeat(70)}${']'.repeat(70)}}`],
      ['a number of more than 400 characters', `{"n":${'1'.repeat(401)}}`],
    ].map(([what, data]): [string, string] => [`data with ${what}`, withOps(`{"method":"POST","path":"/Users","data":${data}}`)]),
    ['schemas with a bad escape', `{"schemas":["a\\q"],"Operations":[${good}]}`],
    ['an unknown top-level member, truncated', `{"Operations":[${good}],"x":[1,2`],
    ['more than 16 top-level members', `{"Operations":[${good}],${Array.from({ length: 16 }, (_, i) => `"m${i}":0`).join(',')}}`],
    // the operation's own shape
    ['an operation that is not an object', withOps('"POST /Users"')],
    ['an operation that is an array', withOps(`[${good}]`)],
    ['an unexpected member', withOps(`{"method":"POST","path":"/Users","headers":{"X":"1"},"data":${user}}`)],
    ['a mis-cased member', withOps(`{"Method":"POST","path":"/Users","data":${user}}`)],
    ['a mis-cased bulkId', withOps(`{"method":"POST","path":"/Users","bulkid":"u1","data":${user}}`)],
    ['no method', withOps(`{"path":"/Users","data":${user}}`)],
    // jans upper-cases the method with Java's toUpperCase, which makes `ſ` an `S` (and JavaScript's
    // does too): a method that is not ASCII letters is refused, not upper-cased.
    ['a method with a long s', withOps(`{"method":"po\u017Ft","path":"/Users","data":${user}}`)],
    ['a method with a long s, raw', withOps(`{"method":"poſt","path":"/Users","data":${user}}`)],
    ['a method with a dotless i', withOps('{"method":"delet\u0131","path":"/Users/1"}')],
    ['a lowercase GET', withOps('{"method":"get","path":"/Users/1"}')],
    ['method GET', withOps('{"method":"GET","path":"/Users/1"}')],
    ['method HEAD', withOps('{"method":"HEAD","path":"/Users/1"}')],
    ['method MERGE', withOps('{"method":"MERGE","path":"/Users/1"}')],
    ['a non-string method', withOps('{"method":["DELETE"],"path":"/Users/1"}')],
    ['a method with spaces', withOps('{"method":" DELETE","path":"/Users/1"}')],
    // paths
    ['no path', withOps(`{"method":"POST","data":${user}}`)],
    ['an empty path', withOps(`{"method":"POST","path":"","data":${user}}`)],
    ['a non-string path', withOps('{"method":"DELETE","path":["/Users/1"]}')],
    ['a path not in the table', withOps('{"method":"POST","path":"/Things","data":{}}')],
    ['a lowercase resource type', withOps(`{"method":"POST","path":"/users","data":${user}}`)],
    ['a relative path without /', withOps(`{"method":"POST","path":"Users","data":${user}}`)],
    ['a path with a query', withOps(`{"method":"POST","path":"/Users?attributes=id","data":${user}}`)],
    ['a path with a fragment', withOps('{"method":"DELETE","path":"/Users/1#x"}')],
    ['a dot-segment path', withOps('{"method":"DELETE","path":"/Groups/../Users/1"}')],
    ['a double slash', withOps('{"method":"DELETE","path":"//Users/1"}')],
    ['a matrix parameter', withOps('{"method":"DELETE","path":"/Users;v=1/1"}')],
    ['an encoded slash', withOps('{"method":"DELETE","path":"/Users/1%2F2"}')],
    ['a percent-encoded resource type', withOps('{"method":"DELETE","path":"/%55sers/1"}')],
    ['a backslash', withOps('{"method":"DELETE","path":"/Users\\\\1"}')],
    ['a space in the path', withOps('{"method":"DELETE","path":"/Users/a b"}')],
    ['a path one level too deep', withOps('{"method":"DELETE","path":"/Users/1/2"}')],
    // in the table but not a resource write
    ['POST on /Users/{id}', withOps(`{"method":"POST","path":"/Users/1","data":${user}}`)],
    ['POST on /Users/ (trailing slash)', withOps(`{"method":"POST","path":"/Users/","data":${user}}`)],
    ['PUT on the collection', withOps(`{"method":"PUT","path":"/Users","data":${user}}`)],
    ['PATCH on the collection', withOps('{"method":"PATCH","path":"/Groups","data":{}}')],
    ['DELETE on the collection', withOps('{"method":"DELETE","path":"/Users"}')],
    ['POST /Users/.search', withOps('{"method":"POST","path":"/Users/.search","data":{}}')],
    ['POST /.search', withOps('{"method":"POST","path":"/.search","data":{}}')],
    ['a nested POST /Bulk', withOps(`{"method":"POST","path":"/Bulk","data":${withOps(good)}}`)],
    ['POST /FidoDevices (no such write)', withOps('{"method":"POST","path":"/FidoDevices","data":{}}')],
    ['a public path', withOps('{"method":"POST","path":"/ServiceProviderConfig","data":{}}')],
    ['DELETE /ResourceTypes/User', withOps('{"method":"DELETE","path":"/ResourceTypes/User"}')],
    ['DELETE /Schemas/{uri}', withOps(`{"method":"DELETE","path":"/Schemas/${USER_SCHEMA}"}`)],
  ];
  for (const [name, body, opts] of cases) {
    await t.test(name, async (t) => {
      up.reset();
      assertRefused(t, await post(all, body, opts));
    });
  }

  await t.test('control: the well-formed version of these bodies is forwarded', async (t) => {
    up.reset();
    const body = withOps(good);
    assertForwarded(t, await post(all, body), Buffer.from(body));
  });

  await t.test('control: data at a depth of 64 in all, and a number of 400 characters, are forwarded', async (t) => {
    up.reset();
    // The document is depth 0, Operations 1, the operation 2, data 3: 61 more arrays reach 64.
    const body = withOps(`{"method":"POST","path":"/Users","data":{"userName":"a","deep":${'['.repeat(60)}${'1'.repeat(400)}${']'.repeat(60)}}}`);
    assertForwarded(t, await post(all, body), Buffer.from(body));
  });

});

t.test('Bulk bodies of many small values are scanned, not built, and classified as any other', async (t) => {
  // A body just under limits.bodyBytes holding a million values in the members the gateway does
  // not build: each is checked and forwarded (or refused) exactly as a small body would be.
  const values = (n: number, v: string): string => Array(n).fill(v).join(',');
  const user = `{"schemas":["${USER_SCHEMA}"],"userName":"bjensen"}`;
  const op = `{"method":"POST","path":"/Users","bulkId":"u1","data":${user}}`;
  const shapes: Array<[string, string]> = [
    ['a million empty objects in an unknown member', `{"Operations":[${op}],"x":[${values(1_000_000, '{}')}]}`],
    ['a million numbers in schemas', `{"schemas":[${values(1_000_000, '1')}],"Operations":[${op}]}`],
    ['half a million empty arrays in data', `{"Operations":[{"method":"POST","path":"/Users","data":{"userName":"a","x":[${values(500_000, '[]')}]}}]}`],
  ];
  for (const [name, body] of shapes) {
    await t.test(`${name}: forwarded byte-identical with bulk + users.write`, async (t) => {
      t.ok(body.length < LIMIT, `${body.length} bytes, under the limit`);
      up.reset();
      assertForwarded(t, await post(await token(BULK, USERS_WRITE), body), Buffer.from(body));
    });
    await t.test(`${name}: 403 with bulk alone`, async (t) => {
      up.reset();
      assertInsufficient(t, await post(await token(BULK), body), [BULK, USERS_WRITE]);
    });
  }
  await t.test('300,000 operations: 400 (more than bulk.maxOperations), nothing forwarded', async (t) => {
    up.reset();
    assertRefused(t, await post(await token(...ALL), `{"Operations":[${values(300_000, '{}')}]}`));
  });
  await t.test('a reference in a large data is still found: a bulkId referenced and never defined is 400', async (t) => {
    up.reset();
    const body = `{"Operations":[{"method":"POST","path":"/Groups","data":{"displayName":"g","x":[${values(500_000, '0')}],"members":[{"value":"bulkId:nowhere"}]}}]}`;
    assertRefused(t, await post(await token(...ALL), body));
  });
});

t.test('bulk.maxOperations (default 30)', async (t) => {
  const writer = await token(BULK, USERS_WRITE);
  const ops = (n: number): Op[] => Array.from({ length: n }, (_, i) => ({ method: 'DELETE', path: `/Users/u${i}` }));

  await t.test('exactly 30 operations: forwarded', async (t) => {
    const body = bulkBody(ops(30));
    assertForwarded(t, await post(writer, body), Buffer.from(body));
  });
  // 400, as anything the gateway will not classify, naming the limit.
  const assertTooMany = (t: Test, res: RawResponse): void => {
    assertRefused(t, res, 400);
    t.match(JSON.parse(res.body) as unknown, { detail: /more than 30 operations/ }, 'the detail names the limit');
  };
  await t.test('31 operations: 400', async (t) => {
    up.reset();
    assertTooMany(t, await post(writer, bulkBody(ops(31))));
  });
  await t.test('31 operations: 400 even for a token that could run them all', async (t) => {
    up.reset();
    assertTooMany(t, await post(await token(...ALL), bulkBody(ops(31))));
  });
  await t.test('31 operations, the 31st malformed: 400 for the count all the same (it is met first)', async (t) => {
    up.reset();
    const body = `{"Operations":[${Array(30).fill('{"method":"DELETE","path":"/Users/u"}').join(',')},{"method":1}]}`;
    assertTooMany(t, await post(writer, body));
  });
});

t.test('body size (limits.bodyBytes, default 3,072,000)', async (t) => {
  const writer = await token(BULK, USERS_WRITE);

  await t.test('a ~3 MB body is forwarded byte-identical', async (t) => {
    const body = sized(3000000);
    const res = await send(gw.port, frame(writer, body, {}));
    assertForwarded(t, res, body);
  });
  await t.test('a body of exactly the limit is forwarded byte-identical', async (t) => {
    const body = sized(LIMIT);
    const res = await send(gw.port, frame(writer, body, {}));
    assertForwarded(t, res, body);
  });
  await t.test('a chunked body of exactly the limit is forwarded byte-identical', async (t) => {
    const body = sized(LIMIT);
    const res = await send(gw.port, frame(writer, body, { chunked: true }));
    assertForwarded(t, res, body);
  });
  await t.test('one byte over the limit with Content-Length: 413', async (t) => {
    const res = await send(gw.port, frame(writer, sized(LIMIT + 1), {}));
    assertRefused(t, res, 413);
  });
  await t.test('one byte over the limit, chunked: 413', async (t) => {
    const res = await send(gw.port, frame(writer, sized(LIMIT + 1), { chunked: true }));
    assertRefused(t, res, 413);
  });
  await t.test('a declared Content-Length over the limit is refused before the body arrives', async (t) => {
    const line = `POST ${BULK_PATH} HTTP/1.1`;
    const bytes = `${line}\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer ${writer}\r\nContent-Type: application/scim+json\r\nContent-Length: ${LIMIT + 1}\r\n\r\n{"Operations":[`;
    const res = await send(gw.port, bytes, 5000);
    assertRefused(t, res, 413);
  });
});

t.test('bulk.checkOperations: false forwards what jans-scim would accept with bulk alone', async (t) => {
  const open = await startTestGateway({ upstream: { url: up.origin }, token: tokenConfig, bulk: { checkOperations: false } });
  t.teardown(() => open.close());
  const body = Buffer.from(bulkBody([
    { method: 'POST', path: '/Users', bulkId: 'u1', data: { schemas: [USER_SCHEMA], userName: 'mallory' } },
    { method: 'DELETE', path: '/Groups/e9e30dba' },
  ]));

  await t.test('a bulk-only token writing Users and Groups: forwarded byte-identical', async (t) => {
    up.reset();
    const res = await post(await token(BULK), body, {}, open.port);
    assertForwarded(t, res, body);
  });
  await t.test('the bulk scope itself is still required', async (t) => {
    up.reset();
    const res = await post(await token(USERS_WRITE, GROUPS_WRITE), body, {}, open.port);
    assertInsufficient(t, res, [BULK]);
  });
  await t.test('the body limit still holds: chunked over the limit is 413, never a whole body upstream', async (t) => {
    up.reset();
    const res = await send(open.port, frame(await token(BULK, USERS_WRITE), sized(LIMIT + 1), { chunked: true }));
    assertScimError(t, res, 413);
    t.notOk(up.requests.some((r) => r.complete), 'no complete request upstream');
  });
  await t.test('control: the same request on the default gateway is 403', async (t) => {
    up.reset();
    assertInsufficient(t, await post(await token(BULK), body), [BULK, USERS_WRITE, GROUPS_WRITE]);
  });
});

t.test('the access line of a Bulk request lists its operations and their scopes', async (t) => {
  const ops: Op[] = [
    { method: 'POST', path: '/Users', bulkId: 'u1', data: { schemas: [USER_SCHEMA], userName: 'alice' } },
    { method: 'PATCH', path: `http://scim.example.com${B}/Groups/e9e30dba`, data: { members: [{ value: 'bulkId:u1' }] } },
    { method: 'DELETE', path: '/Users/b7c14771' },
  ];
  const expected = [
    { method: 'POST', path: '/Users', operation: 'create-user', scopes: [USERS_WRITE] },
    { method: 'PATCH', path: '/Groups/{id}', operation: 'patch-group-by-id', scopes: [GROUPS_WRITE] },
    { method: 'DELETE', path: '/Users/{id}', operation: 'delete-user-by-id', scopes: [USERS_WRITE] },
  ];

  await t.test('allowed', async (t) => {
    const bearer = await token(BULK, USERS_WRITE, GROUPS_WRITE);
    const from = gw.logs.length;
    const res = await post(bearer, bulkBody(ops));
    t.equal(res.status, 200);
    const line = await bulkAccessLine(gw.logs, from);
    t.ok(line, 'an access line');
    t.equal(line?.decision, 'allow');
    t.equal(line?.status, 200);
    t.same(line?.bulk, expected, 'every operation with its template, id and scopes');
    t.notOk(gw.logs.slice(from).some((l) => l.includes(bearer)), 'the token is not logged');
  });

  await t.test('denied: the line says which operations needed what', async (t) => {
    const bearer = await token(BULK, USERS_WRITE);
    const from = gw.logs.length;
    const res = await post(bearer, bulkBody(ops));
    assertInsufficient(t, res, [BULK, USERS_WRITE, GROUPS_WRITE]);
    const line = await bulkAccessLine(gw.logs, from);
    t.ok(line, 'an access line');
    t.equal(line?.decision, 'deny');
    t.equal(line?.status, 403);
    t.same([...((line?.requiredScopes as string[] | null) ?? [])].sort(), challengeScopes(res), 'requiredScopes are the scopes the 403 named');
    t.same(line?.bulk, expected, 'every operation with its template, id and scopes');
    t.notOk(gw.logs.slice(from).some((l) => l.includes(bearer)), 'the token is not logged');
  });
});
