/**
 * Prometheus metrics (prom-client), on a registry of their own per gateway. Labels are operation
 * ids or fixed words, never raw paths, tokens or anything a client chose.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type Metric } from 'prom-client';

/**
 * One label set's count: `inc()` is one addition. prom-client's own children hash their labels
 * and validate them on every call (0.5 µs for the three metrics of a request); the per-request
 * metrics keep plain cells instead and give prom-client their values when scraped.
 */
export class CounterCell {
  value = 0;
  constructor(readonly labels: Readonly<Record<string, string>>) {}
  inc(): void {
    this.value += 1;
  }
}

/** One label set's histogram: a count per bucket (the last is +Inf), the sum and the count. */
export class HistogramCell {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  constructor(readonly labels: Readonly<Record<string, string>>, private readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1);
  }
  observe(value: number): void {
    // The first bucket whose upper bound holds the value (Prometheus `le`); +Inf past the last.
    const { bounds } = this;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i += 1;
    this.counts[i]! += 1;
    this.sum += value;
    this.count += 1;
  }
}

/** A value as prom-client's registry formats it. */
interface MetricValue {
  labels: Record<string, string | number>;
  value: number;
  metricName?: string;
}

/** The metric shape prom-client's registry reads (`get`, `reset`), over cells found by label set. */
abstract class HotMetric<L extends string, C extends { readonly labels: Readonly<Record<string, string>> }> {
  readonly aggregator = 'sum';
  abstract readonly type: 'counter' | 'histogram';
  private readonly cells = new Map<string, C>();
  constructor(readonly name: string, readonly help: string, private readonly labelNames: readonly L[]) {}

  /** The cell of one label set: bound once by the caller, then used per event. */
  cell(labels: Record<L, string>): C {
    const key = this.labelNames.map((name) => labels[name]).join('\u0000');
    let cell = this.cells.get(key);
    if (!cell) this.cells.set(key, (cell = this.create({ ...labels })));
    return cell;
  }

  protected abstract create(labels: Record<string, string>): C;
  protected abstract values(cell: C): MetricValue[];
  protected abstract clear(cell: C): void;

  get(): { name: string; help: string; type: string; aggregator: string; values: MetricValue[] } {
    const values: MetricValue[] = [];
    for (const cell of this.cells.values()) values.push(...this.values(cell));
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    for (const cell of this.cells.values()) this.clear(cell);
  }

  /** Registers this metric on `registry` (which reads only `name`, `get` and `reset`). */
  register(registry: Registry): this {
    registry.registerMetric(this as unknown as Metric);
    return this;
  }
}

/** A counter of cells; a label set appears once it has counted something, as with prom-client. */
export class HotCounter<L extends string> extends HotMetric<L, CounterCell> {
  readonly type = 'counter';
  inc(labels: Record<L, string>): void {
    this.cell(labels).inc();
  }
  protected create(labels: Record<string, string>): CounterCell {
    return new CounterCell(labels);
  }
  protected values(cell: CounterCell): MetricValue[] {
    return cell.value === 0 ? [] : [{ labels: cell.labels, value: cell.value }];
  }
  protected clear(cell: CounterCell): void {
    cell.value = 0;
  }
}

/** A histogram of cells, exposed as prom-client exposes one: cumulative `_bucket`s, `_sum`, `_count`. */
export class HotHistogram<L extends string> extends HotMetric<L, HistogramCell> {
  readonly type = 'histogram';
  constructor(name: string, help: string, labelNames: readonly L[], private readonly buckets: readonly number[]) {
    super(name, help, labelNames);
  }
  protected create(labels: Record<string, string>): HistogramCell {
    return new HistogramCell(labels, this.buckets);
  }
  protected values(cell: HistogramCell): MetricValue[] {
    if (cell.count === 0) return [];
    const out: MetricValue[] = [];
    let cumulative = 0;
    this.buckets.forEach((bound, i) => {
      cumulative += cell.counts[i]!;
      out.push({ metricName: `${this.name}_bucket`, labels: { le: bound, ...cell.labels }, value: cumulative });
    });
    out.push({ metricName: `${this.name}_bucket`, labels: { le: '+Inf', ...cell.labels }, value: cell.count });
    out.push({ metricName: `${this.name}_sum`, labels: { ...cell.labels }, value: cell.sum });
    out.push({ metricName: `${this.name}_count`, labels: { ...cell.labels }, value: cell.count });
    return out;
  }
  protected clear(cell: HistogramCell): void {
    cell.counts.fill(0);
    cell.sum = 0;
    cell.count = 0;
  }
}

