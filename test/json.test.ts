/**
 * The strict JSON parser's two ways of reading a value: built, and checked without being built
 * (what the Bulk step does with the members it does not read). A value left unbuilt must be
 * refused exactly when a built one is: otherwise a body the gateway passed could read differently
 * to jans-scim.
 */
import t from 'tap';
import { JsonError, parseStrictJson, SKIPPED, type StringSink } from '../src/json.js';

/** The outcome of parsing `text` built (true: accepted) and why it failed. */
function built(text: string, maxDepth: number): { ok: boolean } {
  try {
    parseStrictJson(text, maxDepth);
    return { ok: true };
  } catch (error) {
    if (!(error instanceof JsonError)) throw error;
    return { ok: false };
  }
}

function skipped(text: string, maxDepth: number, sink?: StringSink): boolean {
  try {
    const result = parseStrictJson(text, maxDepth, true, () => sink ?? false);
    if (result !== SKIPPED) throw new Error('the document was built');
    return true;
  } catch (error) {
    if (!(error instanceof JsonError)) throw error;
    return false;
  }
}

const SEEDS = [
  '{}', '[]', '0', '-0.5e+3', 'true', 'false', 'null', '"a"', '""',
  '{"a":1,"b":[true,false,null],"c":{"d":"e\\n\\u00e9\\"\\\\\\/"}}',
  '[{"method":"POST","path":"/Users","data":{"userName":"a","emails":[{"value":"a@b.c","primary":true}]}}]',
  ' { "a" : [ 1 , 2.25 , -3E-2 ] , "b" : { } } ',
  '{"schemas":["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],"Operations":[]}',
  '[[[[[[[[[[1]]]]]]]]]]',
  '{"a":{"a":{"a":{"a":{"a":"bulkId:x"}}}}}',
];

/** Characters a mutation inserts or puts in place of another: JSON's own, and some it refuses. */
const ALPHABET = ['{', '}', '[', ']', ',', ':', '"', '\\', '0', '1', '-', '+', '.', 'e', 'E', 't', 'n', 'u', 'x', ' ', '\t', '\n', '\u0001', '/', '*', "'"];

/** A small deterministic generator (the same cases on every run). */
function* mutations(seed: string, count: number, state: { x: number }): Generator<string> {
  const next = (n: number): number => {
    state.x = (state.x * 1103515245 + 12345) % 2147483648;
    return state.x % n;
  };
  for (let k = 0; k < count; k++) {
    let text = seed;
    for (let edits = 1 + next(3); edits > 0; edits--) {
      const at = next(text.length + 1);
      const kind = next(3);
      const c = ALPHABET[next(ALPHABET.length)]!;
      text = kind === 0 ? text.slice(0, at) + text.slice(at + 1) : kind === 1 ? text.slice(0, at) + c + text.slice(at) : text.slice(0, at) + c + text.slice(at + 1);
    }
    yield text;
  }
}

t.test('a value left unbuilt is refused exactly when a built one is', async (t) => {
  const state = { x: 42 };
  let cases = 0;
  let refused = 0;
  const disagreements: string[] = [];
  for (const seed of SEEDS) {
    for (const text of [seed, ...mutations(seed, 400, state)]) {
      for (const maxDepth of [64, 3]) {
        cases += 1;
        const b = built(text, maxDepth);
        const s = skipped(text, maxDepth);
        if (!b.ok) refused += 1;
        if (s !== b.ok) disagreements.push(`${JSON.stringify(text)} (depth ${maxDepth}): built ${b.ok}, unbuilt ${s}`);
      }
    }
  }
  t.same(disagreements.slice(0, 10), [], `${cases} texts, ${refused} refused built`);
  t.ok(refused > cases / 3, 'the mutations produce refusals as well as acceptances');
});

