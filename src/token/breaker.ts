/**
 * A circuit breaker for the authorization server: after `threshold` consecutive failures it
 * opens and callers fail fast for `cooldownMs`; then one probe is let through, and its outcome
 * closes or re-opens the circuit. This prevents a dead or drowning authorization server from
 * being hit by every request while it recovers.
 */

/** The state of one breaker. */
export interface Breaker {
  /** True when a call may go out now (closed, or the one half-open probe). */
  tryAcquire(): boolean;
  success(): void;
  failure(): void;
  readonly state: 'closed' | 'open' | 'half-open';
}

/** Creates a breaker; `now` is injectable for tests. */
export function createBreaker(threshold = 5, cooldownMs = 5000, now: () => number = Date.now): Breaker {
  let failures = 0;
  let openedAt = 0;
  let state: Breaker['state'] = 'closed';
  let probing = false;
  return {
    get state() {
      return state;
    },
    tryAcquire() {
      if (state === 'closed') return true;
      if (state === 'open' && now() - openedAt >= cooldownMs) state = 'half-open';
      if (state === 'half-open' && !probing) {
        probing = true;
        return true;
      }
      return false;
    },
    success() {
      failures = 0;
      probing = false;
      state = 'closed';
    },
    failure() {
      probing = false;
      failures += 1;
      if (state === 'half-open' || failures >= threshold) {
        state = 'open';
        openedAt = now();
      }
    },
  };
}
