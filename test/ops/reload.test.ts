// SIGHUP (Gateway.reload, which the signal calls): log.level takes effect at once, for the logger
// and the access line; keys read only when the listeners and the upstream pool are built are named
// in a warning, and only those.
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { request } from 'undici';
import { startAuthServer } from '../../src/demo/auth-server.js';
import { accessLines, B, startTestGateway } from '../helpers/gateway.js';
import { startRecordingUpstream } from '../helpers/upstream.js';

const token = { jwt: { jwksUri: 'http://127.0.0.1:1/jwks', issuer: 'https://issuer.test' } };

t.test('a reload applies log.level and names the keys that need a restart', async (t) => {
  const up = await startRecordingUpstream();
  const gw = await startTestGateway({ upstream: { url: up.origin }, token });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const rewrite = (change: (config: Record<string, Record<string, unknown>>) => void) => {
    const config = JSON.parse(readFileSync(gw.configFile, 'utf8')) as Record<string, Record<string, unknown>>;
    change(config);
    writeFileSync(gw.configFile, JSON.stringify(config));
  };
  const get = async () => {
    const r = await request(`${gw.url}${B}/Schemas`);
    await r.body.text();
    return r.statusCode;
  };
  const parsed = () => gw.logs.map((l) => JSON.parse(l) as Record<string, unknown>);

  t.equal(await get(), 200);
  t.equal(accessLines(gw.logs).length, 1, 'info: the access line is written');

  rewrite((c) => {
    c.log = { level: 'warn' };
    c.listen!.port = 1;
    c.limits = { headerBytes: 4096, bodyBytes: 1000 };
    c.upstream!.identityHeaders = false;
    c.upstream!.timeoutMs = 1234;
  });
  const before = gw.logs.length;
  t.same(await gw.gateway.reload(), { ok: true });
  const warned = parsed().slice(before).filter((l) => l.level === 40);
  t.equal(warned.length, 1, 'one warning');
  t.same(warned[0]?.keys, ['listen.port', 'limits.headerBytes'], 'naming exactly the keys that need a restart (upstream.timeoutMs is not one)');
  t.ok(parsed().some((l) => l.msg === 'reload: log level changed' && l.from === 'info' && l.to === 'warn'), 'the change is logged at the old level');
  t.equal(gw.gateway.logger.level, 'warn');
  const quiet = gw.logs.length;
  t.equal(await get(), 200, 'the listener is the one of startup');
  gw.gateway.logger.info('an info line');
  t.equal(gw.logs.length, quiet, 'warn: neither the access line nor info lines are written');

  rewrite((c) => {
    c.log = { level: 'debug' };
  });
  t.same(await gw.gateway.reload(), { ok: true });
  t.equal(gw.gateway.logger.level, 'debug');
  t.equal(await get(), 200);
  t.equal(accessLines(gw.logs).length, 2, 'debug: the access line again');
  t.ok(parsed().some((l) => l.msg === 'reloaded config and OpenAPI file' && l.logLevel === 'debug'));
});

