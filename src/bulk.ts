/**
 * /Bulk without privilege escalation. jans-scim checks only the `bulk` scope and runs the inner
 * operations as plain Java calls (JANS.md, "Bulk"), so a bulk-only token could create, replace
 * and delete users. The gateway reads the body, classifies every inner operation with the same
 * table as single requests, and requires `bulk` AND each operation's own scopes. Whatever it
 * cannot classify with certainty is a 400; the bytes it checked are the bytes it forwards.
 */
import { GatewayError, InvalidRequest } from './errors.js';
import { isObject, JsonError, parseStrictJson, type BuildRule, type StringSink } from './json.js';
import { parseTarget } from './request/target.js';
import type { Runtime } from './runtime.js';
import type { Operation } from './scopes/openapi.js';
import { both, closest, type Requirement } from './scopes/requirement.js';
import { requirementOfMatch } from './scopes/table.js';
import type { Principal } from './token/principal.js';

/** One inner operation as written to the access log. */
export interface BulkEntry {
  method: string;
  path: string;
  operation: string;
  scopes: readonly string[];
}

/** The access log's view of a Bulk request. */
export type BulkSummary = BulkEntry[];

const INNER_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
const OPERATION_KEYS = new Set(['method', 'path', 'bulkId', 'data', 'version']);
/** The members of an operation that are read: built when they are not objects or arrays (then refused). */
const OPERATION_SCALARS = new Set(['method', 'path', 'bulkId']);
/** The most members a Bulk request's own object may have (a BulkRequest has three: schemas, Operations, failOnErrors). */
const MAX_REQUEST_MEMBERS = 16;
const BULK_ID = /^bulkId:(.+)$/;
/** Alternatives of scope sets a Bulk request may need at most (an OpenAPI file with OR everywhere). */
const MAX_ALTERNATIVES = 256;

/**
 * More operations than bulk.maxOperations: a 400, as everything the gateway does not classify (jans
 * itself would answer 413, as RFC 7644 section 3.7.4 has it, had it been sent).
 */
function tooMany(maxOperations: number): InvalidRequest {
  return bad(`more than ${maxOperations} operations`);
}

/** True for the table's POST .../Bulk operation. */
export function isBulk(operation: Operation): boolean {
  return operation.method === 'POST' && operation.path.endsWith('/Bulk');
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** A 400 whose public detail never repeats client data; `detail` goes to the log only. */
function bad(reason: string, detail?: string): InvalidRequest {
  return new InvalidRequest(`Bulk: ${reason}${detail === undefined ? '' : ` (${detail})`}`, `The Bulk request cannot be checked: ${reason}`);
}

/**
 * What of a Bulk body is built: the request object, its Operations list, each operation object
 * and the members read of it. The rest (`schemas`, the operations' `data`, members the gateway
 * does not read) is checked to the grammar and the nesting depth but never built, so that a body
 * of a million small values costs a scan of its bytes and not a million objects on the event loop
 * (a client with the `bulk` scope alone could stall every other request with a few of them).
 * Every "bulkId:x" string in an operation's `data` (a reference, e.g. a group member) goes to
 * `references`. Beyond maxOperations operations, or with a member an operation must not have,
 * the body is refused at once (400).
 */
function bulkBuildRule(maxOperations: number, references: Set<string>): BuildRule {
  const sink: StringSink = {
    prefix: 'bulkId:',
    found: (value) => {
      const m = BULK_ID.exec(value);
      if (m) references.add(m[1]!);
    },
  };
  let members = 0;
  return (path, first) => {
    switch (path.length) {
      case 0:
        return true;
      case 1:
        if (++members > MAX_REQUEST_MEMBERS) throw bad(`the request has more than ${MAX_REQUEST_MEMBERS} members`);
        return first === '[' && String(path[0]).toLowerCase() === 'operations';
      case 2:
        if (typeof path[1] === 'number' && path[1] >= maxOperations) throw tooMany(maxOperations);
        return first === '{';
      case 3: {
        const key = String(path[2]);
        if (!OPERATION_KEYS.has(key)) throw bad(`operation ${String(path[1])} has an unexpected member`, key);
        if (key === 'data') return sink;
        return OPERATION_SCALARS.has(key) && first !== '{' && first !== '[';
      }
      default:
        return false;
    }
  };
}

/** The resource collections under `base`: first segments with a `/{param}` operation below them. */
function resourceCollections(runtime: Runtime, base: string): Set<string> {
  const out = new Set<string>();
  for (const op of runtime.table.operations) {
    const m = /^\/([^/]+)\/\{[^}]+\}$/.exec(op.path.slice(base.length));
    if (op.path.startsWith(`${base}/`) && m) out.add(m[1]!);
  }
  return out;
}

/** What a Bulk body needs: the summary for the log, and bulk AND every operation's requirement. */
export interface BulkCheck {
  summary: BulkSummary;
  requirement: Requirement;
}

/**
 * Classifies every operation of a Bulk body. Returns what it needs, or throws InvalidRequest
 * (400) when anything cannot be classified with certainty.
 */
