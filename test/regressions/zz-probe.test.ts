import t from 'tap';
import { B, bearer, requestLine, send, startStack } from './fixture.js';
t.test('probe', async (t) => {
  const s = await startStack();
  t.teardown(() => s.close());
  for (const bytes of [
    `GET ${B}/Schemas\r\n`,
    `GET ${B}/Users HTTP/1.0\r\n${bearer(s.usersRead)}\r\n\r\n`,
    `GET ${B}/Schemas HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n`,
    `GET ${B}/Users HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil\r\nConnection: close\r\n${bearer(s.usersRead)}\r\n\r\n`,
    `GET ${B}/Users HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close, X-Foo\r\nX-Foo: 1\r\n${bearer(s.usersRead)}\r\n\r\n`,
  ]) {
    const r = await send(s, bytes);
    t.comment(JSON.stringify(bytes.slice(0, 60)), r.status, JSON.stringify(r.raw.slice(0, 300)), JSON.stringify(s.up.requests.map((x) => [x.method, x.url, x.rawHeaders])));
  }
});
