/**
 * Fault injection on the upstream side: refused (502), hung (504), reset mid-response (the
 * client's response is aborted, never presented as complete), a client too slow to send its
 * body (cut off; the upstream never sees a complete request). After each fault the same gateway,
 * with the upstream healthy again, serves 200: its connection pool has recovered.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import t from 'tap';
import type { Test } from 'tap';
import { startAuthServer, type AuthServer } from '../../src/demo/auth-server.js';
import { accessLines, B, scrape, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { http11 } from '../helpers/raw.js';
import { converse } from '../helpers/stack.js';
import { assertScimError, closedPort, sleep, until } from '../gateway/support.js';
import { exchange, listenStoppable, send } from './support.js';

const READ = 'https://jans.io/scim/users.read';
const WRITE = 'https://jans.io/scim/users.write';
const LIST = JSON.stringify({ schemas: ['urn:ietf:params:scim:api:messages:2.0:ListResponse'], totalResults: 0, Resources: [] });

/** One request as the upstream saw it. */
interface Seen {
  method: string;
  url: string;
  authorization: string | undefined;
  bytes: number;
  /** The whole body arrived. */
  complete: boolean;
  /** The connection closed before the exchange finished. */
  aborted: boolean;
}

type Responder = (req: IncomingMessage, res: ServerResponse) => void;

/** A recording upstream that can be closed and listen again on the same port. */
interface Upstream {
  port: number;
  origin: string;
  seen: Seen[];
  respond: Responder;
  listen(): Promise<void>;
  close(): Promise<void>;
}

const healthy: Responder = (_req, res) => {
  res.writeHead(200, { 'content-type': 'application/scim+json', 'content-length': String(Buffer.byteLength(LIST)) });
  res.end(LIST);
};

async function startUpstream(port = 0): Promise<Upstream> {
  let server: Server | undefined;
  const sockets = new Set<Socket>();
  const up: Upstream = {
    port,
    origin: '',
    seen: [],
    respond: healthy,
    async listen() {
      const s = createServer((req, res) => {
        const record: Seen = { method: req.method ?? '', url: req.url ?? '', authorization: req.headers.authorization, bytes: 0, complete: false, aborted: false };
        up.seen.push(record);
        req.on('data', (c: Buffer) => {
          record.bytes += c.length;
        });
        req.on('end', () => {
          record.complete = true;
        });
        req.on('error', () => undefined);
        res.on('close', () => {
          if (!res.writableFinished) record.aborted = true;
        });
        up.respond(req, res);
      });
      s.keepAliveTimeout = 1000;
      s.on('connection', (c) => {
        sockets.add(c);
        c.on('close', () => sockets.delete(c));
      });
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.listen(up.port, '127.0.0.1', () => resolve());
      });
      server = s;
      up.port = (s.address() as AddressInfo).port;
      up.origin = `http://127.0.0.1:${up.port}`;
    },
    close: () => new Promise<void>((resolve) => {
      if (!server) return resolve();
      for (const c of sockets) c.destroy();
      server.close(() => resolve());
      server = undefined;
    }),
  };
  await up.listen();
  return up;
}

/** The responder for after the request body: waits for it, then answers with `then`. */
function afterBody(then: Responder): Responder {
  return (req, res) => {
    req.resume();
    req.on('end', () => then(req, res));
  };
}

let as: AuthServer;
let token: string;

t.before(async () => {
  as = await startAuthServer();
  token = await as.issueToken([READ, WRITE]);
});
t.teardown(() => as.close());

async function gatewayFor(t: Test, upstream: { origin: string }, extra: Record<string, unknown> = {}): Promise<TestGateway> {
  const gw = await startTestGateway({
    upstream: { url: upstream.origin, timeoutMs: 300 },
    token: { introspection: { endpoint: as.introspectionEndpoint, clientId: as.clientId, clientSecret: as.clientSecret } },
    ...extra,
  });
  t.teardown(() => gw.close());
  return gw;
}

