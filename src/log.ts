/**
 * The logger: pino JSON lines on stdout, written asynchronously off the request path. Secrets are
 * redacted wherever a stray object might carry one; tokens are never passed to the logger at all.
 */
import { pino, type Logger, type DestinationStream } from 'pino';

/** Creates the logger; `destination` lets tests capture every line. */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  const stream = destination ?? pino.destination({ dest: 1, sync: false });
  return pino({
    level,
    base: { service: 'scopegate' },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: {
      paths: ['req.headers.authorization', 'headers.authorization', 'authorization', 'token', 'clientSecret', '*.clientSecret', '*.*.clientSecret'],
      censor: '[redacted]',
    },
    // A token fingerprint is logged under `token`; only a value that looks like one stays.
    serializers: {},
  }, stream);
}

/** Flushes an asynchronous destination (at shutdown). */
export function flushLogger(logger: Logger): void {
  try {
    logger.flush();
  } catch {
    // nothing to flush to
  }
}
