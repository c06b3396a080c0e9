/**
 * Bearer extraction over raw TCP (SECURITY.md section D, T01-T07, rule 5), and the headers the
 * upstream receives (rule 6): the canonical Authorization, the gateway's own identity headers,
 * forwarding headers rewritten, client-sent copies of either removed.
 */
import t, { type Test } from 'tap';
import type { AuthServer } from '../../src/demo/auth-server.js';
import { B, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { http11, rawRequest, type RawResponse } from '../helpers/raw.js';
import type { Recorded, RecordingUpstream } from '../helpers/upstream.js';
import { assertDenied, BARE_CHALLENGE, type GatewayStack, INVALID_REQUEST, INVALID_TOKEN, startGatewayStack, tokenConfig } from './support.js';

const READ = 'https://jans.io/scim/users.read';
const WRITE = 'https://jans.io/scim/users.write';
const USERS = `${B}/Users`;

let auth: AuthServer;
let up: RecordingUpstream;
let gw: TestGateway;
let stack: GatewayStack | undefined;
let token: string;
let jwt: string;

t.before(async () => {
  ({ auth, up, gw } = stack = await startGatewayStack());
  [token, jwt] = await Promise.all([auth.issueToken([READ, WRITE]), auth.issueToken([READ], { jwt: true })]);
});
t.teardown(() => stack?.close());

/** GET B/Users with exactly these header lines, on `port` (the main gateway by default). */
function get(headers: string[], target = USERS, port = gw.port): Promise<RawResponse> {
  up.reset();
  return rawRequest(port, http11('GET', target, headers));
}

/** The `detail` of a SCIM error answer. */
function detailOf(res: RawResponse): unknown {
  return (JSON.parse(res.body) as { detail?: unknown }).detail;
}

/** Values of one header as the upstream received them, duplicates kept. */
function rawValues(req: Recorded | undefined, name: string): string[] {
  const out: string[] = [];
  const raw = req?.rawHeaders ?? [];
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === name) out.push(raw[i + 1]!);
  return out;
}

function assertForwarded(t: Test, res: RawResponse, authorization: string | undefined): Recorded | undefined {
  t.equal(res.status, 200, `forwarded: ${res.body.slice(0, 160)}`);
  t.equal(up.requests.length, 1, 'one request upstream');
  const got = up.requests[0];
  t.same(rawValues(got, 'authorization'), authorization === undefined ? [] : [authorization], 'Authorization upstream');
  return got;
}

t.test('T01 no Authorization header: 401 with a bare challenge', async (t) => {
  assertDenied(t, await get([]), 401, BARE_CHALLENGE, up);
  assertDenied(t, await get(['Authorization:']), 401, BARE_CHALLENGE, up);
});

t.test('T02 another scheme is no bearer token', async (t) => {
  assertDenied(t, await get(['Authorization: Basic dXNlcjpwYXNz']), 401, BARE_CHALLENGE, up);
  assertDenied(t, await get([`Authorization: Token ${token}`]), 401, BARE_CHALLENGE, up);
  assertDenied(t, await get([`Authorization: Bearertoken ${token}`]), 401, BARE_CHALLENGE, up);
});

t.test('T03 the scheme is case-insensitive; the upstream gets the canonical form', async (t) => {
  for (const scheme of ['bearer', 'BEARER', 'bEaReR', 'Bearer']) {
    assertForwarded(t, await get([`Authorization: ${scheme} ${token}`]), `Bearer ${token}`);
  }
});

t.test('T04 several spaces are accepted and canonicalised', async (t) => {
  assertForwarded(t, await get([`Authorization: Bearer  ${token}`]), `Bearer ${token}`);
  assertForwarded(t, await get([`Authorization: bearer    ${token}`]), `Bearer ${token}`);
});

t.test('T05 a tab is not SP', async (t) => {
  assertDenied(t, await get([`Authorization: Bearer\t${token}`]), 401, INVALID_REQUEST, up);
});

t.test('T06 anything but one b64token', async (t) => {
  for (const value of [`Bearer ${token} extra`, `Bearer "${token}"`, `Bearer ${token},Bearer ${token}`, `Bearer ${token}, Bearer ${token}`, `Bearer ${token};x`, `Bearer ${token}=x`]) {
    assertDenied(t, await get([`Authorization: ${value}`]), 401, INVALID_REQUEST, up);
  }
});

