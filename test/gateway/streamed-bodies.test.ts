/**
 * A declared body larger than limits.bufferBodyBytes is streamed to the upstream as it comes, and
 * its request holds an upstream connection for as long as its client takes to send it (up to
 * limits.requestTimeoutMs). Slow bodies sent with a read-only token (140 connections at a byte a
 * second) took the whole pool of 128 and left nothing for anyone else: streamed bodies may hold at
 * most half of upstream.connections; past that, 503 with Retry-After, nothing upstream, while
 * requests without a body still have the other half.
 */
import t from 'tap';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { B, bearer, converse, exchange, settle, startStack, type Stack } from '../helpers/stack.js';

let stack: Stack;
let gw: TestGateway;
t.before(async () => {
  stack = await startStack();
  // Two upstream connections: one for streamed bodies, one for the rest.
  gw = await startTestGateway({
    upstream: { url: stack.up.origin, connections: 2 },
    limits: { bufferBodyBytes: 1024 },
    token: { introspection: { endpoint: stack.auth.introspectionEndpoint, clientId: stack.auth.clientId, clientSecret: stack.auth.clientSecret } },
  });
});
t.teardown(async () => {
  await gw.close();
  await stack.close();
});
const send = (_: Stack, bytes: string) => exchange(gw.port, bytes);

const LENGTH = 4096;
const head = (n: number) => `POST ${B}/Users/.search HTTP/1.1\r\nHost: 127.0.0.1\r\n${bearer(stack.usersRead)}\r\nContent-Type: application/scim+json\r\nContent-Length: ${LENGTH}\r\nX-N: ${n}\r\nConnection: close\r\n\r\n`;
const body = `{"filter":"userName eq \\"${'a'.repeat(LENGTH - 27)}\\""}`.slice(0, LENGTH - 1) + '}';

t.test('streamed bodies hold at most half the upstream pool; the rest is left to requests without one', async (t) => {
  stack.up.reset();
  const slow = await converse(gw.port);
  slow.write(head(1) + body.slice(0, 100));
  // Decided (its token introspected) and forwarded as it comes: it holds an upstream connection.
  await settle(500);

  const second = await send(stack, head(2) + body);
  t.equal(second.status, 503, 'a second streamed body meanwhile: 503');
  t.equal(second.headers['retry-after'], '1');
  t.equal(second.headers['content-type'], 'application/scim+json');
  t.match(JSON.parse(second.body), { schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'], status: '503', detail: 'The gateway is forwarding too many request bodies; retry later' });
  const get = await send(stack, `GET ${B}/Users HTTP/1.1\r\nHost: 127.0.0.1\r\n${bearer(stack.usersRead)}\r\nConnection: close\r\n\r\n`);
  t.equal(get.status, 200, 'a request without a body still gets through');

  slow.write(body.slice(100));
  t.ok(await slow.waitFor(/HTTP\/1\.1 200 /, 3000), 'the slow body, once whole, is answered');
  await settle(100);
  const third = await send(stack, head(3) + body);
  t.equal(third.status, 200, 'its slot is given back: the next streamed body goes through');
  await settle(50);
  const upstreamSaw = stack.up.requests.map((r) => `${r.method} ${r.headers['x-n'] ?? ''}`);
  t.same(upstreamSaw.sort(), ['GET ', 'POST 1', 'POST 3'].sort(), 'the refused body never reached the upstream');
});
