/**
 * A requirement: alternatives (OpenAPI security requirement objects, OR) of scope sets (the scopes
 * inside one object, AND). `[]` as an alternative means "any valid token".
 */

/** Alternatives of scope sets; satisfied when every scope of one alternative is held. */
export type Requirement = readonly (readonly string[])[];

/** True when `held` contains every scope of at least one alternative. */
export function satisfied(requirement: Requirement, held: ReadonlySet<string>): boolean {
  // Indexed loops here and in closest(): both run on every request, and an array iterator is an
  // allocation V8 does not always remove.
  for (let a = 0; a < requirement.length; a++) {
    const alternative = requirement[a]!;
    let ok = true;
    for (let s = 0; s < alternative.length; s++) {
      if (!held.has(alternative[s]!)) {
        ok = false;
        break;
      }
    }
    if (ok) return true;
  }
  return false;
}

/**
 * The alternative closest to being satisfied (fewest scopes missing), to name in a 403: the
 * client learns which scopes to ask for, never which it holds.
 */
export function closest(requirement: Requirement, held: ReadonlySet<string>): readonly string[] {
  let best: readonly string[] = requirement[0] ?? [];
  let bestMissing = Infinity;
  for (let a = 0; a < requirement.length; a++) {
    const alternative = requirement[a]!;
    let missing = 0;
    for (let s = 0; s < alternative.length; s++) {
      if (!held.has(alternative[s]!)) missing += 1;
    }
    // The first alternative held in full is the answer: nothing can be closer.
    if (missing === 0) return alternative;
    if (missing < bestMissing) {
      best = alternative;
      bestMissing = missing;
    }
  }
  return best;
}

/**
 * The AND of two requirements: every pair of alternatives merged, duplicates and supersets of
 * another alternative dropped (they add nothing), so that Bulk's 30 operations cannot multiply
 * alternatives without bound.
 */
export function both(a: Requirement, b: Requirement): Requirement {
  const merged = new Map<string, string[]>();
  for (const x of a) {
    for (const y of b) {
      const set = [...new Set([...x, ...y])].sort();
      merged.set(set.join(' '), set);
    }
  }
  const all = [...merged.values()].sort((p, q) => p.length - q.length);
  return all.filter((alt, i) => !all.slice(0, i).some((smaller) => smaller.every((s) => alt.includes(s))));
}