t.test('T07 an empty bearer token', async (t) => {
  for (const value of ['Bearer', 'Bearer ', 'Bearer    ', 'bearer']) {
    const res = await get([`Authorization: ${value}`]);
    assertDenied(t, res, 401, res.headers['www-authenticate'] ?? '(none)', up);
    t.match(res.headers['www-authenticate'] ?? '', /^Bearer realm="scopegate"(, error="invalid_request")?$/, `challenge for "${value}"`);
  }
});

t.test('rule 5: exactly one credential in exactly one place', async (t) => {
  t.test('two Authorization headers: 400 invalid_request', async (t) => {
    assertDenied(t, await get([`Authorization: Bearer ${token}`, `Authorization: Bearer ${token}`]), 400, INVALID_REQUEST, up);
    assertDenied(t, await get([`Authorization: Bearer ${token}`, 'Authorization: Basic dXNlcjpwYXNz']), 400, INVALID_REQUEST, up);
    assertDenied(t, await get(['Authorization: Basic dXNlcjpwYXNz', `authorization: Bearer ${token}`]), 400, INVALID_REQUEST, up);
  });

  t.test('two Authorization headers on a public operation: 400 too (never read there, but ambiguous)', async (t) => {
    const two = await get(['Authorization: Bearer a', 'Authorization: Bearer b'], `${B}/Schemas`);
    assertDenied(t, two, 400, INVALID_REQUEST, up);
    t.equal(detailOf(two), 'The request carries more than one Authorization header');
    assertDenied(t, await get([`Authorization: Bearer ${token}`, 'Authorization: Basic dXNlcjpwYXNz'], `${B}/ServiceProviderConfig`), 400, INVALID_REQUEST, up);
    assertForwarded(t, await get(['Authorization: Bearer a'], `${B}/Schemas`), undefined);
  });

  t.test('a token in the query and no header: 401', async (t) => {
    assertDenied(t, await get([], `${USERS}?access_token=${token}`), 401, BARE_CHALLENGE, up);
  });

  // SECURITY.md rule 5: "a token in the query or the body too: 400/401" (RFC 6750 section 2:
  // a client MUST NOT use more than one method to transmit the token).
  t.test('a token in the query as well as the header: refused', async (t) => {
    // The name percent-encoded anywhere is the same parameter to a server that decodes it.
    for (const query of [`access_token=${token}`, `count=1&access_token=${token}`, 'access_token=other', `%61ccess_token=${token}`,
      `access_to%6Ben=${token}`, `count=1&%61ccess%5Ftoken=${token}`, `access%5ftoken=${token}`]) {
      const res = await get([`Authorization: Bearer ${token}`], `${USERS}?${query}`);
      assertDenied(t, res, res.status === 401 ? 401 : 400, INVALID_REQUEST, up);
      t.equal(detailOf(res), 'A token may only be sent in the Authorization header', 'the detail names the fault, not the header');
    }
  });

  t.test('a token in a form body as well as the header: refused', async (t) => {
    const body = `access_token=${token}`;
    up.reset();
    const res = await rawRequest(gw.port, http11('POST', `${USERS}/.search`, [`Authorization: Bearer ${token}`, 'Content-Type: application/x-www-form-urlencoded'], body));
    assertDenied(t, res, res.status === 401 ? 401 : 400, INVALID_REQUEST, up);
    t.equal(detailOf(res), 'A token may only be sent in the Authorization header');
  });

  // A public operation reads no token, but one in the query would reach the upstream and its
  // request log all the same: refused, with or without a header (found by a black-box audit).
  t.test('a token in the query of a public operation: 400, header or not', async (t) => {
    for (const query of [`access_token=${token}`, `x=1&%61ccess_token=${token}`]) {
      for (const headers of [[], [`Authorization: Bearer ${token}`]]) {
        assertDenied(t, await get(headers, `${B}/Schemas?${query}`), 400, INVALID_REQUEST, up);
      }
    }
    // Control: another query is forwarded as it came.
    const got = assertForwarded(t, await get([`Authorization: Bearer ${token}`], `${B}/Schemas?filter=x`), undefined);
    t.equal(got?.url, `${B}/Schemas?filter=x`);
  });

  t.test('a form body beside an Authorization header on a public operation: 400', async (t) => {
    const body = `access_token=${token}`;
    const form = (headers: string[]) => rawRequest(gw.port, http11('GET', `${B}/Schemas`, [...headers, 'Content-Type: application/x-www-form-urlencoded'], body));
    up.reset();
    assertDenied(t, await form([`Authorization: Bearer ${token}`]), 400, INVALID_REQUEST, up);
    // Without a header there is no second place: a public operation's body is the upstream's.
    up.reset();
    const alone = await form([]);
    t.equal(alone.status, 200, 'a form body alone on a public operation is forwarded');
    t.equal(up.requests.length, 1);
  });

  t.test('a token over 4096 characters: 401 without any introspection call', async (t) => {
    const before = auth.counts.introspection;
    const res = await get([`Authorization: Bearer ${'A'.repeat(4097)}`]);
    assertDenied(t, res, 401, res.headers['www-authenticate'] ?? '(none)', up);
    t.match(res.headers['www-authenticate'] ?? '', /^Bearer realm="scopegate", error="invalid_(request|token)"$/);
    t.equal(auth.counts.introspection, before, 'the authorization server was not asked');
    // Control: 4096 is the limit, not less; the token is unknown to the AS, so it is asked and refuses it.
    assertDenied(t, await get([`Authorization: Bearer ${'A'.repeat(4096)}`]), 401, INVALID_TOKEN, up);
    t.equal(auth.counts.introspection, before + 1, 'a token at the limit is introspected');
  });
});

