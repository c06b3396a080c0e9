/**
 * Readiness of introspection, kept current (INTERFACE.md: /readyz is 200 when token validation can
 * work, 503 otherwise). The last evidence decides: a probe of the endpoint or a real introspection
 * the authorization server answered. Evidence older than `maxAgeMs`, or an open circuit breaker
 * (consecutive failures of real calls), is checked again with a probe. Concurrent checks share one
 * probe, and a failed probe is believed for `maxAgeMs`, so a flood of /readyz is at most one call to
 * the authorization server per `maxAgeMs`.
 */

/** What readiness reads from the introspection verifier. */
export interface IntrospectionHealth {
  /** One well-formed introspection; true when the endpoint answered it properly. */
  probe(): Promise<boolean>;
  /** The circuit breaker's state: anything but closed means recent consecutive failures. */
  circuit(): 'closed' | 'open' | 'half-open';
  /** When the authorization server last answered a real introspection (active or not); -Infinity if never. */
  lastAnsweredAt(): number;
}

/** How long a probe or an answer is believed. */
export const READY_MAX_AGE_MS = 5000;

/** Creates the readiness check of one introspection verifier; `now` is the verifier's clock. */
export function createIntrospectionReadiness(health: IntrospectionHealth, options: { now: () => number; maxAgeMs?: number }): () => Promise<boolean> {
  const maxAgeMs = options.maxAgeMs ?? READY_MAX_AGE_MS;
  let last: { at: number; ok: boolean } | undefined;
  let pending: Promise<boolean> | undefined;
  return async () => {
    const now = options.now();
    const goodAt = Math.max(last?.ok ? last.at : -Infinity, health.lastAnsweredAt());
    const badAt = last && !last.ok ? last.at : -Infinity;
    if (health.circuit() === 'closed' && goodAt > badAt && now - goodAt < maxAgeMs) return true;
    if (badAt >= goodAt && now - badAt < maxAgeMs) return false;
    pending ??= health.probe().then((ok) => {
      last = { at: options.now(), ok };
      return ok;
    }).finally(() => {
      pending = undefined;
    });
    return pending;
  };
}
