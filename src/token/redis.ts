/**
 * The shared second-level cache (ioredis): validation results shared by replicas under
 * `keyPrefix` + SHA-256 of the token, and purges broadcast on a pub/sub channel so that every
 * replica drops a revoked token from its local cache at once. Redis is an optimisation, never a
 * dependency: when it is down, slow or answers garbage, a lookup is a miss and a write is
 * skipped; the gateway keeps deciding with its local cache and the authorization server, and
 * never fails open.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { Refusal, type Entry, type PurgeMatch, type SharedLevel } from './cache.js';
import { internPrincipal } from './principal.js';

/** The shared cache and its purge channel. */
export interface SharedCache extends SharedLevel {
  /** Resolves once connected and subscribed, or after `timeoutMs` (the gateway starts anyway). */
  ready(timeoutMs: number): Promise<boolean>;
  /** Deletes matching entries in Redis and tells every replica; returns Redis entries deleted; rejects when Redis could not be reached. */
  purge(match: PurgeMatch): Promise<number>;
  close(): Promise<void>;
}

/** Options of the shared cache. */
export interface SharedCacheOptions {
  url: string;
  keyPrefix: string;
  logger: Logger;
  /** Applies a purge received from any replica (this one included) to the local cache. */
  onPurge: (match: PurgeMatch) => void;
  onEvent?: (event: 'hit' | 'miss' | 'error') => void;
  /** Budget of one Redis command; past it the lookup is a miss. */
  commandTimeoutMs?: number;
  /**
   * The key entries are signed with (HMAC-SHA256 over the Redis key and the value): an entry
   * without a valid signature is a miss, so that whoever can write to Redis cannot authorise a
   * token, nor move a valid entry under another token's key. Unsigned when absent.
   */
  signingKey?: Buffer | undefined;
}

/**
 * Serialised form: short keys, scopes as one string, `r` the digest of the rules that decided,
 * `u` the end of its reuse (epoch ms). `u` is signed with the rest: Redis' own TTL is whatever
 * whoever writes there sets, and an old entry written back after a purge must not come back to life.
 */
interface Stored {
  s?: string;
  c?: string;
  sc?: string;
  e?: number;
  i?: string;
  r?: string;
  u?: number;
}

/** The signature of `json` stored under `redisKey`: 43 characters of base64url. */
function signatureOf(signingKey: Buffer, redisKey: string, json: string): string {
  return createHmac('sha256', signingKey).update(redisKey).update('\n').update(json).digest('base64url');
}

const SIGNATURE = 43;

/** A stored value: the JSON alone, or `<signature>.<JSON>` when entries are signed. */
function encode(entry: Entry, rules: string, until: number, redisKey: string, signingKey: Buffer | undefined): string {
  const json = entry instanceof Refusal
    ? JSON.stringify({ i: entry.reason, r: rules, u: until } satisfies Stored)
    : JSON.stringify({ s: entry.subject, c: entry.clientId, sc: [...entry.scopes].join(' '), e: entry.expiresAt, r: rules, u: until } satisfies Stored);
  return signingKey === undefined ? json : `${signatureOf(signingKey, redisKey, json)}.${json}`;
}

/**
 * The JSON of a stored value: with a signing key, only when its signature is that of this key,
 * this Redis key and this JSON (else undefined: a miss); without one, what follows any
 * signature (a purge by client id reads every entry, signed or not).
 */
function jsonOf(text: string, redisKey: string, signingKey: Buffer | undefined): string | undefined {
  const signed = text.length > SIGNATURE && text.charCodeAt(SIGNATURE) === 0x2e;
  if (signingKey === undefined) return signed ? text.slice(SIGNATURE + 1) : text;
  if (!signed) return undefined;
  const json = text.slice(SIGNATURE + 1);
  const given = Buffer.from(text.slice(0, SIGNATURE));
  const expected = Buffer.from(signatureOf(signingKey, redisKey, json));
  return given.length === expected.length && timingSafeEqual(given, expected) ? json : undefined;
}

