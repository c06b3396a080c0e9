/**
 * A running gateway: config -> runtime -> listeners, with reload (SIGHUP) and graceful close.
 * The process boundary (argv, signals, exit codes) stays in cli.ts.
 */
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Server as TlsServer } from 'node:tls';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import type { DestinationStream, Logger } from 'pino';
import { loadConfig, type Config } from './config.js';
import { ConfigError } from './errors.js';
import { createLogging } from './log.js';
import { createMetrics } from './metrics.js';
import { BodyBudget } from './request/body.js';
import { createRuntime, resolveEndpoints, withTableProblems, type Runtime } from './runtime.js';
import { authServerTransport } from './token/transport.js';
import { buildServer, type Servers } from './server.js';
import type { SharedCache } from './token/redis.js';

/** A started gateway. */
export interface Gateway {
  readonly proxyUrl: string;
  readonly adminUrl: string;
  readonly logger: Logger;
  current(): Runtime;
  /** Re-reads the config file and the OpenAPI file; keeps the running one when invalid. */
  reload(): Promise<ReloadResult>;
  close(): Promise<void>;
}

/** What a reload did: applied, or refused with the problems it logged. */
export interface ReloadResult {
  ok: boolean;
  problems?: readonly string[];
}

/** Options of startGateway. */
export interface StartOptions {
  env?: Record<string, string | undefined>;
  logDestination?: DestinationStream;
  /** Bound on the graceful close; default: the config's listen.shutdownTimeoutMs. */
  closeTimeoutMs?: number;
}

function urlOf(address: string | AddressInfo | null, tls: boolean): string {
  if (!address || typeof address === 'string') return String(address);
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `${tls ? 'https' : 'http'}://${host}:${address.port}`;
}

/**
 * Keys read once, when the listeners, the upstream pool and the shared cache are built: a reload
 * cannot change them. Every other key takes effect at a reload (listen.shutdownTimeoutMs at the
 * next shutdown, log.level at once).
 */
const RESTART_KEYS = [
  'listen.host', 'listen.port', 'listen.tls', 'admin.host', 'admin.port',
  'upstream.url', 'upstream.caFile', 'upstream.connections',
  'limits.headerBytes', 'limits.requestTimeoutMs', 'limits.sendTimeoutMs', 'token.cache.redis',
] as const;

function valueAt(config: Config, path: string): unknown {
  return path.split('.').reduce<unknown>((node, key) => (node === undefined || node === null ? undefined : (node as Record<string, unknown>)[key]), config);
}

/** Binds `server` to the address of `key` ('listen' or 'admin'); a failure names the key and the address. */
async function listenOn(server: FastifyInstance, address: { host: string; port: number }, key: 'listen' | 'admin'): Promise<void> {
  try {
    await server.listen({ host: address.host, port: address.port });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const host = address.host.includes(':') ? `[${address.host}]` : address.host;
    const why = code === 'EADDRINUSE' ? 'the address is already in use' : code === 'EACCES' ? 'permission denied' : (error as Error).message;
    // An address that is not this machine's, or a name that resolves to none, is the host's fault.
    const field = code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND' || code === 'EAI_AGAIN' ? 'host' : 'port';
    throw new Error(`${key}.${field}: cannot listen on ${host}:${address.port} (${code ?? 'error'}: ${why})`, { cause: error });
  }
}

/** When each gateway (by its logger) last warned of tokens refused for its client: at most once a minute. */
const tokenRefusalWarnedAt = new WeakMap<Logger, number>();

