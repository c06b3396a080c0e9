/**
 * A chunked body is read whole before it is forwarded. Node hands each HTTP chunk over as a view
 * of the socket read it came in: kept as such, a body sent one byte per chunk held a read buffer
 * per byte (hundreds of megabytes per megabyte of body, a heap limit reached with one read-only
 * token), and each piece costs microseconds whatever its size. The gateway copies the bytes into a
 * buffer of its own, and refuses a body in thousands of pieces of a few bytes (400, nothing
 * upstream); pieces of a usual size are forwarded byte for byte.
 */
import t from 'tap';
import { accessLines } from '../helpers/gateway.js';
import { B, bearer, send, settle, startStack, type Stack } from '../helpers/stack.js';

let stack: Stack;
t.before(async () => {
  stack = await startStack();
});
t.teardown(() => stack.close());

/** A chunked POST /Users/.search whose JSON body is cut into pieces of `size` bytes. */
function chunked(body: string, size: number): string {
  let out = `POST ${B}/Users/.search HTTP/1.1\r\nHost: 127.0.0.1\r\n${bearer(stack.usersRead)}\r\nContent-Type: application/scim+json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n`;
  for (let i = 0; i < body.length; i += size) {
    const piece = body.slice(i, i + size);
    out += `${piece.length.toString(16)}\r\n${piece}\r\n`;
  }
  return `${out}0\r\n\r\n`;
}

const search = (bytes: number) => {
  const head = '{"schemas":["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],"filter":"userName eq \\"';
  return `${head}${'a'.repeat(bytes - head.length - 3)}\\"}`.slice(0, bytes - 1) + '}';
};

t.test('a body in thousands of one-byte pieces: 400, nothing upstream', async (t) => {
  stack.up.reset();
  const res = await send(stack, chunked(search(5000), 1));
  t.equal(res.status, 400, 'refused');
  t.equal(res.headers['content-type'], 'application/scim+json');
  t.equal(res.headers['www-authenticate'], undefined, 'no challenge: the token is not at fault');
  const body = JSON.parse(res.body) as { status: string; detail: string };
  t.equal(body.status, '400');
  t.match(body.detail, /pieces smaller than 16 bytes on average/);
  await settle();
  t.equal(stack.up.requests.length, 0, 'the upstream got nothing');
  t.match(accessLines(stack.gw.logs).at(-1)?.reason, /body in 4097 pieces of 1 bytes on average/, 'the access line says why');
});

t.test('a body in thousands of pieces of a usual size is forwarded whole, byte for byte', async (t) => {
  stack.up.reset();
  const json = search(100_000);
  const res = await send(stack, chunked(json, 20));
  t.equal(res.status, 200, res.body.slice(0, 200));
  await settle();
  t.equal(stack.up.requests.length, 1);
  t.equal(stack.up.requests[0]?.body.toString('utf8'), json, 'the same bytes');
  t.equal(stack.up.requests[0]?.headers['content-length'], String(json.length), 'with their length');
});
