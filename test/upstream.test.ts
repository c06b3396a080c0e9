/**
 * src/upstream.ts on its own: UpstreamAbort is a signal undici accepts and acts on, through the
 * dispatcher reply-from forwards with, before the answer and while its body is read. (The
 * gateway's use of it, a client that leaves: test/gateway/abort.test.ts.)
 */
import type { ServerResponse } from 'node:http';
import t from 'tap';
import { abortableDispatcher, ClientLeft, createUpstreamPool, kUpstreamAbort, PoolTimeout, UpstreamAbort } from '../src/upstream.js';
import { until } from './gateway/support.js';
import { startRecordingUpstream } from './helpers/upstream.js';

t.test('listeners: each called once on abort, a removed one never; abort is once', async (t) => {
  const signal = new UpstreamAbort();
  const calls: string[] = [];
  const a = () => calls.push('a');
  const b = () => calls.push('b');
  const c = () => calls.push('c');
  signal.once('abort', a).on('abort', b).on('abort', c).removeListener('abort', b);
  t.equal(signal.aborted, false);
  signal.abort();
  signal.abort();
  t.same(calls, ['a', 'c'], 'a and c, once each');
  t.ok(signal.reason instanceof ClientLeft, 'the reason says the client left');
  t.equal((signal.reason as ClientLeft).code, 'SCOPEGATE_CLIENT_LEFT');
});

t.test('through the dispatcher, undici aborts the request: before its answer, and while its body is read', async (t) => {
  const up = await startRecordingUpstream();
  const held: ServerResponse[] = [];
  let closedUnanswered = 0;
  up.respond = (req, res) => {
    res.on('close', () => {
      if (!res.writableFinished) closedUnanswered += 1;
    });
    if (req.url === '/begun') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"begun":');
    }
    held.push(res);
  };
  const pool = createUpstreamPool({ url: up.origin, connections: 2, timeoutMs: 30000 });
  const dispatcher = abortableDispatcher(pool, { connections: 2, timeoutMs: 30000 });
  t.teardown(async () => {
    await dispatcher.destroy();
    await up.close();
  });
  const send = (path: string, signal: UpstreamAbort | undefined) => new Promise<{ error: Error | null; body?: NodeJS.ReadableStream }>((resolve) => {
    const headers: Record<string | symbol, unknown> = { host: 'upstream.example' };
    if (signal) headers[kUpstreamAbort] = signal;
    dispatcher.request({ origin: up.origin, path, method: 'GET', headers: headers as Record<string, string> }, (error, data) => resolve({ error, body: data?.body }));
  });

  // Before the answer: the callback gets the reason, the upstream sees its connection close.
  const waiting = new UpstreamAbort();
  const pending = send('/waiting', waiting);
  t.ok(await until(() => held.length === 1), 'the upstream has the request');
  waiting.abort();
  const { error } = await pending;
  t.ok(error instanceof ClientLeft, 'the request fails with the reason');
  t.ok(await until(() => closedUnanswered === 1), 'the upstream side closes unanswered');

  // The answer has begun: its body fails with the reason.
  const reading = new UpstreamAbort();
  const begun = await send('/begun', reading);
  t.equal(begun.error, null, 'the head arrives');
  const failed = new Promise<unknown>((resolve) => begun.body!.on('error', resolve));
  begun.body!.on('data', () => undefined);
  reading.abort();
  t.ok((await failed) instanceof ClientLeft, 'the body fails with the reason');
  t.ok(await until(() => closedUnanswered === 2), 'the upstream side closes unfinished');

  // Without a signal in its headers, a request is sent as it is.
  const plain = send('/plain', undefined);
  t.ok(await until(() => held.length === 3), 'a request without a signal goes as well');
  held[2]!.end('{}');
  t.equal((await plain).error, null, 'and is answered');
});

// A black-box audit: clients that do not read their answers held every pool connection, and the
// requests queued behind them waited with no timeout at all (undici times a request only once it
// has a connection).
t.test('a request that waits upstream.timeoutMs for a pool connection fails (504), and is never sent later', async (t) => {
  const up = await startRecordingUpstream();
  const held: ServerResponse[] = [];
  up.respond = (_req, res) => {
    held.push(res);
  };
  const pool = createUpstreamPool({ url: up.origin, connections: 2, timeoutMs: 30000 });
  const dispatcher = abortableDispatcher(pool, { connections: 2, timeoutMs: 300 });
  t.teardown(async () => {
    await dispatcher.destroy();
    await up.close();
  });
  const send = (path: string) => new Promise<{ error: Error | null; ms: number }>((resolve) => {
    const started = Date.now();
    const headers: Record<string | symbol, unknown> = { host: 'upstream.example', [kUpstreamAbort]: new UpstreamAbort() };
    dispatcher.request({ origin: up.origin, path, method: 'GET', headers: headers as Record<string, string> }, (error) => resolve({ error, ms: Date.now() - started }));
  });
  const first = send('/a');
  const second = send('/b');
  t.ok(await until(() => held.length === 2), 'both connections are held');
  const third = await send('/c');
  t.ok(third.error instanceof PoolTimeout, 'the third fails with PoolTimeout');
  t.match((third.error as PoolTimeout | null)?.code, /TIMEOUT/, 'a code the gateway reads as a timeout (504)');
  t.ok(third.ms >= 250 && third.ms < 2000, `after about upstream.timeoutMs (${third.ms} ms)`);
  // A connection frees: the request given up is not sent then.
  held[0]!.end('{}');
  t.equal((await first).error, null);
  const fourth = send('/d');
  t.ok(await until(() => held.length === 3), 'the next request takes the freed connection');
  t.same(up.requests.map((r) => r.url), ['/a', '/b', '/d'], '/c never reached the upstream');
  held[1]!.end('{}');
  held[2]!.end('{}');
  t.equal((await second).error, null);
  t.equal((await fourth).error, null, 'not held up by the count of the one given up');
});

// Its wait is for a connection only: once it has one, undici's own timeouts take over (a request
// that waited most of upstream.timeoutMs for a connection, then as long for its answer, was cut
// at upstream.timeoutMs after it was sent: a 504 for a request the upstream carried out).
t.test('a request that waited for a connection has the whole of upstream.timeoutMs for its answer', async (t) => {
  const up = await startRecordingUpstream();
  up.respond = (_req, res) => {
    setTimeout(() => res.end('{}'), 400);
  };
  const pool = createUpstreamPool({ url: up.origin, connections: 2, timeoutMs: 600 });
  const dispatcher = abortableDispatcher(pool, { connections: 2, timeoutMs: 600 });
  t.teardown(async () => {
    await dispatcher.destroy();
    await up.close();
  });
  const send = (path: string) => new Promise<Error | null>((resolve) => {
    const headers: Record<string | symbol, unknown> = { host: 'upstream.example', [kUpstreamAbort]: new UpstreamAbort() };
    dispatcher.request({ origin: up.origin, path, method: 'GET', headers: headers as Record<string, string> }, (error, data) => {
      data?.body?.resume();
      resolve(error);
    });
  });
  const errors = await Promise.all(['/1', '/2', '/3', '/4'].map(send));
  t.same(errors, [null, null, null, null], 'all four answered: 400 ms for a connection, then 400 ms for the answer');
  t.equal(up.requests.length, 4);
});
