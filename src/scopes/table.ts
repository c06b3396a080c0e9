/**
 * The endpoint-to-scope table: method + path -> operation, with find-my-way as the router
 * (literal segments win over templates; a template segment is one non-empty segment; case
 * matters). The path given here has already passed the strict request-target grammar.
 */
import Router from 'find-my-way';
import { encodableIn } from '../request/target.js';
import type { Operation } from './openapi.js';
import { both, type Requirement } from './requirement.js';

/** The outcome of matching a method and path against the table. */
export type Match =
  | {
    kind: 'found'; operation: Operation;
    /**
     * The other operations of the method that this path matches too (`/files/{owner}/secret` and
     * `/files/public/{name}` both match `/files/public/secret`), protected ones only; absent when
     * there is none.
     */
    also?: readonly Operation[];
  }
  | { kind: 'method'; allow: readonly string[]; /** The path template the path matched. */ template: string }
  | { kind: 'none' };

/** A matcher over a fixed list of operations. */
export interface Table {
  readonly operations: readonly Operation[];
  /** HEAD is matched as GET (RESTEasy runs the GET method); one trailing `/` is ignored (RESTEasy strips it). */
  match(method: string, path: string): Match;
  /** The ASCII bytes a request path may carry percent-encoded under this table (parseTarget's `encodable`). */
  readonly encodable: readonly boolean[];
}

type Method = Parameters<Router.Instance<Router.HTTPVersion.V1>['find']>[0];

/**
 * `{id}` -> `:p0` for find-my-way. Parameters are renamed by position: a name is anything
 * OpenAPI allows (`{user-id}`, `{group.id}`), and find-my-way would read `:user-id` as the
 * parameter `user` followed by the literal `-id`. The gateway reads no parameter's value.
 */
function routerPath(template: string): string {
  let n = 0;
  return template.replace(/\{[^}]+\}/g, () => `:p${n++}`);
}

const isParam = (segment: string) => segment.startsWith('{');

/** The templates of one method as a tree of segments, a parameter segment one child of its own. */
interface Segments {
  readonly literal: Map<string, Segments>;
  param: Segments | undefined;
  readonly operations: Operation[];
}

const segmentsNode = (): Segments => ({ literal: new Map(), param: undefined, operations: [] });

/**
 * The protected operations of the tree whose templates some path matches together with
 * `segments` (as many segments, each equal or a parameter in either): a walk that follows only
 * what can match, so that a file of thousands of paths is not compared pair by pair.
 */
function overlapping(node: Segments, segments: readonly string[], i: number, out: Operation[]): void {
  if (i === segments.length) {
    for (const o of node.operations) if (!o.public) out.push(o);
    return;
  }
  const segment = segments[i]!;
  if (isParam(segment)) {
    for (const child of node.literal.values()) overlapping(child, segments, i + 1, out);
  } else {
    const child = node.literal.get(segment);
    if (child) overlapping(child, segments, i + 1, out);
  }
  if (node.param) overlapping(node.param, segments, i + 1, out);
}

/** True when `path`'s segments match the template's (the path has passed the request-target grammar). */
function matches(template: readonly string[], path: readonly string[]): boolean {
  return template.length === path.length && template.every((s, i) => (isParam(s) ? path[i] !== '' : s === path[i]));
}

/**
 * Builds the table; throws when two operations collide in the router.
 *
 * Two templates of one method can match the same path (`/files/{owner}/secret` and
 * `/files/public/{name}`). The router picks one (literal segments first, left to right); JAX-RS
 * ranks by literal characters, and RESTEasy by media types before that, so the upstream may run
 * the other. Such a path needs what each of them needs: `also` names the others.
 */
