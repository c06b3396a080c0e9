/**
 * A client that goes away before its answer is complete (INTERFACE.md "Logs": one access line per
 * request): the request still gets exactly one access line, with its method, path and operation:
 * 499 whether its body had been read whole and forwarded or the answer had begun; the parser's
 * 400 when the connection ended in the middle of the body. Never an upstream failure in
 * scopegate_upstream_errors_total: the client left. A request forwarded is aborted upstream as its
 * client leaves. And a request whose client left before it was forwarded is never forwarded
 * afterwards.
 */
import { connect, type Socket } from 'node:net';
import t from 'tap';
import { accessLines, B, scrape, startTestGateway } from '../helpers/gateway.js';
import { type GatewayStack, readText, sleep, startGatewayStack, startServer, tokenConfig, until } from './support.js';

const WRITE = 'https://jans.io/scim/users.write';
const READ = 'https://jans.io/scim/users.read';

const USER = JSON.stringify({ schemas: ['urn:ietf:params:scim:schemas:core:2.0:User'], userName: 'gone' });
// Bodies declared up to this size are read whole before forwarding; larger ones stream.
const BUFFERED = USER.length + 50;

let stack: GatewayStack | undefined;
t.before(async () => {
  stack = await startGatewayStack({}, { limits: { bufferBodyBytes: BUFFERED } });
});
t.teardown(() => stack?.close());
const JSON_TYPE = 'Content-Type: application/scim+json\r\n';

interface Case {
  name: string;
  scope: string;
  method: string;
  path: string;
  operation: string;
  /** Header lines after Authorization, each ending in CRLF. */
  head: string;
  body: string;
  /** The upstream begins its answer (status line, headers, a first chunk) and never ends it. */
  answerBegins?: boolean;
  /** When the client goes away. */
  ready(upstream: { complete: boolean } | undefined, received: string): boolean;
  /** The line's status and reason, when not 499 for a connection closed early. */
  status?: number;
  reason?: RegExp;
  /** False when nothing of the request may reach the upstream (a chunked or small body is read whole first). */
  forwarded?: false;
}

const whole = (u: { complete: boolean } | undefined) => u?.complete === true;
// A chunked or small body is read whole before anything of it goes upstream: the client leaves
// once the gateway has had `ms` to read what it sent.
const after = (ms: number) => {
  let since: number | undefined;
  return () => Date.now() >= (since ??= Date.now()) + ms;
};

/** The sum of scopegate_upstream_errors_total over its kinds. */
const upstreamErrors = async (adminUrl: string) => (await scrape(adminUrl)).sum('scopegate_upstream_errors_total');
const cases: Case[] = [
  { name: 'GET', scope: READ, method: 'GET', path: `${B}/Users/abort-get`, operation: 'get-user-by-id', head: '', body: '', ready: (u) => u !== undefined },
  { name: 'POST with a Content-Length, body forwarded whole', scope: WRITE, method: 'POST', path: `${B}/Users`, operation: 'create-user', head: `${JSON_TYPE}Content-Length: ${USER.length}\r\n`, body: USER, ready: whole },
  { name: 'POST chunked, body forwarded whole', scope: WRITE, method: 'POST', path: `${B}/Users`, operation: 'create-user', head: `${JSON_TYPE}Transfer-Encoding: chunked\r\n`, body: `${USER.length.toString(16)}\r\n${USER}\r\n0\r\n\r\n`, ready: whole },
  { name: 'POST with a Content-Length over limits.bufferBodyBytes (streamed), body cut off mid-way', scope: WRITE, method: 'POST', path: `${B}/Users`, operation: 'create-user', head: `${JSON_TYPE}Content-Length: ${BUFFERED + 1}\r\n`, body: USER, ready: (u) => u !== undefined, status: 400, reason: /^forwarded, then its body was cut short: refused by the HTTP parser: HPE_INVALID_EOF_STATE$/ },
  { name: 'POST with a Content-Length within limits.bufferBodyBytes (read whole first), body cut off mid-way', scope: WRITE, method: 'POST', path: `${B}/Users`, operation: 'create-user', head: `${JSON_TYPE}Content-Length: ${BUFFERED}\r\n`, body: USER, ready: after(100), status: 400, reason: /^refused by the HTTP parser: HPE_INVALID_EOF_STATE$/, forwarded: false },
  { name: 'POST chunked, body cut off mid-way', scope: WRITE, method: 'POST', path: `${B}/Users`, operation: 'create-user', head: `${JSON_TYPE}Transfer-Encoding: chunked\r\n`, body: `${USER.length.toString(16)}\r\n${USER}\r\n`, ready: after(100), status: 400, reason: /^refused by the HTTP parser: HPE_INVALID_EOF_STATE$/, forwarded: false },
  { name: 'GET whose answer has begun', scope: READ, method: 'GET', path: `${B}/Users/abort-begun`, operation: 'get-user-by-id', head: '', body: '', answerBegins: true, ready: (_u, received) => received.includes('\r\n\r\n') },
];

