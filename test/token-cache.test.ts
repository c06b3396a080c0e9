// The token cache's clock (src/token/cache.ts): an entry is never served from the first
// millisecond of its token's exp, however late it was stored; a TTL of 0 means "not reused".
// The verifier here stands for the authorization server: it answers with the principal the test
// gives it, and counts how often it is asked.
import t from 'tap';
import { InvalidToken } from '../src/errors.js';
import { internPrincipal, type Principal } from '../src/token/principal.js';
import { tokenKey, withCache, type PurgeMatch } from '../src/token/cache.js';

const T0 = 1_800_000_000_000;

function setup(options: { maxTtlSeconds?: number; negativeTtlSeconds?: number } = {}) {
  let clock = T0;
  let calls = 0;
  let answer: () => Principal = () => internPrincipal('alice', 'client', ['users.read'], Math.floor(clock / 1000) + 60);
  let delayMs = 0;
  const cache = withCache(async () => {
    calls += 1;
    const principal = answer();
    // The validation takes this long on the cache's clock.
    clock += delayMs;
    return principal;
  }, { maxEntries: 100, maxTtlSeconds: options.maxTtlSeconds ?? 300, negativeTtlSeconds: options.negativeTtlSeconds ?? 5, now: () => clock });
  return {
    cache,
    calls: () => calls,
    at: (ms: number) => { clock = ms; },
    answer: (fn: () => Principal) => { answer = fn; },
    delay: (ms: number) => { delayMs = ms; },
  };
}

// However long the validation took (none, or most of the token's life), the entry ends at exp.
for (const { delayMs, lifeSeconds } of [{ delayMs: 0, lifeSeconds: 10 }, { delayMs: 1500, lifeSeconds: 2 }]) {
  t.test(`a cached principal is served until the millisecond before its exp, never at it (validation of ${delayMs} ms)`, async (t) => {
    const c = setup();
    const exp = T0 / 1000 + lifeSeconds;
    c.answer(() => internPrincipal('alice', 'client', ['users.read'], exp));
    c.delay(delayMs);
    const key = tokenKey(`tok-${delayMs}`);
    await c.cache.verify(`tok-${delayMs}`, key);
    t.equal(c.calls(), 1);
    c.at(exp * 1000 - 1);
    t.ok(c.cache.peek(key), 'served 1 ms before exp');
    c.at(exp * 1000);
    t.equal(c.cache.peek(key), undefined, 'not served at exp: the next request validates again');
  });
}

t.test('a token that expired while it was validated: that answer is given, never reused', async (t) => {
  const c = setup();
  const exp = T0 / 1000 + 1;
  c.answer(() => internPrincipal('alice', 'client', ['users.read'], exp));
  c.delay(1200);
  const key = tokenKey('tok-c');
  const [a, b] = await Promise.all([c.cache.verify('tok-c', key), c.cache.verify('tok-c', key)]);
  t.equal(c.calls(), 1, 'the concurrent requests shared one validation');
  t.equal(a.principal.clientId, 'client', 'the requests that waited get the answer');
  t.equal(b.principal.clientId, 'client');
  t.equal(c.cache.peek(key), undefined, 'nothing is served from the cache afterwards');
  c.delay(0);
  await c.cache.verify('tok-c', key);
  t.equal(c.calls(), 2, 'the next request is validated again');
});

t.test('maxTtlSeconds 0: every request is validated (lru-cache reads a TTL of 0 as forever)', async (t) => {
  const c = setup({ maxTtlSeconds: 0 });
  const key = tokenKey('tok-d');
  await c.cache.verify('tok-d', key);
  t.equal(c.cache.peek(key), undefined, 'not reused in the same millisecond');
  c.at(T0 + 3_600_000);
  t.equal(c.cache.peek(key), undefined, 'nor an hour later');
  await c.cache.verify('tok-d', key);
  t.equal(c.calls(), 2);
});

t.test('a refusal lives negativeTtlSeconds; 0 means not reused', async (t) => {
  const c = setup({ negativeTtlSeconds: 5 });
  c.answer(() => { throw new InvalidToken('inactive'); });
  const key = tokenKey('tok-e');
  await t.rejects(c.cache.verify('tok-e', key), InvalidToken);
  c.at(T0 + 4999);
  t.throws(() => c.cache.peek(key), InvalidToken, 'the refusal is served within its TTL');
  c.at(T0 + 5000);
  t.equal(c.cache.peek(key), undefined, 'and not after');

  const z = setup({ negativeTtlSeconds: 0 });
  z.answer(() => { throw new InvalidToken('inactive'); });
  await t.rejects(z.cache.verify('tok-f', tokenKey('tok-f')), InvalidToken);
  t.equal(z.cache.peek(tokenKey('tok-f')), undefined, 'negativeTtlSeconds 0: not reused');
});

