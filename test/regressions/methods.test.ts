/**
 * Method confusion (SECURITY.md M01-M09), over raw TCP. RESTEasy runs the GET method for HEAD,
 * answers OPTIONS itself, and uppercases the method before matching: the gateway must authorise
 * exactly the method it forwards, and forward exactly the method it authorised.
 */
import t from 'tap';
import { B, bearer, converse, isComplete, requestLine, scope, send, settle, startStack, type Stack } from '../helpers/stack.js';
import { parseResponse } from '../helpers/raw.js';

const INUM = '8f3e1a6c-2b4d-4e5f-9a0b-1c2d3e4f5a6b';

function json(text: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

function allowOf(header: string | undefined): string[] {
  return (header ?? '').split(',').map((m) => m.trim()).filter(Boolean).sort();
}

t.test('method confusion over raw TCP', async (t) => {
  const stack: Stack = await startStack();
  t.teardown(() => stack.close());

  t.test('M01: HEAD is authorised as GET', async (t) => {
    let res = await send(stack, requestLine(`HEAD ${B}/Users HTTP/1.1`));
    t.equal(res.status, 401, 'no token: 401');
    t.match(res.headers['www-authenticate'] ?? '', /^Bearer realm="[^"]*"$/, 'challenge without an error attribute');
    t.equal(stack.up.requests.length, 0, 'nothing upstream');

    res = await send(stack, requestLine(`HEAD ${B}/Users HTTP/1.1`, [bearer(stack.usersRead)]));
    t.equal(res.status, 200, 'users.read: forwarded');
    t.equal(stack.up.requests.length, 1);
    t.equal(stack.up.requests[0]?.method, 'HEAD', 'forwarded as HEAD, never rewritten');
    t.equal(stack.up.requests[0]?.url, `${B}/Users`);

    const groupsRead = await stack.auth.issueToken([scope('groups.read')]);
    res = await send(stack, requestLine(`HEAD ${B}/Users HTTP/1.1`, [bearer(groupsRead)]));
    t.equal(res.status, 403, 'HEAD needs what GET needs');
    t.match(res.headers['www-authenticate'] ?? '', /error="insufficient_scope"/);
    t.equal(stack.up.requests.length, 0);

    res = await send(stack, requestLine(`HEAD ${B}/Schemas HTTP/1.1`));
    t.equal(res.status, 200, 'HEAD on a public GET: no token needed');
    t.equal(stack.up.requests[0]?.method, 'HEAD');
  });

  t.test('M02: HEAD /Users/.search is GET /Users/{id}: users.read', async (t) => {
    let res = await send(stack, requestLine(`HEAD ${B}/Users/.search HTTP/1.1`, [bearer(stack.usersRead)]));
    t.equal(res.status, 200);
    t.equal(stack.up.requests[0]?.method, 'HEAD');
    t.equal(stack.up.requests[0]?.url, `${B}/Users/.search`);
    const search = await stack.auth.issueToken([scope('all-resources.search')]);
    res = await send(stack, requestLine(`HEAD ${B}/Users/.search HTTP/1.1`, [bearer(search)]));
    t.equal(res.status, 403, 'not the search scope: the read scope');
    t.equal(stack.up.requests.length, 0);
  });

  t.test('M03: OPTIONS is answered by the gateway, never forwarded, no token needed', async (t) => {
    const expectations: Array<[string, string[]]> = [
      [`${B}/Users`, ['GET', 'HEAD', 'OPTIONS', 'POST']],
      [`${B}/Users/`, ['GET', 'HEAD', 'OPTIONS', 'POST']],
      [`${B}/Users/${INUM}`, ['DELETE', 'GET', 'HEAD', 'OPTIONS', 'PATCH', 'PUT']],
      [`${B}/Users/.search`, ['DELETE', 'GET', 'HEAD', 'OPTIONS', 'PATCH', 'POST', 'PUT']],
      [`${B}/Bulk`, ['OPTIONS', 'POST']],
      [`${B}/Schemas`, ['GET', 'HEAD', 'OPTIONS']],
    ];
    for (const [target, allow] of expectations) {
      for (const headers of [[], [bearer(stack.all)], ['Authorization: Bearer garbage'], ['Access-Control-Request-Method: DELETE', 'Origin: http://evil.example']]) {
        const res = await send(stack, requestLine(`OPTIONS ${target} HTTP/1.1`, headers));
        t.equal(res.status, 204, `OPTIONS ${target} ${headers.join(' ')}: 204`);
        t.same(allowOf(res.headers.allow), allow, `OPTIONS ${target}: Allow`);
        t.equal(res.body, '', 'no body');
        t.equal(stack.up.requests.length, 0, `OPTIONS ${target}: never forwarded`);
      }
    }
    for (const target of [`${B}/Nope`, `${B}`, '/', `${B}/users`, '/jans-scim/sys/health-check']) {
      const res = await send(stack, requestLine(`OPTIONS ${target} HTTP/1.1`));
      t.equal(res.status, 404, `OPTIONS ${target}: 404`);
      t.equal(stack.up.requests.length, 0);
    }
    const res = await send(stack, requestLine(`OPTIONS ${B}/Schemas/../Users HTTP/1.1`));
    t.equal(res.status, 400, 'OPTIONS is held to the grammar too');
    t.equal(stack.up.requests.length, 0);
  });

  t.test('M03: OPTIONS with a body is answered locally; its body is never read as a request', async (t) => {
    const smuggled = `GET ${B}/Users HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`;
    const c = await converse(stack.gw.port);
    stack.up.reset();
    c.write(`OPTIONS ${B}/Users HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${smuggled.length}\r\n\r\n${smuggled}`);
    await c.waitFor(/HTTP\/1\.1 204/);
    await settle(100);
    t.equal(stack.up.requests.length, 0, 'nothing upstream');
    t.notMatch(c.data, /HTTP\/1\.1 (200|401)/, 'the body was not parsed as a second request');
    c.end();
  });

  t.test('M03: an OPTIONS on a kept-alive connection authorises nothing after it', async (t) => {
    const c = await converse(stack.gw.port);
    stack.up.reset();
    c.write(`OPTIONS ${B}/Users HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET ${B}/Users HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nDELETE ${B}/Users/${INUM} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
    await c.waitClose(5000);
    const statuses = [...c.data.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));
    t.same(statuses, [204, 401, 401], 'OPTIONS 204, then the GET and the DELETE without a token: 401');
    t.equal(stack.up.requests.length, 0);
    c.end();
  });

  t.test('M05: TRACE is 405 with Allow and never echoes the request', async (t) => {
    for (const target of [`${B}/Users`, `${B}/Users/${INUM}`, `${B}/Schemas`]) {
      const res = await send(stack, requestLine(`TRACE ${target} HTTP/1.1`, [bearer(stack.all), 'X-Secret: s3cr3t-value', 'Cookie: session=c00kie', 'Max-Forwards: 0']));
      t.equal(res.status, 405, `TRACE ${target}: 405`);
      t.ok(res.headers.allow, 'Allow present');
      t.notOk(allowOf(res.headers.allow).includes('TRACE'), 'TRACE is not allowed');
      t.notMatch(res.headers['content-type'] ?? '', /message\/http/, 'no message/http echo');
      for (const secret of [stack.all, 's3cr3t-value', 'c00kie', 'X-Secret', 'TRACE ']) t.notOk(res.raw.includes(secret), `does not echo ${secret.slice(0, 12)}`);
      t.equal(json(res.body)?.status, '405');
      t.equal(stack.up.requests.length, 0, 'nothing upstream');
    }
    // A path outside the table too: TRACE is served nowhere (an empty Allow: no method of it is).
    for (const target of ['/jans-scim/', '/', `${B}/Nope`]) {
      const res = await send(stack, requestLine(`TRACE ${target} HTTP/1.1`, [bearer(stack.all), 'X-Secret: s3cr3t-value']));
      t.equal(res.status, 405, `TRACE ${target}: 405`);
      t.equal(res.headers.allow, '', 'an empty Allow');
      t.equal(res.headers['www-authenticate'], undefined, 'nothing about the token');
      t.equal(json(res.body)?.status, '405');
      t.notOk(res.raw.includes(stack.all) || res.raw.includes('s3cr3t-value'), 'no echo');
      t.equal(stack.up.requests.length, 0);
    }
  });

  t.test('M06: CONNECT: connection closed or 400, no tunnel, nothing upstream', async (t) => {
    for (const authority of ['evil.example:443', `127.0.0.1:${stack.up.port}`]) {
      const c = await converse(stack.gw.port);
      stack.up.reset();
      c.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${bearer(stack.all)}\r\n\r\n`);
      // What a tunnel would carry.
      c.write(`GET ${B}/Users HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
      const closed = await c.waitClose(3000);
      const res = parseResponse(c.data);
      t.ok(closed || res.status === 400, `CONNECT ${authority}: closed (${closed}) or 400 (${res.status})`);
      t.ok(res.status === 0 || res.status === 400, 'never 200 Connection Established');
      await settle(100);
      t.equal(stack.up.requests.length, 0, 'nothing upstream');
      c.end();
    }
  });

  t.test('M07: WebDAV, QUERY and other known verbs: 405/400/404, never forwarded', async (t) => {
    const verbs = ['QUERY', 'PROPFIND', 'PROPPATCH', 'LOCK', 'UNLOCK', 'SEARCH', 'MKCOL', 'COPY', 'MOVE', 'REPORT', 'PURGE', 'LINK', 'UNLINK',
      'BIND', 'UNBIND', 'REBIND', 'ACL', 'MKACTIVITY', 'CHECKOUT', 'MERGE', 'M-SEARCH', 'NOTIFY', 'SUBSCRIBE', 'UNSUBSCRIBE', 'MKCALENDAR', 'SOURCE'];
    for (const verb of verbs) {
      for (const target of [`${B}/Users`, `${B}/Users/.search`, `${B}/Users/${INUM}`, `${B}/Schemas`]) {
        const body = '{"schemas":["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]}';
        const res = await send(stack, requestLine(`${verb} ${target} HTTP/1.1`, [bearer(stack.all), 'Content-Type: application/scim+json'], body));
        t.ok([400, 404, 405].includes(res.status), `${verb} ${target}: ${res.status}`);
        t.equal(stack.up.requests.length, 0, `${verb} ${target}: never forwarded`);
        if (res.status === 405) t.notOk(allowOf(res.headers.allow).includes(verb), `${verb} not in Allow`);
      }
    }
  });

  t.test('M08: unknown and non-canonical methods: 400 (or 405), never forwarded', async (t) => {
    const methods = ['FOO', 'get', 'Get', 'gEt', 'head', 'post', 'delete', 'Delete', 'pAtch', 'options', 'trace', 'GET\x00', 'G ET', 'GETX', 'DELET', 'X-DELETE'];
    for (const method of methods) {
      const res = await send(stack, Buffer.from(requestLine(`${method} ${B}/Users/${INUM} HTTP/1.1`, [bearer(stack.all)]), 'latin1'));
      t.ok([400, 405].includes(res.status), `${JSON.stringify(method)}: ${res.status}`);
      t.equal(stack.up.requests.length, 0, `${JSON.stringify(method)}: never forwarded`);
    }
  });

  t.test('M09: no HTTP/2 upgrade, other versions refused', async (t) => {
    // h2c prior knowledge: the connection preface.
    let res = await send(stack, 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
    t.ok(res.status === 0 || res.status >= 400, `h2 preface: ${res.status}`);
    t.equal(stack.up.requests.length, 0);
    // `HTTP/2.0` in an HTTP/1 request line: Node's parser takes it (httpVersionMajor 2). Refused, or
    // handled exactly as the HTTP/1.1 request it is (same method, same target, same decision).
    res = await send(stack, `GET ${B}/Users HTTP/2.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
    t.ok([400, 401, 505].includes(res.status), `HTTP/2.0 without a token: refused (${res.status})`);
    t.equal(stack.up.requests.length, 0);
    res = await send(stack, `GET ${B}/Users/${INUM} HTTP/2.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n${bearer(stack.usersRead)}\r\n\r\n`);
    if (res.status === 200) {
      t.same(stack.up.requests.map((r) => `${r.method} ${r.url}`), [`GET ${B}/Users/${INUM}`], 'HTTP/2.0 line: forwarded as the same request');
    } else {
      t.ok([400, 505].includes(res.status), `HTTP/2.0 line: refused (${res.status})`);
      t.equal(stack.up.requests.length, 0);
    }
    res = await send(stack, `DELETE ${B}/Users/${INUM} HTTP/2.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n${bearer(stack.usersRead)}\r\n\r\n`);
    t.ok([400, 403, 505].includes(res.status), `HTTP/2.0 DELETE with users.read: refused (${res.status})`);
    t.equal(stack.up.requests.length, 0);
    for (const version of ['HTTP/1.2', 'HTTP/3.0', 'HTTP/1.1x', 'http/1.1', 'HTTP/1', 'HTTP/01.1']) {
      res = await send(stack, `GET ${B}/Schemas ${version}\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
      t.ok(res.status === 0 || res.status === 400 || res.status === 505, `${version}: ${res.status}`);
      t.equal(stack.up.requests.length, 0, `${version}: nothing upstream`);
    }
    // h2c upgrade: no 101, and the request is handled (and forwarded) as HTTP/1.1 without the upgrade.
    res = await send(stack, requestLine(`GET ${B}/Users HTTP/1.1`, [bearer(stack.usersRead), 'Upgrade: h2c', 'HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA']).replace('Connection: close', 'Connection: Upgrade, HTTP2-Settings'));
    t.not(res.status, 101, 'no 101 Switching Protocols');
    t.equal(res.status, 200);
    const seen = stack.up.requests[0];
    t.equal(seen?.method, 'GET');
    t.notOk(seen?.headers.upgrade, 'no Upgrade upstream');
    t.notOk(seen?.headers['http2-settings'], 'no HTTP2-Settings upstream');
  });

  t.test('method override headers are stripped: the method checked is the method forwarded', async (t) => {
    const overrides = ['X-HTTP-Method-Override', 'X-HTTP-Method', 'X-Method-Override', 'x-http-method-override', 'X-Http-Method-Override'];
    for (const name of overrides) {
      const res = await send(stack, requestLine(`GET ${B}/Users/${INUM} HTTP/1.1`, [bearer(stack.usersRead), `${name}: DELETE`]));
      t.equal(res.status, 200, `${name}: GET forwarded`);
      const seen = stack.up.requests[0];
      t.equal(seen?.method, 'GET', `${name}: forwarded as GET`);
      for (const header of ['x-http-method-override', 'x-http-method', 'x-method-override']) t.notOk(seen?.headers[header], `${name}: no ${header} upstream`);
      t.notOk(seen?.rawHeaders.some((h) => /method/i.test(h)), `${name}: no *method* header at all upstream`);
    }
    // All three at once, on a POST search, asking for PUT.
    const body = '{"schemas":["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]}';
    const res = await send(stack, requestLine(`POST ${B}/Users/.search HTTP/1.1`, [bearer(stack.usersRead), 'Content-Type: application/scim+json', 'X-HTTP-Method-Override: PUT', 'X-HTTP-Method: DELETE', 'X-Method-Override: PATCH'], body));
    t.equal(res.status, 200);
    t.equal(stack.up.requests[0]?.method, 'POST');
    t.notOk(stack.up.requests[0]?.rawHeaders.some((h) => /method/i.test(h)));
    // The control: the method the override names is refused for this token when sent for real.
    const del = await send(stack, requestLine(`DELETE ${B}/Users/${INUM} HTTP/1.1`, [bearer(stack.usersRead)]));
    t.equal(del.status, 403);
    t.match(del.headers['www-authenticate'] ?? '', /users\.write/);
    t.equal(stack.up.requests.length, 0);
  });

  t.test('a pipelined HEAD then GET are each answered whole', async (t) => {
    const c = await converse(stack.gw.port);
    stack.up.reset();
    c.write(`HEAD ${B}/Users HTTP/1.1\r\nHost: 127.0.0.1\r\n${bearer(stack.usersRead)}\r\n\r\nGET ${B}/Groups HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n${bearer(stack.usersRead)}\r\n\r\n`);
    await c.waitClose(5000);
    const statuses = [...c.data.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));
    t.same(statuses, [200, 403], 'HEAD forwarded, GET /Groups refused');
    t.same(stack.up.requests.map((r) => `${r.method} ${r.url}`), [`HEAD ${B}/Users`]);
    t.ok(isComplete(c.data.slice(c.data.lastIndexOf('HTTP/1.1 403'))), 'the 403 is whole');
    c.end();
  });
});
