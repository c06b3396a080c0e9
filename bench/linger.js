// What a refused connection costs while it lingers: `npm run bench:linger` (builds first), or
// `node bench/linger.js [--connections 10] [--duration 5]`.
//
// A client with no token sends a chunked POST; the gateway answers 401 at the head and closes the
// connection as nginx's lingering_close does, reading on for a few seconds so that the 401 is not
// lost to a reset (src/server.ts). The client goes on sending the body as fast as the connection
// takes it, in two shapes: 1-byte chunks (`1\r\na\r\n`, the costliest a parser can be made to read)
// and 64 KiB chunks (the baseline). Printed: the gateway's CPU (its own process, /proc) per MB the
// clients sent, for each shape, and their ratio. Left to the HTTP parser, the 1-byte chunks cost
// about ten times the baseline; dropped as bytes, both cost what reading costs.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { BASE_PATH, BENCH, SHARED_OPENAPI, procCpuSplit, runScript, startNodeChild, startServe } from './lib.js';

const { values } = parseArgs({
  options: {
    connections: { type: 'string', default: '10' },
    duration: { type: 'string', default: '5' },
  },
});
const connections = Number(values.connections);
const durationMs = Number(values.duration) * 1000;
const tmp = mkdtempSync(join(tmpdir(), 'scopegate-linger-'));

/** Connections that each send a chunked POST with no token, then `piece` over and over until closed or `durationMs` pass. */
async function flood(port, piece) {
  let sent = 0;
  const deadline = Date.now() + durationMs;
  const one = () => new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.on('error', () => undefined);
    socket.on('close', resolve);
    const timer = setTimeout(() => socket.destroy(), Math.max(0, deadline - Date.now()));
    socket.on('close', () => clearTimeout(timer));
    socket.write(`POST ${BASE_PATH}/Users HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/scim+json\r\nTransfer-Encoding: chunked\r\n\r\n`);
    const pump = () => {
      while (!socket.destroyed) {
        sent += piece.length;
        if (!socket.write(piece)) return;
      }
    };
    socket.on('drain', pump);
    pump();
  });
  // A connection the gateway closed (after its linger) is opened again until the time is up.
  await Promise.all(Array.from({ length: connections }, async () => {
    while (Date.now() < deadline) await one();
  }));
  return sent;
}

await runScript(async () => {
  const { info: up } = await startNodeChild(join(BENCH, 'upstream.js'), [], { name: 'upstream' });
  const { info: as } = await startNodeChild(join(BENCH, 'fast-as.js'), [], { name: 'fast-as' });
  const config = join(tmp, 'scopegate.json');
  writeFileSync(config, JSON.stringify({
    listen: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 },
    upstream: { url: `http://127.0.0.1:${up.port}` }, openapi: { file: SHARED_OPENAPI },
    token: { introspection: { endpoint: `http://127.0.0.1:${as.port}/introspect`, clientId: 'bench', clientSecret: 'bench' } },
    log: { level: 'info' },
  }));
  const sg = await startServe(config, { logFile: join(tmp, 'access.log') });
  const port = Number(new URL(sg.proxyUrl).port);
  const cpu = () => {
    const { user, system } = procCpuSplit(sg.pid);
    return (user + system) * 1000;
  };
  const shapes = [
    ['64 KiB chunks', Buffer.from(`10000\r\n${'a'.repeat(65536)}\r\n`)],
    ['1-byte chunks', Buffer.from('1\r\na\r\n'.repeat(13000))],
  ];
  const perMb = {};
  for (const [name, piece] of shapes) {
    const before = cpu();
    const sent = await flood(port, piece);
    const ms = cpu() - before;
    perMb[name] = ms / (sent / 1e6);
    console.log(`${name.padEnd(14)} ${(sent / 1e6).toFixed(0).padStart(7)} MB sent in ${values.duration} s over ${connections} connections; gateway CPU ${ms.toFixed(0)} ms, ${perMb[name].toFixed(2)} ms/MB`);
  }
  console.log(`1-byte chunks / 64 KiB chunks, CPU per MB while lingering: ${(perMb['1-byte chunks'] / perMb['64 KiB chunks']).toFixed(2)}`);
  await sg.stop();
}, async () => rmSync(tmp, { recursive: true, force: true }));
