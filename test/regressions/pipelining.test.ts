// A connection the gateway answered with `Connection: close` processes nothing more (RFC 9112
// section 9.6): a request pipelined behind such an answer is refused and never forwarded, where it
// would have run upstream with nobody to see its response. A request the HTTP parser cut short
// (408, 400) has one access line, not a second one for its abort, and that refusal is never
// written into a response that has begun. And an HTTP/1.0 client never gets `100 Continue`
// (RFC 9110 section 10.1.1: it must be ignored).
import type { ServerResponse } from 'node:http';
import t from 'tap';
import { startServer } from '../gateway/support.js';
import { accessLines, startTestGateway } from '../helpers/gateway.js';
import { B, bearer, converse, send, settle, startStack, type Stack } from '../helpers/stack.js';

let stack: Stack;
t.before(async () => {
  stack = await startStack({ limits: { bodyBytes: 1000, requestTimeoutMs: 1500 } });
});
t.teardown(() => stack.close());

const chunk = (payload: string) => `${payload.length.toString(16)}\r\n${payload}\r\n`;

t.test('a chunked body over the limit: 413 with Connection: close, and what follows on the connection never goes upstream', async (t) => {
  stack.up.reset();
  const before = accessLines(stack.gw.logs).length;
  const c = await converse(stack.gw.port);
  // A 1200-byte chunk, of which 1100 bytes come first: over the limit before the body ends.
  c.write(`POST ${B}/Users HTTP/1.1\r\nHost: 127.0.0.1\r\n${bearer(stack.all)}\r\nContent-Type: application/scim+json\r\nTransfer-Encoding: chunked\r\n\r\n4b0\r\n${'x'.repeat(1100)}`);
  t.ok(await c.waitFor(/HTTP\/1\.1 413 [^]*\r\n\r\n[^]*"status":"413"/, 3000), '413, a SCIM error');
  t.match(c.data, /\r\ncontent-type: application\/scim\+json\r\n/i);
  t.notMatch(c.data, /\r\nwww-authenticate:/i, 'no challenge');
  t.match(c.data, /\r\nconnection: close\r\n/i, 'Connection: close');
  c.write(`${'x'.repeat(100)}\r\n0\r\n\r\nDELETE ${B}/Users/victim HTTP/1.1\r\nHost: 127.0.0.1\r\n${bearer(stack.all)}\r\n\r\n`);
  await settle(300);
  t.equal(stack.up.requests.length, 0, 'nothing upstream');
  t.notMatch(c.data.slice(c.data.indexOf('\r\n\r\n')), /HTTP\/1\.1 /, 'no second response');
  const lines = accessLines(stack.gw.logs).slice(before);
  t.ok(lines.every((l) => l.decision === 'deny'), 'only refusals logged');
  c.end();
});

t.test('a DELETE pipelined behind a 401 with an unread body: never forwarded', async (t) => {
  stack.up.reset();
  const body = '{"schemas":[]}';
  const bytes = `POST ${B}/Users HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/scim+json\r\nContent-Length: ${body.length}\r\n\r\n${body}`
    + `DELETE ${B}/Users/victim HTTP/1.1\r\nHost: 127.0.0.1\r\n${bearer(stack.all)}\r\n\r\n`;
  const res = await send(stack, bytes);
  t.equal(res.status, 401);
  t.equal(res.headers['www-authenticate'], 'Bearer realm="scopegate"');
  t.equal(res.headers['content-type'], 'application/scim+json');
  t.match(res.body, /"status":"401"/);
  await settle(300);
  t.equal(stack.up.requests.length, 0, 'nothing upstream');
});

