// The stdout line sink: lines go out whole, in order, in batches (not a write per line), and
// everything pending is written on flush and at exit.
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { createLineSink } from '../src/sink.js';

const BATCH = 64 * 1024;

function target(t: Test): { fd: number; read: () => string } {
  const dir = mkdtempSync(join(tmpdir(), 'scopegate-sink-'));
  const file = join(dir, 'out.log');
  const fd = openSync(file, 'w');
  t.teardown(() => {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  });
  return { fd, read: () => readFileSync(file, 'utf8') };
}

const flushed = (sink: ReturnType<typeof createLineSink>) => new Promise<void>((resolve, reject) => sink.flush((e) => (e ? reject(e) : resolve())));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('every line, in order, whole: ASCII, multi-byte UTF-8 and a line larger than the buffer', async (t) => {
  const { fd, read } = target(t);
  const sink = createLineSink(fd, 10_000);
  const lines: string[] = [];
  for (let i = 0; i < 20_000; i++) {
    const line = i === 7_000 ? `${'é€😀'.repeat(60_000)}\n` : i % 3 === 0 ? `{"n":${i},"subject":"zoë ✓ 用户"}\n` : `{"n":${i},"path":"/Users/${'x'.repeat(i % 500)}"}\n`;
    lines.push(line);
    sink.write(line);
    if (i % 1000 === 0) await sleep(0);
  }
  await flushed(sink);
  t.equal(read(), lines.join(''), 'the file holds exactly the lines written, in order');
});

t.test('batches: what arrives while a batch is being written waits for the next full batch or a flush', async (t) => {
  const { fd, read } = target(t);
  // The timer is out of the way: only a full batch or a flush writes.
  const sink = createLineSink(fd, 10_000);
  const line = `${'a'.repeat(99)}\n`;
  const first = Math.ceil(BATCH / line.length);
  for (let i = 0; i < first; i++) sink.write(line);
  // A full batch is on its way; this line arrives during its write.
  sink.write('late\n');
  await sleep(100);
  t.equal(read(), line.repeat(first), 'the full batch is out, the late line is not (no write per line)');
  for (let i = 0; i < 10; i++) sink.write(line);
  await sleep(50);
  t.equal(read().length, first * line.length, 'small writes stay pending');
  await flushed(sink);
  t.equal(read(), `${line.repeat(first)}late\n${line.repeat(10)}`, 'flush writes everything pending');
});

t.test('a flush during a write in flight waits for it: the lines stay in order', async (t) => {
  const { fd, read } = target(t);
  const sink = createLineSink(fd, 10_000);
  const line = `${'b'.repeat(99)}\n`;
  const first = Math.ceil(BATCH / line.length);
  for (let i = 0; i < first; i++) sink.write(line);
  sink.write('tail\n');
  await flushed(sink);
  t.equal(read(), `${line.repeat(first)}tail\n`, 'the batch in flight, then the tail');
});

t.test('the interval writes a partial batch', async (t) => {
  const { fd, read } = target(t);
  const sink = createLineSink(fd, 20);
  sink.write('one\n');
  t.equal(read(), '', 'not written at once');
  await sleep(200);
  t.equal(read(), 'one\n', 'written by the interval');
});

t.test('flushSync writes what is pending at once', async (t) => {
  const { fd, read } = target(t);
  const sink = createLineSink(fd, 10_000);
  sink.write('a\n');
  sink.write('b\n');
  sink.flushSync();
  t.equal(read(), 'a\nb\n');
  sink.flushSync();
  t.equal(read(), 'a\nb\n', 'nothing twice');
});

t.test('a flush with nothing pending completes', async (t) => {
  const { fd, read } = target(t);
  const sink = createLineSink(fd, 10_000);
  await flushed(sink);
  t.equal(read(), '');
});