export function classifyBulk(body: Buffer, runtime: Runtime, bulk: Operation, principal: Principal, also?: readonly Operation[]): BulkCheck {
  const { config, table } = runtime;
  const base = bulk.path.slice(0, -'/Bulk'.length);
  let text: string;
  try {
    text = utf8.decode(body);
  } catch {
    throw bad('the body is not UTF-8');
  }
  // A BOM or a first byte other than `{` lets Jackson guess another encoding.
  if (!/^[\t\n\r ]*\{/.test(text)) throw bad('the body is not a JSON object');
  let document: unknown;
  const referenced = new Set<string>();
  try {
    document = parseStrictJson(text, 64, true, bulkBuildRule(config.bulk.maxOperations, referenced));
  } catch (error) {
    if (error instanceof GatewayError) throw error;
    throw bad('invalid JSON', error instanceof JsonError ? error.message : undefined);
  }
  if (!isObject(document)) throw bad('the body is not a JSON object');
  const opKeys = Object.keys(document).filter((k) => k.toLowerCase() === 'operations');
  if (opKeys.length !== 1) throw bad('exactly one Operations member is required');
  const list = document[opKeys[0]!];
  if (!Array.isArray(list)) throw bad('Operations is not a list');
  if (list.length > config.bulk.maxOperations) throw tooMany(config.bulk.maxOperations);

  const collections = resourceCollections(runtime, base);
  const defined = new Set<string>();
  const summary: BulkSummary = [];
  let requirement: Requirement = requirementOfMatch(table, bulk, also, false) ?? [[]];
  list.forEach((entry: unknown, index) => {
    const at = `operation ${index}`;
    if (!isObject(entry)) throw bad(`${at} is not an object`);
    for (const key of Object.keys(entry)) {
      // Member names are compared exactly: a `Method` that Jackson might or might not map is ambiguous.
      if (!OPERATION_KEYS.has(key)) throw bad(`${at} has an unexpected member`, key);
    }
    const { path, bulkId } = entry;
    // jans upper-cases the method before it reads it (BulkWebService.prepareRequest): `delete` is
    // a DELETE there, and so here. Only ASCII letters are upper-cased: Java's and JavaScript's
    // toUpperCase both turn `ſ` into `S`, a spelling that is refused rather than relied on.
    const method = typeof entry.method === 'string' && /^[A-Za-z]+$/.test(entry.method) ? entry.method.toUpperCase() : undefined;
    if (method === undefined || !INNER_METHODS.has(method)) throw bad(`${at} has a method outside POST, PUT, PATCH, DELETE`);
    if (typeof path !== 'string' || path === '') throw bad(`${at} has no path`);
    let relative = path;
    const absolute = /^https?:\/\/[^/?#]+(\/.*)$/i.exec(path);
    if (absolute) {
      if (!absolute[1]!.startsWith(`${base}/`)) throw bad(`${at} has an absolute path outside ${base}`);
      relative = absolute[1]!.slice(base.length);
    }
    if (!relative.startsWith('/')) throw bad(`${at} path must start with /`);
    let full;
    try {
      full = parseTarget(base + relative, undefined, config.limits.targetBytes, table.encodable);
    } catch {
      throw bad(`${at} has a malformed path`);
    }
    if (full.query !== undefined) throw bad(`${at} path carries a query`);
    const segments = relative.slice(1).split('/');
    const match = table.match(method, full.path);
    if (match.kind !== 'found') throw bad(`${at}: its method and path are not in the table`, `${method} ${relative}`);
    const op = match.operation;
    // jans runs only resource writes: POST on a resource collection (one with /{id} below it,
    // which /.search and /Bulk are not), PUT/PATCH/DELETE on /{Type}/{id}.
    const shapeOk = method === 'POST'
      ? segments.length === 1 && op.path === full.path && collections.has(segments[0]!)
      : segments.length === 2 && collections.has(segments[0]!) && /\{[^}]+\}$/.test(op.path) && !segments[1]!.startsWith('.');
    if (!shapeOk || op.public) throw bad(`${at} is not a resource write`, `${method} ${relative}`);
    const ref = BULK_ID.exec(segments[1] ?? '');
    if (ref) referenced.add(ref[1]!);
    if (bulkId !== undefined) {
      if (method !== 'POST' || typeof bulkId !== 'string' || bulkId === '') throw bad(`${at} has an invalid bulkId`);
      if (defined.has(bulkId)) throw bad(`${at} repeats a bulkId`, bulkId);
      defined.add(bulkId);
    }
    // The other operations its path matches too need their scopes as well (src/scopes/table.ts).
    requirement = both(requirement, requirementOfMatch(table, op, match.also, false)!);
    if (requirement.length > MAX_ALTERNATIVES) throw bad('the operations\' scope alternatives are too many to check');
    summary.push({ method, path: op.path.slice(base.length), operation: op.id, scopes: closest(op.requirement, principal.scopes) });
  });
  for (const id of referenced) if (!defined.has(id)) throw bad('a bulkId is referenced but never defined', id);
  return { summary, requirement };
}
