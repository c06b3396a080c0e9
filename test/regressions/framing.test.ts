/**
 * Framing, smuggling and connection handling (SECURITY.md F01-F04, rule 6), over raw TCP: where
 * the gateway and Jetty could disagree on where a request ends, or what it carries, the request
 * is refused and the upstream receives nothing (or, for a cut-off body, nothing complete).
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import t from 'tap';
import { assertScimError } from '../gateway/support.js';
import { parseResponse } from '../helpers/raw.js';
import { B, bearer, converse, exchange, requestLine, scope, send, settle, startStack, type Stack } from '../helpers/stack.js';

const execFileAsync = promisify(execFile);

const SEARCH = '{"schemas":["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],"count":1}';
const BODY_LIMIT = 1000;
const TARGET_LIMIT = 256;
const HEADER_LIMIT = 2048;

/** A request head (no Connection: close unless given) ending with the blank line. */
function head(line: string, headers: string[]): string {
  return `${[line, 'Host: 127.0.0.1', ...headers].join('\r\n')}\r\n\r\n`;
}

function json(text: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

/** `size` bytes of chunked body in chunks of `chunk` bytes, with the final zero chunk. */
function chunked(payload: string, chunk = 100): string {
  let out = '';
  for (let i = 0; i < payload.length; i += chunk) {
    const part = payload.slice(i, i + chunk);
    out += `${Buffer.byteLength(part).toString(16)}\r\n${part}\r\n`;
  }
  return `${out}0\r\n\r\n`;
}

t.test('framing over raw TCP', async (t) => {
  const stack: Stack = await startStack({ limits: { bodyBytes: BODY_LIMIT, targetBytes: TARGET_LIMIT, headerBytes: HEADER_LIMIT } });
  t.teardown(() => stack.close());
  const auth = () => bearer(stack.all);

  t.test('F01-F04: ambiguous framing is 400 and nothing reaches the upstream', async (t) => {
    const cases: Array<[string, string[], string]> = [
      ['F01 CL then TE', ['Content-Length: 5', 'Transfer-Encoding: chunked'], '0\r\n\r\n'],
      ['F01 TE then CL', ['Transfer-Encoding: chunked', 'Content-Length: 5'], '0\r\n\r\n'],
      ['F01 CL + TE identity', ['Content-Length: 5', 'Transfer-Encoding: identity'], 'hello'],
      ['F02 duplicate CL equal', ['Content-Length: 5', 'Content-Length: 5'], 'hello'],
      ['F02 duplicate CL different', ['Content-Length: 5', 'Content-Length: 50'], 'hello'],
      ['F03 +5', ['Content-Length: +5'], 'hello'],
      ['F03 -5', ['Content-Length: -5'], 'hello'],
      ['F03 0x5', ['Content-Length: 0x5'], 'hello'],
      ['F03 5,5', ['Content-Length: 5,5'], 'hello'],
      ['F03 5, 5', ['Content-Length: 5, 5'], 'hello'],
      ['F03 5 5', ['Content-Length: 5 5'], 'hello'],
      ['F03 5.0', ['Content-Length: 5.0'], 'hello'],
      ['F03 5e0', ['Content-Length: 5e0'], 'hello'],
      ['F03 empty', ['Content-Length: '], 'hello'],
      ['F03 \\v', ['Content-Length: 5\x0b'], 'hello'],
      ['F03 huge', ['Content-Length: 99999999999999999999999'], 'hello'],
      ['F03 obs-fold', ['Content-Length:', ' 5'], 'hello'],
      ['F04 TE obs-fold', ['Transfer-Encoding:', ' chunked'], '0\r\n\r\n'],
      ['F04 TE obs-fold tab', ['Transfer-Encoding: identity', '\tchunked'], '0\r\n\r\n'],
      ['F04 chunked, identity', ['Transfer-Encoding: chunked, identity'], '0\r\n\r\n'],
      ['F04 xchunked', ['Transfer-Encoding: xchunked'], '0\r\n\r\n'],
      ['F04 chunkedx', ['Transfer-Encoding: chunkedx'], '0\r\n\r\n'],
      ['F04 chunked\\v', ['Transfer-Encoding: chunked\x0b'], '0\r\n\r\n'],
      ['F04 two TE headers', ['Transfer-Encoding: chunked', 'Transfer-Encoding: chunked'], '0\r\n\r\n'],
      ['F04 TE identity then chunked headers', ['Transfer-Encoding: identity', 'Transfer-Encoding: chunked'], '0\r\n\r\n'],
      ['F04 identity, chunked', ['Transfer-Encoding: identity, chunked'], '0\r\n\r\n'],
      ['F04 gzip, chunked (a coding the gateway does not decode)', ['Transfer-Encoding: gzip, chunked'], '0\r\n\r\n'],
      ['F04 chunked;q=1', ['Transfer-Encoding: chunked;q=1'], '0\r\n\r\n'],
      ['F04 space before colon', ['Transfer-Encoding : chunked'], '0\r\n\r\n'],
      ['F04 CL space before colon', ['Content-Length : 5'], 'hello'],
      ['NUL in a header value', ['X-Test: a\x00b', 'Content-Length: 5'], 'hello'],
      ['bare CR in a header', ['X-Test: a\rb', 'Content-Length: 5'], 'hello'],
    ];
    for (const target of [`${B}/Bulk`, `${B}/Users/.search`]) {
      for (const [id, headers, body] of cases) {
        const bytes = Buffer.from(head(`POST ${target} HTTP/1.1`, [auth(), 'Content-Type: application/scim+json', ...headers, 'Connection: close']) + body, 'latin1');
        const res = await send(stack, bytes);
        // 501 is RFC 9112 section 6.1's answer to a transfer coding the gateway does not implement.
        t.ok(res.status === 400 || (res.status === 501 && /Transfer-Encoding/.test(headers.join())), `${id} on ${target}: 400, got ${res.status}`);
        t.equal(stack.up.requests.length, 0, `${id} on ${target}: nothing upstream`);
      }
    }
  });

  t.test('F04: a chunked body that breaks its framing: 400 (or closed), the upstream never gets it complete', async (t) => {
    // These are found only while the body streams, possibly after the head was forwarded: the
    // forward must then be aborted, never completed.
    const cases: Array<[string, string]> = [
      ['bare LF in chunk size line', '5\nhello\r\n0\r\n\r\n'],
      ['chunk size 0x5', '0x5\r\nhello\r\n0\r\n\r\n'],
      ['chunk size overflow', 'FFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n'],
      ['negative chunk size', '-5\r\nhello\r\n0\r\n\r\n'],
      ['chunk without CRLF after data', '5\r\nhelloXX0\r\n\r\n'],
      ['chunk longer than its size', '2\r\nhello\r\n0\r\n\r\n'],
      ['chunk extension with bare CR', '5;a\rb\r\nhello\r\n0\r\n\r\n'],
    ];
    for (const target of [`${B}/Bulk`, `${B}/Users/.search`]) {
      for (const [id, body] of cases) {
        for (const split of [false, true]) {
          const c = await converse(stack.gw.port);
          stack.up.reset();
          c.write(head(`POST ${target} HTTP/1.1`, [auth(), 'Content-Type: application/scim+json', 'Transfer-Encoding: chunked', 'Connection: close']));
          // Split: the head is checked and forwarded before the bad chunk arrives.
          if (split) await settle(100);
          c.write(body);
          await c.waitClose(3000);
          const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(c.data)?.[1] ?? 0);
          t.ok(status === 400 || status === 0, `${id} on ${target}${split ? ' (split)' : ''}: 400 or closed, got ${status}`);
          await settle(50);
          t.notOk(stack.up.requests.some((r) => r.complete), `${id} on ${target}${split ? ' (split)' : ''}: nothing complete upstream`);
          c.end();
        }
      }
    }
  });

  t.test('F03: leading whitespace in Content-Length is OWS: 400 or forwarded with the identical length', async (t) => {
    for (const value of [' 5', '\t5', '5 ', '05']) {
      const res = await send(stack, head(`POST ${B}/Users/.search HTTP/1.1`, [auth(), 'Content-Type: application/scim+json', `Content-Length:${value}`, 'Connection: close']) + '{"a":}');
      if (res.status === 400) {
        t.equal(stack.up.requests.length, 0, `${JSON.stringify(value)}: refused, nothing upstream`);
      } else {
        t.equal(res.status, 200, `${JSON.stringify(value)}: forwarded`);
        t.equal(stack.up.requests.length, 1);
        t.equal(stack.up.requests[0]?.body.toString(), '{"a":', `${JSON.stringify(value)}: exactly 5 bytes forwarded`);
        t.equal(stack.up.requests[0]?.headers['content-length'], '5');
      }
    }
  });

  t.test('a pipelined request after a body is its own request, authorised on its own', async (t) => {
    // The classic smuggling shape: if the gateway read the first body shorter than the upstream,
    // the second request would ride inside it. Here each is framed once, by the gateway.
    const c = await converse(stack.gw.port);
    stack.up.reset();
    c.write(head(`POST ${B}/Users/.search HTTP/1.1`, [bearer(stack.usersRead), 'Content-Type: application/scim+json', `Content-Length: ${SEARCH.length}`]) + SEARCH
      + head(`DELETE ${B}/Users/x HTTP/1.1`, [bearer(stack.usersRead), 'Connection: close']));
    await c.waitClose(5000);
    const statuses = [...c.data.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));
    t.same(statuses, [200, 403]);
    t.same(stack.up.requests.map((r) => `${r.method} ${r.url}`), [`POST ${B}/Users/.search`]);
    t.equal(stack.up.requests[0]?.body.toString(), SEARCH);
    c.end();
  });

  t.test('Expect: 100-continue with a bad token: 401, no 100 Continue, body never read', async (t) => {
    const cases: Array<[string, string[], number]> = [
      ['no token', [], 401],
      ['garbage token', ['Authorization: Bearer not-a-real-token'], 401],
      ['Basic', ['Authorization: Basic dXNlcjpwYXNz'], 401],
      ['insufficient scope', [bearer(stack.usersRead)], 403],
    ];
    for (const [id, headers, status] of cases) {
      const c = await converse(stack.gw.port);
      stack.up.reset();
      c.write(head(`POST ${B}/Users HTTP/1.1`, [...headers, 'Content-Type: application/scim+json', 'Content-Length: 17', 'Expect: 100-continue']));
      t.ok(await c.waitFor(/HTTP\/1\.1 [2-5]\d\d[^]*\r\n\r\n/), `${id}: answered without the body`);
      t.notMatch(c.data, /100 Continue/i, `${id}: no 100 Continue`);
      t.match(c.data, new RegExp(`^HTTP/1\\.1 ${status} `), `${id}: ${status} is the first line`);
      await settle(50);
      t.equal(stack.up.requests.length, 0, `${id}: nothing upstream`);
      c.end();
    }
    // A refused path: 400, no 100 either.
    const c = await converse(stack.gw.port);
    stack.up.reset();
    c.write(head(`POST ${B}/Users;x HTTP/1.1`, [auth(), 'Content-Length: 17', 'Expect: 100-continue']));
    t.ok(await c.waitFor(/HTTP\/1\.1 [2-5]\d\d[^]*\r\n\r\n/));
    t.match(c.data, /^HTTP\/1\.1 400 /);
    t.equal(stack.up.requests.length, 0);
    c.end();
  });

  t.test('Expect: 100-continue with a good token: 100 Continue, then forwarded whole', async (t) => {
    const c = await converse(stack.gw.port);
    stack.up.reset();
    c.write(head(`POST ${B}/Users/.search HTTP/1.1`, [bearer(stack.usersRead), 'Content-Type: application/scim+json', `Content-Length: ${SEARCH.length}`, 'Expect: 100-continue', 'Connection: close']));
    t.ok(await c.waitFor(/^HTTP\/1\.1 100 Continue\r\n\r\n/), '100 Continue first');
    c.write(SEARCH);
    t.ok(await c.waitFor(/HTTP\/1\.1 200 /), 'then 200');
    await c.waitClose(2000);
    t.equal(stack.up.requests.length, 1);
    t.equal(stack.up.requests[0]?.body.toString(), SEARCH);
    t.equal(stack.up.requests[0]?.complete, true);
    t.notOk(stack.up.requests[0]?.headers.expect, 'Expect is hop-by-hop: not forwarded');
    c.end();
  });

  t.test('a body that ends early never reaches the upstream complete', async (t) => {
    for (const target of [`${B}/Users/.search`, `${B}/Bulk`]) {
      const c = await converse(stack.gw.port);
      stack.up.reset();
      c.write(head(`POST ${target} HTTP/1.1`, [auth(), 'Content-Type: application/scim+json', 'Content-Length: 100']) + 'x'.repeat(50));
      await settle(200);
      c.end();
      await settle(300);
      t.notOk(stack.up.requests.some((r) => r.complete), `${target}: no complete request upstream`);
      // The same with chunked framing, cut before the last chunk.
      const d = await converse(stack.gw.port);
      stack.up.reset();
      d.write(head(`POST ${target} HTTP/1.1`, [auth(), 'Content-Type: application/scim+json', 'Transfer-Encoding: chunked']) + '19\r\n{"schemas":["urn:x"],"a":');
      await settle(200);
      d.end();
      await settle(300);
      t.notOk(stack.up.requests.some((r) => r.complete), `${target} chunked: no complete request upstream`);
    }
  });

  t.test('limits: chunked body over limits.bodyBytes -> 413, nothing upstream', async (t) => {
    const big = JSON.stringify({ schemas: ['urn:ietf:params:scim:api:messages:2.0:SearchRequest'], filter: `userName eq "${'a'.repeat(BODY_LIMIT * 2)}"` });
    for (const [method, target] of [['POST', `${B}/Users/.search`], ['POST', `${B}/Bulk`], ['POST', `${B}/Users`], ['GET', `${B}/Users`], ['DELETE', `${B}/Users/abc`]] as const) {
      stack.up.reset();
      const res = await send(stack, head(`${method} ${target} HTTP/1.1`, [auth(), 'Content-Type: application/scim+json', 'Transfer-Encoding: chunked', 'Connection: close']) + chunked(big), 5000);
      await settle(200);
      t.equal(res.status, 413, `${method} ${target}: 413`);
      t.match(res.headers['content-type'] ?? '', /application\/scim\+json/);
      t.equal(json(res.body)?.status, '413', `${method} ${target}: SCIM error`);
      t.equal(res.headers['www-authenticate'], undefined, `${method} ${target}: no challenge`);
      t.equal(stack.up.requests.length, 0, `${method} ${target}: nothing reaches the upstream`);
    }
  });

  t.test('limits: a chunked body whose first chunk is a whole JSON value, then a pause, then too much -> 413, nothing upstream', async (t) => {
    // jans' JSON reader stops after the first whole value: a request cut off after it could
    // already be acted on, so the upstream must not see the request at all.
    const c = await converse(stack.gw.port);
    stack.up.reset();
    const first = '{"userName":"smuggled"}';
    c.write(head(`POST ${B}/Users HTTP/1.1`, [auth(), 'Content-Type: application/scim+json', 'Transfer-Encoding: chunked']) + `${first.length.toString(16)}\r\n${first}\r\n`);
    await settle(300);
    t.equal(stack.up.requests.length, 0, 'nothing upstream while the body is still coming');
    const pad = ' '.repeat(BODY_LIMIT);
    c.write(`${pad.length.toString(16)}\r\n${pad}\r\n0\r\n\r\n`);
    t.ok(await c.waitFor(/HTTP\/1\.1 \d{3}[^]*\r\n\r\n[^]*\}/, 3000), 'answered');
    t.match(c.data, /^HTTP\/1\.1 413 /);
    t.match(c.data, /\r\ncontent-type: application\/scim\+json\r\n[^]*"status":"413"/i, 'a SCIM error');
    t.notMatch(c.data, /\r\nwww-authenticate:/i, 'no challenge');
    await settle(200);
    t.equal(stack.up.requests.length, 0, 'nothing upstream');
    c.end();
  });

  t.test('limits: chunked body within the limit -> forwarded whole, with its Content-Length', async (t) => {
    const fits = JSON.stringify({ schemas: ['urn:ietf:params:scim:api:messages:2.0:SearchRequest'], filter: `userName eq "${'a'.repeat(BODY_LIMIT - 120)}"` });
    t.ok(fits.length <= BODY_LIMIT);
    stack.up.reset();
    const res = await send(stack, head(`POST ${B}/Users/.search HTTP/1.1`, [auth(), 'Content-Type: application/scim+json', 'Transfer-Encoding: chunked', 'Connection: close']) + chunked(fits));
    t.equal(res.status, 200);
    t.equal(stack.up.requests[0]?.body.toString(), fits);
    t.equal(stack.up.requests[0]?.complete, true);
    t.equal(stack.up.requests[0]?.headers['content-length'], String(Buffer.byteLength(fits)));
    t.equal(stack.up.requests[0]?.headers['transfer-encoding'], undefined);
    t.equal(stack.up.requests[0]?.headers['content-type'], 'application/scim+json', 'the media type as sent');
    // A GET's chunked body within the limit: read, and not forwarded (as a GET body never is).
    stack.up.reset();
    const get = await send(stack, head(`GET ${B}/Users HTTP/1.1`, [auth(), 'Transfer-Encoding: chunked', 'Connection: close']) + chunked('x'.repeat(50)));
    t.equal(get.status, 200);
    t.equal(stack.up.requests[0]?.body.length, 0);
    t.equal(stack.up.requests[0]?.headers['transfer-encoding'], undefined);
  });

  t.test('limits: Content-Length over the limit -> 413 before the body is read', async (t) => {
    for (const target of [`${B}/Users/.search`, `${B}/Bulk`, `${B}/Users`]) {
      const c = await converse(stack.gw.port);
      stack.up.reset();
      c.write(head(`POST ${target} HTTP/1.1`, [auth(), 'Content-Type: application/scim+json', `Content-Length: ${BODY_LIMIT + 1}`]));
      t.ok(await c.waitFor(/HTTP\/1\.1 \d{3}[^]*\r\n\r\n/, 3000), `${target}: answered before any body byte`);
      t.match(c.data, /^HTTP\/1\.1 413 /, `${target}: 413`);
      t.match(c.data, /connection: close/i, `${target}: the unread body closes the connection`);
      await settle(50);
      t.equal(stack.up.requests.length, 0, `${target}: nothing upstream`);
      c.end();
    }
    // With Expect: 100-continue: 413 and no 100.
    const c = await converse(stack.gw.port);
    stack.up.reset();
    c.write(head(`POST ${B}/Users/.search HTTP/1.1`, [auth(), 'Content-Type: application/scim+json', `Content-Length: ${BODY_LIMIT * 10}`, 'Expect: 100-continue']));
    t.ok(await c.waitFor(/HTTP\/1\.1 \d{3}[^]*\r\n\r\n/, 3000));
    t.match(c.data, /^HTTP\/1\.1 413 /);
    t.equal(stack.up.requests.length, 0);
    c.end();
  });

  // Black-box audits: an answer given before a large body was read (401, 403, 404, the 413 of a
  // declared length, the parser's 431 or 400) came back as a reset to a client that writes its
  // body whole (Node's fetch and undici without Expect, curl with `Expect:` cleared): the gateway
  // closed at once, and the reset the kernel sent for the body still arriving overtook the answer.
  // It now reads on until the client is done (src/server.ts, lingering close). The client runs in
  // a process of its own, as clients do: sharing the gateway's event loop, it never wrote fast
  // enough to be reset (an earlier test of this, in process, could not fail).
  t.test('an answer given before a large body is read reaches a client that writes the body whole', async (t) => {
    const reader = await stack.auth.issueToken([scope('users.read')]);
    const BODY = 2 * 1024 * 1024;
    const put = (path: string, headers: string[]) => head(`PUT ${path} HTTP/1.1`, ['Content-Type: application/scim+json', `Content-Length: ${BODY}`, ...headers]);
    const cases: Array<[status: number, head: string, challenge: RegExp | undefined]> = [
      [401, put(`${B}/Users/x`, []), /^Bearer realm="scopegate"$/],
      [403, put(`${B}/Users/x`, [`Authorization: Bearer ${reader}`]), /^Bearer realm="scopegate", error="insufficient_scope", scope="[^"]*users\.write"$/],
      [404, put(`${B}/Nope`, []), undefined],
      [413, put(`${B}/Users/x`, [auth()]), undefined],
      [431, put(`${B}/Users/x`, [`X-Big: ${'a'.repeat(HEADER_LIMIT + TARGET_LIMIT + 200)}`]), undefined],
      [400, head(`POST ${B}/Users HTTP/1.1`, [auth(), 'Content-Type: application/scim+json', 'Transfer-Encoding: chunked']) + 'zz\r\n', undefined],
    ];
    const client = `
      const net = await import('node:net');
      const [port, heads, bodyBytes] = JSON.parse(process.argv[1]);
      const out = [];
      for (const head of heads) {
        for (let i = 0; i < 3; i++) {
          out.push(await new Promise((resolve) => {
            const socket = net.connect(port, '127.0.0.1');
            let data = '';
            let error = '';
            socket.on('data', (c) => (data += c.toString('latin1')));
            socket.on('error', (e) => (error = e.code));
            socket.on('close', () => resolve({ data, error }));
            socket.write(Buffer.concat([Buffer.from(head, 'latin1'), Buffer.alloc(bodyBytes, 'x')]));
          }));
        }
      }
      console.log(JSON.stringify(out));`;
    stack.up.reset();
    const { stdout } = await execFileAsync(process.execPath, ['--input-type=module', '-e', client, JSON.stringify([stack.gw.port, cases.map(([, h]) => h), BODY])], { timeout: 120_000 });
    const outcomes = JSON.parse(stdout) as Array<{ data: string; error: string }>;
    cases.forEach(([status, , challenge], i) => {
      for (const [attempt, outcome] of outcomes.slice(i * 3, i * 3 + 3).entries()) {
        const res = parseResponse(outcome.data);
        t.equal(res.status, status, `${status}, attempt ${attempt + 1}: the answer arrives (${outcome.error || 'no error'})`);
        if (res.status !== status) continue;
        assertScimError(t, res, status);
        if (challenge) t.match(res.headers['www-authenticate'] ?? '', challenge, `${status}: its challenge`);
        else t.equal(res.headers['www-authenticate'], undefined, `${status}: no challenge`);
      }
    });
    t.equal(stack.up.requests.length, 0, 'nothing upstream');
  });

  t.test('limits: request-target over limits.targetBytes -> 414', async (t) => {
    const base = `${B}/Users/`;
    const over = base + 'a'.repeat(TARGET_LIMIT + 1 - base.length);
    let res = await send(stack, requestLine(`GET ${over} HTTP/1.1`, [auth()]));
    t.equal(res.status, 414);
    t.equal(json(res.body)?.status, '414');
    t.equal(stack.up.requests.length, 0);
    res = await send(stack, requestLine(`GET ${B}/Users?filter=${'a'.repeat(TARGET_LIMIT)} HTTP/1.1`, [auth()]));
    t.equal(res.status, 414, 'the query counts');
    t.equal(stack.up.requests.length, 0);
    // Far over it, past Node's own bound on a head (which counts the target with the headers):
    // still a 414, not the 431 of a header block too large.
    for (const length of [HEADER_LIMIT + TARGET_LIMIT + 200, 20 * (HEADER_LIMIT + TARGET_LIMIT)]) {
      res = await send(stack, requestLine(`GET ${base}${'a'.repeat(length)} HTTP/1.1`, [auth()]));
      t.equal(res.status, 414, `a target of ${length} bytes: 414`);
      t.equal(json(res.body)?.status, '414');
      t.equal(stack.up.requests.length, 0);
    }
    const exact = base + 'a'.repeat(TARGET_LIMIT - base.length);
    res = await send(stack, requestLine(`GET ${exact} HTTP/1.1`, [auth()]));
    t.equal(res.status, 200, 'exactly at the limit: forwarded');
    t.equal(stack.up.requests[0]?.url, exact);
  });

  t.test('limits: header block over limits.headerBytes -> 431', async (t) => {
    // The last: 500 lines that Node counts as 1000 bytes (names and values), 3000 as written.
    for (const headers of [[`X-Big: ${'a'.repeat(HEADER_LIMIT + 10)}`], Array.from({ length: 100 }, (_, i) => `X-H${i}: ${'b'.repeat(30)}`), Array.from({ length: 500 }, () => 'X: b')]) {
      const res = await send(stack, requestLine(`GET ${B}/Users HTTP/1.1`, [auth(), ...headers]));
      t.equal(res.status, 431);
      t.equal(stack.up.requests.length, 0);
    }
    const res = await send(stack, requestLine(`GET ${B}/Users HTTP/1.1`, [auth(), `X-Fits: ${'a'.repeat(HEADER_LIMIT / 4)}`]));
    t.equal(res.status, 200, 'under the limit: forwarded');
    // Exact, as the lines are written, and whatever the length of the request-target (its own limit).
    const target = `${B}/Users?filter=${'a'.repeat(TARGET_LIMIT - B.length - 20)}`;
    for (const [size, status] of [[HEADER_LIMIT, 200], [HEADER_LIMIT + 1, 431]] as const) {
      const fixed = ['Host: 127.0.0.1', 'Connection: close', auth()];
      const used = fixed.reduce((n, line) => n + line.length + 2, 0) + 'X-Pad: '.length + 2;
      const bytes = `GET ${target} HTTP/1.1\r\n${[...fixed, `X-Pad: ${'p'.repeat(size - used)}`].join('\r\n')}\r\n\r\n`;
      stack.up.reset();
      const exact = await send(stack, bytes);
      t.equal(exact.status, status, `a block of ${size} bytes as written, behind a ${target.length}-character target: ${status}`);
      t.equal(stack.up.requests.length, status === 200 ? 1 : 0);
    }
  });

  t.test('Upgrade: websocket is no 101; forwarded without Upgrade/Connection', async (t) => {
    const res = await send(stack, head(`GET ${B}/Users HTTP/1.1`, [bearer(stack.usersRead), 'Upgrade: websocket', 'Connection: Upgrade', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version: 13']));
    t.not(res.status, 101);
    t.equal(res.status, 200);
    const seen = stack.up.requests[0];
    t.ok(seen, 'forwarded');
    t.notOk(seen?.headers.upgrade, 'no Upgrade upstream');
    t.not(String(seen?.headers.connection ?? '').toLowerCase(), 'upgrade', 'no Connection: Upgrade upstream');
    // Without a token: 401, no 101.
    const denied = await send(stack, head(`GET ${B}/Users HTTP/1.1`, ['Upgrade: websocket', 'Connection: Upgrade', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version: 13']));
    t.equal(denied.status, 401);
    t.equal(stack.up.requests.length, 0);
  });

  t.test('hop-by-hop, credentials and forwarding headers never reach the upstream as sent', async (t) => {
    const client = [
      'Connection: keep-alive, X-Custom-Hop, X-Other-Hop', 'X-Custom-Hop: 1', 'X-Other-Hop: 2', 'Keep-Alive: timeout=99',
      'TE: trailers', 'Trailer: X-T', 'Proxy-Connection: keep-alive', 'Upgrade: foo/1', 'HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA',
      'Proxy-Authorization: Basic dXNlcjpwYXNz', 'Cookie: session=c00kie', 'Cookie2: $Version=1',
      'X-Forwarded-For: 6.6.6.6', 'X-Forwarded-For: 7.7.7.7', 'Forwarded: for=6.6.6.6;host=evil.example;proto=https', 'X-Real-IP: 6.6.6.6',
      'X-Forwarded-Host: evil.example', 'X-Forwarded-Proto: https', 'X-Forwarded-Port: 443', 'X-Forwarded-Server: evil', 'X-Forwarded-Prefix: /admin',
      'X-Proxied-Https: on', 'Proxy-ssl-id: 1234', 'Proxy-auth-cert: MIIB', 'X-Client-IP: 6.6.6.6', 'True-Client-IP: 6.6.6.6',
      'X-Original-URL: /jans-scim/restv1/v2/Bulk', 'X-Rewrite-URL: /jans-scim/restv1/v2/Bulk',
      'X-Original-URI: /jans-scim/restv1/v2/Groups', 'X-Original-Host: evil.example', 'X-Original-Forwarded-For: 6.6.6.6',
      'X-Scopegate-Client-Id: admin', 'X-Scopegate-Subject: admin', 'X-Scopegate-Scopes: https://jans.io/scim/users.write',
      // The same names with underscores, which a later hop (CGI-style variables, a proxy folding `_`
      // into `-`) may read as the originals.
      'X_Scopegate_Scopes: https://jans.io/scim/bulk', 'x_scopegate-client_id: admin', 'X_Forwarded_For: 6.6.6.6', 'X_Forwarded-Host: evil.example',
      'X_Real_IP: 6.6.6.6', 'X-Http_Method-Override: DELETE', 'Proxy_Authorization: Basic dXNlcjpwYXNz', 'X_Remote_User: admin',
      'X-Kept: yes', 'X_Kept_Underscore: yes',
    ];
    const res = await send(stack, head(`GET ${B}/Users HTTP/1.1`, [bearer(stack.usersRead), ...client]));
    t.equal(res.status, 200);
    const seen = stack.up.requests[0];
    t.ok(seen);
    const h = seen?.headers ?? {};
    for (const name of ['x-custom-hop', 'x-other-hop', 'keep-alive', 'te', 'trailer', 'proxy-connection', 'upgrade', 'http2-settings',
      'proxy-authorization', 'cookie', 'cookie2', 'forwarded', 'x-real-ip', 'x-forwarded-port', 'x-forwarded-server', 'x-forwarded-prefix',
      'x-proxied-https', 'proxy-ssl-id', 'proxy-auth-cert', 'x-client-ip', 'true-client-ip', 'x-original-url', 'x-rewrite-url', 'x-original-uri', 'x-original-host', 'x-original-forwarded-for', 'x-scopegate-subject',
      'x_scopegate_scopes', 'x_scopegate-client_id', 'x_forwarded_for', 'x_forwarded-host', 'x_real_ip', 'x-http_method-override', 'proxy_authorization', 'x_remote_user']) {
      t.notOk(name in h, `${name} removed`);
    }
    t.equal(h['x-forwarded-for'], '127.0.0.1', 'X-Forwarded-For is the gateway\'s, not the client\'s');
    t.equal(h['x-forwarded-proto'], 'http');
    t.equal(h['x-forwarded-host'], '127.0.0.1', 'X-Forwarded-Host is the Host the gateway saw');
    t.equal(h['x-scopegate-scopes'], scope('users.read'), 'identity headers are the gateway\'s');
    t.not(h['x-scopegate-client-id'], 'admin');
    t.equal(h['x-kept'], 'yes', 'an end-to-end header is kept');
    t.equal(h['x_kept_underscore'], 'yes', 'with underscores too, when it names no removed header');
    t.notOk(seen?.rawHeaders.some((v) => /admin|DELETE/.test(v)), 'no spoofed identity or method upstream');
    t.notOk(seen?.rawHeaders.some((v) => /6\.6\.6\.6|7\.7\.7\.7|evil\.example|c00kie|dXNlcjpwYXNz/.test(v)), 'no client forwarding value or credential upstream');
    t.equal(seen?.rawHeaders.filter((v) => v.toLowerCase() === 'x-forwarded-for').length, 1, 'one X-Forwarded-For');
  });

  t.test('a client cannot make the gateway drop its own headers through Connection', async (t) => {
    const res = await send(stack, head(`GET ${B}/Users HTTP/1.1`, [bearer(stack.usersRead), 'Connection: X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, X-Scopegate-Scopes, X-Scopegate-Client-Id, Authorization, Host']));
    t.equal(res.status, 200);
    const h = stack.up.requests[0]?.headers ?? {};
    t.equal(h['x-forwarded-for'], '127.0.0.1');
    t.equal(h['x-forwarded-proto'], 'http');
    t.equal(h['x-scopegate-scopes'], scope('users.read'));
    t.equal(h.host, `127.0.0.1:${stack.up.port}`);
    t.equal(h.authorization, `Bearer ${stack.usersRead}`, 'the canonical credential is still forwarded');
  });

  t.test('Connection: content-length does not unframe the forwarded body', async (t) => {
    const res = await send(stack, head(`POST ${B}/Users/.search HTTP/1.1`, [bearer(stack.usersRead), 'Content-Type: application/scim+json', `Content-Length: ${SEARCH.length}`, 'Connection: close, Content-Length']) + SEARCH);
    t.equal(res.status, 200);
    t.equal(stack.up.requests[0]?.complete, true);
    t.equal(stack.up.requests[0]?.body.toString(), SEARCH);
  });

  // Fastify hands such a request a body stream of no declared length: it was forwarded with
  // `content-length: NaN`, which the forwarder refused (502), in a commit of the fourteenth session.
  t.test('a DELETE (or POST) with a Content-Type and no body is forwarded without a body', async (t) => {
    for (const method of ['DELETE', 'POST']) {
      stack.up.reset();
      const target = method === 'DELETE' ? `${B}/Users/2819c223` : `${B}/Users`;
      const res = await send(stack, head(`${method} ${target} HTTP/1.1`, [bearer(stack.all), 'Content-Type: application/scim+json']));
      t.equal(res.status, 200, `${method}: ${res.body.slice(0, 200)}`);
      const seen = stack.up.requests[0];
      t.equal(seen?.method, method, `${method}: forwarded`);
      t.equal(seen?.body.length, 0, `${method}: no body`);
    }
  });

  t.test('Bulk: the bytes checked are the bytes forwarded, whatever the JSON media type', async (t) => {
    const bulkToken = await stack.auth.issueToken([scope('bulk'), scope('users.write')]);
    const bulk = JSON.stringify({
      schemas: ['urn:ietf:params:scim:api:messages:2.0:BulkRequest'],
      Operations: [{ method: 'POST', path: '/Users', bulkId: 'q1', data: { schemas: ['urn:ietf:params:scim:schemas:core:2.0:User'], userName: 'bjensen' } }],
    });
    for (const type of ['application/scim+json', 'application/json', 'application/json; charset=utf-8']) {
      for (const framing of ['length', 'chunked'] as const) {
        const headers = [bearer(bulkToken), `Content-Type: ${type}`, 'Connection: close', framing === 'length' ? `Content-Length: ${bulk.length}` : 'Transfer-Encoding: chunked'];
        const res = await send(stack, head(`POST ${B}/Bulk HTTP/1.1`, headers) + (framing === 'length' ? bulk : chunked(bulk)));
        t.equal(res.status, 200, `${type} ${framing}: forwarded`);
        t.equal(stack.up.requests[0]?.body.toString(), bulk, `${type} ${framing}: identical body upstream`);
      }
    }
  });

  t.test('response hop-by-hop headers: the upstream does not steer the client connection', async (t) => {
    const respond = stack.up.respond;
    t.teardown(() => {
      stack.up.respond = respond;
    });
    let connection: string | string[] = 'keep-alive, X-Upstream-Hop';
    stack.up.respond = (_req, res) => {
      res.setHeader('content-type', 'application/scim+json');
      res.setHeader('connection', connection);
      res.setHeader('keep-alive', 'timeout=600');
      res.setHeader('x-upstream-hop', 'internal');
      res.end('{"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"totalResults":0,"Resources":[]}');
    };
    // The client asked to close: the gateway closes, whatever the upstream said.
    let res = await exchange(stack.gw.port, requestLine(`GET ${B}/Users HTTP/1.1`, [bearer(stack.usersRead)]), 3000);
    t.equal(res.status, 200);
    t.notOk(res.headers['keep-alive'], 'no upstream Keep-Alive toward the client');
    t.notOk(res.headers['x-upstream-hop'], 'no header the upstream named in Connection');
    t.notMatch(res.headers.connection ?? '', /keep-alive/i, 'not keep-alive when the client sent Connection: close');
    // The same names in two Connection lines (undici gives them as a list).
    connection = ['keep-alive', 'X-Upstream-Hop'];
    res = await exchange(stack.gw.port, requestLine(`GET ${B}/Users HTTP/1.1`, [bearer(stack.usersRead)]), 3000);
    t.equal(res.status, 200);
    t.notOk(res.headers['x-upstream-hop'], 'no header the upstream named in its second Connection line');
    connection = 'keep-alive, X-Upstream-Hop';
    const c = await converse(stack.gw.port);
    c.write(requestLine(`GET ${B}/Users HTTP/1.1`, [bearer(stack.usersRead)]));
    t.ok(await c.waitClose(1500), 'the connection is closed after the response (client sent Connection: close)');
    c.end();

    // An HTTP/1.0 client gets a response it can delimit (the default upstream answers chunked).
    stack.up.respond = respond;
    const d = await converse(stack.gw.port);
    d.write(`GET ${B}/Users HTTP/1.0\r\n${bearer(stack.usersRead)}\r\n\r\n`);
    await d.waitFor(/\r\n\r\n[^]*Resources/, 2000);
    const head10 = d.data.slice(0, d.data.indexOf('\r\n\r\n')).toLowerCase();
    t.ok(/content-length:/.test(head10) || (await d.waitClose(1500)), 'HTTP/1.0: content-length, or the connection closes to end the body');
    d.end();

    // A kept-alive client connection survives a HEAD (undici closes its upstream side after one).
    const e = await converse(stack.gw.port);
    stack.up.reset();
    e.write(head(`HEAD ${B}/Users HTTP/1.1`, [bearer(stack.usersRead)]) + head(`GET ${B}/Users HTTP/1.1`, [bearer(stack.usersRead), 'Connection: close']));
    await e.waitClose(3000);
    const statuses = [...e.data.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));
    t.same(statuses, [200, 200], 'both pipelined requests answered');
    e.end();
    res = await exchange(stack.gw.port, requestLine(`GET ${B}/Users HTTP/1.1`, [bearer(stack.usersRead)]), 3000);
    t.equal(res.status, 200);
  });
});

t.test('Connection: content-length does not unframe a streamed body either (limits.bufferBodyBytes 0: every declared body streams)', async (t) => {
  const stack = await startStack({ limits: { bufferBodyBytes: 0 } });
  t.teardown(() => stack.close());
  const body = '{"schemas":["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],"filter":"userName eq \\"bjensen\\""}';
  // The body comes after the head, once the request is on its way upstream (a body already whole
  // would be sent with its length anyway).
  const c = await converse(stack.gw.port);
  c.write(head(`POST ${B}/Users/.search HTTP/1.1`, [bearer(stack.usersRead), 'Content-Type: application/scim+json', `Content-Length: ${body.length}`, 'Connection: close, Content-Length']));
  await settle(300);
  c.write(body);
  t.ok(await c.waitFor(/^HTTP\/1\.1 200 /, 5000), 'answered 200');
  c.end();
  const seen = stack.up.requests[0];
  t.equal(seen?.complete, true);
  t.equal(seen?.headers['content-length'], String(body.length), 'forwarded with the length that was checked');
  t.equal(seen?.headers['transfer-encoding'], undefined, 'not chunked');
  t.equal(seen?.body.toString(), body);
});

t.test('a client that sends its body too slowly is cut off (limits.requestTimeoutMs)', async (t) => {
  const stack = await startStack({ limits: { requestTimeoutMs: 500 } });
  t.teardown(() => stack.close());
  // Warm the token cache so that only the body is slow.
  const warm = await send(stack, requestLine(`GET ${B}/Users HTTP/1.1`, [bearer(stack.usersRead)]));
  t.equal(warm.status, 200);
  const c = await converse(stack.gw.port);
  stack.up.reset();
  const started = Date.now();
  c.write(head(`POST ${B}/Users/.search HTTP/1.1`, [bearer(stack.usersRead), 'Content-Type: application/scim+json', `Content-Length: ${SEARCH.length}`]));
  // One byte every 100 ms: the whole body would take several seconds.
  let sent = 0;
  const drip = setInterval(() => {
    if (sent < SEARCH.length - 1) c.write(SEARCH[sent++] ?? '');
  }, 100);
  const closed = await c.waitClose(5000);
  clearInterval(drip);
  const elapsedMs = Date.now() - started;
  t.ok(closed, `cut off (after ${elapsedMs} ms)`);
  t.ok(elapsedMs < 5000, 'within a few request timeouts');
  t.match(c.data, /^(HTTP\/1\.1 408 |$)/, '408 or a plain close');
  await settle(100);
  t.notOk(stack.up.requests.some((r) => r.complete), 'nothing complete upstream');
  c.end();

  // Slow headers too.
  const d = await converse(stack.gw.port);
  stack.up.reset();
  d.write(`GET ${B}/Users HTTP/1.1\r\nHost: 127.0.0.1\r\n`);
  const drip2 = setInterval(() => d.write('X-Slow: 1\r\n'), 100);
  const closed2 = await d.waitClose(5000);
  clearInterval(drip2);
  t.ok(closed2, 'slow headers cut off');
  t.equal(stack.up.requests.length, 0);
  d.end();
});