/**
 * The `count` responses the upstream cut after their head: each one access line with the status
 * the client got and the upstream named as the cause (not a client gone away), counted in
 * scopegate_upstream_errors_total.
 */
async function assertUpstreamFailedLines(t: Test, gw: TestGateway, count: number, kind: 'timeout' | 'reset'): Promise<void> {
  const lines = () => accessLines(gw.logs).filter((l) => l.status === 200);
  t.ok(await until(() => lines().length >= count), `${count} lines`);
  t.equal(lines().length, count, 'one line per request');
  for (const line of lines()) t.match(line, { method: 'GET', path: `${B}/Users`, operation: 'get-users', decision: 'allow', reason: /^the upstream failed mid-response: upstream/ });
  t.equal(accessLines(gw.logs).filter((l) => l.status === 499).length, 0, 'never a client gone away');
  const metrics = await scrape(gw.adminUrl);
  t.equal(metrics.value('scopegate_upstream_errors_total', { kind }), count, `scopegate_upstream_errors_total{kind="${kind}"}`);
  t.equal(metrics.value('scopegate_requests_total', { operation: 'get-users', decision: 'allow', status: '200' }), count, 'counted as answered');
}

/** With the upstream healthy again, the same gateway serves a whole 200. */
async function assertRecovered(t: Test, gw: TestGateway, up: Upstream): Promise<void> {
  up.respond = afterBody(healthy);
  for (let i = 0; i < 3; i++) {
    const before = up.seen.length;
    const res = await send(gw.port, 'GET', `${B}/Users`, { token });
    t.equal(res.status, 200, `recovered: 200 (${i + 1})`);
    t.ok(res.complete, 'a whole response');
    t.same(JSON.parse(res.body), JSON.parse(LIST), 'the upstream body');
    t.equal(up.seen.length, before + 1, 'forwarded once');
  }
}

t.test('upstream refuses connections: 502, then served once it listens again', async (t) => {
  const port = await closedPort();
  const gw = await gatewayFor(t, { origin: `http://127.0.0.1:${port}` });
  for (let i = 0; i < 3; i++) {
    const res = await send(gw.port, 'GET', `${B}/Users`, { token });
    assertScimError(t, res, 502);
    t.equal(res.headers['www-authenticate'], undefined, 'no challenge: the token was fine');
  }
  const up = await startUpstream(port);
  t.teardown(() => up.close());
  await assertRecovered(t, gw, up);
});

t.test('upstream restarts: 502 while down, served on the same port afterwards', async (t) => {
  const up = await startUpstream();
  t.teardown(() => up.close());
  const gw = await gatewayFor(t, up);
  await assertRecovered(t, gw, up);
  await up.close();
  assertScimError(t, await send(gw.port, 'GET', `${B}/Users`, { token }), 502);
  await up.listen();
  // Pooled connections to the old process are dead; none of them may turn into an error now.
  await assertRecovered(t, gw, up);
});

t.test('upstream hangs past upstream.timeoutMs: 504, the upstream call is abandoned', async (t) => {
  const up = await startUpstream();
  t.teardown(() => up.close());
  const gw = await gatewayFor(t, up);
  up.respond = () => undefined;
  const res = await send(gw.port, 'GET', `${B}/Users`, { token });
  assertScimError(t, res, 504);
  t.equal(up.seen.length, 1, 'the request did reach the upstream');
  t.ok(await until(() => up.seen[0]?.aborted === true, 5000), 'the gateway closed the hung upstream connection');
  await assertRecovered(t, gw, up);
});

