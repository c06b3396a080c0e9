// The Host header and the request line's odd forms: everything the gateway refuses is its own
// SCIM error (`application/scim+json`, exactly), in the order of the steps, with nothing upstream.
// Two Host headers: Node keeps the first, Jetty answers 400 (RFC7230 compliance): refused. A Host
// that is not an authority would go on as X-Forwarded-Host, which Jetty's forwarded module trusts:
// refused. A missing Host on HTTP/1.1, an unknown expectation, CONNECT: Node would answer them
// itself (a bare 400, a 417 before the table, a closed connection): the gateway does.
import t, { type Test } from 'tap';
import { B, bearer, exchange, send, settle, startStack, type Stack } from '../helpers/stack.js';

let stack: Stack;
t.before(async () => {
  stack = await startStack();
});
t.teardown(() => stack.close());

async function refused(t: Test, bytes: string, status: number, what: string): Promise<void> {
  stack.up.reset();
  const res = await send(stack, bytes);
  t.equal(res.status, status, `${what}: ${status}`);
  t.equal(res.headers['content-type'], 'application/scim+json', `${what}: SCIM error`);
  t.match(res.body, new RegExp(`"status":"${status}"`), `${what}: SCIM body`);
  t.equal(res.headers['www-authenticate'], undefined, `${what}: no challenge (the token is not at fault)`);
  await settle(30);
  t.equal(stack.up.requests.length, 0, `${what}: nothing upstream`);
}

