import t from 'tap';
import { B, bearer, converse, requestLine, send, settle, startStack } from './fixture.js';
t.test('probe', async (t) => {
  const s = await startStack({ limits: { requestTimeoutMs: 500 } });
  t.teardown(() => s.close());
  for (const te of ['identity, chunked', 'gzip, chunked', 'chunked;q=1', 'Chunked', 'CHUNKED', 'deflate, chunked', 'foo, chunked']) {
    const r = await send(s, `POST ${B}/Users/.search HTTP/1.1\r\nHost: 127.0.0.1\r\n${bearer(s.usersRead)}\r\nContent-Type: application/scim+json\r\nTransfer-Encoding: ${te}\r\nConnection: close\r\n\r\n3\r\n{}\n\r\n0\r\n\r\n`);
    t.comment(te, r.status, JSON.stringify(s.up.requests.map((x) => [x.url, x.headers['transfer-encoding'], x.headers['content-length'], x.body.toString(), x.complete])));
  }
  const c = await converse(s.gw.port);
  const started = Date.now();
  c.write(`POST ${B}/Users/.search HTTP/1.1\r\nHost: 127.0.0.1\r\n${bearer(s.usersRead)}\r\nContent-Length: 1000\r\n\r\n`);
  const iv = setInterval(() => c.write('x'), 100);
  const closed = await c.waitClose(40000);
  clearInterval(iv);
  t.comment('closed', closed, Date.now() - started, JSON.stringify(c.data), JSON.stringify(s.up.requests.map((x) => [x.url, x.body.length, x.complete])));
});
