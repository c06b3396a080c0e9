/**
 * The endpoint-to-scope table: method + path -> operation, with find-my-way as the router
 * (literal segments win over templates; a template segment is one non-empty segment; case
 * matters). The path given here has already passed the strict request-target grammar.
 */
import Router from 'find-my-way';
import type { Operation } from './openapi.js';
import { both, type Requirement } from './requirement.js';

/** The outcome of matching a method and path against the table. */
export type Match =
  | { kind: 'found'; operation: Operation; params: Readonly<Record<string, string | undefined>> }
  | { kind: 'method'; allow: readonly string[]; /** The path template the path matched. */ template: string }
  | { kind: 'none' };

/** A matcher over a fixed list of operations. */
export interface Table {
  readonly operations: readonly Operation[];
  /** HEAD is matched as GET (RESTEasy runs the GET method); one trailing `/` is ignored (RESTEasy strips it). */
  match(method: string, path: string): Match;
}

type Method = Parameters<Router.Instance<Router.HTTPVersion.V1>['find']>[0];

/** `{id}` -> `:id` for find-my-way. */
function routerPath(template: string): string {
  return template.replace(/\{([^}]+)\}/g, ':$1');
}

/** Builds the table; throws when two operations collide in the router. */
export function createTable(operations: readonly Operation[], maxPathBytes = 65536): Table {
  const router = Router({ caseSensitive: true, ignoreTrailingSlash: false, ignoreDuplicateSlashes: false, maxParamLength: maxPathBytes });
  const methods = new Set<string>();
  for (const operation of operations) {
    router.on(operation.method as Method, routerPath(operation.path), () => undefined, operation);
    methods.add(operation.method);
  }
  const known = [...methods];
  const matchOne = (method: string, path: string) => (methods.has(method) ? router.find(method as Method, path) : null);

  return Object.freeze({
    operations: Object.freeze([...operations]),
    match(method: string, rawPath: string): Match {
      // RESTEasy's matching path drops one trailing slash: `/Users/` is the `/Users` operation,
      // never `/Users/{id}` with an empty id.
      const path = rawPath.length > 1 && rawPath.endsWith('/') ? rawPath.slice(0, -1) : rawPath;
      // A template is one non-empty segment: an empty segment matches nothing.
      if (path.includes('//') || (path.length > 1 && path.endsWith('/'))) return { kind: 'none' };
      const found = matchOne(method, path) ?? (method === 'HEAD' ? matchOne('GET', path) : null);
      if (found) return { kind: 'found', operation: found.store as Operation, params: found.params };
      let template: string | undefined;
      const allow = known.filter((m) => {
        const other = matchOne(m, path);
        if (other !== null) template ??= (other.store as Operation).path;
        return other !== null;
      });
      if (template === undefined) return { kind: 'none' };
      if (allow.includes('GET') && !allow.includes('HEAD')) allow.push('HEAD');
      allow.push('OPTIONS');
      return { kind: 'method', allow, template };
    },
  });
}

// The requirement of each operation under `search.rootRequiresReadScopes`, per table.
const rootSearchRequirements = new WeakMap<Table, Map<Operation, Requirement>>();

/**
 * The requirement of `operation` when the root search must also hold the read scope of every
 * resource type: a POST `.../.search` whose parent is not itself in the table (`/Users/.search`'s
 * parent `/Users` is) needs, besides its own scopes, those of every protected GET one segment
 * below that parent (`/Users`, `/Groups`, ...).
 */
export function requirementOf(table: Table, operation: Operation, rootRequiresReadScopes: boolean): Requirement {
  if (!rootRequiresReadScopes || operation.method !== 'POST' || !operation.path.endsWith('/.search')) return operation.requirement;
  let memo = rootSearchRequirements.get(table);
  if (!memo) rootSearchRequirements.set(table, (memo = new Map()));
  let requirement = memo.get(operation);
  if (requirement === undefined) {
    const base = operation.path.slice(0, -'/.search'.length);
    requirement = operation.requirement;
    if (!table.operations.some((o) => o.path === base)) {
      for (const other of table.operations) {
        if (other.method === 'GET' && !other.public && other.path.startsWith(`${base}/`) && !other.path.slice(base.length + 1).includes('/')) {
          requirement = both(requirement, other.requirement);
        }
      }
    }
    memo.set(operation, requirement);
  }
  return requirement;
}