t.test('duplicate Host, and the exact error media type', async (t) => {
  for (const hosts of [['127.0.0.1', '127.0.0.1'], ['127.0.0.1', 'evil.example'], ['evil.example', '127.0.0.1']]) {
    await refused(t, `GET ${B}/Users HTTP/1.1\r\n${hosts.map((h) => `Host: ${h}`).join('\r\n')}\r\n${bearer(stack.all)}\r\nConnection: close\r\n\r\n`, 400, `Host: ${hosts.join(', ')}`);
  }
  const denied = await send(stack, `GET ${B}/Users HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
  t.equal(denied.status, 401);
  t.equal(denied.headers['content-type'], 'application/scim+json', 'no charset parameter appended');
  const allowed = await send(stack, `GET ${B}/Users HTTP/1.1\r\nHost: 127.0.0.1\r\n${bearer(stack.all)}\r\nConnection: close\r\n\r\n`);
  t.equal(allowed.status, 200, 'one Host is fine');
});

t.test('a Host that is not host[:port] -> 400, on public and protected operations alike', async (t) => {
  const bad = ['127.0.0.1/jans-scim/restv1/v2/Users/abc#', 'a b', 'x\\y', '[::1', '127.0.0.1:99999', '127.0.0.1:65536', '[::1]:65536', '[::1]:8080:80', '127.0.0.1:80:80', 'user@127.0.0.1', 'h?x', 'h#', '%41', 'evil,127.0.0.1', '127.0.0.1,evil', ','];
  for (const host of bad) {
    for (const target of [`${B}/Schemas`, `${B}/Users`]) {
      await refused(t, `GET ${target} HTTP/1.1\r\nHost: ${host}\r\n${bearer(stack.all)}\r\nConnection: close\r\n\r\n`, 400, `Host: ${host} on ${target}`);
    }
  }
  for (const host of ['127.0.0.1', '127.0.0.1:8080', 'scim.example.org', 'scim.example.org:443', '[::1]:8080', '[::1]', '[::1]:65535', 'localhost:65535', 'localhost:']) {
    stack.up.reset();
    const res = await send(stack, `GET ${B}/Users HTTP/1.1\r\nHost: ${host}\r\n${bearer(stack.all)}\r\nConnection: close\r\n\r\n`);
    t.equal(res.status, 200, `Host: ${host}: forwarded`);
    t.equal(stack.up.requests[0]?.headers['x-forwarded-host'], host, `Host: ${host}: X-Forwarded-Host`);
  }
});

t.test('HTTP/1.1 without Host -> a SCIM 400; HTTP/1.0 without Host is served', async (t) => {
  await refused(t, `GET ${B}/Users HTTP/1.1\r\n${bearer(stack.all)}\r\nConnection: close\r\n\r\n`, 400, 'HTTP/1.1, no Host');
  stack.up.reset();
  const res = await send(stack, `GET ${B}/Users HTTP/1.0\r\n${bearer(stack.all)}\r\n\r\n`);
  t.equal(res.status, 200, 'HTTP/1.0, no Host');
  t.equal(stack.up.requests[0]?.headers['x-forwarded-host'], undefined, 'no X-Forwarded-Host');
});

t.test('an expectation other than 100-continue -> 417 after the table, before the token', async (t) => {
  const body = '{"schemas":["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]}';
  const post = (target: string, expect: string, auth: string[]) => `POST ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\n${[...auth, `Expect: ${expect}`].join('\r\n')}\r\nContent-Type: application/scim+json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`;
  await refused(t, post(`${B}/Nope`, 'foo', []), 404, 'not in the table');
  await refused(t, post(`${B}/Users/.search`, 'foo', []), 417, 'no token');
  await refused(t, post(`${B}/Users/.search`, 'foo', [bearer(stack.all)]), 417, 'with a token');
  await refused(t, post(`${B}/Users/.search`, '200-ok', [bearer(stack.all)]), 417, '200-ok');
  // 100-continue beside another expectation (Node's own test finds the word and would send 100).
  for (const expect of ['100-continue, foo', 'foo, 100-continue', '100-continue;x=1', '', 'foo\r\nExpect: 100-continue', '100-continue\r\nExpect: foo']) {
    await refused(t, post(`${B}/Users/.search`, expect, [bearer(stack.all)]), 417, `Expect: ${JSON.stringify(expect)}`);
  }
  for (const expect of ['100-continue', '100-Continue', '100-continue, 100-continue', '100-continue\r\nExpect: 100-continue', '100-continue,', ', 100-continue']) {
    stack.up.reset();
    const res = await send(stack, post(`${B}/Users/.search`, expect, [bearer(stack.all)]));
    t.equal(res.status, 200, `Expect: ${JSON.stringify(expect)} is served`);
    t.equal(stack.up.requests.length, 1);
  }
});

// Node keeps the first 1000 header lines and dropped the rest unseen; every line is read now, and
// the block is bounded by its bytes (limits.headerBytes, 8192 here), counted as the lines are written.
t.test('a second Host or Authorization after a thousand header lines -> 400; a thousand short lines over headerBytes -> 431', async (t) => {
  const filler = Array.from({ length: 1100 }, () => 'a:').join('\r\n');
  for (const [late, what] of [['Host: evil.example', 'Host'], ['Authorization: Bearer x', 'Authorization']] as const) {
    stack.up.reset();
    const res = await send(stack, `GET ${B}/Users HTTP/1.1\r\nHost: 127.0.0.1\r\n${bearer(stack.all)}\r\n${filler}\r\n${late}\r\nConnection: close\r\n\r\n`);
    t.equal(res.status, 400, `a second ${what} after 1100 lines: 400`);
    t.equal(res.headers['content-type'], 'application/scim+json');
    await settle(30);
    t.equal(stack.up.requests.length, 0, `${what}: nothing upstream`);
  }
  // 1700 lines of `a:` are 1700 bytes to Node's maxHeaderSize, 8500 bytes as written.
  const many = Array.from({ length: 1700 }, () => 'a:').join('\r\n');
  await refused(t, `GET ${B}/Schemas HTTP/1.1\r\nHost: 127.0.0.1\r\n${many}\r\nConnection: close\r\n\r\n`, 431, '1700 short lines');
  // More lines than Node keeps (1639 at 8192 bytes): what it drops is never let by unseen.
  const more = Array.from({ length: 3000 }, () => 'a:').join('\r\n');
  await refused(t, `GET ${B}/Users HTTP/1.1\r\nHost: 127.0.0.1\r\n${bearer(stack.all)}\r\n${more}\r\nHost: evil.example\r\nConnection: close\r\n\r\n`, 431, '3000 short lines, then a second Host');
  stack.up.reset();
  const res = await send(stack, `GET ${B}/Users HTTP/1.1\r\nHost: 127.0.0.1\r\n${bearer(stack.all)}\r\n${filler}\r\nConnection: close\r\n\r\n`);
  t.equal(res.status, 200, '1100 short lines within headerBytes are served');
  t.equal(stack.up.requests.length, 1);
});

t.test('CONNECT -> a SCIM 400, then the connection closes', async (t) => {
  stack.up.reset();
  const res = await exchange(stack.gw.port, 'CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n');
  t.equal(res.status, 400);
  t.equal(res.headers['content-type'], 'application/scim+json');
  t.match(res.body, /"status":"400"/);
  t.equal(res.headers.connection, 'close', 'Connection: close');
  t.equal(res.headers['www-authenticate'], undefined, 'no challenge');
  t.equal(stack.up.requests.length, 0);
});

t.test('a Content-Type that cannot be parsed -> a SCIM 400, not a 500', async (t) => {
  const body = '{}';
  for (const type of [';;;', '/', 'application/', ';charset=utf-8']) {
    await refused(t, `POST ${B}/Users HTTP/1.1\r\nHost: 127.0.0.1\r\n${bearer(stack.all)}\r\nContent-Type: ${type}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`, 400, `Content-Type: ${type}`);
  }
});