t.test('upstream hangs after the headers, mid-body: the client response is aborted', async (t) => {
  const up = await startUpstream();
  t.teardown(() => up.close());
  const gw = await gatewayFor(t, up);
  up.respond = afterBody((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/scim+json', 'content-length': '5000' });
    res.write('{"schemas":['.padEnd(1000, ' '));
  });
  const res = await send(gw.port, 'GET', `${B}/Users`, { token });
  t.notOk(res.status === 200 && res.complete, 'never a short body presented as complete');
  if (res.status === 200) {
    t.ok(res.closedByPeer, 'the gateway closed the client connection');
    t.ok(res.bodyBytes < 5000, `before the announced length (${res.bodyBytes} of 5000)`);
  } else {
    assertScimError(t, res, 504);
  }
  if (res.status === 200) await assertUpstreamFailedLines(t, gw, 1, 'timeout');
  await assertRecovered(t, gw, up);
});

/** Headers and part of the body, then the socket is destroyed (or ended) by the upstream. */
function truncated(kind: 'content-length' | 'chunked', how: 'destroy' | 'end'): Responder {
  return afterBody((_req, res) => {
    const headers: Record<string, string> = { 'content-type': 'application/scim+json' };
    if (kind === 'content-length') headers['content-length'] = '10000';
    res.writeHead(200, headers);
    res.write('{"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"Resources":['.padEnd(2000, ' '));
    // Let the head and the first bytes travel through the gateway before the cut.
    setTimeout(() => {
      if (how === 'destroy') res.socket?.destroy();
      else res.socket?.end();
    }, 50);
  });
}

for (const kind of ['content-length', 'chunked'] as const) {
  for (const how of ['destroy', 'end'] as const) {
    t.test(`upstream ${how === 'destroy' ? 'resets' : 'closes'} the connection mid-response (${kind})`, async (t) => {
      const up = await startUpstream();
      t.teardown(() => up.close());
      const gw = await gatewayFor(t, up);
      up.respond = truncated(kind, how);
      let cut = 0;
      for (let i = 0; i < 3; i++) {
        const res = await send(gw.port, 'GET', `${B}/Users`, { token });
        if (res.status === 200) cut++;
        t.notOk(res.status === 200 && res.complete, 'never a short body presented as complete');
        if (res.status === 200) {
          t.ok(res.closedByPeer, 'the connection was closed');
          if (kind === 'content-length') {
            t.equal(res.headers['content-length'], '10000', 'the announced length');
            t.ok(res.bodyBytes < 10000, `closed before it (${res.bodyBytes} bytes)`);
          } else {
            t.match(res.headers['transfer-encoding'] ?? '', /chunked/, 'chunked');
            t.notOk(res.complete, 'no terminating chunk');
          }
        } else {
          assertScimError(t, res, 502);
        }
      }
      await assertUpstreamFailedLines(t, gw, cut, 'reset');
      await assertRecovered(t, gw, up);
    });
  }
}

/** An answer framed by the close of the connection (no length, not chunked), ended by a reset or a close. */
function closeDelimited(how: 'reset' | 'close', body: string): Responder {
  return afterBody((_req, res) => {
    const socket = res.socket!;
    socket.write(`HTTP/1.1 200 OK\r\nContent-Type: application/scim+json\r\nConnection: close\r\n\r\n${body}`);
    setTimeout(() => (how === 'reset' ? socket.resetAndDestroy() : socket.end()), 50);
  });
}

