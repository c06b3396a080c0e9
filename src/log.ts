/**
 * Logging: pino JSON lines on stdout, written asynchronously off the request path, and the access
 * line, written by hand to the same destination because it is written once per request: a flat
 * object of known fields needs neither pino's serialisers nor redaction. Tokens are never passed
 * to either; only their fingerprint is.
 */
import { pino, type DestinationStream, type Logger } from 'pino';

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
  flush(): void;
}

const INFO = 30;

/** Creates the logger; `destination` lets tests capture every line. */
export function createLogging(level: string, destination?: DestinationStream): Logging {
  const stream = destination ?? pino.destination({ dest: 1, sync: false, minLength: 4096 });
  const logger = pino({
    level,
    base: { service: 'scopegate' },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: ['authorization', 'headers.authorization', 'clientSecret'], censor: '[redacted]' },
  }, stream);
  // A buffered destination is flushed at least once a second, so a quiet gateway's lines appear.
  const flush = () => {
    try {
      logger.flush();
    } catch {
      // nothing to flush to
    }
  };
  if (!destination) setInterval(flush, 1000).unref();
  const accessEnabled = pino.levels.values[level] !== undefined && pino.levels.values[level]! <= INFO;
  return {
    logger,
    access(line) {
      if (!accessEnabled) return;
      stream.write(`{"level":30,"time":"${new Date().toISOString()}","service":"scopegate",${JSON.stringify(line).slice(1, -1)},"msg":"access"}\n`);
    },
    flush,
  };
}
