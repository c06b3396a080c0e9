// listen.maxConnections: past it, a connection to the proxy port is closed as it comes (counted in
// scopegate_connections_dropped_total, never a request); one freed lets the next in; a reload
// changes the bound.
import { readFileSync, writeFileSync } from 'node:fs';
import t from 'tap';
import { B, scrape, startTestGateway } from '../helpers/gateway.js';
import { converse } from '../helpers/stack.js';
import { startRecordingUpstream } from '../helpers/upstream.js';

const up = await startRecordingUpstream();
t.teardown(() => up.close());
const gw = await startTestGateway({
  upstream: { url: up.origin },
  listen: { maxConnections: 2 },
  token: { jwt: { jwksUri: 'http://127.0.0.1:1/jwks', issuer: 'https://issuer.test' } },
});
t.teardown(() => gw.close());

const PUBLIC = `GET ${B}/ServiceProviderConfig HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`;

t.test('the connection past listen.maxConnections is closed as it comes; a freed one lets the next in', async (t) => {
  const a = await converse(gw.port);
  const b = await converse(gw.port);
  const c = await converse(gw.port);
  c.write(PUBLIC);
  t.ok(await c.waitClose(2000), 'the third connection is closed');
  t.equal(c.data, '', 'unanswered');
  t.equal(up.requests.length, 0, 'nothing upstream');
  const metrics = await scrape(gw.adminUrl);
  t.equal(metrics.value('scopegate_connections_dropped_total'), 1, 'counted');
  t.equal(metrics.sum('scopegate_requests_total'), 0, 'not a request');
  // The two held connections are served.
  a.write(PUBLIC);
  t.ok(await a.waitFor(/^HTTP\/1\.1 200 /, 3000), 'a held connection is served');
  t.ok(await a.waitClose(3000), 'and closed after its answer (Connection: close)');
  // The gateway counts it gone once its own side has closed too.
  await new Promise((resolve) => setTimeout(resolve, 100));
  // One freed: the next connection is let in.
  const d = await converse(gw.port);
  d.write(PUBLIC);
  t.ok(await d.waitFor(/^HTTP\/1\.1 200 /, 3000), 'a connection under the bound is served');
  d.end();
  b.end();
});

t.test('a reload changes the bound (0: no limit)', async (t) => {
  const config = JSON.parse(readFileSync(gw.configFile, 'utf8')) as { listen: Record<string, unknown> };
  config.listen.maxConnections = 0;
  writeFileSync(gw.configFile, JSON.stringify(config));
  t.match(await gw.gateway.reload(), { ok: true });
  const held = await Promise.all(Array.from({ length: 4 }, () => converse(gw.port)));
  const last = await converse(gw.port);
  last.write(PUBLIC);
  t.ok(await last.waitFor(/^HTTP\/1\.1 200 /, 3000), 'the fifth connection is served');
  for (const h of [...held, last]) h.end();
  t.equal((await scrape(gw.adminUrl)).value('scopegate_connections_dropped_total'), 1, 'none dropped since');
});