t.test('reloads run one after the other: the last signal\'s file wins, even when an earlier reload is slower', async (t) => {
  // Discovery answers the first reload's request late: without order, the earlier reload (file A)
  // would finish last and replace the later one (file B).
  const delays: number[] = [];
  const discovery = createServer((req, res) => {
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ issuer: origin, jwks_uri: 'http://127.0.0.1:1/jwks' }));
    }, delays.shift() ?? 0);
  });
  await new Promise<void>((resolve) => discovery.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${(discovery.address() as AddressInfo).port}`;
  const up = await startRecordingUpstream();
  const gw = await startTestGateway({ upstream: { url: up.origin }, token: { issuer: origin, jwt: {} } });
  t.teardown(async () => {
    await gw.close();
    await up.close();
    discovery.close();
  });
  const withPing = (path: string) => {
    const config = JSON.parse(readFileSync(gw.configFile, 'utf8')) as Record<string, Record<string, unknown>>;
    config.openapi!.extra = [{ method: 'GET', path, public: true }];
    writeFileSync(gw.configFile, JSON.stringify(config));
  };
  const status = async (path: string) => {
    const r = await request(`${gw.url}${B}${path}`);
    await r.body.text();
    return r.statusCode;
  };

  delays.push(800, 0);
  withPing('/A');
  const first = gw.gateway.reload();
  withPing('/B');
  const second = gw.gateway.reload();
  t.same(await Promise.all([first, second]), [{ ok: true }, { ok: true }]);
  t.equal(await status('/B'), 200, 'the file of the last reload is running');
  t.equal(await status('/A'), 404, 'not the one an earlier, slower reload read');
});

// A SIGHUP (a renewed certificate, a new scope in the OpenAPI file) under the same token rules
// keeps the cache: no token goes back to the authorization server because of it. Other rules
// decide anew.
t.test('a reload under the same token rules keeps the token cache; other rules start a new one', async (t) => {
  const auth = await startAuthServer();
  const up = await startRecordingUpstream();
  const gw = await startTestGateway({
    upstream: { url: up.origin },
    token: { introspection: { endpoint: auth.introspectionEndpoint, clientId: auth.clientId, clientSecret: auth.clientSecret } },
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
    await auth.close();
  });
  const bearer = await auth.issueToken(['https://jans.io/scim/users.read']);
  const get = async () => {
    const r = await request(`${gw.url}${B}/Users`, { headers: { authorization: `Bearer ${bearer}` } });
    await r.body.text();
    return r.statusCode;
  };
  t.equal(await get(), 200);
  auth.resetCounts();
  t.same(await gw.gateway.reload(), { ok: true });
  t.equal(await get(), 200);
  t.equal(auth.counts.introspection, 0, 'served from the cache the reload kept');

  const config = JSON.parse(readFileSync(gw.configFile, 'utf8')) as { token: { introspection: Record<string, unknown> } };
  config.token.introspection.clockToleranceSeconds = 10;
  writeFileSync(gw.configFile, JSON.stringify(config));
  t.same(await gw.gateway.reload(), { ok: true });
  t.equal(await get(), 200);
  t.equal(auth.counts.introspection, 1, 'introspected again under the new rules');
});

// A stream of SIGHUPs: the signals that arrive while a reload waits for its turn join it, so that
// reloads never queue up behind one another and hold the event loop.
t.test('reloads asked for while one waits for its turn join it', async (t) => {
  const up = await startRecordingUpstream();
  const gw = await startTestGateway({ upstream: { url: up.origin }, token });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const results = await Promise.all(Array.from({ length: 30 }, () => gw.gateway.reload()));
  t.ok(results.every((r) => r.ok), 'every caller is answered');
  const reloads = gw.logs.filter((l) => l.includes('reloaded config')).length;
  t.ok(reloads >= 1 && reloads <= 2, `30 asked at once: ${reloads} reload(s) run`);
});

t.test('a reload applies upstream.timeoutMs to the next request: an upstream that never answers gets its 504 after the new value', async (t) => {
  const up = await startRecordingUpstream();
  t.teardown(() => up.close());
  const gw = await startTestGateway({ upstream: { url: up.origin, timeoutMs: 60000 }, token });
  t.teardown(() => gw.close());
  up.respond = () => undefined;
  const config = JSON.parse(readFileSync(gw.configFile, 'utf8')) as Record<string, Record<string, unknown>>;
  config.upstream!.timeoutMs = 300;
  writeFileSync(gw.configFile, JSON.stringify(config));
  const before = gw.logs.length;
  t.same(await gw.gateway.reload(), { ok: true });
  t.notOk(gw.logs.slice(before).some((l) => (JSON.parse(l) as { level: number }).level === 40), 'no restart warning');
  const started = Date.now();
  const r = await request(`${gw.url}${B}/Schemas`, { headersTimeout: 10000 });
  const body = await r.body.text();
  const ms = Date.now() - started;
  t.equal(r.statusCode, 504, 'the upstream did not answer within the new upstream.timeoutMs');
  t.match(body, /urn:ietf:params:scim:api:messages:2\.0:Error/, 'a SCIM error');
  t.ok(ms >= 250 && ms < 5000, `after about 300 ms, not the 60 s of startup (${ms} ms)`);
  t.equal(up.requests.length, 1, 'the request was forwarded once');
});
