// The per-request metrics keep plain cells and hand their values to prom-client at scrape time:
// the exposition must be the one prom-client's own Counter and Histogram would give for the
// same events, label by label and bucket by bucket.
import { Counter, Histogram, Registry } from 'prom-client';
import t from 'tap';
import { HotCounter, HotHistogram } from '../src/metrics.js';

const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

// Values on each bound, just past it, zero, and past the last bound (+Inf only).
// Series may come in another order (Prometheus does not read their order): compared as sets.
const series = (text: string) => text.split('\n').sort();

const OBSERVED = [0, 0.0001, ...BUCKETS, ...BUCKETS.map((b) => b + 1e-9), 11, 1e6, 0.003, 0.003];

t.test('a histogram of cells exposes what prom-client\'s Histogram exposes', async (t) => {
  const ours = new Registry();
  const theirs = new Registry();
  const hot = new HotHistogram('x_seconds', 'Help text.', ['decision'], BUCKETS).register(ours);
  const reference = new Histogram({ name: 'x_seconds', help: 'Help text.', labelNames: ['decision'], buckets: BUCKETS, registers: [theirs] });
  const allow = hot.cell({ decision: 'allow' });
  hot.cell({ decision: 'never-observed' });
  OBSERVED.forEach((value, i) => {
    const decision = i % 3 === 0 ? 'deny' : 'allow';
    (decision === 'allow' ? allow : hot.cell({ decision })).observe(value);
    reference.observe({ decision }, value);
  });
  const text = await ours.metrics();
  t.same(series(text), series(await theirs.metrics()));
  t.match(text, /x_seconds_bucket\{le="0.0005",decision="allow"\} \d+/);
  t.notMatch(text, /never-observed/, 'a label set appears once it has counted something');

  hot.reset();
  reference.reset();
  t.same(series(await ours.metrics()), series(await theirs.metrics()), 'reset');
});

t.test('a counter of cells exposes what prom-client\'s Counter exposes, label values escaped alike', async (t) => {
  const ours = new Registry();
  const theirs = new Registry();
  const hot = new HotCounter('y_total', 'Help "text" \\ here.', ['operation', 'status']).register(ours);
  const reference = new Counter({ name: 'y_total', help: 'Help "text" \\ here.', labelNames: ['operation', 'status'], registers: [theirs] });
  const labelSets = [
    { operation: 'get-users', status: '200' },
    { operation: 'get-users', status: '403' },
    { operation: 'odd "quoted" \\ back\nslash', status: '200' },
  ];
  const cells = labelSets.map((labels) => hot.cell(labels));
  for (let i = 0; i < 100; i++) {
    const k = i % 7 === 0 ? 2 : i % 2;
    cells[k]!.inc();
    reference.inc(labelSets[k]!);
  }
  hot.inc({ operation: 'none', status: '404' });
  reference.inc({ operation: 'none', status: '404' });
  t.equal(hot.cell(labelSets[0]!), cells[0], 'one cell per label set');
  t.same(series(await ours.metrics()), series(await theirs.metrics()));
  t.match(await ours.metrics(), /y_total\{operation="get-users",status="200"\} 42\n/);
});
