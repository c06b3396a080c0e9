/**
 * RFC 7662 introspection (SECURITY.md section F): the three ways of authenticating to the real
 * authorization server, and a faulty one that answers every odd thing an authorization server
 * can answer. Inactive or odd answers are 401 invalid_token; failures of the server are 503 with
 * Retry-After; nothing reaches the upstream unless the token is active and holds the scope.
 */
import t from 'tap';
import { startAuthServer, type AuthServer } from '../../src/demo/auth-server.js';
import { accessLines, B, startTestGateway } from '../helpers/gateway.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/upstream.js';
import {
  answerWithLength, assertAuthServerDown, assertDenied, INVALID_TOKEN, insufficientScope, readText, send, startServer, until,
} from './support.js';

const READ = 'https://jans.io/scim/users.read';
const USERS = `${B}/Users`;

let auth: AuthServer;
let up: RecordingUpstream;

t.before(async () => {
  auth = await startAuthServer();
  up = answerWithLength(await startRecordingUpstream());
});
t.teardown(async () => {
  await up?.close();
  await auth?.close();
});

function introspectionConfig(introspection: Record<string, unknown>): Record<string, unknown> {
  return { upstream: { url: up.origin }, token: { introspection: { endpoint: auth.introspectionEndpoint, ...introspection } } };
}

t.test('the three authentication methods against the real authorization server', async (t) => {
  const methods: Array<[string, Record<string, unknown>]> = [
    ['client_secret_basic', { authMethod: 'client_secret_basic', clientId: auth.clientId, clientSecret: auth.clientSecret }],
    ['client_secret_post', { authMethod: 'client_secret_post', clientId: auth.clientId, clientSecret: auth.clientSecret }],
    ['bearer_token', { authMethod: 'bearer_token' }],
  ];
  for (const [name, introspection] of methods) {
    t.test(name, async (t) => {
      const gw = await startTestGateway(introspectionConfig(introspection));
      t.teardown(() => gw.close());
      const token = await auth.issueToken([READ]);
      const before = auth.counts.introspection;
      up.reset();
      const res = await send(gw.port, 'GET', USERS, { token });
      t.equal(res.status, 200, `allowed: ${res.body.slice(0, 200)}`);
      t.equal(up.requests.length, 1);
      t.equal(auth.counts.introspection - before, 1, 'introspected once');
      t.equal(auth.introspected.at(-1), token);
      // The same gateway refuses a token the AS does not know.
      up.reset();
      assertDenied(t, await send(gw.port, 'GET', USERS, { token: `unknown-${name}` }), 401, INVALID_TOKEN, up);
      // And a known token without the scope.
      const other = await auth.issueToken(['https://jans.io/scim/groups.read']);
      assertDenied(t, await send(gw.port, 'GET', USERS, { token: other }), 403, insufficientScope(READ), up);
    });
  }
});

t.test('the real server\'s iss: taken under token.issuer, refused under another issuer', async (t) => {
  const token = await auth.issueToken([READ]);
  const introspection = { endpoint: auth.introspectionEndpoint, clientId: auth.clientId, clientSecret: auth.clientSecret };
  const same = await startTestGateway({ upstream: { url: up.origin }, token: { issuer: `${auth.issuer}/`, introspection } });
  t.teardown(() => same.close());
  up.reset();
  t.equal((await send(same.port, 'GET', USERS, { token })).status, 200, 'its own issuer (written with a trailing slash)');
  t.equal(up.requests.length, 1);
  const other = await startTestGateway({ upstream: { url: up.origin }, token: { introspection: { ...introspection, issuer: 'https://jans.example' } } });
  t.teardown(() => other.close());
  up.reset();
  assertDenied(t, await send(other.port, 'GET', USERS, { token }), 401, INVALID_TOKEN, up);
  t.equal(accessLines(other.logs).at(-1)?.reason, 'wrong issuer (iss)');
});

