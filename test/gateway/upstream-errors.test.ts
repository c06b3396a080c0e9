/**
 * When the upstream fails after a request was allowed: refused or reset is a 502, silent past
 * `upstream.timeoutMs` is a 504, both as SCIM errors from the gateway itself, also while the
 * client is still sending its body. And what the
 * upstream answers is relayed without its hop-by-hop headers (RFC 9110 section 7.6.1).
 */
import t from 'tap';
import { startAuthServer, type AuthServer } from '../../src/demo/auth-server.js';
import { accessLines, B, scrape, startTestGateway } from '../helpers/gateway.js';
import { http11, rawRequest } from '../helpers/raw.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/upstream.js';
import { converse } from '../helpers/stack.js';
import { assertScimError, closedPort, send, sleep, startServer, tokenConfig } from './support.js';

const READ = 'https://jans.io/scim/users.read';
const USERS = `${B}/Users`;

let auth: AuthServer;
let token: string;

t.before(async () => {
  auth = await startAuthServer();
  token = await auth.issueToken([READ]);
});
t.teardown(() => auth?.close());

t.test('upstream refuses the connection: 502', async (t) => {
  const port = await closedPort();
  const gw = await startTestGateway({ upstream: { url: `http://127.0.0.1:${port}` }, token: tokenConfig(auth) });
  t.teardown(() => gw.close());
  const res = await send(gw.port, 'GET', `${USERS}?count=1`, { token });
  assertScimError(t, res, 502);
  t.equal(res.headers['www-authenticate'], undefined, 'not a token problem');
  t.notOk(res.raw.includes(token), 'the token is not echoed');
  t.notOk(res.raw.includes(String(port)), 'the upstream address is not disclosed');
});

t.test('upstream resets the connection: 502', async (t) => {
  const up = await startRecordingUpstream();
  t.teardown(() => up.close());
  up.respond = (_req, res) => res.socket?.destroy();
  const gw = await startTestGateway({ upstream: { url: up.origin }, token: tokenConfig(auth) });
  t.teardown(() => gw.close());
  const res = await send(gw.port, 'GET', USERS, { token });
  assertScimError(t, res, 502);
  t.equal(up.requests.length, 1, 'it was forwarded once, not retried');
});

t.test('upstream never answers: 504 after upstream.timeoutMs', async (t) => {
  const up: RecordingUpstream = await startRecordingUpstream();
  t.teardown(() => up.close());
  up.respond = () => undefined;
  const gw = await startTestGateway({ upstream: { url: up.origin, timeoutMs: 300 }, token: tokenConfig(auth) });
  t.teardown(() => gw.close());
  const started = Date.now();
  const res = await send(gw.port, 'GET', USERS, { token, timeoutMs: 5000 });
  const ms = Date.now() - started;
  assertScimError(t, res, 504);
  t.equal(res.headers['www-authenticate'], undefined);
  t.ok(ms >= 250 && ms < 2000, `answered after about timeoutMs (${ms} ms)`);
  t.equal(up.requests.length, 1, 'forwarded once, not retried');
});

t.test('hop-by-hop headers of the upstream response are not relayed; Connection: close is honoured', async (t) => {
  const up = await startRecordingUpstream();
  t.teardown(() => up.close());
  // The default responder: chunked, and Node adds `Connection: keep-alive` and `Keep-Alive: timeout=1`.
  up.respond = (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/scim+json', connection: 'keep-alive, x-upstream-hop', 'x-upstream-hop': 'internal' });
    res.end('{"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"totalResults":0,"Resources":[]}');
  };
  const gw = await startTestGateway({ upstream: { url: up.origin }, token: tokenConfig(auth) });
  t.teardown(() => gw.close());
  const started = Date.now();
  const res = await rawRequest(gw.port, http11('GET', USERS, [`Authorization: Bearer ${token}`]), 3000);
  const ms = Date.now() - started;
  t.equal(res.status, 200);
  t.equal(res.headers['keep-alive'], undefined, 'no Keep-Alive from the upstream hop');
  t.equal(res.headers['x-upstream-hop'], undefined, 'no header the upstream\'s Connection named');
  t.notMatch(res.headers.connection ?? 'close', /keep-alive/i, 'the client asked to close; the gateway does not promise keep-alive');
  t.ok(ms < 1500, `the gateway closed the connection as the client asked (${ms} ms)`);
});

t.test('an allowed request the upstream fails is logged and counted as allowed, with the failure as its reason', async (t) => {
  const refusing = await closedPort();
  const silent = await startRecordingUpstream();
  t.teardown(() => silent.close());
  silent.respond = () => undefined;
  for (const [name, url, status, reason] of [
    ['refused', `http://127.0.0.1:${refusing}`, 502, /^upstream refused the connection/],
    ['timed out', silent.origin, 504, /time/],
  ] as const) {
    const gw = await startTestGateway({ upstream: { url, timeoutMs: 300 }, token: tokenConfig(auth) });
    const res = await send(gw.port, 'GET', USERS, { token, timeoutMs: 5000 });
    t.equal(res.status, status, name);
    await sleep(100);
    // The decision is the gateway's (the token held the scope): the upstream's failure is not a denial.
    const lines = accessLines(gw.logs);
    t.equal(lines.length, 1, `${name}: one access line`);
    t.match(lines[0], { path: USERS, status, decision: 'allow', reason, clientId: auth.clientId, requiredScopes: [READ] }, `${name}: the access line`);
    const metrics = await scrape(gw.adminUrl);
    t.equal(metrics.value('scopegate_requests_total', { operation: 'get-users', decision: 'allow', status: String(status) }), 1, `${name}: the request counter`);
    t.notMatch(metrics.text, /decision="deny"/, `${name}: no denial counted`);
    await gw.close();
  }
});

t.test('upstream resets while the client still sends the body: a SCIM 502, counted as the upstream\'s failure', async (t) => {
  let received = 0;
  const up = await startServer((req) => {
    req.once('data', (chunk: Buffer) => {
      received += chunk.length;
      req.socket.destroy();
    });
  });
  t.teardown(() => up.close());
  const gw = await startTestGateway({ upstream: { url: up.origin }, token: tokenConfig(auth) });
  t.teardown(() => gw.close());
  const writer = await auth.issueToken(['https://jans.io/scim/users.write']);
  const c = await converse(gw.port);
  t.teardown(() => c.end());
  // Declared over limits.bufferBodyBytes (64 KiB): streamed, so the upstream has the start of it.
  const STREAMED = 70000;
  c.write(`POST ${USERS} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${writer}\r\nContent-Type: application/scim+json\r\nContent-Length: ${STREAMED}\r\n\r\n${'x'.repeat(1000)}`);
  t.ok(await c.waitFor(/\r\n\r\n[^]*\}/, 5000), 'answered');
  t.ok(received > 0, 'the upstream had part of the body');
  const res = c.response();
  assertScimError(t, res, 502);
  t.notMatch(res.body, /null|Symbol|properties/, 'no internal detail');
  t.equal(res.headers.connection, 'close', 'the rest of the body is not read: the connection closes');
  await sleep(100);
  const lines = accessLines(gw.logs);
  t.equal(lines.length, 1, 'one access line');
  t.match(lines[0], { path: USERS, status: 502, decision: 'allow', reason: /^upstream connection failed/ }, 'the access line');
  t.equal((await scrape(gw.adminUrl)).value('scopegate_upstream_errors_total', { kind: 'reset' }), 1, 'an upstream reset counted');
});
