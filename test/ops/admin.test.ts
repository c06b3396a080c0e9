// The admin listener: /healthz, /readyz before and after the JWKS is reachable, /metrics after
// traffic (labels are operation ids and fixed words, never raw paths or tokens).
import { createServer } from 'node:http';
import t from 'tap';
import { request } from 'undici';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { startAuthServer } from '../../src/demo/auth-server.js';
import { B, startTestGateway } from '../helpers/gateway.js';
import { rawRequest } from '../helpers/raw.js';
import { freePort } from '../helpers/redis.js';
import { startRecordingUpstream } from '../helpers/upstream.js';

const READ = 'https://jans.io/scim/users.read';

async function getText(url: string, headers: Record<string, string> = {}) {
  const r = await request(url, { headers });
  return { status: r.statusCode, body: await r.body.text() };
}

t.test('/readyz is 503 until the JWKS is reachable, then 200, without a restart', async (t) => {
  const up = await startRecordingUpstream();
  const jwksPort = await freePort();
  const issuer = 'https://issuer.test';
  const gw = await startTestGateway({ upstream: { url: up.origin }, token: { jwt: { jwksUri: `http://127.0.0.1:${jwksPort}/jwks`, issuer, cooldownSeconds: 1 } } });
  const { publicKey, privateKey } = await generateKeyPair('RS256');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
  const jwks = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ keys: [jwk] }));
  });
  t.teardown(async () => {
    await gw.close();
    jwks.close();
    await up.close();
  });
  t.equal((await getText(`${gw.adminUrl}/healthz`)).status, 200, 'alive');
  t.equal((await getText(`${gw.adminUrl}/readyz`)).status, 503, 'not ready: no JWKS');
  const token = await new SignJWT({ scope: READ, client_id: 'c1' }).setProtectedHeader({ alg: 'RS256', kid: 'k1', typ: 'JWT' })
    .setIssuer(issuer).setIssuedAt().setExpirationTime('5m').sign(privateKey);
  const refused = await getText(`${gw.url}${B}/Users`, { authorization: `Bearer ${token}` });
  t.equal(refused.status, 503, 'JWT requests fail closed while the JWKS is unreachable');
  t.equal(up.requests.length, 0, 'nothing forwarded');
  await new Promise<void>((r) => jwks.listen(jwksPort, '127.0.0.1', r));
  await new Promise((r) => setTimeout(r, 1100)); // jose's cooldown after the failed fetch
  t.equal((await getText(`${gw.adminUrl}/readyz`)).status, 200, 'ready once the JWKS answers');
  t.equal((await getText(`${gw.url}${B}/Users`, { authorization: `Bearer ${token}` })).status, 200, 'served');
  t.equal(up.requests.length, 1);
});

t.test('/metrics after traffic', async (t) => {
  const auth = await startAuthServer();
  const up = await startRecordingUpstream();
  const gw = await startTestGateway({ upstream: { url: up.origin }, token: { introspection: { endpoint: auth.introspectionEndpoint, clientId: auth.clientId, clientSecret: auth.clientSecret } } });
  t.teardown(async () => {
    await gw.close();
    await up.close();
    await auth.close();
  });
  t.equal((await getText(`${gw.adminUrl}/readyz`)).status, 200, 'ready: the introspection endpoint answered');
  const token = await auth.issueToken([READ]);
  await getText(`${gw.url}${B}/Users?secret-query=1`, { authorization: `Bearer ${token}` });
  await getText(`${gw.url}${B}/Users`, { authorization: `Bearer ${token}` });
  await getText(`${gw.url}${B}/Users/some-raw-id-123`);
  await getText(`${gw.url}${B}/Nope/raw-path-xyz`);
  t.equal((await request(`${gw.url}${B}/Users/raw-method-77`, { method: 'POST', headers: { authorization: `Bearer ${token}` } })).statusCode, 405, 'POST on a user: not in the table');
  t.equal((await request(`${gw.url}${B}/Users`, { method: 'OPTIONS' })).statusCode, 204);
  // The HTTP parser's refusal (a header line without a colon) is an answer of the proxy port too.
  t.equal((await rawRequest(gw.port, `GET ${B}/Users HTTP/1.1\r\nHost: scim.example\r\nno colon here\r\n\r\n`)).status, 400, 'a head the parser refuses');
  t.same(up.requests.map((r) => r.url), [`${B}/Users?secret-query=1`, `${B}/Users`], 'only the two allowed GETs reached the upstream');
  const { status, body } = await getText(`${gw.adminUrl}/metrics`);
  t.equal(status, 200);
  t.match(body, /scopegate_requests_total\{operation="get-users",decision="allow",status="200"\} 2/);
  t.match(body, /scopegate_requests_total\{operation="get-user-by-id",decision="deny",status="401"\} 1/);
  t.match(body, /scopegate_requests_total\{operation="none",decision="deny",status="404"\} 1/);
  t.match(body, /scopegate_requests_total\{operation="\/jans-scim\/restv1\/v2\/Users\/\{id\}",decision="deny",status="405"\} 1/, '405: labelled by the path template');
  t.match(body, /scopegate_requests_total\{operation="\/jans-scim\/restv1\/v2\/Users",decision="allow",status="204"\} 1/, 'OPTIONS: labelled by the path template');
  t.match(body, /scopegate_token_cache_total\{result="miss"\} 1/);
  t.match(body, /scopegate_token_cache_total\{result="hit"\} 1/);
  t.match(body, /scopegate_token_cache_entries 1/);
  t.match(body, /scopegate_introspection_requests_total\{outcome="active"\} 1/);
  t.match(body, /scopegate_introspection_duration_seconds_count 1/);
  t.match(body, /scopegate_requests_total\{operation="none",decision="deny",status="400"\} 1/, 'the parser\'s 400');
  t.match(body, /scopegate_request_duration_seconds_count\{decision="allow"\} 3/, 'two GETs and the OPTIONS');
  t.match(body, /scopegate_request_duration_seconds_count\{decision="deny"\} 4/, 'the 401, 404, 405 and the parser\'s 400');
  t.match(body, /scopegate_upstream_errors_total/);
  t.notMatch(body, /some-raw-id-123|raw-path-xyz|raw-method-77|secret-query/, 'no raw path or query in labels');
  t.notOk(body.includes(token), 'no token in metrics');
  const unprefixed = body.split('\n').filter((line) => line && !line.startsWith('#') && !line.startsWith('scopegate_'));
  t.same(unprefixed, [], 'every metric name starts scopegate_');
});

