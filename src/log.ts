/**
 * Logging: pino JSON lines on stdout, written asynchronously off the request path, and the access
 * line, written by hand to the same destination because it is written once per request: a flat
 * object of known fields needs neither pino's serialisers nor redaction. Tokens are never passed
 * to either; only their fingerprint is.
 */
import { pino, type DestinationStream, type Logger } from 'pino';
import { createLineSink } from './sink.js';

/** The fields of one access line (INTERFACE.md, "Logs"). */
export interface AccessLine {
  reqId: string;
  method: string | undefined;
  path: string;
  operation: string | null;
  status: number;
  decision: 'allow' | 'deny';
  reason: string;
  clientId: string | null;
  subject: string | null;
  fingerprint: string | null;
  requiredScopes: readonly string[] | null;
  bulk?: unknown;
  durationMs: number;
}

/** The process's logger and its access-line writer. */
export interface Logging {
  logger: Logger;
  access(line: AccessLine): void;
  /** Writes every pending line after any write in flight (so in order); resolves once out, or after 2 s. */
  flush(): Promise<void>;
  /** Changes the least level written, for the logger (and its children) and the access line (SIGHUP). */
  setLevel(level: string): void;
}

const INFO = 30;

/** Creates the logger; `destination` lets tests capture every line. */
export function createLogging(level: string, destination?: DestinationStream): Logging {
  const sink = destination ? undefined : createLineSink(1, {
    droppedLine: (count) => `{"level":40,"time":"${new Date().toISOString()}","service":"scopegate","dropped":${count},"msg":"log lines dropped: stdout did not keep up"}\n`,
  });
  const stream: DestinationStream = destination ?? sink!;
  const logger = pino({
    level,
    base: { service: 'scopegate' },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: ['authorization', 'headers.authorization', 'clientSecret'], censor: '[redacted]' },
  }, stream);
  // Bounded: a stdout nobody reads must not hold the shutdown (the exit handler still tries).
  const flush = () => new Promise<void>((resolve) => {
    if (!sink) return resolve();
    const timer = setTimeout(resolve, 2000);
    timer.unref();
    sink.flush(() => {
      clearTimeout(timer);
      resolve();
    });
  });
  // Lines still in memory are written when the process ends, however it ends.
  if (sink) process.once('exit', () => sink.flushSync());
  // The access line is written at info: on when info would be.
  const accessOn = (least: string) => pino.levels.values[least] !== undefined && pino.levels.values[least]! <= INFO;
  let accessEnabled = accessOn(level);
  return {
    logger,
    access(line) {
      if (accessEnabled) stream.write(formatAccessLine(line));
    },
    flush,
    setLevel(least) {
      logger.level = least;
      accessEnabled = accessOn(least);
    },
  };
}

// The access line is serialised by hand: it is written once per request, and JSON.stringify of
// a whole object (and the garbage it leaves) was most of what the gateway added to a request.
// Strings go through JSON.stringify, memoised where they repeat and are few (operation ids,
// reasons, client ids: a bounded map; scope lists come from the table).
const quoted = new Map<string, string>();
const scopeLists = new WeakMap<readonly string[], string>();
let lastMs = 0;
let lastIso = '';

function q(value: string | null | undefined): string {
  return value === null || value === undefined ? 'null' : JSON.stringify(value);
}

function qMemo(value: string | null): string {
  if (value === null) return 'null';
  let out = quoted.get(value);
  if (out === undefined) {
    out = JSON.stringify(value);
    if (quoted.size < 1000) quoted.set(value, out);
  }
  return out;
}

function scopeList(scopes: readonly string[] | null): string {
  if (scopes === null) return 'null';
  let out = scopeLists.get(scopes);
  if (out === undefined) {
    out = JSON.stringify(scopes);
    scopeLists.set(scopes, out);
  }
  return out;
}

/** One access line, as pino would write it (same level, time and base fields), newline included. */
export function formatAccessLine(line: AccessLine): string {
  const now = Date.now();
  if (now !== lastMs) {
    lastMs = now;
    lastIso = new Date(now).toISOString();
  }
  const bulk = line.bulk === undefined ? '' : `,"bulk":${JSON.stringify(line.bulk)}`;
  // reqId (ours), method (an HTTP token), path (passed the request-target grammar: no quote, no
  // backslash, no control character; a refused one is escaped when its line is built, see
  // refusedPath in src/gateway.ts) and fingerprint (base64url) need no escaping.
  return `{"level":30,"time":"${lastIso}","service":"scopegate","reqId":"${line.reqId}","method":${line.method === undefined ? 'null' : `"${line.method}"`},"path":"${line.path}",`
    + `"operation":${qMemo(line.operation)},"status":${line.status},"decision":"${line.decision}","reason":${qMemo(line.reason)},`
    + `"clientId":${qMemo(line.clientId)},"subject":${q(line.subject)},"fingerprint":${line.fingerprint === null ? 'null' : `"${line.fingerprint}"`},"requiredScopes":${scopeList(line.requiredScopes)}`
    + `${bulk},"durationMs":${line.durationMs},"msg":"access"}\n`;
}
