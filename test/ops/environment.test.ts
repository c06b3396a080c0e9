// Kubernetes injects service-link variables for every Service of the namespace; for the project's
// own Service scopegate-redis they start with SCOPEGATE_. `scopegate serve` starts anyway and logs
// them at warn, and the deploy files turn service links off.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { parseAllDocuments } from 'yaml';
import { ensureBuilt, ROOT } from '../helpers/cli.js';
import { SHARED_OPENAPI } from '../helpers/gateway.js';
import { startServe } from '../helpers/process.js';

const tmp = mkdtempSync(join(tmpdir(), 'scopegate-env-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
t.before(ensureBuilt);

t.test('serve starts with service-link variables in its environment and warns about them', async (t) => {
  const file = join(tmp, 'scopegate.json');
  writeFileSync(file, JSON.stringify({
    listen: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 }, openapi: { file: SHARED_OPENAPI },
    token: { jwt: { jwksUri: 'http://127.0.0.1:1/jwks', issuer: 'https://issuer.test' } },
  }));
  const serve = await startServe(file, {
    SCOPEGATE_REDIS_SERVICE_HOST: '10.0.0.11', SCOPEGATE_REDIS_SERVICE_PORT: '6379', SCOPEGATE_REDIS_PORT: 'tcp://10.0.0.11:6379',
    SCOPEGATE_REDIS_PORT_6379_TCP_ADDR: '10.0.0.11',
  });
  t.teardown(() => serve.stop());
  const warnings = serve.lines.map((l) => JSON.parse(l) as { level: number; msg: string; problem?: string }).filter((l) => l.msg === 'configuration warning');
  t.same(warnings.map((w) => w.level), [40, 40, 40, 40], 'four lines at warn');
  t.ok(warnings.some((w) => /^SCOPEGATE_REDIS_PORT: unknown environment variable, ignored/.test(w.problem ?? '')), 'naming the variable');
  t.equal(await serve.stop(), 0, 'and it ran normally');
});

t.test('every pod spec of deploy/kubernetes turns service links off', async (t) => {
  const dir = join(ROOT, 'deploy', 'kubernetes');
  let pods = 0;
  for (const name of readdirSync(dir).filter((n) => n.endsWith('.yaml'))) {
    for (const doc of parseAllDocuments(readFileSync(join(dir, name), 'utf8'))) {
      const value = doc.toJS() as { kind?: string; spec?: { template?: { spec?: Record<string, unknown> } } };
      const spec = value.spec?.template?.spec;
      if (!spec) continue;
      pods++;
      t.equal(spec.enableServiceLinks, false, `${name}: ${value.kind}`);
    }
  }
  t.equal(pods, 2, 'the gateway pod and the Redis pod');
});
