// Requirements: alternatives (OR) of scope sets (AND); `both` is their AND, kept small.
import t from 'tap';
import { both, closest, satisfied } from '../src/scopes/requirement.js';

t.test('satisfied and closest', async (t) => {
  const req = [['a', 'b'], ['c']];
  t.ok(satisfied(req, new Set(['a', 'b'])));
  t.ok(satisfied(req, new Set(['c'])));
  t.notOk(satisfied(req, new Set(['a'])));
  t.same(closest(req, new Set(['a'])), ['a', 'b'], 'the alternative with the fewest missing scopes');
  t.same(closest(req, new Set(['c'])), ['c'], 'an alternative held in full');
  t.same(closest([['a', 'x'], ['b'], ['c', 'y']], new Set(['z'])), ['b'], 'the first of the fewest missing');
  t.ok(satisfied([[]], new Set()), 'an empty alternative is any valid token');
  t.notOk(satisfied([], new Set(['a'])), 'no alternative: nothing satisfies');
});

t.test('both: every pair merged, duplicates and supersets dropped', async (t) => {
  t.same(both([['bulk']], [['users.write']]), [['bulk', 'users.write']]);
  t.same(both([['a'], ['b']], [['a'], ['c']]), [['a'], ['b', 'c']], '{a} makes {a,c} and {a,b} redundant');
  let req = [['bulk']] as readonly (readonly string[])[];
  for (let i = 0; i < 30; i++) req = both(req, [['users.write'], ['admin']]);
  t.same([...req].map((a) => a.join(' ')).sort(), ['admin bulk', 'bulk users.write'], 'the same two alternatives thirty times stay two');
  let wide = [['bulk']] as readonly (readonly string[])[];
  for (let i = 0; i < 10; i++) wide = both(wide, [[`x${i}`], [`y${i}`]]);
  t.equal(wide.length, 1024, 'distinct alternatives do multiply: Bulk caps them');
});
