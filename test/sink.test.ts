// The stdout line sink: lines go out whole, in order, in batches (not a write per line), and
// everything pending is written on flush and at exit.
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, read, readFileSync, rmSync } from 'node:fs';
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

/** Writes just enough 100-byte lines of `char` to fill a batch, which starts its write at once. */
function fillBatch(sink: ReturnType<typeof createLineSink>, char: string): { line: string; count: number } {
  const line = `${char.repeat(99)}\n`;
  const count = Math.ceil(BATCH / line.length);
  for (let i = 0; i < count; i++) sink.write(line);
  return { line, count };
}

const flushed = (sink: ReturnType<typeof createLineSink>) => new Promise<void>((resolve, reject) => sink.flush((e) => (e ? reject(e) : resolve())));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('every line, in order, whole: ASCII, multi-byte UTF-8 and a line larger than the buffer', async (t) => {
  const { fd, read } = target(t);
  const sink = createLineSink(fd, { intervalMs: 10_000 });
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
  const sink = createLineSink(fd, { intervalMs: 10_000 });
  const { line, count: first } = fillBatch(sink, 'a');
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
  const sink = createLineSink(fd, { intervalMs: 10_000 });
  const { line, count: first } = fillBatch(sink, 'b');
  sink.write('tail\n');
  await flushed(sink);
  t.equal(read(), `${line.repeat(first)}tail\n`, 'the batch in flight, then the tail');
});

t.test('the interval writes a partial batch', async (t) => {
  const { fd, read } = target(t);
  const sink = createLineSink(fd, { intervalMs: 20 });
  sink.write('one\n');
  t.equal(read(), '', 'not written at once');
  await sleep(200);
  t.equal(read(), 'one\n', 'written by the interval');
});

t.test('flushSync writes what is pending at once', async (t) => {
  const { fd, read } = target(t);
  const sink = createLineSink(fd, { intervalMs: 10_000 });
  sink.write('a\n');
  sink.write('b\n');
  sink.flushSync();
  t.equal(read(), 'a\nb\n');
  sink.flushSync();
  t.equal(read(), 'a\nb\n', 'nothing twice');
});

t.test('a flush with nothing pending completes', async (t) => {
  const { fd, read } = target(t);
  const sink = createLineSink(fd, { intervalMs: 10_000 });
  await flushed(sink);
  t.equal(read(), '');
});

t.test('a stdout nobody reads: memory stays bounded, lines past the bound are dropped and counted', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'scopegate-sink-'));
  const fifo = join(dir, 'stdout');
  execFileSync('mkfifo', [fifo]);
  // Read and write on one descriptor: opening does not wait for a reader, and nothing is read
  // until the test says so, like a log collector that stalled. Writes block once the pipe is full.
  const fd = openSync(fifo, 'r+');
  t.teardown(() => {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  });
  const sink = createLineSink(fd, { intervalMs: 10_000, maxPendingBytes: 256 * 1024 });
  const line = (i: number) => `{"n":${String(i).padStart(7, '0')},"pad":"${'p'.repeat(80)}"}\n`;
  const total = 40_000; // about 4 MiB, far past what the pipe and the bound hold
  for (let i = 0; i < total; i++) sink.write(line(i));
  const flushedAll = flushed(sink);

  // The collector comes back: read until the sink reports the drop (or, were nothing dropped,
  // until every line is in), up to a line's end.
  let text = '';
  let newlines = 0;
  const chunk = Buffer.alloc(1 << 20);
  while (!(/"dropped":\d+/.test(text) || newlines >= total) || !text.endsWith('\n')) {
    const n = await new Promise<number>((resolve, reject) => read(fd, chunk, 0, chunk.length, null, (e, got) => (e ? reject(e) : resolve(got))));
    const part = chunk.toString('utf8', 0, n);
    text += part;
    for (let i = part.indexOf('\n'); i !== -1; i = part.indexOf('\n', i + 1)) newlines += 1;
  }
  await flushedAll;
  const lines = text.trimEnd().split('\n');
  const last = JSON.parse(lines.at(-1)!) as { dropped?: number; msg?: string };
  t.ok(last.dropped !== undefined, 'the last line reports the drop');
  const notice = { dropped: last.dropped ?? 0, msg: last.msg ?? '' };
  const kept = last.dropped === undefined ? lines : lines.slice(0, -1);
  t.ok(kept.length > 0 && kept.length < total, `some lines were kept (${kept.length}), not all`);
  t.same(kept, Array.from({ length: kept.length }, (_, i) => line(i).trimEnd()), 'the kept lines are the first ones, whole and in order');
  t.ok(kept.join('\n').length < 600 * 1024, 'no more than the bound, the batch in flight and the pipe were held');
  t.equal(notice.dropped, total - kept.length, 'the notice counts every dropped line');
  t.match(notice.msg, /dropped/);
});