/**
 * Parses a stored value; anything unexpected is a miss, never a principal, and so is a result
 * decided by other rules than `rules` (when given).
 */
function decode(text: string, rules?: string): { entry: Entry; until: number | undefined } | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const s = v as Stored;
  if (rules !== undefined && s.r !== rules) return undefined;
  const until = typeof s.u === 'number' ? s.u : undefined;
  if (typeof s.i === 'string') return { entry: new Refusal(s.i), until };
  if (typeof s.sc !== 'string' || (s.e !== undefined && typeof s.e !== 'number')) return undefined;
  if ((s.s !== undefined && typeof s.s !== 'string') || (s.c !== undefined && typeof s.c !== 'string')) return undefined;
  return { entry: internPrincipal(s.s, s.c, s.sc.split(' ').filter(Boolean), s.e), until };
}

/** The most commands left waiting for Redis's answer before lookups and writes are skipped (a get is four: MULTI, GET, PTTL, EXEC). */
export const MAX_PENDING = 2048;

/** Connects (lazily, reconnecting by itself) and subscribes to the purge channel. */
export function createSharedCache(options: SharedCacheOptions): SharedCache {
  const timeout = options.commandTimeoutMs ?? 100;
  const common = {
    lazyConnect: false,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: 2000,
    retryStrategy: (attempt: number) => Math.min(attempt * 200, 2000),
  };
  const client = new Redis(options.url, { ...common, commandTimeout: timeout });
  const subscriber = new Redis(options.url, { ...common, enableOfflineQueue: true });
  const prefix = `${options.keyPrefix}token:`;
  // The prefix as a SCAN pattern matches itself only: a keyPrefix with `*`, `?` or `[` would
  // otherwise let a purge reach the keys of another prefix sharing the Redis.
  const prefixPattern = prefix.replace(/[*?[\]\\]/g, '\\$&');
  const channel = `${options.keyPrefix}purge`;
  let warnedAt = 0;
  const failed = (error: unknown) => {
    options.onEvent?.('error');
    const now = Date.now();
    if (now - warnedAt > 10000) {
      warnedAt = now;
      options.logger.warn({ err: { message: (error as Error).message } }, 'shared cache (Redis) unavailable: continuing with the local cache');
    }
  };
  client.on('error', failed);
  subscriber.on('error', failed);
  client.on('ready', () => options.logger.info('shared cache (Redis) connected'));
  // Pub/sub delivers at most once: a replica that lost its subscription may have missed purges
  // meanwhile, and drops its whole local cache when it hears again (the shared level was purged).
  let subscribed = false;
  let deaf = false;
  subscriber.on('close', () => {
    if (subscribed) deaf = true;
  });
  subscriber.on('ready', () => {
    subscriber.subscribe(channel).then(() => {
      subscribed = true;
      if (deaf) {
        deaf = false;
        options.logger.warn('shared cache (Redis): purges may have been missed while the subscription was lost; the local cache is dropped');
        options.onPurge({ all: true });
      }
      subscriber.emit('subscribed');
    }, failed);
  });
  subscriber.on('message', (_channel: string, message: string) => {
    try {
      const match = JSON.parse(message) as PurgeMatch;
      if (typeof match === 'object' && match !== null) options.onPurge(match);
    } catch {
      // A message we cannot read purges nothing.
    }
  });

  /** Keys read or deleted per command by a purge. */
  const PURGE_BATCH = 500;

  async function scanKeys(pattern: string): Promise<string[]> {
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      keys.push(...batch);
    } while (cursor !== '0' && keys.length < 1_000_000);
    return keys;
  }

  /**
   * Whether commands may be sent. A Redis that keeps the connection but stops answering (a
   * frozen host, a black-holed route) leaves every command ioredis sent waiting in its queue, the
   * timed-out ones too, until an answer comes: memory grew by about 5 MB a second of such a stall
   * under a flood of new tokens. Past MAX_PENDING waiting commands, lookups and writes are skipped
   * (a miss, as when Redis is down) until the queue drains.
   */
  const sendable = (): boolean => {
    if (client.commandQueue.length < MAX_PENDING) return true;
    failed(new Error(`${client.commandQueue.length} commands waiting for Redis to answer`));
    return false;
  };

  async function get(key: string, rules: string): Promise<{ entry: Entry; ttlMs: number } | undefined> {
    if (!sendable()) return undefined;
    try {
      // The value and what is left of its TTL, read together: the reader keeps it no longer
      // than the writer meant it to live.
      const replies = await client.multi().get(prefix + key).pttl(prefix + key).exec();
      const text = replies?.[0]?.[1];
      const ttlMs = replies?.[1]?.[1];
      const json = typeof text === 'string' && typeof ttlMs === 'number' && ttlMs > 0 ? jsonOf(text, prefix + key, options.signingKey) : undefined;
      const stored = json === undefined ? undefined : decode(json, rules);
      // Reused no longer than its writer meant: the signed end, whatever TTL Redis gives it.
      const left = stored?.until === undefined ? 0 : Math.min(stored.until - Date.now(), ttlMs as number);
      const hit = stored !== undefined && left > 0;
      options.onEvent?.(hit ? 'hit' : 'miss');
      return hit ? { entry: stored.entry, ttlMs: left } : undefined;
    } catch (error) {
      failed(error);
      return undefined;
    }
  }

  async function set(key: string, entry: Entry, ttlMs: number, rules: string): Promise<void> {
    if (!sendable()) return;
    try {
      const px = Math.max(1, Math.floor(ttlMs));
      await client.set(prefix + key, encode(entry, rules, Date.now() + px, prefix + key, options.signingKey), 'PX', px);
    } catch (error) {
      failed(error);
    }
  }

  return {
    async ready(timeoutMs) {
      const connected = (r: Redis, event: string) => (r.status === 'ready' && event === 'ready' ? Promise.resolve() : new Promise<void>((done) => r.once(event, () => done())));
      let timer: NodeJS.Timeout | undefined;
      const ok = await Promise.race([
        Promise.all([connected(client, 'ready'), connected(subscriber, 'subscribed')]).then(() => true),
        new Promise<boolean>((done) => {
          timer = setTimeout(() => done(false), timeoutMs);
        }),
      ]);
      clearTimeout(timer);
      return ok;
    },
    scoped: (rules) => ({
      get: (key) => get(key, rules),
      set: (key, entry, ttlMs) => set(key, entry, ttlMs, rules),
    }),
    async purge(match) {
      let deleted = 0;
      try {
        let keys: string[] = [];
        if (match.key) keys = [prefix + match.key];
        else if (match.fingerprint) keys = await scanKeys(`${prefixPattern}${match.fingerprint.replace(/[*?[\]\\]/g, '')}*`);
        else if (match.clientId) {
          const all = await scanKeys(`${prefixPattern}*`);
          // Read in batches: one round trip per PURGE_BATCH keys, not one per key.
          for (let i = 0; i < all.length; i += PURGE_BATCH) {
            const batch = all.slice(i, i + PURGE_BATCH);
            const values = await client.mget(...batch);
            for (let j = 0; j < batch.length; j++) {
              const json = jsonOf(values[j] ?? '', batch[j]!, undefined);
              const e = json === undefined ? undefined : decode(json)?.entry;
              if (e && !(e instanceof Refusal) && e.clientId === match.clientId) keys.push(batch[j]!);
            }
          }
        }
        for (let i = 0; i < keys.length; i += PURGE_BATCH) deleted += await client.del(...keys.slice(i, i + PURGE_BATCH));
        await client.publish(channel, JSON.stringify(match));
      } catch (error) {
        failed(error);
        // The caller says so: other replicas were not told.
        throw error;
      }
      return deleted;
    },
    async close() {
      client.disconnect();
      subscriber.disconnect();
    },
  };
}