// A black-box audit: undici reads a reset that ends such a body as its end, and the client got a
// chunked body ended by its last chunk: a cut answer as a whole one.
t.test('upstream resets the connection mid-response (close-delimited): never relayed as a whole answer; closed, it is one', async (t) => {
  const up = await startUpstream();
  t.teardown(() => up.close());
  const gw = await gatewayFor(t, up);
  const body = '{"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"Resources":['.padEnd(2000, ' ');
  up.respond = closeDelimited('reset', body);
  let cut = 0;
  for (let i = 0; i < 3; i++) {
    const res = await send(gw.port, 'GET', `${B}/Users`, { token });
    if (res.status === 200) {
      cut++;
      t.match(res.headers['transfer-encoding'] ?? '', /chunked/, 'relayed chunked');
      t.notOk(res.complete, 'no terminating chunk');
      t.ok(res.closedByPeer, 'the connection was closed');
    } else {
      assertScimError(t, res, 502);
    }
  }
  await assertUpstreamFailedLines(t, gw, cut, 'reset');
  // The control: the same answer ended by a close is whole (RFC 9112 section 8).
  up.respond = closeDelimited('close', `${body}]}`);
  const whole = await send(gw.port, 'GET', `${B}/Users`, { token });
  t.equal(whole.status, 200);
  t.ok(whole.complete, 'a close-delimited answer ended by a close is relayed whole');
  t.equal(whole.bodyBytes, body.length + 2, 'every byte of it');
  await assertRecovered(t, gw, up);
});

