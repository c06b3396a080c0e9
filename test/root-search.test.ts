/**
 * Root search, POST /.search (JANS.md "Root search"; section 5 item 3). jans-scim needs only
 * all-resources.search and then returns Users, Groups and devices, so `search.rootRequiresReadScopes`
 * lets an operator also require the read scope of every resource type. Default off: exactly
 * jans' own rule. Real oidc-provider, recording upstream, raw TCP, port 0.
 */
import t, { type Test } from 'tap';
import { startAuthServer } from '../src/demo/auth-server.js';
import { accessLines, B, startTestGateway, type TestGateway, tokenIssuer } from './helpers/gateway.js';
import type { RawResponse } from './helpers/raw.js';
import { ensureBuilt, runCli } from './helpers/cli.js';
import { request, send } from './helpers/send.js';
import { startRecordingUpstream } from './helpers/upstream.js';

const SCIM_ERROR = 'urn:ietf:params:scim:api:messages:2.0:Error';
const scim = (name: string): string => `https://jans.io/scim/${name}`;
const SEARCH = scim('all-resources.search');
/** The read scope of every resource type in the shared OpenAPI file. */
const READS = ['users.read', 'groups.read', 'fido.read', 'fido2.read'].map(scim);
const ROOT = `${B}/.search`;
const QUERY = '{"schemas":["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],"filter":"displayName sw \\"a\\"","count":10}';

const auth = await startAuthServer();
t.teardown(() => auth.close());
const up = await startRecordingUpstream();
t.teardown(() => up.close());
const base = {
  upstream: { url: up.origin },
  token: { introspection: { endpoint: auth.introspectionEndpoint, clientId: auth.clientId, clientSecret: auth.clientSecret } },
};
const lax = await startTestGateway(base);
t.teardown(() => lax.close());
const strict = await startTestGateway({ ...base, search: { rootRequiresReadScopes: true } });
t.teardown(() => strict.close());

/** A real opaque token holding exactly `scopes` (one per scope set, reused). */
const token = tokenIssuer(auth);

/** POST `target` with the search body, over raw TCP. */
function search(gw: TestGateway, bearer: string | undefined, target = ROOT): Promise<RawResponse> {
  const headers = ['Content-Type: application/scim+json'];
  if (bearer !== undefined) headers.push(`Authorization: Bearer ${bearer}`);
  return send(gw.port, request('POST', target, headers, QUERY));
}

function assertForwarded(t: Test, res: RawResponse, path = ROOT): void {
  t.equal(res.status, 200, 'the upstream answered');
  t.equal(up.requests.length, 1, 'one request upstream');
  t.equal(up.requests[0]?.method, 'POST');
  t.equal(up.requests[0]?.url, path);
  t.equal(up.requests[0]?.body.toString('utf8'), QUERY, 'the search body unchanged');
}

/** 403, a challenge naming exactly `scopes` (any order), a SCIM error body, nothing upstream. */
function assertInsufficient(t: Test, res: RawResponse, scopes: readonly string[]): void {
  t.equal(res.status, 403, 'status 403');
  t.match(res.headers['content-type'] ?? '', /^application\/scim\+json/, 'SCIM content type');
  const body = JSON.parse(res.body || '{}') as Record<string, unknown>;
  t.same(body.schemas, [SCIM_ERROR], 'SCIM Error schema');
  t.equal(body.status, '403');
  const m = /^Bearer realm="scopegate", error="insufficient_scope", scope="([^"]+)"$/.exec(res.headers['www-authenticate'] ?? '');
  t.ok(m, `insufficient_scope challenge: ${res.headers['www-authenticate']}`);
  t.same(m?.[1]?.split(' ').sort(), [...scopes].sort(), 'the challenge names the scopes needed');
  t.equal(up.requests.length, 0, 'the upstream received nothing');
}

t.beforeEach(() => up.reset());

t.test('default: all-resources.search alone is enough (jans-scim\'s own rule)', async (t) => {
  await t.test('all-resources.search alone: forwarded', async (t) => {
    assertForwarded(t, await search(lax, await token(SEARCH)));
  });
  await t.test('every read scope but no all-resources.search: 403', async (t) => {
    assertInsufficient(t, await search(lax, await token(...READS)), [SEARCH]);
  });
  await t.test('no token: 401, nothing upstream', async (t) => {
    const res = await search(lax, undefined);
    t.equal(res.status, 401);
    t.equal(res.headers['www-authenticate'], 'Bearer realm="scopegate"');
    t.equal(up.requests.length, 0, 'the upstream received nothing');
  });
});