export function createTable(operations: readonly Operation[], maxPathBytes = 65536): Table {
  const router = Router({ caseSensitive: true, ignoreTrailingSlash: false, ignoreDuplicateSlashes: false, maxParamLength: maxPathBytes });
  const methods = new Set<string>();
  for (const operation of operations) {
    router.on(operation.method as Method, routerPath(operation.path), () => undefined, operation);
    methods.add(operation.method);
  }
  const segmentsOf = new Map(operations.map((o) => [o, o.path.split('/')] as const));
  const trees = new Map<string, Segments>();
  for (const operation of operations) {
    let node = trees.get(operation.method);
    if (!node) trees.set(operation.method, (node = segmentsNode()));
    for (const segment of segmentsOf.get(operation)!) {
      if (isParam(segment)) node = node.param ??= segmentsNode();
      else {
        let child = node.literal.get(segment);
        if (!child) node.literal.set(segment, (child = segmentsNode()));
        node = child;
      }
    }
    node.operations.push(operation);
  }
  // The others of one method; for a HEAD request, of HEAD and GET alike: the operation it matched
  // (its own HEAD or, without one, a GET) need not be the one the upstream runs for it, whose GET
  // answers a HEAD when it has no HEAD of its own.
  const rivalsIn = (methodsOf: readonly string[]) => {
    const found = new Map<Operation, Operation[]>();
    for (const operation of operations) {
      const others: Operation[] = [];
      for (const m of methodsOf) {
        const tree = trees.get(m);
        if (tree) overlapping(tree, segmentsOf.get(operation)!, 0, others);
      }
      // Not itself, nor (for HEAD) the GET of its own template: that GET runs only when it has no HEAD.
      const rest = others.filter((o) => o.path !== operation.path);
      if (rest.length > 0) found.set(operation, rest);
    }
    return found;
  };
  const rivals = new Map<string, Map<Operation, Operation[]>>([...methods].map((m) => [m, rivalsIn([m])]));
  rivals.set('HEAD', rivalsIn(['HEAD', 'GET']));
  const known = [...methods];
  const matchOne = (method: string, path: string) => (methods.has(method) ? router.find(method as Method, path) : null);

  return Object.freeze({
    operations: Object.freeze([...operations]),
    encodable: Object.freeze(encodableIn(operations.map((o) => o.path))),
    match(method: string, rawPath: string): Match {
      // RESTEasy's matching path drops one trailing slash: `/Users/` is the `/Users` operation,
      // never `/Users/{id}` with an empty id.
      const path = rawPath.length > 1 && rawPath.endsWith('/') ? rawPath.slice(0, -1) : rawPath;
      // A template is one non-empty segment: an empty segment matches nothing.
      if (path.includes('//') || (path.length > 1 && path.endsWith('/'))) return { kind: 'none' };
      const found = matchOne(method, path) ?? (method === 'HEAD' ? matchOne('GET', path) : null);
      if (found) {
        const operation = found.store as Operation;
        const others = rivals.get(method)?.get(operation);
        if (others === undefined) return { kind: 'found', operation };
        const segments = path.split('/');
        const also = others.filter((o) => matches(segmentsOf.get(o)!, segments));
        return also.length === 0 ? { kind: 'found', operation } : { kind: 'found', operation, also };
      }
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

// The requirement of each operation together with the others its path matches too, per table.
const matchRequirements = new WeakMap<Table, Map<string, Requirement>>();

/**
 * What a request that matched `operation`, and `also` besides, needs: every one of their
 * requirements (a public operation adds nothing); undefined when it is public and `also` is absent.
 */
export function requirementOfMatch(table: Table, operation: Operation, also: readonly Operation[] | undefined, rootRequiresReadScopes: boolean): Requirement | undefined {
  if (also === undefined) return operation.public ? undefined : requirementOf(table, operation, rootRequiresReadScopes);
  let memo = matchRequirements.get(table);
  if (!memo) matchRequirements.set(table, (memo = new Map()));
  // Method and template name one operation of a table (two would be a conflict).
  const key = [operation, ...also].map((o) => `${o.method} ${o.path}`).join('\n');
  let requirement = memo.get(key);
  if (requirement === undefined) {
    requirement = also.map((o) => requirementOf(table, o, rootRequiresReadScopes))
      .reduce((all, r) => both(all, r), operation.public ? [[]] : requirementOf(table, operation, rootRequiresReadScopes));
    memo.set(key, requirement);
  }
  return requirement;
}