/** The gateway's metrics. */
export interface Metrics {
  readonly registry: Registry;
  /** Per request: plain cells (see CounterCell). */
  readonly requests: HotCounter<'operation' | 'decision' | 'status'>;
  readonly duration: HotHistogram<'decision'>;
  readonly cache: HotCounter<'result'>;
  readonly cacheSize: Gauge;
  readonly bodyBytesHeld: Gauge;
  readonly introspections: Counter<'outcome'>;
  readonly introspectionSeconds: Histogram;
  readonly jwksFetches: Counter<'outcome'>;
  readonly upstreamErrors: Counter<'kind'>;
  readonly redis: Counter<'event'>;
  readonly reloads: Counter<'outcome'>;
  readonly tlsHandshakeFailures: Counter;
  readonly connectionsDropped: Counter;
}

/** What the gauges read at scrape time. */
export interface GaugeSources {
  /** Entries in the local token cache. */
  cacheEntries: () => number;
  /** Bytes of request bodies held in memory (src/request/body.ts). */
  bodyBytesHeld: () => number;
}

/** Creates the metrics; the gauges read `sources` at scrape time. */
export function createMetrics(sources: GaugeSources, defaults = true): Metrics {
  const registry = new Registry();
  if (defaults) collectDefaultMetrics({ register: registry, prefix: 'scopegate_' });
  const registers = [registry];
  return {
    registry,
    requests: new HotCounter('scopegate_requests_total', 'Requests answered on the proxy port, by operation, decision and status.', ['operation', 'decision', 'status']).register(registry),
    duration: new HotHistogram('scopegate_request_duration_seconds', 'Time from request to response, by decision.', ['decision'], [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]).register(registry),
    cache: new HotCounter('scopegate_token_cache_total', 'Token cache lookups, by result (hit, miss).', ['result']).register(registry),
    cacheSize: new Gauge({ name: 'scopegate_token_cache_entries', help: 'Entries in the local token cache.', registers, collect() { this.set(sources.cacheEntries()); } }),
    bodyBytesHeld: new Gauge({ name: 'scopegate_request_body_bytes_held', help: 'Bytes of request bodies read whole before forwarding (chunked, small declared ones, /Bulk) held in memory; limits.bufferedBytes bounds it.', registers, collect() { this.set(sources.bodyBytesHeld()); } }),
    introspections: new Counter({ name: 'scopegate_introspection_requests_total', help: 'Introspection calls, by outcome (active, inactive, failure).', labelNames: ['outcome'], registers }),
    introspectionSeconds: new Histogram({ name: 'scopegate_introspection_duration_seconds', help: 'Introspection call latency.', buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5], registers }),
    jwksFetches: new Counter({ name: 'scopegate_jwks_fetches_total', help: 'JWKS fetches, by outcome (ok, failure).', labelNames: ['outcome'], registers }),
    upstreamErrors: new Counter({ name: 'scopegate_upstream_errors_total', help: 'Upstream failures, by kind (refused, timeout, reset, other).', labelNames: ['kind'], registers }),
    redis: new Counter({ name: 'scopegate_redis_events_total', help: 'Shared cache events (hit, miss, error, purge).', labelNames: ['event'], registers }),
    reloads: new Counter({ name: 'scopegate_reloads_total', help: 'Config reloads (SIGHUP), by outcome.', labelNames: ['outcome'], registers }),
    connectionsDropped: new Counter({ name: 'scopegate_connections_dropped_total', help: 'Connections to the proxy port closed as they came because listen.maxConnections were open (no request was made: not in scopegate_requests_total).', registers }),
    tlsHandshakeFailures: new Counter({ name: 'scopegate_tls_handshake_failures_total', help: 'Connections to the proxy port closed because their TLS handshake failed or did not end within limits.requestTimeoutMs (no request was made: not in scopegate_requests_total).', registers }),
  };
}
