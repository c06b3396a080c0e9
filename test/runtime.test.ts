// A reload builds a runtime from the one before it (its cache is carried under the same rules):
// once replaced and closed, the runtime before must be collectable, whatever the rules. A runtime
// that kept its predecessor alive kept every runtime since the start, caches included.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import t from 'tap';
import { loadConfig } from '../src/config.js';
import { createMetrics } from '../src/metrics.js';
import { createRuntime, type Runtime } from '../src/runtime.js';
import { SHARED_OPENAPI } from './helpers/gateway.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const dir = mkdtempSync(join(tmpdir(), 'scopegate-runtime-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** A config whose token rules differ by the clock tolerance, or not. */
function config(tolerance: number) {
  const file = join(dir, `c${tolerance}.json`);
  writeFileSync(file, JSON.stringify({
    openapi: { file: SHARED_OPENAPI },
    token: { introspection: { endpoint: 'http://127.0.0.1:1/introspect', clientId: 'gw', clientSecret: 's', clockToleranceSeconds: tolerance } },
  }));
  return loadConfig(file, {});
}

const metrics = createMetrics({ cacheEntries: () => 0, bodyBytesHeld: () => 0 }, false);
const endpoints = { introspection: 'http://127.0.0.1:1/introspect' };

/** Whether `ref`'s target is collected by a full GC. A deref keeps its target to the end of the job: GC first, in a job of its own. */
async function collected(ref: WeakRef<object>): Promise<boolean> {
  for (let i = 0; i < 10; i++) {
    await new Promise((resolve) => setImmediate(resolve));
    gc();
    if (ref.deref() === undefined) return true;
  }
  return false;
}

for (const [what, tolerances] of [['the same rules', [30, 30, 30]], ['other rules each time', [10, 20, 30]]] as const) {
  t.test(`a replaced runtime is collectable (${what})`, async (t) => {
    let first: Runtime | undefined = createRuntime(config(tolerances[0]), endpoints, metrics);
    const ref = new WeakRef(first);
    const store = new WeakRef(first.verifier.store);
    let current = createRuntime(config(tolerances[1]), endpoints, metrics, { previous: first });
    first.close();
    first = undefined;
    const next = createRuntime(config(tolerances[2]), endpoints, metrics, { previous: current });
    current.close();
    current = next;
    t.ok(await collected(ref), 'the first runtime is gone');
    if (tolerances[0] !== tolerances[2]) t.ok(await collected(store), 'and its cache, which no later runtime holds');
    else t.equal(current.verifier.store, store.deref(), 'its cache lives on in the runtime that holds it');
    current.close();
  });
}
