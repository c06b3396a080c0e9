/**
 * limits.bufferedBytes: the request bodies the gateway reads whole before forwarding (chunked
 * bodies, declared ones up to limits.bufferBodyBytes, /Bulk) are bounded all together, not only one by one. A body that would pass the total
 * is refused 503 with Retry-After, as a SCIM error, before anything of it goes upstream; the bytes
 * are given back when the response closes, and the gauge scopegate_request_body_bytes_held shows
 * them.
 */
import t from 'tap';
import { accessLines, scrape } from '../helpers/gateway.js';
import { until } from './support.js';
import { B, bearer, converse, settle, startStack, type Conversation, type Stack } from '../helpers/stack.js';

let stack: Stack;
t.before(async () => {
  stack = await startStack({ limits: { bodyBytes: 1000, bufferedBytes: 1500 } });
});
t.teardown(() => stack.close());

const chunk = (payload: string) => `${payload.length.toString(16)}\r\n${payload}\r\n`;
const head = (path: string) => `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${bearer(stack.all)}\r\nContent-Type: application/scim+json\r\nTransfer-Encoding: chunked\r\n\r\n`;

async function held(): Promise<number> {
  return (await scrape(stack.gw.adminUrl)).value('scopegate_request_body_bytes_held');
}

/** Opens a chunked POST and sends `bytes` of its body (a string that is not yet JSON's end). */
async function begin(path: string, bytes: number): Promise<Conversation> {
  const c = await converse(stack.gw.port);
  c.write(head(path) + chunk(`{"x":"${'a'.repeat(bytes - 7)}"`));
  return c;
}

