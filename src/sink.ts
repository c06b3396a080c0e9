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

/** Batches of at least this many characters are written as soon as the previous one is out. */
const BATCH = 64 * 1024;

/** A sink on file descriptor `fd`, flushed at least every `intervalMs`. */
export function createLineSink(fd = 1, intervalMs = 50): LineSink {
  let parts: string[] = [];
  let pending = 0;
  let writing = false;
  let waiters: Array<(error?: Error) => void> = [];

  const settle = (error?: Error) => {
    const done = waiters;
    waiters = [];
    for (const w of done) w(error);
  };

  function writeOut(buffer: Buffer, offset: number): void {
    fsWrite(fd, buffer, offset, buffer.length - offset, null, (error, written) => {
      if (error && (error as NodeJS.ErrnoException).code === 'EAGAIN') {
        setTimeout(() => writeOut(buffer, offset), 1);
        return;
      }
      if (error) {
        // stdout is gone: nothing else can be done with these lines.
        writing = false;
        settle(error);
        return;
      }
      if (offset + written < buffer.length) {
        writeOut(buffer, offset + written);
        return;
      }
      writing = false;
      if (pending > 0) start();
      else settle();
    });
  }

  function start(): void {
    const data = parts.join('');
    parts = [];
    pending = 0;
    writing = true;
    writeOut(Buffer.from(data), 0);
  }

  setInterval(() => {
    if (!writing && pending > 0) start();
  }, intervalMs).unref();

  return {
    write(line) {
      parts.push(line);
      pending += line.length;
      if (!writing && pending >= BATCH) start();
    },
    flush(done) {
      if (done) waiters.push(done);
      if (!writing) {
        if (pending > 0) start();
        else settle();
      }
    },
    flushSync() {
      if (pending === 0) return;
      const buffer = Buffer.from(parts.join(''));
      parts = [];
      pending = 0;
      let offset = 0;
      while (offset < buffer.length) {
        try {
          offset += writeSync(fd, buffer, offset, buffer.length - offset);
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'EAGAIN') return;
        }
      }
    },
  };
}
