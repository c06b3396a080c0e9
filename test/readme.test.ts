// The README's configuration reference is the schema's: every key, its environment variable, its
// default and its meaning appear as the schema has them, and no key is documented that the schema
// does not have.
import { readFileSync } from 'node:fs';
import t from 'tap';
import { configReference } from '../src/config.js';

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');

t.test('every config key is documented with its default and environment variable', async (t) => {
  for (const row of configReference()) {
    const line = readme.split('\n').find((l) => l.startsWith(`| \`${row.key}\` |`));
    t.ok(line, `${row.key} documented`);
    t.ok(line?.includes(`\`${row.default}\``), `${row.key} default ${row.default}`);
    t.ok(line?.includes(`\`${row.env}\``), `${row.key} env ${row.env}`);
    // The whole row, its meaning included, is the schema's (a `|` in it escaped for the table).
    t.equal(line, `| \`${row.key}\` | \`${row.default}\` | \`${row.env}\` | ${row.description.replace(/\|/g, '\\|')} |`, `${row.key}: the row is the schema's`);
  }
  const documented = readme.split('\n').filter((l) => /^\| `[a-z]+\.[A-Za-z.]+` \| `/.test(l)).map((l) => l.split('`')[1]);
  t.same(documented.sort(), configReference().map((r) => r.key).sort(), 'no stale keys');
});

t.test('the first commands are the demo and the tests', async (t) => {
  const first = /```sh\n([\s\S]*?)```/.exec(readme)?.[1] ?? '';
  t.match(first, /npm run demo/);
  t.match(first, /npm test/);
});
