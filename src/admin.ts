/**
 * The admin listener: /healthz (alive), /readyz (table loaded and token validation can work),
 * /metrics (Prometheus), POST /cache/purge. Never on the proxy port.
 */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { parseStrictJson } from './json.js';
import type { Metrics } from './metrics.js';
import type { Runtime } from './runtime.js';
import { tokenKey, type PurgeMatch } from './token/cache.js';

/** A purge request: exactly one of token, fingerprint, clientId. */
export interface PurgeRequest {
  token?: string;
  fingerprint?: string;
  clientId?: string;
}

/** Options of the admin server. */
export interface AdminOptions {
  current: () => Runtime;
  metrics: Metrics;
  logger: Logger;
  /** Propagates a purge to other replicas (Redis); returns entries purged there, or fails when it could not. */
  broadcastPurge?: (match: PurgeMatch) => Promise<number>;
  /** True once the gateway stops: its requests in flight finish, it takes no new ones. */
  stopping?: () => boolean;
}

/** What a purge takes, in every refusal of one. */
const PURGE_BODY = 'a JSON object (Content-Type: application/json) with exactly one of token, fingerprint, clientId';

/** The start of a token's SHA-256 in base64url, as the access line's `fingerprint` shows it. */
const FINGERPRINT = /^[A-Za-z0-9_-]{8,43}$/;

/** The methods of each admin path, for the 405 of another method. */
const ALLOW = new Map([['/healthz', 'GET, HEAD'], ['/readyz', 'GET, HEAD'], ['/metrics', 'GET, HEAD'], ['/cache/purge', 'POST']]);

/** Builds the admin server; it never listens by itself. */
export function buildAdmin(options: AdminOptions): FastifyInstance {
  const app = Fastify({ loggerInstance: options.logger.child({ listener: 'admin' }) as FastifyBaseLogger, logController: new LogController({ disableRequestLogging: true }), bodyLimit: 16 * 1024 });
  // JSON only: a text/plain body was read as a string and refused as if it named no selector.
  app.removeContentTypeParser('text/plain');
  // A member named twice (`{"token":"a","token":"b"}`) is refused, not read last-wins.
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    try {
      // A byte order mark (what PowerShell writes) is not part of the JSON text (RFC 8259 section 8.1 lets a parser skip it).
      done(null, parseStrictJson((body as string).replace(/^\uFEFF/, ''), 8, false));
    } catch (error) {
      done(Object.assign(new Error(`the body is not JSON as the gateway reads it (${(error as Error).message})`), { statusCode: 400 }), undefined);
    }
  });
  app.setNotFoundHandler((request, reply) => {
    const allow = ALLOW.get(request.url.split('?')[0]!);
    if (allow) return reply.code(405).header('allow', allow).send({ error: `method not allowed (Allow: ${allow})` });
    return reply.code(404).send({ error: 'not found' });
  });
  app.setErrorHandler((error: { statusCode?: number; code?: string; message: string }, request, reply) => {
    const status = error.statusCode ?? 500;
    if (status >= 500) {
      request.log.error({ err: error }, 'admin request failed');
      return reply.code(500).send({ error: 'internal error' });
    }
    // Fastify's refusals of a body it cannot read (not JSON, unparseable, empty, too large).
    return reply.code(status).send({ error: `${error.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' ? 'unsupported media type' : error.message}: the body must be ${PURGE_BODY}` });
  });
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    // A stopping gateway is alive (/healthz) but must get no new requests.
    if (options.stopping?.()) return reply.code(503).send({ status: 'stopping' });
    const ready = await options.current().ready().catch(() => false);
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not ready' });
  });
  app.get('/metrics', async (_request, reply) => {
    reply.type(options.metrics.registry.contentType);
    return options.metrics.registry.metrics();
  });
  app.post('/cache/purge', async (request, reply) => {
    const body = request.body as PurgeRequest | undefined;
    const given = body && typeof body === 'object' ? (['token', 'fingerprint', 'clientId'] as const).filter((k) => typeof body[k] === 'string' && body[k] !== '') : [];
    if (!body || given.length !== 1 || Object.keys(body).length !== 1) {
      return reply.code(400).send({ error: `the body must be ${PURGE_BODY}` });
    }
    // A fingerprint is a prefix of a base64url SHA-256, long enough to name one token: Redis would
    // read `*` or a short prefix as a pattern of many keys, where the local cache matches none.
    if (body.fingerprint !== undefined && !FINGERPRINT.test(body.fingerprint)) {
      return reply.code(400).send({ error: 'fingerprint: must be 8 to 43 base64url characters (the access line\'s fingerprint has 12)' });
    }
    const match = body.token ? { key: tokenKey(body.token) } : body.fingerprint ? { fingerprint: body.fingerprint } : { clientId: body.clientId! };
    let purged = options.current().verifier.purge(match);
    if (options.broadcastPurge) {
      try {
        purged += await options.broadcastPurge(match);
      } catch (error) {
        // Purged here, but neither in Redis nor on the other replicas, which would go on serving
        // the token: not a success. The operator retries once Redis answers (scopegate purge exits 1).
        request.log.error({ purge: given[0], purged, err: { message: (error as Error).message } }, 'cache purge incomplete: the shared cache (Redis) is unavailable');
        return reply.code(503).header('retry-after', '5').send({
          purged, error: 'the shared cache (Redis) is unavailable: purged on this replica only, not in Redis nor on the other replicas; retry',
        });
      }
      options.metrics.redis.inc({ event: 'purge' });
    }
    request.log.info({ purge: given[0], purged }, 'cache purge');
    return { purged };
  });
  return app;
}