for (const c of cases) {
  t.test(`${c.name}: the client goes away: one access line, ${c.status ?? 499}`, async (t) => {
    const { auth, up, gw } = stack!;
    const token = await auth.issueToken([c.scope]);
    let release: () => void = () => undefined;
    // The upstream's side of the forwarded request closes unanswered: the gateway aborted it.
    let abandoned = false;
    up.respond = (_req, res) => {
      res.on('close', () => {
        if (!res.writableFinished) abandoned = true;
      });
      if (c.answerBegins) {
        res.writeHead(200, { 'content-type': 'application/scim+json' });
        res.write('{"schemas":');
      }
      release = () => {
        if (!res.destroyed) {
          if (!res.headersSent) res.writeHead(200, { 'content-type': 'application/scim+json' });
          res.end('{}');
        }
      };
    };
    up.reset();
    const before = accessLines(gw.logs).length;
    const linesBefore = gw.logs.length;
    const blamed = await upstreamErrors(gw.adminUrl);
    const socket: Socket = connect(gw.port, '127.0.0.1');
    let received = '';
    socket.setEncoding('utf8').on('data', (chunk: string) => (received += chunk));
    socket.on('error', () => undefined);
    socket.write(`${c.method} ${c.path} HTTP/1.1\r\nHost: scim.example\r\nAuthorization: Bearer ${token}\r\n${c.head}\r\n${c.body}`);
    t.ok(await until(() => c.ready(up.requests[0], received)), 'the exchange reached the point where the client leaves');
    t.equal(accessLines(gw.logs).length, before, 'no access line while the request is in flight');
    socket.destroy();
    t.ok(await until(() => accessLines(gw.logs).length > before), 'an access line is written');
    // A request the upstream received whole is not held open to upstream.timeoutMs (30 s) for an
    // answer nobody will read. (One cut off mid-body never reaches the responder.)
    if (c.status === undefined) t.ok(await until(() => abandoned), 'the upstream request is aborted: its connection closes before it answers');
    // The upstream would answer after all: still one line.
    release();
    await sleep(150);
    const lines = accessLines(gw.logs).slice(before);
    t.equal(lines.length, 1, 'exactly one access line');
    t.match(lines[0], c.status === undefined
      ? { method: c.method, path: c.path, operation: c.operation, status: 499, decision: 'allow', reason: /^connection closed before the response was complete \(scopes satisfied\)$/ }
      // Refused by the parser: allowed when it had been forwarded already (the upstream had its head).
      : { method: c.method, path: c.path, operation: c.operation, status: c.status, decision: c.forwarded === false ? 'deny' : 'allow', reason: c.reason });
    t.equal(await upstreamErrors(gw.adminUrl), blamed, 'the upstream is not blamed: scopegate_upstream_errors_total unchanged');
    // The forwarder's own warning of the request it aborted (a line with a stack trace) is not
    // written: the gateway writes every line of stdout itself.
    t.same(gw.logs.slice(linesBefore).filter((line) => !line.includes('"msg":"access"')), [], 'and no other line');
    if (c.forwarded === false) t.equal(up.requests.length, 0, 'nothing reached the upstream');
  });
}

t.test('the requests answered before and after on one connection keep their own lines', async (t) => {
  const { auth, up, gw } = stack!;
  up.respond = (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/scim+json', 'content-length': '2' });
    res.end('{}');
  };
  const token = await auth.issueToken([READ]);
  const before = accessLines(gw.logs).length;
  const socket = connect(gw.port, '127.0.0.1');
  let received = '';
  socket.setEncoding('utf8').on('data', (chunk: string) => (received += chunk));
  const get = (n: number) => `GET ${B}/Users/keep-${n} HTTP/1.1\r\nHost: scim.example\r\nAuthorization: Bearer ${token}\r\n\r\n`;
  socket.write(get(1) + get(2));
  t.ok(await until(() => (received.match(/HTTP\/1\.1 200/g) ?? []).length === 2), 'both answered');
  socket.destroy();
  await sleep(150);
  const lines = accessLines(gw.logs).slice(before);
  t.same(lines.map((l) => [l.path, l.status]), [[`${B}/Users/keep-1`, 200], [`${B}/Users/keep-2`, 200]], 'one line each, 200, no 499');
});