t.test('identity headers', async (t) => {
  const spoofed = ['X-Scopegate-Client-Id: admin', 'X-Scopegate-Subject: root', `X-Scopegate-Scopes: ${READ} ${WRITE} https://jans.io/scim/bulk`, 'X-Scopegate-Admin: yes'];

  t.test('added from the validated token, client copies removed (opaque)', async (t) => {
    const got = assertForwarded(t, await get([`Authorization: Bearer ${token}`, ...spoofed]), `Bearer ${token}`);
    t.same(rawValues(got, 'x-scopegate-client-id'), [auth.clientId], 'the client id of the token');
    t.same(new Set(rawValues(got, 'x-scopegate-scopes').join(' ').split(' ')), new Set([READ, WRITE]), 'the scopes of the token');
    t.equal(rawValues(got, 'x-scopegate-scopes').length, 1, 'one scopes header');
    t.same(rawValues(got, 'x-scopegate-subject'), [], 'no subject: a client_credentials token has none, and the spoofed one is gone');
    t.same(rawValues(got, 'x-scopegate-admin'), [], 'other x-scopegate-* headers removed');
  });

  t.test('the subject of a JWT', async (t) => {
    const got = assertForwarded(t, await get([`Authorization: Bearer ${jwt}`, ...spoofed]), `Bearer ${jwt}`);
    t.same(rawValues(got, 'x-scopegate-subject'), [auth.clientId], 'sub of the JWT');
    t.same(rawValues(got, 'x-scopegate-client-id'), [auth.clientId]);
    t.same(rawValues(got, 'x-scopegate-scopes'), [READ]);
  });

  t.test('client copies removed on a public operation', async (t) => {
    const got = assertForwarded(t, await get(spoofed, `${B}/Schemas`), undefined);
    for (const name of ['x-scopegate-client-id', 'x-scopegate-subject', 'x-scopegate-scopes', 'x-scopegate-admin']) t.same(rawValues(got, name), [], name);
  });

  t.test('identityHeaders: false adds none and still removes client copies', async (t) => {
    const quiet = await startTestGateway({ upstream: { url: up.origin, identityHeaders: false }, token: tokenConfig(auth) });
    t.teardown(() => quiet.close());
    const got = assertForwarded(t, await get([`Authorization: Bearer ${token}`, ...spoofed], USERS, quiet.port), `Bearer ${token}`);
    const names = (got?.rawHeaders ?? []).filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
    t.same(names.filter((n) => n.startsWith('x-scopegate-')), [], 'no x-scopegate-* header at all');
  });
});