t.test('search.rootRequiresReadScopes: true', async (t) => {
  const needed = [SEARCH, ...READS];

  await t.test('all-resources.search alone: 403 naming every read scope', async (t) => {
    assertInsufficient(t, await search(strict, await token(SEARCH)), needed);
  });
  for (const missing of READS) {
    await t.test(`every scope but ${missing}: 403`, async (t) => {
      assertInsufficient(t, await search(strict, await token(...needed.filter((s) => s !== missing))), needed);
    });
  }
  await t.test('every read scope but no all-resources.search: 403', async (t) => {
    assertInsufficient(t, await search(strict, await token(...READS)), needed);
  });
  await t.test('all-resources.search and every read scope: forwarded', async (t) => {
    assertForwarded(t, await search(strict, await token(...needed)));
  });
  await t.test('a trailing slash is the same operation, with the same requirement', async (t) => {
    assertInsufficient(t, await search(strict, await token(SEARCH), `${ROOT}/`), needed);
  });
  await t.test('an absolute-form target is the same operation, with the same requirement', async (t) => {
    const target = `http://127.0.0.1${ROOT}`;
    assertInsufficient(t, await search(strict, await token(SEARCH), target), needed);
  });

  await t.test('per-type searches are unaffected: /Users/.search needs users.read only', async (t) => {
    up.reset();
    assertForwarded(t, await search(strict, await token(scim('users.read')), `${B}/Users/.search`), `${B}/Users/.search`);
    up.reset();
    assertInsufficient(t, await search(strict, await token(SEARCH), `${B}/Users/.search`), [scim('users.read')]);
  });
  await t.test('per-type searches are unaffected: /Groups/.search needs groups.read only', async (t) => {
    assertForwarded(t, await search(strict, await token(scim('groups.read')), `${B}/Groups/.search`), `${B}/Groups/.search`);
  });

  await t.test('the access line names every scope the root search required', async (t) => {
    const from = strict.logs.length;
    const res = await search(strict, await token(...needed));
    t.equal(res.status, 200);
    const find = () => accessLines(strict.logs.slice(from)).find((l) => l.path === ROOT);
    for (let i = 0; i < 300 && !find(); i++) await new Promise((r) => setTimeout(r, 10));
    const line = find();
    t.equal(line?.decision, 'allow');
    t.same([...((line?.requiredScopes as string[] | null | undefined) ?? [])].sort(), [...needed].sort());
  });
});

t.test('routes, routes --json and explain show what the gateway enforces', async (t) => {
  await ensureBuilt();
  for (const [gw, needed] of [[lax, [SEARCH]], [strict, [SEARCH, ...READS]]] as const) {
    const json = await runCli(['routes', '--json', '--config', gw.configFile]);
    t.equal(json.code, 0);
    const rows = JSON.parse(json.stdout) as Array<{ method: string; path: string; scopes: string[][] }>;
    const root = rows.find((r) => r.method === 'POST' && r.path === ROOT);
    t.equal(root?.scopes.length, 1, 'one alternative');
    t.same([...(root?.scopes[0] ?? [])].sort(), [...needed].sort(), `routes --json: ${needed.length} scopes`);
    const users = rows.find((r) => r.method === 'POST' && r.path === `${B}/Users/.search`);
    t.same(users?.scopes, [[scim('users.read')]], 'a per-type search is unaffected');
    const text = await runCli(['routes', '--config', gw.configFile]);
    const line = text.stdout.split('\n').find((l) => /^POST\s+\S+\/v2\/\.search\s/.test(l)) ?? '';
    for (const scope of needed) t.ok(line.includes(scope), `routes: ${scope}`);
    const explained = await runCli(['explain', '--config', gw.configFile, 'POST', ROOT]);
    t.equal(explained.code, 0);
    for (const scope of needed) t.ok(explained.stdout.includes(scope), `explain: ${scope}`);
    if (needed.length === 1) t.notOk(explained.stdout.includes(READS[0]!), 'explain: no read scope without the option');
  }
});
