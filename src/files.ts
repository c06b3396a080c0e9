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

/** At most this many YAML syntax errors are listed: past the first, most are its echoes. */
const MAX_SYNTAX_ERRORS = 5;

/** The part of a YAML parser error these messages use. */
interface YamlProblem {
  readonly message: string;
  readonly linePos?: readonly [{ line: number; col: number }, ...unknown[]] | undefined;
}

/**
 * A YAML file's syntax errors as problems, `prefix: syntax error at line L, column C: what`: the
 * first MAX_SYNTAX_ERRORS, then one line counting the rest (one unquoted `{` made the parser report
 * the 60 lines after it). `redact` drops the text the parser quotes (`: "..."`), which may be a
 * secret written on the wrong line.
 */
export function syntaxProblems(errors: readonly YamlProblem[], prefix: string, redact: boolean): string[] {
  const listed = errors.slice(0, MAX_SYNTAX_ERRORS).map((e) => {
    const pos = e.linePos?.[0];
    let what = e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
    if (redact) what = what.replace(/: ".*"$/s, '');
    return `${prefix}: syntax error${pos ? ` at line ${pos.line}, column ${pos.col}` : ''}: ${what}`;
  });
  const more = errors.length - listed.length;
  if (more > 0) listed.push(`${prefix}: ${more} more syntax error${more === 1 ? '' : 's'} after these (often the echoes of the first)`);
  return listed;
}