t.test('bearer_token: an invalid token is invalid (the AS answers 401 access_denied), not a 503', async (t) => {
  const gw = await startTestGateway(introspectionConfig({ authMethod: 'bearer_token' }));
  t.teardown(() => gw.close());
  const revoked = await auth.issueToken([READ]);
  await auth.revoke(revoked);
  for (const token of ['never-issued-token', revoked]) {
    const before = auth.counts.introspection;
    up.reset();
    assertDenied(t, await send(gw.port, 'GET', USERS, { token }), 401, INVALID_TOKEN, up);
    t.equal(auth.counts.introspection - before, 1, 'the AS was asked');
  }
  // Proof the AS really answered 401 there, not active:false.
  const res = await fetch(auth.introspectionEndpoint, {
    method: 'POST', headers: { authorization: 'Bearer never-issued-token', 'content-type': 'application/x-www-form-urlencoded' }, body: 'token=never-issued-token',
  });
  t.equal(res.status, 401);
  t.same(await res.json(), { error: 'access_denied' });
});

// An AS that requires an introspection scope of the presenting token refuses the others with 403;
// one that finds the request malformed answers 400, and in this mode the token is all of the
// request that varies.
for (const code of [403, 400]) t.test(`bearer_token: a token the AS refuses to let introspect itself (${code}) is invalid, and never opens the circuit`, async (t) => {
  // An AS that requires an introspection scope of the presenting token (jans:
  // introspectionAccessTokenMustHaveIntrospectionScope) refuses the others with 403: that is the
  // token's verdict, not the gateway's credentials (it has none in this mode). Were it counted as a
  // failure, five such requests from anyone would open the circuit for every client.
  const future = Math.floor(Date.now() / 1000) + 300;
  const asked: string[] = [];
  const as = await startServer((req, res) => {
    void readText(req).then(() => {
      const token = (req.headers.authorization ?? '').replace(/^Bearer /, '');
      asked.push(token);
      if (token.startsWith('good')) {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ active: true, scope: READ, client_id: 'c', token_type: 'Bearer', exp: future }));
      } else if (token.startsWith('no-introspection')) res.writeHead(code, { 'content-type': 'application/json' }).end(code === 400 ? '{"error":"invalid_request"}' : '{"error":"access_denied"}');
      else res.writeHead(403, { 'content-type': 'application/json' }).end('{"error":"access_denied"}');
    });
  });
  t.teardown(() => as.close());
  const gw = await startTestGateway({ upstream: { url: up.origin }, token: { introspection: { endpoint: `${as.origin}/introspection`, authMethod: 'bearer_token' } } });
  t.teardown(() => gw.close());
  // Ready: the readiness probe's made-up token got the AS's 403, an answer.
  t.equal((await fetch(`${gw.adminUrl}/readyz`)).status, 200, 'ready');
  t.equal(asked.length, 1, 'the AS was probed');
  asked.length = 0;
  for (let i = 0; i < 8; i++) {
    up.reset();
    assertDenied(t, await send(gw.port, 'GET', USERS, { token: `no-introspection-scope-${i}` }), 401, INVALID_TOKEN, up);
  }
  t.equal(asked.length, 8, 'the AS was asked for each token');
  up.reset();
  const res = await send(gw.port, 'GET', USERS, { token: 'good-1' });
  t.equal(res.status, 200, `another client's valid token is served: ${res.body.slice(0, 200)}`);
  t.equal(up.requests.length, 1);
  up.reset();
  assertDenied(t, await send(gw.port, 'GET', USERS, { token: 'no-introspection-scope-0' }), 401, INVALID_TOKEN, up);
  t.equal(asked.length, 9, 'a refused token is cached as invalid (negativeTtlSeconds): not asked again');
  const errors = gw.logs.filter((l) => (JSON.parse(l) as { level?: number }).level! >= 50);
  t.same(errors, [], 'no error line about credentials this mode does not have');
});

t.test('client_secret_basic with a wrong secret: 503, and the log says why', async (t) => {
  const gw = await startTestGateway(introspectionConfig({ authMethod: 'client_secret_basic', clientId: auth.clientId, clientSecret: 'wrong-secret' }));
  t.teardown(() => gw.close());
  const token = await auth.issueToken([READ]);
  up.reset();
  assertAuthServerDown(t, await send(gw.port, 'GET', USERS, { token }), up);
  const errors = () => gw.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => (l.level as number) >= 50);
  t.ok(await until(() => errors().length > 0), 'an error line');
  t.match(JSON.stringify(errors()), /credentials/, 'that mentions the credentials');
  t.notMatch(gw.logs.join('\n'), 'wrong-secret', 'and not the secret');
  t.notMatch(gw.logs.join('\n'), token, 'nor the token');
});