t.test('what is built is what JSON.parse reads (documents without duplicate names)', async (t) => {
  const state = { x: 7 };
  const texts = [
    '{"a":"\\u00e9\\n\\t\\"\\\\\\/\\b\\f\\r","b":"\\ud83d\\ude00","c":"\\ud800"}',
    `{"many":"${'\\n'.repeat(10000)}x"}`,
    '{"k\\u0065y":[1,-0,2.5e-3,1E+2,true,false,null,{}]}',
  ];
  let compared = 0;
  for (const seed of [...SEEDS, ...texts]) {
    for (const text of [seed, ...mutations(seed, 200, state)]) {
      let ours: unknown;
      try {
        ours = parseStrictJson(text, 64);
      } catch {
        continue;
      }
      compared += 1;
      t.equal(JSON.stringify(ours), JSON.stringify(JSON.parse(text)), `${JSON.stringify(text).slice(0, 80)}`);
    }
  }
  t.ok(compared > 100, `${compared} documents compared`);
});

t.test('nesting: the same limit either way', async (t) => {
  for (const depth of [63, 64, 65]) {
    const text = `${'['.repeat(depth)}1${']'.repeat(depth)}`;
    // The innermost value sits at depth `depth`.
    t.equal(skipped(text, 64), depth <= 64, `${depth} levels unbuilt`);
    t.equal(built(text, 64).ok, depth <= 64, `${depth} levels built`);
  }
});

t.test('a literal of more than 400 characters is refused either way', async (t) => {
  t.ok(built('1'.repeat(400), 64).ok && skipped('1'.repeat(400), 64), '400 accepted');
  t.notOk(built('1'.repeat(401), 64).ok || skipped('1'.repeat(401), 64), '401 refused');
});

t.test('duplicate names are refused either way, at any depth, in small objects and large', async (t) => {
  const many = (n: number, dup: string) => `{${Array.from({ length: n }, (_, k) => `"k${k}":${k}`).join(',')},"${dup}":0}`;
  for (const text of ['{"a":1,"A":2}', '[{"a":1},{"a":1,"a":2}]', '{"x":{"a":{}},"y":{"a":1,"b":{"c":1,"C":2}}}', many(10, 'K3'), many(40, 'k33'), '{"k\\u0061":1,"ka":2}']) {
    t.notOk(built(text, 64).ok, `built: ${text.slice(0, 40)}`);
    t.notOk(skipped(text, 64), `unbuilt: ${text.slice(0, 40)}`);
  }
  // Siblings at one depth are compared apart: the same names in two objects are no duplicates.
  const siblings = '[{"a":1,"b":2},{"a":3,"b":4},{"x":{"a":1},"y":{"a":1}}]';
  t.ok(built(siblings, 64).ok && skipped(siblings, 64), 'siblings may share names');
});

t.test('a StringSink gets the strings that begin with its prefix, decoded, and no member names', async (t) => {
  const found: string[] = [];
  const sink: StringSink = { prefix: 'bulkId:', found: (v) => found.push(v) };
  const text = '{"bulkId:name":["bulkId:a","x bulkId:b",{"v":"bulk\\u0049d:c"},"bulkId:d\\n","bulkid:e"]}';
  t.ok(skipped(text, 64, sink));
  t.same(found, ['bulkId:a', 'bulkId:c', 'bulkId:d\n']);
});

t.test('a build rule: only what it names is built, the rest holds SKIPPED', async (t) => {
  const seen: string[] = [];
  const doc = parseStrictJson('{"keep":{"x":[1,{"y":2}]},"drop":{"z":[3]}}', 64, true, (path, first) => {
    seen.push(`${path.join('.')}:${first}`);
    return path[0] !== 'drop' && path.length < 3;
  }) as Record<string, unknown>;
  t.same(JSON.parse(JSON.stringify(doc, (_k, v: unknown) => (v === SKIPPED ? 'SKIPPED' : v))), { keep: { x: ['SKIPPED', 'SKIPPED'] }, drop: 'SKIPPED' });
  t.same(seen, [':{', 'keep:{', 'keep.x:[', 'keep.x.0:1', 'keep.x.1:{', 'drop:{'], 'asked once per value it reaches, with its first character');
});

t.test('a build rule that throws stops the parse', async (t) => {
  const stop = new Error('stop');
  t.throws(() => parseStrictJson('[1,2,3]', 64, true, (path) => {
    if (path[0] === 1) throw stop;
    return true;
  }), stop);
});