t.test('maxTtlSeconds bounds an entry whose token lives longer', async (t) => {
  const c = setup({ maxTtlSeconds: 10 });
  const key = tokenKey('tok-g');
  await c.cache.verify('tok-g', key);
  c.at(T0 + 9_999);
  t.ok(c.cache.peek(key));
  c.at(T0 + 10_000);
  t.equal(c.cache.peek(key), undefined);
});

t.test('a purge during a validation: the requests waiting get its answer, no later request does', async (t) => {
  /** A cache whose validations wait until the test lets them answer. */
  const gated = () => {
    let calls = 0;
    let open: () => void = () => undefined;
    const cache = withCache(async () => {
      calls += 1;
      await new Promise<void>((resolve) => (open = resolve));
      return internPrincipal('alice', 'client-1', ['users.read'], Math.floor(Date.now() / 1000) + 600);
    }, { maxEntries: 100, maxTtlSeconds: 300, negativeTtlSeconds: 5 });
    return { cache, calls: () => calls, answer: () => open() };
  };
  const cases: Array<[name: string, purge: (key: string) => PurgeMatch[], kept: boolean]> = [
    ['by its key', (key) => [{ key }], false],
    ['by its fingerprint', (key) => [{ fingerprint: key.slice(0, 12) }], false],
    ['by its client id (known only from the answer)', () => [{ clientId: 'client-1' }], false],
    ['of another token and another client', () => [{ key: tokenKey('other') }, { clientId: 'client-2' }], true],
    ['more purges than are remembered: any of them may have matched', () => Array.from({ length: 300 }, (_, i) => ({ key: tokenKey(`other-${i}`) })), false],
  ];
  for (const [name, purges, kept] of cases) {
    const g = gated();
    const key = tokenKey('tok-p');
    const waiting = Promise.all([g.cache.verify('tok-p', key), g.cache.verify('tok-p', key)]);
    await new Promise((resolve) => setImmediate(resolve));
    for (const match of purges(key)) g.cache.purge(match);
    g.answer();
    const [a, b] = await waiting;
    t.equal(a.principal.clientId, 'client-1', `${name}: the requests that waited get the answer`);
    t.equal(b.principal.clientId, 'client-1');
    t.equal(g.calls(), 1, `${name}: one validation for both`);
    if (kept) {
      t.ok(g.cache.peek(key), `${name}: the answer is kept`);
    } else {
      t.equal(g.cache.peek(key), undefined, `${name}: the answer is not kept`);
      const next = g.cache.verify('tok-p', key);
      await new Promise((resolve) => setImmediate(resolve));
      g.answer();
      await next;
      t.equal(g.calls(), 2, `${name}: the next request is validated again`);
    }
  }
});

// A black-box audit: a purge answered 200 while a validation was in flight, and a request sent
// after it joined that validation, begun before the revocation: forwarded on a revoked token.
t.test('a request that joins a validation after a purge that matches its answer is validated again', async (t) => {
  /** A cache whose validations each wait until the test lets that one answer. */
  const gated = () => {
    const gates: Array<() => void> = [];
    const cache = withCache(async () => {
      await new Promise<void>((resolve) => gates.push(resolve));
      return internPrincipal('alice', 'client-1', ['users.read'], Math.floor(Date.now() / 1000) + 600);
    }, { maxEntries: 100, maxTtlSeconds: 300, negativeTtlSeconds: 5 });
    return { cache, calls: () => gates.length, answer: (i: number) => gates[i]!() };
  };
  const tick = () => new Promise((resolve) => setImmediate(resolve));
  const cases: Array<[name: string, purge: (key: string) => PurgeMatch, again: boolean]> = [
    ['by its key', (key) => ({ key }), true],
    ['by its fingerprint', (key) => ({ fingerprint: key.slice(0, 12) }), true],
    ['by the client id its answer names', () => ({ clientId: 'client-1' }), true],
    ['by the key of another token', () => ({ key: tokenKey('other') }), false],
    ['by another client id', () => ({ clientId: 'client-2' }), false],
  ];
  for (const [name, purge, again] of cases) {
    const g = gated();
    const key = tokenKey('tok-r');
    const first = g.cache.verify('tok-r', key);
    await tick();
    g.cache.purge(purge(key));
    const second = g.cache.verify('tok-r', key);
    await tick();
    t.equal(g.calls(), 1, `${name}: one validation at a time (the later request waits for the one in flight)`);
    g.answer(0);
    t.equal((await first).principal.clientId, 'client-1', `${name}: the request waiting when the purge came gets the answer`);
    await tick();
    if (again) {
      t.equal(g.calls(), 2, `${name}: the request that joined after the purge is validated again`);
      g.answer(1);
      t.equal((await second).principal.clientId, 'client-1');
      t.ok(g.cache.peek(key), `${name}: the validation begun after the purge is kept`);
    } else {
      t.equal((await second).principal.clientId, 'client-1', `${name}: the later request takes the answer`);
      t.equal(g.calls(), 1, `${name}: no second validation`);
    }
  }
});