t.test('the admin listener answers wrong methods 405 with Allow, and a purge it cannot read 400 or 415 saying what it takes', async (t) => {
  const gw = await startTestGateway({ upstream: { url: 'http://127.0.0.1:1' }, token: { jwt: { jwksUri: 'http://127.0.0.1:1/jwks', issuer: 'https://issuer.test' } } });
  t.teardown(() => gw.close());
  const call = async (method: string, path: string, body?: string, contentType?: string) => {
    const r = await request(`${gw.adminUrl}${path}`, { method, ...(body === undefined ? {} : { body }), headers: contentType ? { 'content-type': contentType } : {} });
    return { status: r.statusCode, allow: r.headers.allow, body: await r.body.text() };
  };
  for (const [method, path, allow] of [['POST', '/healthz', 'GET, HEAD'], ['DELETE', '/readyz', 'GET, HEAD'], ['PUT', '/metrics', 'GET, HEAD'], ['GET', '/cache/purge', 'POST']] as const) {
    const r = await call(method, path);
    t.equal(r.status, 405, `${method} ${path}: 405`);
    t.equal(r.allow, allow, `${method} ${path}: Allow`);
  }
  t.equal((await call('GET', '/nope')).status, 404, 'an unknown path: 404');
  t.equal((await call('GET', '/__proto__')).status, 404, 'a name every object has: 404');

  const purge = (body: string | undefined, contentType?: string) => call('POST', '/cache/purge', body, contentType);
  const wants = /exactly one of token, fingerprint, clientId/;
  const cases: Array<[name: string, body: string | undefined, contentType: string | undefined, status: number]> = [
    ['curl -d without a content type (form-encoded)', '{"token":"abc"}', 'application/x-www-form-urlencoded', 415],
    ['text/plain', '{"token":"abc"}', 'text/plain', 415],
    ['invalid JSON', '{"token":"abc"', 'application/json', 400],
    ['an empty JSON body', '', 'application/json', 400],
    ['no body', undefined, undefined, 400],
    ['two selectors', '{"token":"abc","clientId":"c"}', 'application/json', 400],
    ['a selector that is not a string', '{"token":1}', 'application/json', 400],
    // Read last-wins, it would purge the second and say nothing of the first.
    ['a selector named twice', '{"token":"abc","token":"def"}', 'application/json', 400],
  ];
  for (const [name, body, contentType, status] of cases) {
    const r = await purge(body, contentType);
    t.equal(r.status, status, `${name}: ${status}`);
    t.match(JSON.parse(r.body), { error: wants }, `${name}: the error says what the purge takes`);
  }
  t.same(JSON.parse((await purge('{"clientId":"c"}', 'application/json; charset=utf-8')).body), { purged: 0 }, 'JSON with a charset is fine');
  t.same(JSON.parse((await purge('\uFEFF{"clientId":"c"}', 'application/json')).body), { purged: 0 }, 'JSON after a byte order mark (PowerShell writes one) is fine');
  t.notMatch((await call('GET', '/metrics')).body, /^scopegate_redis_events_total\{/m, 'without Redis, no Redis event is counted');
});
