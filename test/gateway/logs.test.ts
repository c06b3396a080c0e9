/**
 * The logs (INTERFACE.md "Logs", SECURITY.md rule 8): after a run of allowed and denied requests,
 * no captured line holds any token used, and each request has exactly one access line carrying
 * the fields operators depend on, with a 12-character fingerprint of the token's SHA-256.
 */
import { createHash } from 'node:crypto';
import t from 'tap';
import type { AuthServer } from '../../src/demo/auth-server.js';
import { accessLines, B, type TestGateway } from '../helpers/gateway.js';
import { http11, rawRequest } from '../helpers/raw.js';
import type { RecordingUpstream } from '../helpers/upstream.js';
import { type GatewayStack, startGatewayStack, until } from './support.js';

const READ = 'https://jans.io/scim/users.read';
const GROUPS_READ = 'https://jans.io/scim/groups.read';
const FIELDS = ['method', 'path', 'operation', 'status', 'decision', 'reason', 'clientId', 'fingerprint', 'requiredScopes', 'durationMs'];

let auth: AuthServer;
let up: RecordingUpstream;
let gw: TestGateway;
let stack: GatewayStack | undefined;

t.before(async () => {
  ({ auth, up, gw } = stack = await startGatewayStack());
});
t.teardown(() => stack?.close());

const fingerprint = (token: string) => createHash('sha256').update(token).digest('base64url').slice(0, 12);

interface Case {
  name: string;
  method: string;
  /** Unique per case, so its access line can be found by path. */
  target: string;
  /** The access line's `path`. */
  path: string;
  headers: string[];
  status: number;
  decision: 'allow' | 'deny';
  operation: string | null;
  clientId: string | null;
  /** The token whose fingerprint the line carries, or null. */
  fingerprinted: string | null;
  requiredScopes: string[] | null;
}

