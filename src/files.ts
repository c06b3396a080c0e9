/**
 * Files the gateway reads at startup and on reloads (the config, the OpenAPI file, secrets):
 * bounded in size, and UTF-8 text or nothing.
 */
import { closeSync, openSync, readFileSync, readSync, statSync } from 'node:fs';

/** A decoder that throws on a byte sequence that is not UTF-8 (a Latin-1 byte is no U+FFFD). */
export const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The bytes of `path` when it is a regular file of at most `limit` bytes, or a pipe that gives at
 * most that many (`-c /dev/stdin`, `-c <(envsubst < template)`); undefined otherwise.
 */
export function readSmallFile(path: string, limit: number): Buffer | undefined {
  const stat = statSync(path);
  if (stat.isFile()) return stat.size > limit ? undefined : readFileSync(path);
  if (!stat.isFIFO()) return undefined;
  const fd = openSync(path, 'r');
  try {
    const chunks: Buffer[] = [];
    const buffer = Buffer.alloc(64 * 1024);
    let total = 0;
    for (let n; (n = readSync(fd, buffer, 0, buffer.length, null)) > 0;) {
      total += n;
      if (total > limit) return undefined;
      chunks.push(Buffer.from(buffer.subarray(0, n)));
    }
    return Buffer.concat(chunks, total);
  } finally {
    closeSync(fd);
  }
}