t.test('a client that goes away mid-body is no upstream error', async (t) => {
  const { auth, up, gw } = stack!;
  const token = await auth.issueToken([WRITE]);
  for (const framing of ['Content-Length', 'chunked'] as const) {
    for (const leaves of ['FIN', 'RST'] as const) {
      const name = `${framing}, ${leaves}`;
      up.reset();
      const errors = await upstreamErrors(gw.adminUrl);
      const before = accessLines(gw.logs).length;
      const socket = connect(gw.port, '127.0.0.1');
      socket.on('error', () => undefined);
      const framed = framing === 'chunked' ? `Transfer-Encoding: chunked\r\n\r\n${USER.length.toString(16)}\r\n${USER}\r\n` : `Content-Length: ${USER.length + 100}\r\n\r\n${USER}`;
      socket.write(`POST ${B}/Users HTTP/1.1\r\nHost: scim.example\r\nAuthorization: Bearer ${token}\r\n${JSON_TYPE}${framed}`);
      await sleep(200);
      if (leaves === 'FIN') socket.end();
      else socket.resetAndDestroy();
      t.ok(await until(() => accessLines(gw.logs).length > before), `${name}: an access line`);
      await sleep(150);
      const lines = accessLines(gw.logs).slice(before);
      t.equal(lines.length, 1, `${name}: one line`);
      t.match(lines[0], { path: `${B}/Users`, status: leaves === 'FIN' ? 400 : 499 }, `${name}: the parser's 400 or a 499`);
      t.equal(await upstreamErrors(gw.adminUrl), errors, `${name}: no upstream error counted`);
      // A chunked body is read whole first: nothing of it goes upstream. One with a length is
      // streamed: the upstream may have its start, never all of it.
      if (framing === 'chunked') t.equal(up.requests.length, 0, `${name}: nothing upstream`);
      else t.notOk(up.requests.some((r) => r.complete), `${name}: nothing complete upstream`);
      socket.destroy();
    }
  }
});

t.test('a request whose client goes away while its token is validated is not forwarded afterwards', async (t) => {
  const { auth, up } = stack!;
  // The authorization server answers after 300 ms: the client is gone by then.
  let introspections = 0;
  const slowAuth = await startServer((req, res) => {
    introspections += 1;
    void readText(req).then(async (form) => {
      await sleep(300);
      const answer = await fetch(auth.introspectionEndpoint, { method: 'POST', headers: { authorization: req.headers.authorization ?? '', 'content-type': req.headers['content-type'] ?? '' }, body: form });
      res.writeHead(answer.status, { 'content-type': 'application/json' }).end(await answer.text());
    });
  });
  t.teardown(() => slowAuth.close());
  const gw = await startTestGateway({ upstream: { url: up.origin }, token: tokenConfig(auth, { introspection: { endpoint: `${slowAuth.origin}/introspection` } }) });
  t.teardown(() => gw.close());
  for (const [name, head, body] of [
    ['DELETE', `DELETE ${B}/Users/victim HTTP/1.1\r\n`, ''],
    ['POST with a Content-Length', `POST ${B}/Users HTTP/1.1\r\n${JSON_TYPE}Content-Length: ${USER.length}\r\n`, USER],
    ['POST chunked', `POST ${B}/Users HTTP/1.1\r\n${JSON_TYPE}Transfer-Encoding: chunked\r\n`, `${USER.length.toString(16)}\r\n${USER}\r\n0\r\n\r\n`],
  ] as const) {
    up.reset();
    const token = await auth.issueToken([WRITE]);
    const asked = introspections;
    const before = accessLines(gw.logs).length;
    const socket = connect(gw.port, '127.0.0.1');
    socket.on('error', () => undefined);
    socket.write(`${head}Host: scim.example\r\nAuthorization: Bearer ${token}\r\n\r\n${body}`);
    t.ok(await until(() => introspections > asked), `${name}: the token is being validated`);
    socket.destroy();
    t.ok(await until(() => accessLines(gw.logs).length > before), `${name}: an access line`);
    // The validation ends (allowed): still nothing goes upstream.
    await sleep(600);
    t.equal(up.requests.length, 0, `${name}: nothing forwarded`);
    const lines = accessLines(gw.logs).slice(before);
    t.equal(lines.length, 1, `${name}: one line`);
    t.match(lines[0], { status: 499, decision: 'deny', reason: /^connection closed before the response was complete$/ }, `${name}: which says it was not forwarded`);
    t.same(lines[0]?.requiredScopes, [WRITE], `${name}: and names what the operation needs`);
    t.equal(await upstreamErrors(gw.adminUrl), 0, `${name}: no upstream error counted`);
  }
});
