// listen.maxConnections: past it, a connection to the proxy port is closed as it comes (counted in
// scopegate_connections_dropped_total, never a request); one freed lets the next in; a reload
// changes the bound.
import { readFileSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import t from 'tap';
import { B, scrape, startTestGateway } from '../helpers/gateway.js';
import { startRecordingUpstream } from '../helpers/upstream.js';

const up = await startRecordingUpstream();
t.teardown(() => up.close());
const gw = await startTestGateway({
  upstream: { url: up.origin },
  listen: { maxConnections: 2 },
  token: { jwt: { jwksUri: 'http://127.0.0.1:1/jwks', issuer: 'https://issuer.test' } },
});
t.teardown(() => gw.close());

/** A connection, and what it read until it closed (or `ms` passed). */
function open(): Promise<{ socket: Socket; closed: Promise<string> }> {
  return new Promise((resolve) => {
    const socket = connect(gw.port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (c) => chunks.push(c));
    socket.on('error', () => undefined);
    const closed = new Promise<string>((done) => socket.on('close', () => done(Buffer.concat(chunks).toString('latin1'))));
    socket.on('connect', () => resolve({ socket, closed }));
  });
}

const within = <T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> => Promise.race([p, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), ms))]);

t.test('the connection past listen.maxConnections is closed as it comes; a freed one lets the next in', async (t) => {
  const a = await open();
  const b = await open();
  const c = await open();
  c.socket.write(`GET ${B}/ServiceProviderConfig HTTP/1.1\r\nHost: x\r\n\r\n`);
  t.equal(await within(c.closed, 2000), '', 'the third connection is closed, unanswered');
  t.equal(up.requests.length, 0, 'nothing upstream');
  t.equal((await scrape(gw.adminUrl)).value('scopegate_connections_dropped_total'), 1, 'counted');
  t.equal((await scrape(gw.adminUrl)).sum('scopegate_requests_total'), 0, 'not a request');
  // The two held connections are served.
  a.socket.write(`GET ${B}/ServiceProviderConfig HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  t.match(await within(a.closed, 3000), /^HTTP\/1\.1 200 /, 'a held connection is served');
  // One freed: the next connection is let in.
  const d = await open();
  d.socket.write(`GET ${B}/ServiceProviderConfig HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  t.match(await within(d.closed, 3000), /^HTTP\/1\.1 200 /, 'a connection under the bound is served');
  b.socket.destroy();
});

t.test('a reload changes the bound (0: no limit)', async (t) => {
  const config = JSON.parse(readFileSync(gw.configFile, 'utf8')) as { listen: Record<string, unknown> };
  config.listen.maxConnections = 0;
  writeFileSync(gw.configFile, JSON.stringify(config));
  t.match(await gw.gateway.reload(), { ok: true });
  const held = await Promise.all(Array.from({ length: 4 }, () => open()));
  const last = await open();
  last.socket.write(`GET ${B}/ServiceProviderConfig HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  t.match(await within(last.closed, 3000), /^HTTP\/1\.1 200 /, 'the fifth connection is served');
  for (const h of held) h.socket.destroy();
  t.equal((await scrape(gw.adminUrl)).value('scopegate_connections_dropped_total'), 1, 'none dropped since');
});