// A black-box audit's flood: refusals shared one LRU with valid results, so made-up tokens
// evicted the entry of a token in use (then a 503 while the server was busy with the flood), and
// a validation still in flight when its entry was evicted failed its requests with a 500.
t.test('refusals never evict a valid token, and a validation in flight is never evicted', async (t) => {
  const clock = T0;
  const asked: string[] = [];
  let release: (() => void) | undefined;
  const cache = withCache(async (token) => {
    asked.push(token);
    if (token === 'slow') await new Promise<void>((resolve) => { release = resolve; });
    if (token.startsWith('bad-')) throw new InvalidToken('inactive token');
    return internPrincipal(token, 'client', ['users.read'], Math.floor(clock / 1000) + 600);
  }, { maxEntries: 3, maxTtlSeconds: 300, negativeTtlSeconds: 5, now: () => clock });

  await cache.verify('good');
  for (let i = 0; i < 50; i++) await t.rejects(cache.verify(`bad-${i}`), InvalidToken);
  t.equal(cache.peek(tokenKey('good'))?.subject, 'good', 'the valid token is still cached after 50 refusals');
  t.equal(asked.filter((x) => x === 'good').length, 1, 'and was validated once');
  t.ok(cache.size <= 3 + 3, 'refusals are bounded too (by maxEntries here)');
  await t.rejects(cache.verify('bad-49'), InvalidToken);
  t.equal(asked.filter((x) => x === 'bad-49').length, 1, 'a refusal is reused within negativeTtlSeconds');

  // A slow validation while three others fill the cache (maxEntries 3) and push out everything else.
  const waiting = [cache.verify('slow'), cache.verify('slow')];
  for (const token of ['a', 'b', 'c', 'd']) await cache.verify(token);
  release?.();
  const [first, second] = (await Promise.all(waiting)) as [Awaited<(typeof waiting)[0]>, Awaited<(typeof waiting)[0]>];
  t.equal(first.principal.subject, 'slow', 'the requests that waited get the answer');
  t.equal(second.principal.subject, 'slow');
  t.equal(asked.filter((x) => x === 'slow').length, 1, 'one validation for both');
});

// A reload replaces the runtime while a validation is in flight. Under the same rules the new
// cache holds the same store, and the purges made on it reach the validation: its answer is
// written to the shared level. Without a successor that holds the store, it is not (a purge on the
// new runtime could not reach it).
t.test('a retired cache writes its late answer to the shared level only when its successor holds its store', async (t) => {
  for (const carried of [true, false]) {
    const written: string[] = [];
    const shared = { get: async () => undefined, set: async (key: string) => { written.push(key); } };
    let release: () => void = () => undefined;
    const verifier = () => new Promise<Principal>((resolve) => {
      release = () => resolve(internPrincipal('alice', 'client', ['users.read'], Math.floor(Date.now() / 1000) + 60));
    });
    const options = { maxEntries: 100, maxTtlSeconds: 300, negativeTtlSeconds: 5, secondLevel: shared };
    const before = withCache(verifier, options);
    const pending = before.verify('tok-reload');
    await new Promise((resolve) => setImmediate(resolve));
    const after = withCache(verifier, { ...options, ...(carried ? { store: before.store } : {}) });
    before.retire();
    release();
    await pending;
    t.same(written, carried ? [tokenKey('tok-reload')] : [], carried ? 'held by its successor: written' : 'no successor holds it: not written');
    t.equal(after.peek(tokenKey('tok-reload'))?.clientId, carried ? 'client' : undefined, carried ? 'and served by the successor' : 'nor served by another cache');
  }
});