t.test('upstream.forwardAuthorization: false strips Authorization', async (t) => {
  const strip = await startTestGateway({ upstream: { url: up.origin, forwardAuthorization: false }, token: tokenConfig(auth) });
  t.teardown(() => strip.close());
  const got = assertForwarded(t, await get([`Authorization: bearer  ${token}`], USERS, strip.port), undefined);
  t.same(rawValues(got, 'x-scopegate-client-id'), [auth.clientId], 'identity still passed on');
  const pub = assertForwarded(t, await get([`Authorization: Bearer ${token}`], `${B}/Schemas`, strip.port), undefined);
  t.ok(pub, 'not on a public operation either');
});

t.test('forwarding and override headers sent by the client are replaced or removed', async (t) => {
  const sent = [
    'X-Forwarded-For: 6.6.6.6', 'X-Forwarded-Host: evil.example', 'X-Forwarded-Proto: https', 'X-Forwarded-Port: 443',
    'X-Forwarded-Server: evil.example', 'Forwarded: for=6.6.6.6;host=evil.example;proto=https', 'X-Real-IP: 6.6.6.6',
    'X-Proxied-Https: on', 'Proxy-Ssl-Id: abc', 'Proxy-Auth-Cert: abc', 'X-HTTP-Method-Override: DELETE', 'X-HTTP-Method: DELETE',
    'X-Method-Override: DELETE', 'X-Original-Method: DELETE',
    // identities and certificates other proxies assert
    'Remote-User: admin', 'X-Remote-User: admin', 'X-Authenticated-User: admin', 'X-Proxy-User: admin', 'X-User: admin',
    'X-Scim-Client-Id: admin-client', 'X-Scim-Scopes: https://jans.io/scim/all-resources', 'X-Consumer-Username: admin',
    'X-Auth-Request-User: admin', 'X-OAuth-Client-ID: admin-client', 'X-Authenticated-Scope: https://jans.io/scim/all-resources',
    'X-Client-Cert: abc', 'X-SSL-Cert: abc', 'SSL_CLIENT_CERT: abc', 'Front-End-Https: on', 'X-Url-Scheme: https',
    'X-Amzn-Oidc-Identity: admin', 'X-MS-Client-Principal-Name: admin', 'X-Goog-Authenticated-User-Email: admin@example.org',
    'X-Auth-User: admin', 'X-WEBAUTH-USER: admin', 'X-Roles: admin', 'X-Scopes: https://jans.io/scim/all-resources',
    'X-Access-Token: abc', 'X-ARR-ClientCert: abc', 'Ssl-Client-S-Dn: CN=admin', 'DPoP: abc',
  ];
  for (const [what, headers, target] of [
    ['protected', [`Authorization: Bearer ${token}`, ...sent], USERS],
    ['public', sent, `${B}/ServiceProviderConfig`],
  ] as const) {
    const got = assertForwarded(t, await get([...headers], target), what === 'protected' ? `Bearer ${token}` : undefined);
    t.same(rawValues(got, 'x-forwarded-for'), ['127.0.0.1'], `${what}: X-Forwarded-For is the peer address`);
    t.same(rawValues(got, 'x-forwarded-proto'), ['http'], `${what}: X-Forwarded-Proto is the listener's`);
    t.same(rawValues(got, 'x-forwarded-host'), ['127.0.0.1'], `${what}: X-Forwarded-Host is the Host received`);
    for (const name of ['x-forwarded-port', 'x-forwarded-server', 'forwarded', 'x-real-ip', 'x-proxied-https', 'proxy-ssl-id', 'proxy-auth-cert',
      'x-http-method-override', 'x-http-method', 'x-method-override', 'x-original-method', 'remote-user', 'x-remote-user',
      'x-authenticated-user', 'x-proxy-user', 'x-user', 'x-scim-client-id', 'x-scim-scopes', 'x-consumer-username', 'x-auth-request-user',
      'x-oauth-client-id', 'x-authenticated-scope', 'x-client-cert', 'x-ssl-cert', 'ssl_client_cert', 'front-end-https', 'x-url-scheme',
      'x-amzn-oidc-identity', 'x-ms-client-principal-name', 'x-goog-authenticated-user-email', 'x-auth-user', 'x-webauth-user', 'x-roles',
      'x-scopes', 'x-access-token', 'x-arr-clientcert', 'ssl-client-s-dn', 'dpop']) {
      t.same(rawValues(got, name), [], `${what}: ${name} removed`);
    }
    t.equal(got?.method, 'GET', `${what}: the method checked is the method forwarded`);
  }
});
