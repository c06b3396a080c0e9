// Several tokens on one kept-alive connection: each request is decided on its own token. The
// gateway keeps the last token's cache key on the connection (src/gateway.ts keyOf); these cases
// show that only the key of the same token is ever reused, and that the cache is still consulted
// on every request (a purge takes effect mid-connection).
import t from 'tap';
import { B, converse, settle, startStack, type Stack } from '../helpers/stack.js';

let stack: Stack;
t.before(async () => {
  stack = await startStack();
});
t.teardown(() => stack.close());

/** A kept-alive request (no `Connection: close`). */
function request(method: string, token: string, body = ''): string {
  const lines = [`${method} ${B}/Users HTTP/1.1`, 'Host: 127.0.0.1', `Authorization: Bearer ${token}`];
  if (body) lines.push('Content-Type: application/scim+json', `Content-Length: ${Buffer.byteLength(body)}`);
  return `${lines.join('\r\n')}\r\n\r\n${body}`;
}
const get = (token: string) => request('GET', token);
const post = (token: string) => request('POST', token, '{"userName":"x"}');

const count = (data: string) => [...data.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));
// A whole answer ends its body: a SCIM error (content-length) or the upstream's chunked list.
const ANSWER_END = /(\}|\r\n0\r\n\r\n)$/;

/** Sends the requests one after the other on one connection, each once the previous is answered. */
async function statuses(requests: string[]): Promise<{ statuses: number[]; data: string }> {
  const c = await converse(stack.gw.port);
  for (const [i, r] of requests.entries()) {
    c.write(r);
    const deadline = Date.now() + 5000;
    while (!(count(c.data).length === i + 1 && ANSWER_END.test(c.data)) && !c.closed && Date.now() < deadline) await settle(5);
  }
  const data = c.data;
  c.end();
  return { statuses: count(data), data };
}

t.test('one connection, several tokens: each request is decided on its own token', async (t) => {
  const garbage = 'not-a-token-anyone-issued-0123456789';
  stack.up.reset();
  const { statuses: got, data } = await statuses([get(stack.all), get(garbage), get(stack.all), post(stack.usersRead), get(stack.usersRead), post(stack.all)]);
  t.same(got, [200, 401, 200, 403, 200, 200], 'valid, unknown, valid again, lacking a scope, holding it, valid');
  t.match(data, /error="invalid_token"/, 'the unknown token is invalid_token');
  t.match(data, /error="insufficient_scope"/, 'users.read cannot POST');
  await settle();
  const forwarded = stack.up.requests.map((r) => `${r.method} ${r.headers.authorization}`);
  t.same(forwarded, [`GET Bearer ${stack.all}`, `GET Bearer ${stack.all}`, `GET Bearer ${stack.usersRead}`, `POST Bearer ${stack.all}`], 'only the allowed requests, each with its own token');
});

t.test('a token revoked and purged mid-connection is refused on that same connection', async (t) => {
  const token = await stack.auth.issueToken(['https://jans.io/scim/users.read']);
  const c = await converse(stack.gw.port);
  stack.up.reset();
  c.write(get(token));
  t.ok(await c.waitFor(/HTTP\/1\.1 200[\s\S]*?\}/), 'allowed and cached');
  await stack.auth.revoke(token);
  const purge = await fetch(`${stack.gw.adminUrl}/cache/purge`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token }) });
  t.equal(purge.status, 200);
  c.write(get(token));
  t.ok(await c.waitFor(/HTTP\/1\.1 200[\s\S]*HTTP\/1\.1 401/), 'refused on the same connection');
  c.end();
  await settle();
  t.equal(stack.up.requests.length, 1, 'the upstream got only the first request');
});
