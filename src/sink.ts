/**
 * A line sink for stdout: lines are gathered in memory and written in batches, off the request
 * path, in order, never torn. It exists because sonic-boom (pino's destination) measures the
 * byte length of its whole pending buffer on every write, which made the access line cost more
 * than the authorisation of the request it describes.
 */
import { write as fsWrite, writeSync } from 'node:fs';

/** What pino and the access log write to. */
export interface LineSink {
  write(line: string): void;
  /** Writes what is pending; `done` is called once it is out. */
  flush(done?: (error?: Error) => void): void;
  /** Writes what is pending synchronously (at exit). */
  flushSync(): void;
}

/** Batches of at least this many bytes are written as soon as the previous one is out. */
const BATCH = 64 * 1024;

/** Options of a sink. */
export interface SinkOptions {
  /** A partial batch is written after at most this long. */
  intervalMs?: number;
  /**
   * Bytes kept waiting while stdout does not take them (a log reader that stalled): past this,
   * lines are dropped and counted rather than held until memory runs out.
   */
  maxPendingBytes?: number;
  /** The line that reports `count` dropped lines, written once stdout takes lines again. */
  droppedLine?: (count: number) => string;
}

const defaultDroppedLine = (count: number) => `${JSON.stringify({ dropped: count, msg: 'log lines dropped: stdout did not keep up' })}\n`;

/**
 * A sink on file descriptor `fd`. Each line is encoded into the batch buffer as it is written:
 * no string is kept alive until the batch goes.
 */
export function createLineSink(fd = 1, options: SinkOptions = {}): LineSink {
  const intervalMs = options.intervalMs ?? 50;
  const maxPendingBytes = options.maxPendingBytes ?? 64 * 1024 * 1024;
  const droppedLine = options.droppedLine ?? defaultDroppedLine;
  let buffer: Buffer = Buffer.allocUnsafe(2 * BATCH);
  let used = 0;
  let dropped = 0;
  // The buffer of the write in flight comes back here once it is out.
  let spare: Buffer | undefined;
  let writing = false;
  let waiters: Array<(error?: Error) => void> = [];

  const settle = (error?: Error) => {
    const done = waiters;
    waiters = [];
    for (const w of done) w(error);
  };

  function writeOut(batch: Buffer, offset: number, end: number): void {
    fsWrite(fd, batch, offset, end - offset, null, (error, written) => {
      if (error && (error as NodeJS.ErrnoException).code === 'EAGAIN') {
        setTimeout(() => writeOut(batch, offset, end), 1);
        return;
      }
      if (error) {
        // stdout is gone: nothing else can be done with these lines.
        writing = false;
        settle(error);
        return;
      }
      if (offset + written < end) {
        writeOut(batch, offset + written, end);
        return;
      }
      writing = false;
      if (batch.length === 2 * BATCH) spare = batch;
      // The next batch goes when it is full, or at once for a flush waiting on it. Starting on
      // whatever arrived during this write would turn the batches into a write per line or two.
      if (used >= BATCH || (used > 0 && waiters.length > 0)) start();
      else if (used === 0) settle();
    });
  }

  /** Encodes `line` at the end of the batch buffer, which grows to hold it. */
  function append(line: string): void {
    // At most 3 bytes of UTF-8 per UTF-16 code unit.
    if (buffer.length - used < 3 * line.length) {
      const bigger = Buffer.allocUnsafe(Math.max(2 * buffer.length, used + 3 * line.length));
      buffer.copy(bigger, 0, 0, used);
      buffer = bigger;
    }
    used += buffer.write(line, used);
  }

  function start(): void {
    const batch = buffer;
    const end = used;
    buffer = spare ?? Buffer.allocUnsafe(2 * BATCH);
    spare = undefined;
    used = 0;
    // Where lines were dropped, the next batch says how many.
    if (dropped > 0) {
      append(droppedLine(dropped));
      dropped = 0;
    }
    writing = true;
    writeOut(batch, 0, end);
  }

  setInterval(() => {
    if (!writing && used > 0) start();
  }, intervalMs).unref();

  return {
    write(line) {
      if (used >= maxPendingBytes) {
        dropped += 1;
        return;
      }
      append(line);
      if (!writing && used >= BATCH) start();
    },
    flush(done) {
      if (done) waiters.push(done);
      if (!writing) {
        if (used > 0) start();
        else settle();
      }
    },
    flushSync() {
      if (dropped > 0) {
        append(droppedLine(dropped));
        dropped = 0;
      }
      let offset = 0;
      while (offset < used) {
        try {
          offset += writeSync(fd, buffer, offset, used - offset);
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'EAGAIN') break;
        }
      }
      used = 0;
    },
  };
}