t.test('a chunked body that would pass the total: 503, Retry-After, nothing upstream; the bytes come back', async (t) => {
  stack.up.reset();
  const before = accessLines(stack.gw.logs).length;
  // 900 bytes held by the first body (under bodyBytes): 600 left of 1500.
  const first = await begin(`${B}/Users`, 900);
  t.ok(await waitHeld(900), 'the first body is held: 900 bytes');
  const second = await begin(`${B}/Groups`, 700);
  t.ok(await second.waitFor(/HTTP\/1\.1 503 [^]*\r\n\r\n[^]*"status":"503"/, 3000), 'the second: 503, a SCIM error');
  const res = second.response();
  t.equal(res.headers['retry-after'], '1');
  t.equal(res.headers['content-type'], 'application/scim+json');
  t.equal(res.headers.connection, 'close', 'its unread body closes the connection');
  t.equal(res.headers['www-authenticate'], undefined, 'no challenge: the token is not at fault');
  t.match(JSON.parse(res.body), { schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'], status: '503', detail: /too many request bodies/ });
  t.ok(await second.waitClose(2000), 'closed');
  t.equal(await held(), 900, 'the refused body holds nothing');

  // The first body ends: forwarded whole, and its bytes given back.
  first.write(`${chunk('}')}0\r\n\r\n`);
  t.ok(await first.waitFor(/HTTP\/1\.1 200 /, 3000), 'the first body is forwarded');
  t.equal(stack.up.requests.length, 1, 'only the first body reached the upstream');
  t.equal(stack.up.requests[0]?.url, `${B}/Users`);
  t.equal(stack.up.requests[0]?.body.length, 901, 'whole');
  t.ok(await waitHeld(0), 'nothing held once its response closed');
  first.end();

  // With the bytes back, the same 700-byte body is taken.
  const third = await begin(`${B}/Groups`, 700);
  third.write(`${chunk('}')}0\r\n\r\n`);
  t.ok(await third.waitFor(/HTTP\/1\.1 200 /, 3000), 'a body of the same size is taken now');
  third.end();
  await settle(100);
  const lines = accessLines(stack.gw.logs).slice(before);
  t.match(lines.find((l) => l.status === 503), { method: 'POST', path: `${B}/Groups`, operation: 'create-group', decision: 'deny', reason: /request bodies held in memory would pass 1500 bytes/ });
});

t.test('a declared body within limits.bufferBodyBytes is read whole, its bytes reserved; while the total cannot hold it, it streams (never refused for the bodies of others)', async (t) => {
  stack.up.reset();
  const declared = (path: string, length: number) => `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${bearer(stack.all)}\r\nContent-Type: application/scim+json\r\nContent-Length: ${length}\r\n\r\n`;
  const first = await converse(stack.gw.port);
  first.write(`${declared(`${B}/Users`, 901)}{"x":"${'a'.repeat(893)}"`);
  t.ok(await waitHeld(901), 'the first body: its 901 declared bytes reserved while it is read');
  await settle(100);
  t.equal(stack.up.requests.length, 0, 'and nothing of it is upstream yet');
  // 700 more would pass the total (1500): this one streams, as a larger body would.
  const second = await converse(stack.gw.port);
  second.write(`${declared(`${B}/Groups`, 700)}{"x":"${'a'.repeat(650)}`);
  t.ok(await until(() => stack.up.requests.some((r) => r.url === `${B}/Groups`)), 'the second is streamed: the upstream has its head before its end');
  t.equal(await held(), 901, 'holding nothing of the total');
  second.write(`${'a'.repeat(42)}"}`);
  t.ok(await second.waitFor(/HTTP\/1\.1 200 /, 3000), 'and answered: never a 503 for the bodies of others');
  first.write('}');
  t.ok(await first.waitFor(/HTTP\/1\.1 200 /, 3000), 'the first, once whole, is forwarded');
  const got = stack.up.requests.find((r) => r.url === `${B}/Users`);
  t.same([got?.body.length, got?.headers['content-length']], [901, '901'], 'whole, with its length');
  t.ok(await waitHeld(0), 'its bytes given back');
  first.end();
  second.end();
});

t.test('a client that goes away mid-body gives its bytes back', async (t) => {
  stack.up.reset();
  const c = await begin(`${B}/Users`, 800);
  t.ok(await waitHeld(800), 'held while it is read');
  c.socket.destroy();
  t.ok(await waitHeld(0), 'given back when the connection closes');
  await settle(100);
  t.equal(stack.up.requests.length, 0, 'nothing of the unfinished body reached the upstream');
});

t.test('a chunked request pipelined behind one in flight waits for its turn, its body unread, and gets its line when the client goes away', async (t) => {
  let release: () => void = () => undefined;
  stack.up.respond = (_req, res) => {
    release = () => {
      if (!res.destroyed) res.end('{}');
    };
  };
  t.teardown(() => {
    release();
    stack.up.respond = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/scim+json' });
      res.end('{}');
    };
  });
  stack.up.reset();
  const before = accessLines(stack.gw.logs).length;
  const c = await converse(stack.gw.port);
  c.write(`GET ${B}/Users/slow HTTP/1.1\r\nHost: 127.0.0.1\r\n${bearer(stack.all)}\r\n\r\n`);
  t.ok(await until(() => stack.up.requests.length === 1), 'the first request waits at the upstream');
  c.write(`${head(`${B}/Users`) + chunk(`{"x":"${'a'.repeat(793)}"`) + chunk('}')}0\r\n\r\n`);
  await settle(200);
  t.equal(stack.up.requests.length, 1, 'the pipelined request is not forwarded while the first is in flight');
  t.equal(await held(), 0, 'nor its body read');
  c.socket.destroy();
  t.ok(await waitHeld(0), 'nothing held when the connection closes');
  await settle(100);
  t.equal(stack.up.requests.length, 1, 'nor forwarded after');
  const lines = accessLines(stack.gw.logs).slice(before);
  t.same(lines.map((l) => [l.path, l.status]), [[`${B}/Users/slow`, 499], [`${B}/Users`, 499]], 'one line each');
});

async function waitHeld(bytes: number): Promise<boolean> {
  const deadline = Date.now() + 3000;
  while (Date.now() < deadline) {
    if ((await held()) === bytes) return true;
    await settle(20);
  }
  return false;
}