// HTTP/1.0 has no chunked coding: an answer without Content-Length is read to the connection's
// close, and a plain close after a body the upstream broke off would read as the whole answer.
t.test('an HTTP/1.0 client, an answer without a length: a body the upstream breaks off ends in a reset, never a clean close', async (t) => {
  const up = await startUpstream();
  t.teardown(() => up.close());
  const gw = await gatewayFor(t, up);
  up.respond = truncated('chunked', 'destroy');
  const outcome = await new Promise<{ head: string; bytes: number; error: string | undefined }>((resolve) => {
    const socket = connect(gw.port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let error: string | undefined;
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', (e: NodeJS.ErrnoException) => (error = e.code));
    socket.on('close', () => {
      const all = Buffer.concat(chunks).toString('latin1');
      resolve({ head: all.slice(0, all.indexOf('\r\n\r\n')), bytes: all.length, error });
    });
    socket.write(`GET ${B}/Users HTTP/1.0\r\nHost: scim.example\r\nAuthorization: Bearer ${token}\r\n\r\n`);
  });
  t.match(outcome.head, /^HTTP\/1\.1 200 /, 'the head was relayed');
  t.notMatch(outcome.head, /content-length|transfer-encoding/i, 'with no length and no chunked coding');
  t.ok(outcome.bytes > 2000, `part of the body came (${outcome.bytes} bytes)`);
  t.equal(outcome.error, 'ECONNRESET', 'the connection was reset, not closed as the end of a whole answer');
  await assertUpstreamFailedLines(t, gw, 1, 'reset');
});

// limits.bufferBodyBytes: a declared body up to it is read whole before anything goes upstream
// (the default, 64 KiB, covers these); a larger one streams as it comes.
const BODY_MODES = [
  { mode: 'read whole first (within limits.bufferBodyBytes)', limits: {}, streamed: false },
  { mode: 'streamed (over limits.bufferBodyBytes)', limits: { bufferBodyBytes: 5 }, streamed: true },
] as const;

for (const { mode, limits, streamed } of BODY_MODES) {
  t.test(`${mode}: a client too slow to send its body is cut off; the upstream never gets a whole request`, async (t) => {
    const up = await startUpstream();
    t.teardown(() => up.close());
    const requestTimeoutMs = 500;
    const gw = await gatewayFor(t, up, { limits: { requestTimeoutMs, ...limits } });
    up.respond = afterBody((_req, res) => {
      res.writeHead(201, { 'content-type': 'application/scim+json' }).end('{}');
    });
    const length = 2000;
    const head = http11('POST', `${B}/Users`, [`Authorization: Bearer ${token}`, 'Content-Type: application/scim+json', `Content-Length: ${length}`]);
    let trickle: NodeJS.Timeout | undefined;
    let sent = 0;
    // One byte every 50 ms: 100 s for the whole body, far past the limit. The 10 s bound of the
    // exchange is the test's patience (20 times the limit), not the assertion.
    const res = await exchange(gw.port, head.slice(0, head.indexOf('\r\n\r\n') + 4), {
      timeoutMs: 10000,
      onSocket: (write) => {
        trickle = setInterval(() => {
          if (sent < length - 1) {
            write(sent === 0 ? '{' : ' ');
            sent += 1;
          }
        }, 50);
      },
    });
    clearInterval(trickle);
    // Cut off: a 408 (which carries Connection: close) or the connection closed without an answer.
    t.ok(res.status === 408 ? res.headers.connection === 'close' : res.closedByPeer, `the gateway cut the slow client off (after ${sent} of ${length} body bytes)`);
    t.notOk(res.status >= 200 && res.status < 300, `no success for an incomplete request (status ${res.status})`);
    if (res.status !== 0) assertScimError(t, res, 408);
    t.ok(await until(() => up.seen.every((r) => r.aborted || r.complete), 5000), 'every upstream request has ended');
    t.same(up.seen.filter((r) => r.complete), [], 'the upstream never recorded a complete request');
    const want = { method: 'POST', operation: 'create-user', status: res.status === 0 ? 408 : res.status, cause: 'ERR_HTTP_REQUEST_TIMEOUT' };
    if (streamed) {
      // A streamed body: the upstream had the head, so the line says allow (what the upstream was
      // given), with the status the client got and why it ended.
      t.equal(up.seen.length, 1, 'the upstream had the request head');
      await assertCutShortLine(t, gw, want);
    } else {
      await sleep(100);
      t.equal(up.seen.length, 0, 'nothing reached the upstream, not even the head');
      await assertRefusedLine(t, gw, want);
    }
    await assertRecovered(t, gw, up);
  });

  t.test(`${mode}: a client that ends mid-body: a 400; the upstream request is aborted, or was never made`, async (t) => {
    const up = await startUpstream();
    t.teardown(() => up.close());
    const gw = await gatewayFor(t, up, { limits });
    // An upstream that acts on the head without reading the body (as RESTEasy's DELETE does), slower
    // than the client.
    up.respond = (_req, res) => {
      setTimeout(() => res.writeHead(204).end(), 1000);
    };
    const head = http11('DELETE', `${B}/Users/victim`, [`Authorization: Bearer ${token}`, 'Content-Type: application/scim+json', 'Content-Length: 10']);
    const c = await converse(gw.port);
    // 3 of the 10 declared bytes, then the client's side of the connection ends.
    c.write(head.slice(0, head.indexOf('\r\n\r\n') + 4) + 'abc');
    await sleep(300);
    c.socket.end();
    t.ok(await c.waitClose(), 'the gateway closes the connection');
    assertScimError(t, c.response(), 400);
    t.equal(c.data.match(/HTTP\/1\.1 \d{3} /g)?.length, 1, 'one answer, nothing after it');
    const want = { method: 'DELETE', operation: 'delete-user-by-id', status: 400, cause: 'HPE_INVALID_EOF_STATE' };
    if (streamed) {
      t.ok(await until(() => up.seen.length === 1 && up.seen[0]!.aborted, 5000), 'the upstream request was aborted, unanswered');
      t.match(up.seen[0], { method: 'DELETE', url: `${B}/Users/victim`, complete: false }, 'the upstream had the head and part of the body');
      await assertCutShortLine(t, gw, want);
    } else {
      await sleep(100);
      t.equal(up.seen.length, 0, 'the upstream never had the DELETE: it cannot act on a request its client did not finish');
      await assertRefusedLine(t, gw, want);
    }
  });
}

/** The one access line and count of a request whose body the HTTP parser refused before anything was forwarded. */
async function assertRefusedLine(t: Test, gw: TestGateway, want: { method: string; operation: string; status: number; cause: string }): Promise<void> {
  const lines = () => accessLines(gw.logs).filter((l) => l.method === want.method);
  t.ok(await until(() => lines().length >= 1), 'its access line');
  t.equal(lines().length, 1, 'one access line');
  t.match(lines()[0], { operation: want.operation, status: want.status, decision: 'deny', reason: `refused by the HTTP parser: ${want.cause}` });
  const metrics = await scrape(gw.adminUrl);
  t.equal(metrics.value('scopegate_requests_total', { operation: want.operation, decision: 'deny', status: String(want.status) }), 1, 'counted as denied');
}

/** The one access line and count of a forwarded request whose body the HTTP parser then refused. */
async function assertCutShortLine(t: Test, gw: TestGateway, want: { method: string; operation: string; status: number; cause: string }): Promise<void> {
  const lines = () => accessLines(gw.logs).filter((l) => l.method === want.method);
  t.ok(await until(() => lines().length >= 1), 'its access line');
  t.equal(lines().length, 1, 'one access line');
  t.match(lines()[0], { operation: want.operation, status: want.status, decision: 'allow', reason: `forwarded, then its body was cut short: refused by the HTTP parser: ${want.cause}` });
  const metrics = await scrape(gw.adminUrl);
  t.equal(metrics.value('scopegate_requests_total', { operation: want.operation, decision: 'allow', status: String(want.status) }), 1, 'counted as allowed');
  t.notMatch(metrics.text, new RegExp(`^scopegate_requests_total\\{operation="${want.operation}",decision="deny"`, 'm'), 'never as denied');
  t.same(gw.logs.filter((l) => (JSON.parse(l) as { level?: number }).level! >= 50), [], 'no error line (the aborted upstream request is not an error)');
}

t.test('hop-by-hop headers of the upstream response stay there (RFC 9110 section 7.6.1)', async (t) => {
  const up = await startUpstream();
  t.teardown(() => up.close());
  const gw = await gatewayFor(t, up);
  up.respond = afterBody((_req, res) => {
    res.writeHead(200, {
      'content-type': 'application/scim+json', 'content-length': String(Buffer.byteLength(LIST)),
      connection: 'keep-alive, x-upstream-hop', 'keep-alive': 'timeout=1', 'x-upstream-hop': 'internal',
      'proxy-authenticate': 'Basic realm="internal proxy"',
    });
    res.end(LIST);
  });
  // The client asks to close; the upstream's keep-alive must not override that.
  const res = await send(gw.port, 'GET', `${B}/Users`, { token });
  t.equal(res.status, 200, 'served');
  t.equal(res.headers['keep-alive'], undefined, 'no Keep-Alive of the upstream connection');
  t.equal(res.headers['x-upstream-hop'], undefined, 'no header the upstream named in Connection');
  t.equal(res.headers['proxy-authenticate'], undefined, 'no Proxy-Authenticate: the gateway is the next client of the chain, not the SCIM client');
  t.notMatch(res.headers.connection ?? '', /keep-alive/i, 'the client asked Connection: close; it is not told keep-alive');
});

/**
 * An upstream that writes raw bytes: answers no HTTP library would send. Each request gets the
 * bytes of `answer` (chosen by the request's own URL), then the connection closes.
 */
async function startRawUpstream(t: Test, answer: (head: string) => string): Promise<{ origin: string; heads: string[] }> {
  const heads: string[] = [];
  const server = createNetServer((socket) => {
    let data = '';
    socket.on('data', (chunk: Buffer) => {
      data += chunk.toString('latin1');
      const end = data.indexOf('\r\n\r\n');
      if (end === -1) return;
      const head = data.slice(0, end);
      heads.push(head);
      socket.end(answer(head));
    });
    socket.on('error', () => undefined);
  });
  const stoppable = await listenStoppable(server);
  t.teardown(() => stoppable.close());
  return { origin: `http://127.0.0.1:${stoppable.port}`, heads };
}

t.test('odd upstream answers: a malformed one is a 502 that stays allow, a 304 with a length is relayed, a transfer coding is not passed off as the body', async (t) => {
  const answers: Record<string, string> = {
    // A head that parses, then a body that does not: the head is not the gateway's 502's.
    'bad-chunk': 'HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Encoding: gzip\r\nSet-Cookie: a=b\r\nETag: "e1"\r\nX-Upstream: yes\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n',
    'bad-extension': 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;a=\x01\r\nok\r\n0\r\n\r\n',
    'not-modified': 'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 1234\r\n\r\n',
    'gzip-chunked': 'HTTP/1.1 200 OK\r\nX-Upstream: yes\r\nSet-Cookie: a=b\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4\r\n\x1f\x8b\x08\x00\r\n0\r\n\r\n',
    'chunked': 'HTTP/1.1 200 OK\r\nContent-Type: application/scim+json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n',
  };
  const up = await startRawUpstream(t, (head) => answers[/[?&]case=([\w-]+)/.exec(head)?.[1] ?? 'chunked']!);
  const gw = await gatewayFor(t, up);
  const ask = (name: string, headers: string[] = []) => send(gw.port, 'GET', `${B}/Users?case=${name}`, { token, headers });

  for (const name of ['bad-chunk', 'bad-extension']) {
    const res = await ask(name);
    assertScimError(t, res, 502);
    t.equal(accessLines(gw.logs).at(-1)?.decision, 'allow', `${name}: the upstream failed a request the gateway allowed`);
    t.match(accessLines(gw.logs).at(-1)?.reason, /^upstream answered malformed HTTP \(HPE/, `${name}: the line says what failed`);
    for (const header of ['content-encoding', 'set-cookie', 'etag', 'x-upstream']) t.equal(res.headers[header], undefined, `${name}: no ${header} of the upstream on the gateway's own answer`);
  }
  t.notOk(gw.logs.some((l) => l.includes('"internal error"')), 'no internal-error line');
  const metrics = await scrape(gw.adminUrl);
  t.equal(metrics.value('scopegate_upstream_errors_total', { kind: 'other' }), 2, 'counted as upstream errors');
  t.equal(metrics.value('scopegate_requests_total', { operation: 'get-users', decision: 'allow', status: '502' }), 2);

  const notModified = await ask('not-modified', ['If-None-Match: "v1"']);
  t.equal(notModified.status, 304, 'a 304 with Content-Length is relayed');
  t.equal(notModified.headers.etag, '"v1"');
  t.equal(notModified.bodyBytes, 0, 'no body');
  t.equal(accessLines(gw.logs).at(-1)?.status, 304);

  const coded = await ask('gzip-chunked');
  assertScimError(t, coded, 502);
  t.equal(coded.headers['x-upstream'], undefined, 'none of the upstream\'s headers on the gateway\'s own answer');
  t.equal(coded.headers['set-cookie'], undefined);
  t.match(accessLines(gw.logs).at(-1), { status: 502, decision: 'allow', reason: /transfer coding other than chunked/ });

  const plain = await ask('chunked');
  t.equal(plain.status, 200, 'control: plain chunked is relayed');
  t.equal(plain.body, '{}');
});

/** Writes `size` bytes (a multiple of 64 KiB) to `res` as fast as its reader takes them, then ends it. */
function stream(res: ServerResponse, size: number): void {
  const chunk = Buffer.alloc(64 * 1024, 'x');
  let left = size / chunk.length;
  const pump = () => {
    while (left > 0) {
      left -= 1;
      if (!res.write(chunk)) return void res.once('drain', pump);
    }
    res.end();
  };
  pump();
}

// A black-box audit: clients that read nothing of their answers held every upstream connection,
// and every later request waited, unanswered, for as long as they liked.
t.test('a client that reads nothing of its answer is cut after limits.sendTimeoutMs, and frees its upstream connection; one waiting for a connection gets 504 after upstream.timeoutMs', async (t) => {
  const up = await startUpstream();
  t.teardown(() => up.close());
  let streaming = 0;
  up.respond = (req, res) => {
    if (!req.url?.includes('big')) return healthy(req, res);
    streaming += 1;
    res.writeHead(200, { 'content-type': 'application/scim+json' });
    stream(res, 64 * 1024 * 1024);
  };
  const gw = await gatewayFor(t, up, { upstream: { url: up.origin, timeoutMs: 600, connections: 1 }, limits: { sendTimeoutMs: 1500 } });
  // The one upstream connection goes to a client that never reads.
  const reader = await converse(gw.port);
  reader.socket.pause();
  reader.write(http11('GET', `${B}/Users/big`, [`Authorization: Bearer ${token}`]));
  t.ok(await until(() => streaming === 1), 'the upstream streams its answer');
  // Meanwhile another request waits for that connection: 504 after upstream.timeoutMs.
  const started = Date.now();
  const queued = await send(gw.port, 'GET', `${B}/Users`, { token });
  assertScimError(t, queued, 504);
  t.ok(Date.now() - started < 1400, `504 after about upstream.timeoutMs (${Date.now() - started} ms), not after the stalled answer`);
  t.same(up.seen.map((s) => s.url), [`${B}/Users/big`], 'the request given up never reached the upstream');
  // The stalled connection is closed after sendTimeoutMs (its client, paused, never reads the
  // close), and its upstream request aborted.
  t.teardown(() => reader.end());
  t.ok(await until(() => accessLines(gw.logs).some((l) => l.status === 499), 5000), 'its access line, once its connection is closed');
  t.match(accessLines(gw.logs).find((l) => l.status === 499), { decision: 'allow', reason: /the kernel took none of the answer for 1500 ms \(limits\.sendTimeoutMs; the client reads too slowly or not at all\)/ });
  t.ok(await until(() => up.seen.find((s) => s.url.endsWith('/big'))?.aborted === true), 'its upstream request aborted');
  // The pool's connection is free again.
  const after = await send(gw.port, 'GET', `${B}/Users`, { token });
  t.equal(after.status, 200, 'the next request is served');
  await sleep(100);
  t.same(up.seen.map((s) => s.url), [`${B}/Users/big`, `${B}/Users`], 'nor later, once the connection was free: only the next request went');
});

// The first version of the stall check compared what waited to go out at two sweeps: a client
// reading steadily, but slower than the gateway could send, showed the same one-chunk backlog
// at each and was cut (a regression audit: readers of 64 KB/s to 4 MB/s, closed at sendTimeoutMs).
t.test('a client that reads slowly, but reads, is never cut by limits.sendTimeoutMs', async (t) => {
  const up = await startUpstream();
  t.teardown(() => up.close());
  const size = 6 * 1024 * 1024;
  up.respond = (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(size) });
    stream(res, size);
  };
  const gw = await gatewayFor(t, up, { upstream: { url: up.origin, timeoutMs: 5000, connections: 4 }, limits: { sendTimeoutMs: 1000 } });
  // A reader of its own: 16 KiB every 10 ms (about 1.6 MB/s, steadily), the socket never flowing.
  const socket = connect(gw.port, '127.0.0.1');
  await new Promise((resolve) => socket.once('connect', resolve));
  let closed = false;
  socket.once('close', () => {
    closed = true;
  });
  t.teardown(() => socket.destroy());
  let received = 0;
  socket.write(http11('GET', `${B}/Users/slow`, [`Authorization: Bearer ${token}`]));
  const sip = setInterval(() => {
    const chunk = (socket.read(16384) ?? socket.read()) as Buffer | null;
    if (chunk) received += chunk.length;
  }, 10);
  t.teardown(() => clearInterval(sip));
  t.ok(await until(() => received >= size || closed, 20000), 'the answer arrives, or the connection closes');
  clearInterval(sip);
  t.ok(received >= size, `the whole answer arrived (${received} of ${size} bytes)`);
  t.notOk(accessLines(gw.logs).some((l) => l.status === 499), 'never cut as stalled');
});
