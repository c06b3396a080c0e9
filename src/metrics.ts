/**
 * Prometheus metrics (prom-client), on a registry of their own per gateway. Labels are operation
 * ids or fixed words, never raw paths, tokens or anything a client chose.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** The gateway's metrics. */
export interface Metrics {
  readonly registry: Registry;
  readonly requests: Counter<'operation' | 'decision' | 'status'>;
  readonly duration: Histogram<'decision'>;
  readonly cache: Counter<'result'>;
  readonly cacheSize: Gauge;
  readonly introspections: Counter<'outcome'>;
  readonly introspectionSeconds: Histogram;
  readonly jwksFetches: Counter<'outcome'>;
  readonly upstreamErrors: Counter<'kind'>;
  readonly redis: Counter<'event'>;
  readonly reloads: Counter<'outcome'>;
}

/** Creates the metrics; `cacheSize` reads its value from `size` at scrape time. */
export function createMetrics(size: () => number, defaults = true): Metrics {
  const registry = new Registry();
  if (defaults) collectDefaultMetrics({ register: registry, prefix: 'scopegate_' });
  const registers = [registry];
  return {
    registry,
    requests: new Counter({ name: 'scopegate_requests_total', help: 'Requests answered on the proxy port, by operation, decision and status.', labelNames: ['operation', 'decision', 'status'], registers }),
    duration: new Histogram({ name: 'scopegate_request_duration_seconds', help: 'Time from request to response, by decision.', labelNames: ['decision'], buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers }),
    cache: new Counter({ name: 'scopegate_token_cache_total', help: 'Token cache lookups, by result (hit, miss).', labelNames: ['result'], registers }),
    cacheSize: new Gauge({ name: 'scopegate_token_cache_entries', help: 'Entries in the local token cache.', registers, collect() { this.set(size()); } }),
    introspections: new Counter({ name: 'scopegate_introspection_requests_total', help: 'Introspection calls, by outcome (active, inactive, failure).', labelNames: ['outcome'], registers }),
    introspectionSeconds: new Histogram({ name: 'scopegate_introspection_duration_seconds', help: 'Introspection call latency.', buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5], registers }),
    jwksFetches: new Counter({ name: 'scopegate_jwks_fetches_total', help: 'JWKS fetches, by outcome (ok, failure).', labelNames: ['outcome'], registers }),
    upstreamErrors: new Counter({ name: 'scopegate_upstream_errors_total', help: 'Upstream failures, by kind (refused, timeout, reset, other).', labelNames: ['kind'], registers }),
    redis: new Counter({ name: 'scopegate_redis_events_total', help: 'Shared cache events (hit, miss, error, purge).', labelNames: ['event'], registers }),
    reloads: new Counter({ name: 'scopegate_reloads_total', help: 'Config reloads (SIGHUP), by outcome.', labelNames: ['outcome'], registers }),
  };
}