t.test('a chunked body that stalls: the 408 is the one access line of its request', async (t) => {
  stack.up.reset();
  const before = accessLines(stack.gw.logs).length;
  const c = await converse(stack.gw.port);
  c.write(`POST ${B}/Users HTTP/1.1\r\nHost: 127.0.0.1\r\n${bearer(stack.all)}\r\nContent-Type: application/scim+json\r\nTransfer-Encoding: chunked\r\n\r\n${chunk('{}')}`);
  t.ok(await c.waitFor(/HTTP\/1\.1 408 [^]*\r\n\r\n[^]*"status":"408"/, 6000), '408, a SCIM error');
  t.match(c.data, /\r\ncontent-type: application\/scim\+json\r\n/i);
  t.notMatch(c.data, /\r\nwww-authenticate:/i, 'no challenge');
  await settle(500);
  const lines = accessLines(stack.gw.logs).slice(before);
  t.equal(lines.length, 1, 'one access line');
  t.match(lines[0], { method: 'POST', path: `${B}/Users`, operation: 'create-user', status: 408, decision: 'deny', reason: /^refused by the HTTP parser/ }, 'the line of the request itself');
  t.equal(stack.up.requests.length, 0, 'nothing upstream');
  c.end();
});

t.test('HTTP/1.0 with Expect: 100-continue: no 100 Continue, the request is served', async (t) => {
  stack.up.reset();
  const body = '{"schemas":["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]}';
  const c = await converse(stack.gw.port);
  c.write(`POST ${B}/Users/.search HTTP/1.0\r\nHost: 127.0.0.1\r\n${bearer(stack.all)}\r\nContent-Type: application/scim+json\r\nExpect: 100-continue\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  t.ok(await c.waitFor(/HTTP\/1\.[01] 200 /, 5000), '200');
  t.notMatch(c.data, /100 Continue/, 'no 100 Continue');
  c.end();
});

// Node's own clientError rule: the parser's refusal is written only where no response has begun
// on the connection; written there, it would be read as that response's body.
t.test('the HTTP parser\'s refusal is never written into a response under way', async (t) => {
  let held: ServerResponse | undefined;
  // An upstream that answers at once, without waiting for the body, and never ends its answer.
  const up = await startServer((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'application/scim+json' });
    res.write('{"schemas":');
    held = res;
  });
  const gw = await startTestGateway({ upstream: { url: up.origin }, token: { issuer: stack.auth.issuer, introspection: { endpoint: stack.auth.introspectionEndpoint, clientId: stack.auth.clientId, clientSecret: stack.auth.clientSecret } } });
  t.teardown(async () => {
    held?.destroy();
    await gw.close();
    await up.close();
  });

  t.test('a body cut off once the answer has begun: the connection closes, the line names the parser', async (t) => {
    const before = accessLines(gw.logs).length;
    const c = await converse(gw.port);
    c.write(`POST ${B}/Users HTTP/1.1\r\nHost: 127.0.0.1\r\n${bearer(stack.all)}\r\nContent-Type: application/scim+json\r\nContent-Length: 100\r\n\r\n{"a":`);
    t.ok(await c.waitFor(/\{"schemas":/, 5000), 'the answer has begun');
    c.socket.end();
    t.ok(await c.waitClose(3000), 'closed');
    t.equal((c.data.match(/HTTP\/1\.1 /g) ?? []).length, 1, 'one status line: no 400 inside the 200');
    await settle(100);
    const lines = accessLines(gw.logs).slice(before);
    t.equal(lines.length, 1, 'one access line');
    t.match(lines[0], { path: `${B}/Users`, status: 499, decision: 'allow', reason: /^connection closed before the response was complete \(refused by the HTTP parser: HPE_INVALID_EOF_STATE\)$/ });
  });

  t.test('garbage pipelined behind a GET whose answer has begun: no 400 inside that answer', async (t) => {
    const before = accessLines(gw.logs).length;
    const c = await converse(gw.port);
    c.write(`GET ${B}/Users/begun HTTP/1.1\r\nHost: 127.0.0.1\r\n${bearer(stack.all)}\r\n\r\n`);
    t.ok(await c.waitFor(/\{"schemas":/, 5000), 'the answer has begun');
    c.write('FOO / HTTP/1.1\r\n\r\n');
    t.ok(await c.waitClose(3000), 'closed');
    t.equal((c.data.match(/HTTP\/1\.1 /g) ?? []).length, 1, 'one status line: no 400 inside the 200');
    await settle(100);
    t.same(accessLines(gw.logs).slice(before).map((l) => [l.path, l.status]), [[`${B}/Users/begun`, 499]], 'the GET\'s line only: nothing else was answered');
  });
});