/** Builds the runtime of a config (discovery included). */
async function runtimeOf(config: Config, metrics: ReturnType<typeof createMetrics>, logger: Logger, shared: SharedCache | undefined, previous?: Runtime): Promise<Runtime> {
  const transport = authServerTransport(config.token.caFile);
  try {
    const endpoints = await resolveEndpoints(config, transport.dispatcher);
    return createRuntime(config, endpoints, metrics, {
      ...(shared ? { shared } : {}),
      transport,
      previous,
      onCredentialsRefused: (status) => logger.error({ status }, 'the authorization server refused the gateway\'s introspection credentials: check token.introspection.clientId/clientSecret'),
      onTokenRefusedForClient: (status) => {
        const now = Date.now();
        if (now - (tokenRefusalWarnedAt.get(logger) ?? -Infinity) < 60000) return;
        tokenRefusalWarnedAt.set(logger, now);
        logger.warn({ status }, 'the authorization server refuses to introspect some tokens for the gateway\'s client, whose credentials it accepts: they are refused as invalid (jans-auth: introspectionRestrictBasicAuthnToOwnTokens must be false, or use authMethod bearer_token)');
      },
    });
  } catch (error) {
    transport.close();
    throw error;
  }
}

/** Loads the config, starts both listeners, and returns the handle. Throws ConfigError. */
export async function startGateway(configFile: string, options: StartOptions = {}): Promise<Gateway> {
  const env = options.env ?? {};
  let config: Config;
  try {
    config = loadConfig(configFile, env);
  } catch (error) {
    throw withTableProblems(error);
  }
  const logging = createLogging(config.log.level, options.logDestination);
  const { logger } = logging;
  for (const warning of config.warnings) logger.warn({ problem: warning }, 'configuration warning');
  let runtime: Runtime | undefined;
  const bodies = new BodyBudget();
  const metrics = createMetrics({ cacheEntries: () => runtime?.verifier.size ?? 0, bodyBytesHeld: () => bodies.held });
  const redis = config.token.cache.redis;
  // ioredis is loaded only when a shared cache is configured (it costs ~25 MB of RSS otherwise).
  // The shared entries are signed with a key Redis never sees: the configured one, else one
  // derived from the introspection client's secret (the same on every replica of one config).
  const secret = redis?.signingKey ?? config.token.introspection?.clientSecret;
  const signingKey = secret === undefined ? undefined : createHmac('sha256', 'scopegate shared cache').update(secret).digest();
  if (redis && signingKey === undefined) {
    logger.warn('shared cache (Redis) entries are not signed: whoever can write to this Redis can authorise any token; set token.cache.redis.signingKey, the same on every replica');
  }
  const shared = redis
    ? (await import('./token/redis.js')).createSharedCache({
      url: redis.url, keyPrefix: redis.keyPrefix, logger, signingKey,
      onPurge: (match) => runtime?.verifier.purge(match),
      onEvent: (event) => metrics.redis.inc({ event }),
    })
    : undefined;
  const current = () => runtime!;
  let servers: Servers | undefined;
  let proxyUrl = '';
  try {
    if (shared && !(await shared.ready(3000))) logger.warn('shared cache (Redis) not reachable at startup: starting with the local cache only');
    runtime = await runtimeOf(config, metrics, logger, shared);
    servers = await buildServer({ current, metrics, logger, access: logging.access, bodies, ...(shared ? { broadcastPurge: (match) => shared.purge(match) } : {}) });
    await listenOn(servers.proxy, config.listen, 'listen');
    // The line Fastify writes for a listener it logs for: the proxy's instance has no logger
    // (src/server.ts), and its startup lines stay as they were, the admin listener's after it.
    proxyUrl = urlOf(servers.proxy.server.address(), Boolean(config.listen.tls));
    logger.info({ listener: 'proxy' }, `Server listening at ${proxyUrl}`);
    await listenOn(servers.admin, config.admin, 'admin');
  } catch (error) {
    // A gateway that cannot start stops everything it started (the proxy port included), so that
    // the process exits instead of serving without its admin listener.
    logger.fatal({ reason: (error as Error).message }, 'cannot start');
    await servers?.close();
    runtime?.close();
    await shared?.close();
    await logging.flush();
    throw error;
  }
  const proxyServer = servers.proxy.server;
  const adminUrl = urlOf(servers.admin.server.address(), false);
  const summary = runtime.table.operations.length;
  logger.info({ proxy: proxyUrl, admin: adminUrl, operations: summary, upstream: config.upstream.url }, 'scopegate listening');
  let reloading: Promise<unknown> = Promise.resolve();
  // The reload waiting for its turn, if any: signals that arrive meanwhile join it (it reads the
  // files when its turn comes), so that a stream of SIGHUPs runs reloads one after the other, never
  // a queue of them that holds the event loop.
  let queued: Promise<ReloadResult> | undefined;

  return {
    proxyUrl,
    adminUrl,
    logger,
    current,
    reload() {
      // One reload at a time, each reading the files when its turn comes: two at once (SIGHUPs
      // around an edit) could finish in the other order, discovery answering the first later, and
      // leave the older file running.
      if (queued) return queued;
      const turn: Promise<ReloadResult> = reloading.then(async () => {
        queued = undefined;
        // Requests and I/O waiting since the previous reload go first.
        await new Promise((resolve) => setImmediate(resolve));
        try {
          const next = loadConfig(configFile, env);
          const built = await runtimeOf(next, metrics, logger, shared, runtime);
          const changed = RESTART_KEYS.filter((key) => JSON.stringify(valueAt(next, key)) !== JSON.stringify(valueAt(config, key)));
          // The listener's certificate and key at the same paths are read again: renewed in place
          // (cert-manager, certbot), they take effect without a restart. loadConfig has checked them.
          const tls = next.listen.tls;
          const renewed = tls !== undefined && !changed.includes('listen.tls');
          if (renewed) {
            try {
              (proxyServer as unknown as TlsServer).setSecureContext({ cert: readFileSync(tls.certFile), key: readFileSync(tls.keyFile) });
            } catch (error) {
              // Replaced again since loadConfig read them: refused, and the new runtime (its JWKS refresh timer) stopped.
              built.close();
              throw new ConfigError([`listen.tls: the certificate and key cannot be read again (${(error as Error).message})`]);
            }
          }
          const previous = runtime;
          runtime = built;
          proxyServer.maxConnections = next.listen.maxConnections;
          previous?.close();
          if (changed.length > 0) logger.warn({ keys: changed }, 'reload: these settings take effect only after a restart; the running values are kept');
          // Logged before the change, so that it shows at the old level when it hides info at the new one.
          if (next.log.level !== logger.level) logger.info({ from: logger.level, to: next.log.level }, 'reload: log level changed');
          logging.setLevel(next.log.level);
          metrics.reloads.inc({ outcome: 'ok' });
          logger.info({ operations: built.table.operations.length, logLevel: next.log.level, ...(renewed ? { tls: 'certificate and key read again' } : {}) }, 'reloaded config and OpenAPI file');
          return { ok: true };
        } catch (error) {
          metrics.reloads.inc({ outcome: 'failed' });
          const refused = withTableProblems(error);
          const problems = refused instanceof ConfigError ? refused.problems : [(refused as Error).message];
          logger.error({ problems }, 'reload refused: keeping the running config');
          return { ok: false, problems };
        }
      });
      queued = turn;
      reloading = turn;
      return turn;
    },
    async close() {
      const timeoutMs = options.closeTimeoutMs ?? current().config.listen.shutdownTimeoutMs;
      let timer: NodeJS.Timeout | undefined;
      // The admin listener closes last: while requests in flight finish, /healthz still says the
      // process runs (a failed liveness probe would kill it mid-drain), /readyz says 503 and
      // /metrics can be scraped.
      const finished = await Promise.race([
        servers.closeProxy().then(() => true),
        new Promise<false>((resolve) => {
          timer = setTimeout(() => resolve(false), timeoutMs);
        }),
      ]);
      clearTimeout(timer);
      if (!finished) {
        // Requests still in flight at the deadline: their connections are closed.
        logger.warn({ shutdownTimeoutMs: timeoutMs }, 'shutdown deadline reached: closing the connections of requests still in flight');
        servers.proxy.server.closeAllConnections();
      }
      // Each request gets its access line as its response closes, which Node reports after the
      // server's own 'close' (a connection cut at the deadline, a client that left at the last
      // moment): waited for here, briefly.
      await servers.inFlight.settled(1000);
      await servers.admin.close();
      runtime?.close();
      await shared?.close();
      await logging.flush();
    },
  };
}