t.test('a run of allowed and denied requests', async (t) => {
  const [opaque, opaqueOther, jwt, jwtOther] = await Promise.all([
    auth.issueToken([READ]), auth.issueToken([GROUPS_READ]), auth.issueToken([READ], { jwt: true }), auth.issueToken([GROUPS_READ], { jwt: true }),
  ]) as [string, string, string, string];
  const [h, p, s] = jwt.split('.') as [string, string, string];
  const forged = `${h}.${p}.${s.slice(0, -4)}${s.endsWith('AAAA') ? 'BBBB' : 'AAAA'}`;
  const unknown = `unknown-opaque-${Date.now()}-token`;
  const quoted = 'quotedtokenvalue123';
  const tooLong = `long${'x'.repeat(5000)}`;
  const basic = 'c2NpbS1jbGllbnQ6c3VwZXItc2VjcmV0';
  const secrets = { opaque, opaqueOther, jwt, jwtOther, forged, unknown, quoted, tooLong, basic, jwtSignature: s, jwtPayload: p, clientSecret: auth.clientSecret };

  const user = (i: number) => `${B}/Users/user-${i}`;
  const cases: Case[] = [
    { name: 'opaque, allowed', method: 'GET', target: user(1), path: user(1), headers: [`Authorization: Bearer ${opaque}`], status: 200, decision: 'allow', operation: 'get-user-by-id', clientId: auth.clientId, fingerprinted: opaque, requiredScopes: [READ] },
    { name: 'JWT, allowed', method: 'GET', target: user(2), path: user(2), headers: [`Authorization: bearer ${jwt}`], status: 200, decision: 'allow', operation: 'get-user-by-id', clientId: auth.clientId, fingerprinted: jwt, requiredScopes: [READ] },
    { name: 'opaque, another scope', method: 'GET', target: user(3), path: user(3), headers: [`Authorization: Bearer ${opaqueOther}`], status: 403, decision: 'deny', operation: 'get-user-by-id', clientId: auth.clientId, fingerprinted: opaqueOther, requiredScopes: [READ] },
    { name: 'JWT, another scope', method: 'GET', target: user(4), path: user(4), headers: [`Authorization: Bearer ${jwtOther}`], status: 403, decision: 'deny', operation: 'get-user-by-id', clientId: auth.clientId, fingerprinted: jwtOther, requiredScopes: [READ] },
    { name: 'JWT, bad signature', method: 'GET', target: user(5), path: user(5), headers: [`Authorization: Bearer ${forged}`], status: 401, decision: 'deny', operation: 'get-user-by-id', clientId: null, fingerprinted: forged, requiredScopes: [READ] },
    { name: 'unknown opaque', method: 'GET', target: user(6), path: user(6), headers: [`Authorization: Bearer ${unknown}`], status: 401, decision: 'deny', operation: 'get-user-by-id', clientId: null, fingerprinted: unknown, requiredScopes: [READ] },
    { name: 'no token', method: 'GET', target: user(7), path: user(7), headers: [], status: 401, decision: 'deny', operation: 'get-user-by-id', clientId: null, fingerprinted: null, requiredScopes: [READ] },
    { name: 'quoted token', method: 'GET', target: user(8), path: user(8), headers: [`Authorization: Bearer "${quoted}"`], status: 401, decision: 'deny', operation: 'get-user-by-id', clientId: null, fingerprinted: null, requiredScopes: [READ] },
    { name: 'two Authorization headers', method: 'GET', target: user(9), path: user(9), headers: [`Authorization: Bearer ${opaque}`, `Authorization: Bearer ${quoted}`], status: 400, decision: 'deny', operation: 'get-user-by-id', clientId: null, fingerprinted: null, requiredScopes: [READ] },
    { name: 'Basic', method: 'GET', target: user(10), path: user(10), headers: [`Authorization: Basic ${basic}`], status: 401, decision: 'deny', operation: 'get-user-by-id', clientId: null, fingerprinted: null, requiredScopes: [READ] },
    { name: 'too long', method: 'GET', target: user(11), path: user(11), headers: [`Authorization: Bearer ${tooLong}`], status: 401, decision: 'deny', operation: 'get-user-by-id', clientId: null, fingerprinted: null, requiredScopes: [READ] },
    { name: 'token in the query', method: 'GET', target: `${user(12)}?access_token=${opaque}`, path: user(12), headers: [], status: 401, decision: 'deny', operation: 'get-user-by-id', clientId: null, fingerprinted: null, requiredScopes: [READ] },
    { name: 'public', method: 'GET', target: `${B}/Schemas/urn:ietf:params:scim:schemas:core:2.0:User`, path: `${B}/Schemas/urn:ietf:params:scim:schemas:core:2.0:User`, headers: [`Authorization: Bearer ${opaqueOther}`], status: 200, decision: 'allow', operation: 'get-schema-by-uri', clientId: null, fingerprinted: null, requiredScopes: null },
    { name: 'not in the table', method: 'GET', target: `${B}/Nope`, path: `${B}/Nope`, headers: [`Authorization: Bearer ${opaque}`], status: 404, decision: 'deny', operation: null, clientId: null, fingerprinted: null, requiredScopes: null },
    { name: 'method not allowed', method: 'DELETE', target: `${B}/Groups`, path: `${B}/Groups`, headers: [`Authorization: Bearer ${opaque}`], status: 405, decision: 'deny', operation: null, clientId: null, fingerprinted: null, requiredScopes: null },
    // A refused target keeps its path as sent (what an operator investigates), escaped, cut where a
    // token could ride (query, matrix parameter, fragment) and at 512 characters.
    { name: 'ambiguous target', method: 'GET', target: `${B}/Schemas/../Users`, path: `${B}/Schemas/../Users`, headers: [`Authorization: Bearer ${jwt}`], status: 400, decision: 'deny', operation: null, clientId: null, fingerprinted: null, requiredScopes: null },
    { name: 'refused target with a quote and a backslash', method: 'GET', target: `${B}/Users/a"b\\c%5C`, path: `${B}/Users/a"b\\c%5C`, headers: [], status: 400, decision: 'deny', operation: null, clientId: null, fingerprinted: null, requiredScopes: null },
    { name: 'refused target, token in a matrix parameter', method: 'GET', target: `${B}/Users;access_token=${opaqueOther}`, path: `${B}/Users (cut at ;)`, headers: [], status: 400, decision: 'deny', operation: null, clientId: null, fingerprinted: null, requiredScopes: null },
    { name: 'refused target, token in the query', method: 'GET', target: `${B}/Schemas/%2e%2e/Users?access_token=${opaqueOther}`, path: `${B}/Schemas/%2e%2e/Users (cut at ?)`, headers: [], status: 400, decision: 'deny', operation: null, clientId: null, fingerprinted: null, requiredScopes: null },
    // A userinfo is a credential: the line says there was one, not what it was.
    { name: 'refused absolute-form target, token as its password', method: 'GET', target: `http://user:${opaqueOther}@127.0.0.1${B}/Schemas`, path: `http://(userinfo cut)@127.0.0.1${B}/Schemas`, headers: [], status: 400, decision: 'deny', operation: null, clientId: null, fingerprinted: null, requiredScopes: null },
    { name: 'refused absolute-form target, token as its userinfo', method: 'GET', target: `http://${opaqueOther}@evil.example${B}/Users`, path: `http://(userinfo cut)@evil.example${B}/Users`, headers: [], status: 400, decision: 'deny', operation: null, clientId: null, fingerprinted: null, requiredScopes: null },
    { name: 'refused absolute-form target, a ; in its userinfo', method: 'GET', target: `http://alice:x;${opaqueOther}@127.0.0.1${B}/Users`, path: `http://(userinfo cut)@127.0.0.1${B}/Users`, headers: [], status: 400, decision: 'deny', operation: null, clientId: null, fingerprinted: null, requiredScopes: null },
    { name: 'refused target, a ? in its userinfo', method: 'GET', target: `http://alice:x?${opaqueOther}@127.0.0.1${B}/Groups`, path: `http://(userinfo cut)@127.0.0.1${B}/Groups`, headers: [], status: 400, decision: 'deny', operation: null, clientId: null, fingerprinted: null, requiredScopes: null },
    { name: 'refused network-path target with a userinfo', method: 'GET', target: `//alice:${opaqueOther}@127.0.0.1${B}/Schemas`, path: `//(userinfo cut)@127.0.0.1${B}/Schemas`, headers: [], status: 400, decision: 'deny', operation: null, clientId: null, fingerprinted: null, requiredScopes: null },
    { name: 'refused target, too long', method: 'GET', target: `${B}/Users/${'a'.repeat(5000)}?access_token=${opaqueOther}`, path: `${`${B}/Users/${'a'.repeat(5000)}`.slice(0, 512)}... (${B.length + 7 + 5000} characters) (cut at ?)`, headers: [], status: 414, decision: 'deny', operation: null, clientId: null, fingerprinted: null, requiredScopes: null },
  ];

  const logsBefore = accessLines(gw.logs).length;
  for (const c of cases) {
    const res = await rawRequest(gw.port, http11(c.method, c.target, c.headers));
    t.equal(res.status, c.status, `${c.name}: status`);
    for (const [name, secret] of Object.entries(secrets)) t.notOk(res.raw.includes(secret), `${c.name}: the response holds no ${name}`);
  }
  t.ok(await until(() => accessLines(gw.logs).length - logsBefore >= cases.length), 'every access line written');
  await new Promise((resolve) => setTimeout(resolve, 50));

  t.test('no log line holds a token or a secret', async (t) => {
    t.ok(gw.logs.length > cases.length, `${gw.logs.length} lines captured`);
    for (const [name, secret] of Object.entries(secrets)) {
      const leaking = gw.logs.filter((line) => line.includes(secret));
      t.same(leaking, [], `no line holds ${name}`);
    }
  });

  t.test('one access line per request, with every field', async (t) => {
    const lines = accessLines(gw.logs).slice(logsBefore);
    t.equal(lines.length, cases.length, 'as many access lines as requests');
    for (const c of cases) {
      const mine = lines.filter((l) => l.path === c.path && l.method === c.method);
      t.equal(mine.length, 1, `${c.name}: exactly one access line`);
      const line = mine[0] ?? {};
      for (const field of FIELDS) t.ok(field in line, `${c.name}: has ${field}`);
      t.equal(line.status, c.status, `${c.name}: status`);
      t.equal(line.decision, c.decision, `${c.name}: decision`);
      t.equal(line.operation, c.operation, `${c.name}: operation`);
      t.equal(line.clientId, c.clientId, `${c.name}: clientId`);
      t.type(line.reason, 'string', `${c.name}: a reason`);
      t.not(line.reason, '', `${c.name}: a non-empty reason`);
      t.type(line.durationMs, 'number', `${c.name}: durationMs`);
      t.ok((line.durationMs as number) >= 0, `${c.name}: durationMs >= 0`);
      t.same(line.requiredScopes, c.requiredScopes, `${c.name}: requiredScopes`);
      if (c.fingerprinted) {
        t.match(line.fingerprint, /^[A-Za-z0-9_-]{12}$/, `${c.name}: a 12-character fingerprint`);
        t.equal(line.fingerprint, fingerprint(c.fingerprinted), `${c.name}: the first 12 characters of the SHA-256, base64url`);
      } else {
        t.equal(line.fingerprint, null, `${c.name}: no fingerprint without a validated bearer token`);
      }
    }
  });
});
