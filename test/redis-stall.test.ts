/**
 * A Redis that keeps its connections but stops answering (a frozen host, a black-holed route):
 * ioredis keeps every command it sent waiting for an answer, the timed-out ones too. Under a flood
 * of new tokens the gateway's memory grew with them (a black-box audit: about 5 MB a second). A
 * small RESP server plays that Redis: it answers the connection's handshake, then nothing.
 */
import { createServer, type Socket } from 'node:net';
import t from 'tap';
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { Refusal } from '../src/token/cache.js';
import { createSharedCache, MAX_PENDING } from '../src/token/redis.js';

/** The commands of `buffer` (RESP arrays of bulk strings), and the bytes left over. */
function commands(buffer: Buffer): { parsed: string[][]; rest: Buffer } {
  const parsed: string[][] = [];
  let at = 0;
  outer: while (at < buffer.length) {
    if (buffer[at] !== 0x2a) throw new Error('not a RESP array');
    let end = buffer.indexOf('\r\n', at);
    if (end < 0) break;
    const count = Number(buffer.subarray(at + 1, end).toString());
    let p = end + 2;
    const args: string[] = [];
    for (let k = 0; k < count; k++) {
      end = buffer.indexOf('\r\n', p);
      if (end < 0) break outer;
      const length = Number(buffer.subarray(p + 1, end).toString());
      if (buffer.length < end + 2 + length + 2) break outer;
      args.push(buffer.subarray(end + 2, end + 2 + length).toString());
      p = end + 2 + length + 2;
    }
    parsed.push(args);
    at = p;
  }
  return { parsed, rest: buffer.subarray(at) };
}

t.test('a Redis that stops answering: commands stop being sent past a bound, lookups are misses', async (t) => {
  let silent = false;
  let sentWhileSilent = 0;
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    let pending: Buffer = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      const { parsed, rest } = commands(Buffer.concat([pending, chunk]));
      pending = rest;
      for (const [name, ...args] of parsed) {
        const command = name!.toUpperCase();
        if (silent) {
          sentWhileSilent += 1;
          continue;
        }
        if (command === 'INFO') socket.write('$0\r\n\r\n');
        else if (command === 'SUBSCRIBE') socket.write(`*3\r\n$9\r\nsubscribe\r\n$${args[0]!.length}\r\n${args[0]}\r\n:1\r\n`);
        else socket.write('+OK\r\n');
      }
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const socket of sockets) socket.destroy();
    server.close();
  });
  const { port } = server.address() as { port: number };
  const warnings: string[] = [];
  const logger = pino({ level: 'warn' }, new Writable({
    write(chunk: Buffer, _encoding, done) {
      warnings.push(String((JSON.parse(chunk.toString()) as { err?: { message?: string } }).err?.message ?? ''));
      done();
    },
  }));
  let errors = 0;
  const cache = createSharedCache({
    url: `redis://127.0.0.1:${port}`, keyPrefix: 'stall:', logger, onPurge: () => undefined,
    onEvent: (event) => {
      if (event === 'error') errors += 1;
    },
    commandTimeoutMs: 50,
  });
  t.teardown(() => cache.close());
  t.ok(await cache.ready(5000), 'connected and subscribed');

  silent = true;
  const lookups = 4 * MAX_PENDING;
  const shared = cache.scoped('rules');
  const answers = await Promise.all(Array.from({ length: lookups }, (_, i) => shared.get(`key-${i}`)));
  t.ok(answers.every((a) => a === undefined), 'every lookup a miss');
  // A lookup is four commands (MULTI, GET, PTTL, EXEC): without the bound, all of them went out.
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.ok(sentWhileSilent <= MAX_PENDING + 4, `${sentWhileSilent} commands sent for ${lookups} lookups (${4 * lookups} without the bound)`);
  t.ok(sentWhileSilent > 0, 'some were sent before the bound was met');
  t.ok(errors >= lookups - MAX_PENDING / 4, `each lookup skipped counted as an error (${errors})`);
  t.ok(warnings.some((w) => /commands waiting for Redis to answer/.test(w)), 'a warning says why');
  // Writes are bounded the same way.
  const before = sentWhileSilent;
  await Promise.all(Array.from({ length: 100 }, (_, i) => shared.set(`key-${i}`, new Refusal('inactive token'), 1000)));
  await new Promise((resolve) => setTimeout(resolve, 100));
  t.equal(sentWhileSilent, before, 'no write sent while the queue is full');
});
