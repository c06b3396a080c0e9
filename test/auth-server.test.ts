import t from 'tap';
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify, SignJWT, importJWK } from 'jose';
import { SCIM_SCOPES, startAuthServer, type AuthServer } from '../src/demo/auth-server.js';

type Introspection = Record<string, unknown> & { active: boolean; scope?: string };

async function introspect(
  as: AuthServer,
  token: string,
  auth: 'basic' | 'post' | { bearer: string },
): Promise<{ status: number; body: Introspection }> {
  const form = new URLSearchParams({ token });
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' };
  if (auth === 'basic') {
    headers.authorization = `Basic ${Buffer.from(`${as.clientId}:${as.clientSecret}`).toString('base64')}`;
  } else if (auth === 'post') {
    form.set('client_id', as.clientId);
    form.set('client_secret', as.clientSecret);
  } else {
    headers.authorization = `Bearer ${auth.bearer}`;
  }
  const res = await fetch(as.introspectionEndpoint, { method: 'POST', headers, body: form.toString() });
  return { status: res.status, body: (await res.json()) as Introspection };
}

t.test('jans-like authorization server', async (t) => {
  const as = await startAuthServer();
  t.teardown(() => as.close());
  const read = ['https://jans.io/scim/users.read', 'https://jans.io/scim/groups.read'];

  t.test('layout and discovery', async (t) => {
    t.match(as.issuer, /^http:\/\/127\.0\.0\.1:\d+$/);
    t.equal(SCIM_SCOPES.length, 10);
    const disco = (await (await fetch(`${as.issuer}/.well-known/openid-configuration`)).json()) as Record<string, unknown>;
    t.equal(disco.issuer, as.issuer);
    t.equal(disco.token_endpoint, `${as.issuer}/jans-auth/restv1/token`);
    t.equal(disco.introspection_endpoint, `${as.issuer}/jans-auth/restv1/introspection`);
    t.equal(disco.jwks_uri, `${as.issuer}/jans-auth/restv1/jwks`);
    t.equal(disco.revocation_endpoint, `${as.issuer}/jans-auth/restv1/revoke`);
  });

  t.test('opaque token introspects active with each auth method', async (t) => {
    const token = await as.issueToken(read);
    t.notMatch(token, /\./, 'opaque, not a JWT');
    const bearer = await as.issueToken(['https://jans.io/scim/bulk']);
    for (const auth of ['basic', 'post', { bearer }] as const) {
      const { status, body } = await introspect(as, token, auth);
      t.equal(status, 200, `status with ${JSON.stringify(auth)}`);
      t.equal(body.active, true);
      t.equal(body.scope, read.join(' '));
      t.equal(body.client_id, as.clientId);
      t.equal(body.token_type, 'Bearer');
      t.type(body.exp, 'number');
      t.type(body.iat, 'number');
      t.ok((body.exp as number) - (body.iat as number) === 300, 'default ttl 300s');
    }
  });

  t.test('scopes the client does not hold are dropped', async (t) => {
    const small = await startAuthServer({ scopes: [read[0] as string], clientSecret: 's3cr3t', accessTokenTtlSeconds: 60 });
    t.teardown(() => small.close());
    t.equal(small.clientSecret, 's3cr3t');
    const token = await small.issueToken(read);
    const { body } = await introspect(small, token, 'basic');
    t.equal(body.scope, read[0]);
    t.equal((body.exp as number) - (body.iat as number), 60);
  });

  t.test('GET with the token in the query works too (jans accepts it)', async (t) => {
    const token = await as.issueToken(read);
    const res = await fetch(`${as.introspectionEndpoint}?token=${encodeURIComponent(token)}`, {
      headers: { authorization: `Bearer ${token}` },
    });
    t.equal(res.status, 200);
    const body = (await res.json()) as Introspection;
    t.equal(body.active, true);
    t.equal(body.scope, read.join(' '));
    t.equal(as.introspected.at(-1), token);
  });

  t.test('bearer_token introspection with an invalid bearer -> 401 access_denied', async (t) => {
    const token = await as.issueToken(read);
    const { status, body } = await introspect(as, token, { bearer: 'not-a-token' });
    t.equal(status, 401);
    t.same(body, { error: 'access_denied' });
  });

  t.test('unknown token -> active:false', async (t) => {
    const { status, body } = await introspect(as, 'nope', 'basic');
    t.equal(status, 200);
    t.same(body, { active: false });
  });

  t.test('JWT access token verifies against the remote JWKS', async (t) => {
    const jwt = await as.issueToken(read, { jwt: true });
    const { payload, protectedHeader } = await jwtVerify(jwt, createRemoteJWKSet(new URL(as.jwksUri)), {
      issuer: as.issuer,
      audience: as.jwtAudience,
    });
    t.equal(protectedHeader.alg, 'RS256');
    t.equal(protectedHeader.kid, (await as.signingKey()).kid);
    t.equal(payload.scope, read.join(' '));
    t.equal(payload.client_id, as.clientId);

    const all = await as.issueToken([...SCIM_SCOPES], { jwt: true });
    const p2 = await jwtVerify(all, createRemoteJWKSet(new URL(as.jwksUri)), { issuer: as.issuer });
    t.equal(p2.payload.scope, SCIM_SCOPES.join(' '));

    // a JWT access token is also accepted as bearer_token for introspection
    const opaque = await as.issueToken(read);
    const { status, body } = await introspect(as, opaque, { bearer: jwt });
    t.equal(status, 200);
    t.equal(body.active, true);
  });

  t.test('signingKey can forge tokens the JWKS accepts', async (t) => {
    const { privateJwk, kid } = await as.signingKey();
    const forged = await new SignJWT({ scope: 'x' })
      .setProtectedHeader({ alg: 'RS256', kid })
      .setIssuer(as.issuer)
      .setExpirationTime('1m')
      .sign(await importJWK(privateJwk, 'RS256'));
    const { payload } = await jwtVerify(forged, createRemoteJWKSet(new URL(as.jwksUri)), { issuer: as.issuer });
    t.equal(payload.scope, 'x');
  });

  t.test('revoke makes introspection inactive', async (t) => {
    const token = await as.issueToken(read);
    t.equal((await introspect(as, token, 'basic')).body.active, true);
    await as.revoke(token);
    t.same((await introspect(as, token, 'basic')).body, { active: false });
    const { status, body } = await introspect(as, read[0] as string, { bearer: token });
    t.equal(status, 401, 'a revoked token no longer authorises introspection');
    t.same(body, { error: 'access_denied' });
  });

  t.test('rotateKeys changes the kid and keeps opaque tokens', async (t) => {
    const opaque = await as.issueToken(read);
    const before = decodeProtectedHeader(await as.issueToken(read, { jwt: true })).kid;
    await as.rotateKeys();
    const after = decodeProtectedHeader(await as.issueToken(read, { jwt: true })).kid;
    t.not(after, before);
    t.equal(after, (await as.signingKey()).kid);
    const jwks = (await (await fetch(as.jwksUri)).json()) as { keys: { kid: string; d?: string }[] };
    t.same(jwks.keys.map((k) => k.kid).sort(), [before, after].sort(), 'keepOld serves both');
    t.notOk(jwks.keys.some((k) => k.d), 'no private parts served');
    t.equal((await introspect(as, opaque, { bearer: opaque })).body.active, true, 'opaque token survives rotation');

    await as.rotateKeys({ keepOld: false });
    const latest = (await (await fetch(as.jwksUri)).json()) as { keys: { kid: string }[] };
    t.same(latest.keys.map((k) => k.kid), [(await as.signingKey()).kid]);
  });

  t.test('counts and introspected record traffic', async (t) => {
    as.resetCounts();
    t.same(as.counts, { introspection: 0, jwks: 0, token: 0 });
    t.same(as.introspected, []);
    const token = await as.issueToken(read);
    await introspect(as, token, 'post');
    await introspect(as, 'second', { bearer: 'bad' });
    await fetch(as.jwksUri).then((r) => r.arrayBuffer());
    t.same(as.counts, { introspection: 2, jwks: 1, token: 1 });
    t.same(as.introspected, [token, 'second']);
    as.resetCounts();
    t.same(as.counts, { introspection: 0, jwks: 0, token: 0 });
    t.same(as.introspected, []);
  });

  t.test('errors do not crash the server', async (t) => {
    const garbage = await fetch(as.introspectionEndpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Basic !!!' },
      body: '{not json',
    });
    t.equal(garbage.status, 400);
    const badAuth = await fetch(as.tokenEndpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: 'Basic Zm9vOmJhcg==' },
      body: 'grant_type=client_credentials',
    });
    t.equal(badAuth.status, 401);
    await t.resolves(as.revoke('unknown-token'), 'revoking an unknown token is a no-op (RFC 7009)');
    t.ok(await as.issueToken(read), 'still serving');
  });
});
