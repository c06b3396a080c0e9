// Two Host headers: Node keeps the first, Jetty answers 400 (RFC7230 compliance). The gateway
// refuses them too. And every error of the gateway is `application/scim+json`, exactly.
import t from 'tap';
import { B, bearer, send, startStack } from '../helpers/stack.js';

t.test('duplicate Host, and the exact error media type', async (t) => {
  const stack = await startStack();
  t.teardown(() => stack.close());
  for (const hosts of [['127.0.0.1', '127.0.0.1'], ['127.0.0.1', 'evil.example'], ['evil.example', '127.0.0.1']]) {
    stack.up.reset();
    const res = await send(stack, `GET ${B}/Users HTTP/1.1\r\n${hosts.map((h) => `Host: ${h}`).join('\r\n')}\r\n${bearer(stack.all)}\r\nConnection: close\r\n\r\n`);
    t.equal(res.status, 400, `Host: ${hosts.join(', ')}`);
    t.equal(res.headers['content-type'], 'application/scim+json');
    t.match(res.body, /"status":"400"/);
    t.equal(stack.up.requests.length, 0, 'nothing upstream');
  }
  const denied = await send(stack, `GET ${B}/Users HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
  t.equal(denied.status, 401);
  t.equal(denied.headers['content-type'], 'application/scim+json', 'no charset parameter appended');
  const allowed = await send(stack, `GET ${B}/Users HTTP/1.1\r\nHost: 127.0.0.1\r\n${bearer(stack.all)}\r\nConnection: close\r\n\r\n`);
  t.equal(allowed.status, 200, 'one Host is fine');
});
