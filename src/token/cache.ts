/**
 * withCache(verifier) -> verifier: results kept in an LRU keyed by the SHA-256 of the token (a
 * token is never a cache key), concurrent first requests coalesced into one validation
 * (one promise per key in flight), positive entries living min(maxTtlSeconds, exp - now) and re-checked for
 * expiry on every hit, invalid results kept `negativeTtlSeconds`, authorization-server failures
 * never kept.
 */
import { hash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { InvalidToken } from '../errors.js';
import { withoutExpiry, type Principal, type TokenVerifier } from './principal.js';

/** A cached refusal: the reason a token was refused. */
export class Refusal {
  constructor(readonly reason: string) {}
}

/** What a cache entry holds: the principal itself (no wrapper: a million entries), or a refusal. */
export type Entry = Principal | Refusal;

/** Options of the cache. */
export interface CacheOptions {
  maxEntries: number;
  maxTtlSeconds: number;
  negativeTtlSeconds: number;
  now?: () => number;
  /** A second level shared by replicas (Redis); consulted on a local miss. */
  secondLevel?: SecondLevel;
  /** Whether the second level keeps `token`'s result (default: every token's). */
  shares?: (token: string) => boolean;
  /** The previous cache's store, carried over when its limits are these (a reload under the same rules). */
  store?: CacheStore | undefined;
}

/**
 * A store shared by replicas, and by the runtimes one process goes through (SIGHUP): a result
 * is reused only under the rules that decided it (issuer, audience, algorithms, ...).
 */
export interface SharedLevel {
  /** The second level of a runtime whose rules have the digest `rules`: other results are misses. */
  scoped(rules: string): SecondLevel;
}

/** A shared second-level store. Failures must resolve to undefined / be swallowed, never throw. */
export interface SecondLevel {
  /** The entry of `key` and the milliseconds it has left there. */
  get(key: string): Promise<{ entry: Entry; ttlMs: number } | undefined>;
  set(key: string, entry: Entry, ttlMs: number): Promise<void>;
}

/** A cached verifier with the controls the admin listener needs. */
export interface CachedVerifier {
  /**
   * The cached principal of `key`, synchronously: undefined on a miss (call verify), throws
   * InvalidToken for a cached refusal or an expired token.
   */
  peek(key: string): Principal | undefined;
  /** `key` is tokenKey(token), when the caller has it already. */
  verify(token: string, key?: string): Promise<{ principal: Principal; hit: boolean }>;
  /**
   * Drops entries by key (SHA-256 base64url), fingerprint prefix or client id; returns how many.
   * A validation in flight that it matches is answered to the requests waiting for it, and never
   * kept (here or in the shared level): its answer may predate the purge.
   */
  purge(match: PurgeMatch): number;
  readonly size: number;
  /** Its entries and the validations in flight: handed to the runtime a reload builds under the same rules. */
  readonly store: CacheStore;
  /**
   * Called once its runtime is replaced: a validation still in flight answers its requests and
   * writes nothing to the shared level any more (a purge made on the new runtime since did not
   * reach it), unless the new runtime's cache holds the same store (the purges are then shared).
   */
  retire(): void;
}

/** The state of a cache, opaque: what a reload under the same rules carries over. */
export interface CacheStore {
  readonly lru: LRUCache<string, Principal>;
  readonly refusals: LRUCache<string, Refusal>;
  readonly inFlight: Map<string, InFlightValidation>;
  readonly purges: { count: number; recent: Array<{ n: number; match: PurgeMatch }> };
  readonly limits: string;
  /** How many caches have held it: a later one shares its purges (see retire). */
  holders: number;
}

/** A validation in flight, and the number of the last purge made before it started. */
interface InFlightValidation {
  readonly answer: Promise<Entry>;
  readonly startedAfter: number;
}

/** What a purge drops: one token's key, a fingerprint prefix, or a client's tokens. */
export interface PurgeMatch {
  key?: string;
  fingerprint?: string;
  clientId?: string;
  /** Every entry (a replica that may have missed purges while it could not hear them). */
  all?: boolean;
}

function purgeMatches(match: PurgeMatch, key: string, entry: Entry): boolean {
  return match.all === true
    || (match.key !== undefined && key === match.key)
    || (match.fingerprint !== undefined && match.fingerprint.length >= 8 && key.startsWith(match.fingerprint))
    || (match.clientId !== undefined && !(entry instanceof Refusal) && entry.clientId === match.clientId);
}

/** The most refusals kept (fewer when maxEntries is smaller): they absorb a bad token's repeats for negativeTtlSeconds. */
const MAX_REFUSALS = 10000;

/** Purges remembered for the validations in flight (a validation lasts a few seconds at most). */
const RECENT_PURGES = 256;

/** The cache key of a token: SHA-256, base64url. */
export function tokenKey(token: string): string {
  return hash('sha256', token, 'base64url');
}

/** The short fingerprint written to logs: the first 12 characters of the key. */
export function fingerprintOf(key: string): string {
  return key.slice(0, 12);
}

/** Wraps `verifier` in the cache. */
export function withCache(verifier: TokenVerifier, options: CacheOptions): CachedVerifier {
  const now = options.now ?? Date.now;
  const maxTtlMs = options.maxTtlSeconds * 1000;
  const negativeTtlMs = options.negativeTtlSeconds * 1000;

  /** The end of an entry's reuse when stored at `at`: maxTtlSeconds or negativeTtlSeconds later, or its token's exp. */
  const untilOf = (entry: Entry, at: number): number => {
    if (entry instanceof Refusal) return at + negativeTtlMs;
    return entry.expiresAt === undefined ? at + maxTtlMs : Math.min(at + maxTtlMs, entry.expiresAt * 1000);
  };

  /**
   * The TTL and start, at `at`, of a local entry on lru-cache's clock, which counts an entry
   * stale once `now - start > ttl`: the entry is stale from `until`, the end of its reuse
   * (maxTtlSeconds or negativeTtlSeconds after it was validated, or the end it has in the shared
   * level) or the first millisecond of its token's exp, however long its validation took. An
   * entry whose `until` has passed (a token that expired while it was being validated, a TTL of
   * 0) is stale at once: the requests that waited for that validation get its answer, no later
   * one does. (A TTL of 0 would mean "never stale" to lru-cache.)
   */
  const lifetimeOf = (until: number, at: number): { ttl: number; start: number } => {
    const start = Math.min(at, until - 2);
    return { ttl: until - 1 - start, start };
  };

  const limits = `${options.maxEntries} ${options.maxTtlSeconds} ${options.negativeTtlSeconds}`;
  // Valid tokens and refusals are kept apart: a flood of made-up tokens churns the refusals
  // alone, and never evicts the entry of a token in use (which would then have to be validated
  // again, against a server the flood keeps busy).
  const lruOptions = {
    ttl: Math.max(maxTtlMs, 1),
    ttlAutopurge: false,
    // Every staleness check reads the clock: the default (1 ms, refreshed by a timer that a busy
    // event loop delays) let an entry be served past its token's exp.
    ttlResolution: 0,
    perf: { now },
  };

  function newStore(): CacheStore {
    return {
      lru: new LRUCache<string, Principal>({ ...lruOptions, max: options.maxEntries }),
      refusals: new LRUCache<string, Refusal>({ ...lruOptions, max: Math.min(options.maxEntries, MAX_REFUSALS) }),
      // The validations in flight, one per key: the requests that arrive meanwhile wait for it. Not
      // in an LRU: an eviction would fail the requests waiting.
      inFlight: new Map<string, InFlightValidation>(),
      purges: { count: 0, recent: [] },
      limits,
      holders: 0,
    };
  }

  // What the cache holds: its own, or, after a reload under the same rules and limits, the
  // previous runtime's (its entries, its validations in flight and the purges they must see).
  const store = options.store?.limits === limits ? options.store : newStore();
  const { lru, refusals, inFlight } = store;
  const holder = ++store.holders;

  // The purges made while validations were in flight, numbered: a validation notes the number
  // when it starts, and its answer is not kept if a later purge matches it.
  const purgeLog = store.purges;
  // Whether a purge numbered after `n` and up to `to` matches the key and its answer.
  const purgedBetween = (n: number, to: number, key: string, entry: Entry): boolean => {
    const recentPurges = purgeLog.recent;
    if (to <= n) return false;
    // Some of the purges since were forgotten: one of them may have matched.
    if (recentPurges.length === 0 || recentPurges[0]!.n > n + 1) return true;
    for (let i = recentPurges.length - 1; i >= 0 && recentPurges[i]!.n > n; i--) {
      if (recentPurges[i]!.n <= to && purgeMatches(recentPurges[i]!.match, key, entry)) return true;
    }
    return false;
  };
  const purgedSince = (n: number, key: string, entry: Entry): boolean => purgedBetween(n, purgeLog.count, key, entry);
  let retired = false;

  /** Validates `token` (the shared level first) and keeps the result as long as its rules allow. */
  async function validate(key: string, token: string, startedAfter: number): Promise<Entry> {
    const secondLevel = options.shares === undefined || options.shares(token) ? options.secondLevel : undefined;
    const shared = await secondLevel?.get(key);
    let entry: Entry;
    let until: number;
    let validated = false;
    if (shared && !isExpired(shared.entry)) {
      // Reused here no longer than it has left there: a refusal is not served past
      // negativeTtlSeconds, nor a revoked token past maxTtlSeconds, after its validation.
      entry = shared.entry;
      const at = now();
      until = Math.min(at + shared.ttlMs, untilOf(entry, at));
    } else {
      try {
        entry = await verifier(token);
      } catch (error) {
        // Only a refusal of the token is kept; a failure of the server propagates, uncached.
        if (!(error instanceof InvalidToken)) throw error;
        entry = new Refusal(error.reason);
      }
      validated = true;
      until = untilOf(entry, now());
    }
    const at = now();
    // Purged while it was validated: the requests waiting get this answer, no later one does.
    if (purgedSince(startedAfter, key, entry)) until = at;
    // Kept until `until` (the first millisecond of the token's exp at the latest, however long
    // the validation took); lru-cache checks it on every get, so a hit is never expired. An
    // entry whose `until` has passed is not kept: the requests that waited get its answer.
    if (until > at) {
      // The shared level keeps it as long as this one does.
      // A cache whose runtime was replaced writes nothing more, unless its successor holds this
      // store: then the purges made since are in the log it checked above.
      if (validated && (!retired || store.holders > holder)) void secondLevel?.set(key, entry, until - at);
      const { ttl, start } = lifetimeOf(until, at);
      // One answer per token: the newer one replaces the other kind, should one still be kept.
      if (entry instanceof Refusal) {
        refusals.set(key, entry, { ttl, start });
        lru.delete(key);
      } else {
        lru.set(key, withoutExpiry(entry), { ttl, start });
        refusals.delete(key);
      }
    }
    return entry instanceof Refusal ? entry : withoutExpiry(entry);
  }

  function isExpired(entry: Entry): boolean {
    return !(entry instanceof Refusal) && entry.expiresAt !== undefined && entry.expiresAt * 1000 <= now();
  }

  // An entry never outlives the token: its TTL ends at exp at the latest, and lru-cache checks
  // the TTL on every get, so a hit is never expired.
  function check(entry: Entry): Principal {
    if (entry instanceof Refusal) throw new InvalidToken(entry.reason);
    return entry;
  }

  return {
    peek(key) {
      const entry = lru.get(key) ?? refusals.get(key);
      return entry === undefined ? undefined : check(entry);
    },
    async verify(token, key = tokenKey(token)) {
      for (;;) {
        const cached = lru.get(key) ?? refusals.get(key);
        if (cached !== undefined) return { principal: check(cached), hit: true };
        let pending = inFlight.get(key);
        if (pending === undefined) {
          const startedAfter = purgeLog.count;
          const answer: Promise<Entry> = validate(key, token, startedAfter).finally(() => {
            if (inFlight.get(key) === validation) inFlight.delete(key);
          });
          const validation = { answer, startedAfter };
          pending = validation;
          inFlight.set(key, validation);
        }
        const joinedAfter = purgeLog.count;
        const entry = await pending.answer;
        // A request that joined a validation after a purge that matches its answer (a token
        // revoked and purged while the server was being asked) does not take that answer: it
        // is validated again. The requests that were waiting when the purge came take it.
        if (!purgedBetween(pending.startedAfter, joinedAfter, key, entry)) return { principal: check(entry), hit: false };
      }
    },
    purge(match) {
      purgeLog.count += 1;
      purgeLog.recent.push({ n: purgeLog.count, match });
      if (purgeLog.recent.length > RECENT_PURGES) purgeLog.recent.shift();
      let purged = 0;
      for (const [key, entry] of lru.entries()) {
        if (purgeMatches(match, key, entry) && lru.delete(key)) purged += 1;
      }
      for (const [key, entry] of refusals.entries()) {
        if (purgeMatches(match, key, entry) && refusals.delete(key)) purged += 1;
      }
      return purged;
    },
    get size() {
      return lru.size + refusals.size;
    },
    store,
    retire() {
      retired = true;
    },
  };
}