/** What the faulty server answers, by token. */
interface Fault {
  status?: number;
  type?: string;
  body: string;
  delayMs?: number;
}

t.test('a faulty authorization server', async (t) => {
  const future = () => Math.floor(Date.now() / 1000) + 300;
  const ok = (extra: Record<string, unknown> = {}) => JSON.stringify({ active: true, scope: READ, client_id: 'c', token_type: 'Bearer', exp: future(), ...extra });
  const faults: Record<string, () => Fault> = {
    'good': () => ({ body: ok() }),
    'active-false': () => ({ body: JSON.stringify({ active: false }) }),
    'active-string': () => ({ body: ok({ active: 'true' }) }),
    'active-one': () => ({ body: ok({ active: 1 }) }),
    'active-null': () => ({ body: ok({ active: null }) }),
    'active-missing': () => ({ body: JSON.stringify({ scope: READ, client_id: 'c', exp: future() }) }),
    'expired': () => ({ body: ok({ exp: Math.floor(Date.now() / 1000) - 600 }) }),
    'exp-string': () => ({ body: ok({ exp: String(future()) }) }),
    'not-yet-valid': () => ({ body: ok({ nbf: future() }) }),
    // Issued a moment ago by a clock ahead of this one: within token.introspection.clockToleranceSeconds (30).
    'nbf-skew-ok': () => ({ body: ok({ nbf: Math.floor(Date.now() / 1000) + 20 }) }),
    'nbf-skew-over': () => ({ body: ok({ nbf: Math.floor(Date.now() / 1000) + 40 }) }),
    'exp-skew': () => ({ body: ok({ exp: Math.floor(Date.now() / 1000) - 20 }) }),
    // Passed 5 ms ago, with a fraction: expired from that instant, not from the next whole second.
    'exp-fraction': () => ({ body: ok({ exp: (Date.now() - 5) / 1000 }) }),
    'nbf-string': () => ({ body: ok({ nbf: String(future()) }) }),
    'refresh-token': () => ({ body: ok({ token_type: 'refresh_token' }) }),
    'no-scope': () => ({ body: JSON.stringify({ active: true, client_id: 'c', exp: future() }) }),
    'scope-array': () => ({ body: ok({ scope: [READ] }) }),
    'scope-array-other': () => ({ body: ok({ scope: ['https://jans.io/scim/users.write', `${READ}x`] }) }),
    'cnf-jkt': () => ({ body: ok({ cnf: { jkt: 'x' } }) }),
    'cnf-x5t': () => ({ body: ok({ cnf: { 'x5t#S256': 'x' } }) }),
    'x5t-top': () => ({ body: ok({ 'x5t#S256': 'bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2' }) }),
    'status-500': () => ({ status: 500, body: '{"error":"server_error"}' }),
    'status-502': () => ({ status: 502, type: 'text/plain', body: 'bad gateway' }),
    'status-302': () => ({ status: 302, body: '' }),
    'html': () => ({ type: 'text/html', body: '<html><body>Login</body></html>' }),
    'array': () => ({ body: '[{"active":true}]' }),
    'json-null': () => ({ body: 'null' }),
    'truncated': () => ({ body: '{"active":true,"scope":"' }),
    'slow': () => ({ body: ok(), delayMs: 1500 }),
    'iss-same': () => ({ body: ok({ iss: 'https://as.example' }) }),
    'iss-slash': () => ({ body: ok({ iss: 'https://as.example/' }) }),
    'iss-slashes': () => ({ body: ok({ iss: 'https://as.example//' }) }),
    'iss-other': () => ({ body: ok({ iss: 'https://evil.example' }) }),
    'iss-longer': () => ({ body: ok({ iss: 'https://as.example.evil' }) }),
    'iss-path': () => ({ body: ok({ iss: 'https://as.example/tenant' }) }),
    'iss-number': () => ({ body: ok({ iss: 7 }) }),
    'aud-one': () => ({ body: ok({ iss: 'https://as.example', aud: 'scim-api' }) }),
    'aud-list': () => ({ body: ok({ aud: ['x', 'other-api'] }) }),
    'aud-other': () => ({ body: ok({ aud: 'x' }) }),
    'aud-list-other': () => ({ body: ok({ aud: ['x', 'scim-api-2'] }) }),
    'aud-not-string': () => ({ body: ok({ aud: [1, { 'scim-api': true }] }) }),
    'aud-object': () => ({ body: ok({ aud: { 0: 'scim-api' } }) }),
  };
  const calls: string[] = [];
  let aborted = 0;
  const as = await startServer((req, res) => {
    void readText(req).then((text) => {
      const token = new URLSearchParams(text).get('token') ?? '';
      calls.push(token);
      const fault: Fault = (faults[token.replace(/-\d+$/, '')] ?? (() => ({ status: 400, body: '{"error":"invalid_request"}' })))();
      const answer = () => {
        if (res.destroyed) return;
        res.writeHead(fault.status ?? 200, { 'content-type': fault.type ?? 'application/json', ...(fault.status === 302 ? { location: '/login' } : {}) });
        res.end(fault.body);
      };
      if (fault.delayMs) {
        const timer = setTimeout(answer, fault.delayMs);
        res.on('close', () => {
          if (!res.writableEnded) aborted += 1;
          clearTimeout(timer);
        });
      } else answer();
    });
  });
  t.teardown(() => as.close());
  const gw = await startTestGateway({
    upstream: { url: up.origin },
    token: { introspection: { endpoint: `${as.origin}/introspection`, clientId: 'c', clientSecret: 's', timeoutMs: 300 } },
  });
  t.teardown(() => gw.close());

  let n = 0;
  /** One request with a fresh token of the given kind (the suffix defeats the cache). */
  async function ask(kind: string, target = USERS, port = gw.port) {
    const token = `${kind}-${++n}`;
    const before = calls.length;
    up.reset();
    const started = Date.now();
    const res = await send(port, 'GET', target, { token });
    return { res, token, asked: calls.slice(before), ms: Date.now() - started };
  }

  t.test('control: a good answer is allowed', async (t) => {
    const { res, token, asked } = await ask('good');
    t.equal(res.status, 200);
    t.equal(up.requests.length, 1);
    t.same(asked, [token], 'the faulty server was asked');
  });

  t.test('I01, I02: only the boolean true is active', async (t) => {
    for (const kind of ['active-false', 'active-string', 'active-one', 'active-null', 'active-missing']) {
      const { res, asked } = await ask(kind);
      assertDenied(t, res, 401, INVALID_TOKEN, up);
      t.equal(asked.length, 1, `${kind}: asked`);
    }
  });

  t.test('I03 active but exp in the past', async (t) => {
    assertDenied(t, (await ask('expired')).res, 401, INVALID_TOKEN, up);
    assertDenied(t, (await ask('exp-fraction')).res, 401, INVALID_TOKEN, up);
  });

  t.test('active but not yet valid, or with a time that is not a NumericDate', async (t) => {
    for (const kind of ['not-yet-valid', 'exp-string', 'nbf-string', 'nbf-skew-over']) assertDenied(t, (await ask(kind)).res, 401, INVALID_TOKEN, up);
  });

  t.test('the clocks may differ by clockToleranceSeconds for nbf; an exp passed here is refused (I03)', async (t) => {
    const { res } = await ask('nbf-skew-ok');
    t.equal(res.status, 200, 'nbf-skew-ok: the server\'s active answer is taken');
    t.equal(up.requests.length, 1, 'nbf-skew-ok: forwarded');
    // 20 s past by this clock, within the tolerance: no leeway lengthens a token's life.
    assertDenied(t, (await ask('exp-skew')).res, 401, INVALID_TOKEN, up);
  });

  t.test('I04 active but a refresh token', async (t) => {
    assertDenied(t, (await ask('refresh-token')).res, 401, INVALID_TOKEN, up);
  });

  t.test('I05 active without scope: 403 on a protected route, public routes unaffected', async (t) => {
    assertDenied(t, (await ask('no-scope')).res, 403, insufficientScope(READ), up);
    const pub = await ask('no-scope', `${B}/Schemas`);
    t.equal(pub.res.status, 200, 'public');
    t.same(pub.asked, [], 'no token work on a public route');
  });

  t.test('I06 scope as a JSON array: supported, exact match', async (t) => {
    const { res } = await ask('scope-array');
    t.equal(res.status, 200);
    t.equal(up.requests.length, 1);
    assertDenied(t, (await ask('scope-array-other')).res, 403, insufficientScope(READ), up);
  });

  t.test('rule 9: a sender-constrained token (cnf) is refused', async (t) => {
    assertDenied(t, (await ask('cnf-jkt')).res, 401, INVALID_TOKEN, up);
    assertDenied(t, (await ask('cnf-x5t')).res, 401, INVALID_TOKEN, up);
    // The certificate binding as jans writes it into JWT access tokens, should a script copy it here.
    assertDenied(t, (await ask('x5t-top')).res, 401, INVALID_TOKEN, up);
  });

  t.test('I07, I08: failures of the server are 503 with Retry-After', async (t) => {
    for (const kind of ['status-500', 'status-502', 'status-302', 'html', 'array', 'json-null', 'truncated', 'slow']) {
      const { res, asked, ms } = await ask(kind);
      assertAuthServerDown(t, res, up);
      t.equal(asked.length, 1, `${kind}: the server was really asked (not a circuit already open)`);
      if (kind === 'slow') {
        t.ok(ms < 1200, `answered within the budget, not after the slow server (${ms} ms)`);
        t.ok(await until(() => aborted === 1), 'the in-flight introspection was aborted');
      }
      // A good answer between failures keeps the circuit breaker closed, so each case is seen.
      t.equal((await ask('good')).res.status, 200, 'the next good token is still allowed');
    }
  });

  t.test('iss and aud of an active answer: checked when the gateway is told what to accept', async (t) => {
    const endpoint = `${as.origin}/introspection`;
    // token.issuer is what an answer's iss must be; introspection.issuer, when set, takes its place.
    const byIssuer = await startTestGateway({
      upstream: { url: up.origin },
      token: { issuer: 'https://as.example', introspection: { endpoint, clientId: 'c', clientSecret: 's' } },
    });
    t.teardown(() => byIssuer.close());
    const byKeys = await startTestGateway({
      upstream: { url: up.origin },
      token: { issuer: 'https://elsewhere.example', introspection: { endpoint, clientId: 'c', clientSecret: 's', issuer: 'https://as.example/', audience: ['scim-api', 'other-api'] } },
    });
    t.teardown(() => byKeys.close());
    const allowed = async (kind: string, port: number, why: string) => {
      const { res, asked } = await ask(kind, USERS, port);
      t.equal(res.status, 200, `${kind}: ${why}`);
      t.equal(up.requests.length, 1, `${kind}: forwarded`);
      t.equal(asked.length, 1, `${kind}: asked`);
    };
    const refused = async (kind: string, port: number) => {
      const { res, asked } = await ask(kind, USERS, port);
      assertDenied(t, res, 401, INVALID_TOKEN, up);
      t.equal(asked.length, 1, `${kind}: asked (refused on its answer)`);
    };

    // Nothing configured (the gateway above): neither is read.
    await allowed('iss-other', gw.port, 'no issuer configured: iss not read');
    await allowed('aud-other', gw.port, 'no audience configured: aud not read');

    for (const kind of ['iss-same', 'iss-slash', 'good']) await allowed(kind, byIssuer.port, 'the issuer, a trailing slash aside, or no iss at all (RFC 7662: optional)');
    // One trailing slash names the same server; two name a path.
    for (const kind of ['iss-other', 'iss-longer', 'iss-path', 'iss-number', 'iss-slashes']) await refused(kind, byIssuer.port);
    await allowed('aud-other', byIssuer.port, 'no audience configured');

    for (const kind of ['aud-one', 'aud-list']) await allowed(kind, byKeys.port, 'one of the audiences, as a string or in a list');
    for (const kind of ['good', 'aud-other', 'aud-list-other', 'aud-not-string', 'aud-object', 'iss-other']) await refused(kind, byKeys.port);
    // The access line says which member was wrong.
    const reasons = accessLines(byKeys.logs).map((l) => l.reason);
    t.ok(reasons.includes('no audience (aud)'), 'an answer without aud');
    t.ok(reasons.includes('wrong audience (aud)'), 'an answer with another aud');
    t.ok(reasons.includes('wrong issuer (iss)'), 'an answer from another issuer');
  });
});
