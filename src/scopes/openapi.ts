/**
 * OpenAPI 3.0 / 3.1 document -> Operation[]: method, full path template, and the scopes a token
 * must hold. Pure: no I/O here except `readOpenApiFile`. Deny by default, and ambiguity is an
 * error: an operation that only a scheme the gateway cannot check could satisfy fails the load.
 */
import { parseDocument } from 'yaml';
import type { ExtraOperation } from '../config.js';
import { OpenApiError } from '../errors.js';
import { readSmallFile, strictUtf8, syntaxProblems } from '../files.js';
import { isObject, JsonError, parseStrictJson } from '../json.js';
import type { Requirement } from './requirement.js';

/** One entry of the endpoint-to-scope table. */
export interface Operation {
  readonly method: string;
  /** The full template, base path included: `/jans-scim/restv1/v2/Users/{id}`. */
  readonly path: string;
  readonly operationId: string | null;
  /** A label for logs and metrics: the operationId, else `METHOD path`. */
  readonly id: string;
  readonly public: boolean;
  /** Empty when public. */
  readonly requirement: Requirement;
}

/** The fields of a Path Item Object and of an Operation Object (OpenAPI 3.0 and 3.1); `x-` extensions aside. */
const PATH_ITEM_FIELDS = new Set(['$ref', 'summary', 'description', 'get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace', 'servers', 'parameters']);
/** OpenAPI 3.2's path item adds the QUERY method and operations for any other method. */
const PATH_ITEM_FIELDS_32 = new Set([...PATH_ITEM_FIELDS, 'query', 'additionalOperations']);
const OPERATION_FIELDS = new Set(['tags', 'summary', 'description', 'externalDocs', 'operationId', 'parameters', 'requestBody', 'responses', 'callbacks', 'deprecated', 'security', 'servers']);

/**
 * Keys an object of the file may not have: a field OpenAPI does not define is a mistake the table
 * would otherwise drop in silence (`Security:`, `GET:`, a `security` on the path item, a `$ref` in
 * place of an operation: each would leave an operation public, or out of the table).
 */
function unknownFields(object: Json, fields: ReadonlySet<string>, where: string): string[] {
  return Object.keys(object).filter((key) => !fields.has(key) && !key.startsWith('x-')).map((key) => {
    const like = [...fields].find((f) => f.toLowerCase() === key.toLowerCase());
    return `${where}: unknown field "${key.slice(0, 100)}"${like ? ` (did you mean ${like}?)` : ''}; OpenAPI defines no such field and the gateway does not guess what it means`;
  });
}

/** The methods an OpenAPI path item may hold that the gateway forwards. */
const FORWARDED = ['get', 'put', 'post', 'delete', 'patch', 'head'] as const;
/** Methods the gateway never forwards: OPTIONS is answered locally, TRACE refused. */
const NOT_FORWARDED = ['options', 'trace'] as const;
const SCOPED_SCHEMES = new Set(['oauth2', 'openIdConnect']);
/** A literal segment: characters that mean nothing to the router or to Jetty. */
const LITERAL = /^[A-Za-z0-9._~!$&'()+,=@-]+$/;
const PARAM = /^\{([A-Za-z_][A-Za-z0-9_.-]*)\}$/;

type Json = Record<string, unknown>;


/** The most `$ref`s followed from one place: a longer chain is a mistake, or an attack on the loader. */
const MAX_REF_HOPS = 64;

/** Resolves a local `$ref` (`#/components/...`), following chains, refusing cycles. */
function deref(doc: Json, value: unknown, where: string): unknown {
  const seen = new Set<string>();
  while (isObject(value) && '$ref' in value) {
    const ref = value.$ref;
    if (typeof ref !== 'string') throw new OpenApiError([`${where}: $ref must be a string`]);
    if (!ref.startsWith('#/')) throw new OpenApiError([`${where}: only local $refs are supported (${ref.slice(0, 200)})`]);
    if (seen.has(ref)) throw new OpenApiError([`${where}: $ref cycle at ${ref.slice(0, 200)}`]);
    if (seen.size === MAX_REF_HOPS) throw new OpenApiError([`${where}: a chain of more than ${MAX_REF_HOPS} $refs`]);
    seen.add(ref);
    let node: unknown = doc;
    for (const raw of ref.slice(2).split('/')) {
      let key: string;
      try {
        key = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
      } catch {
        throw new OpenApiError([`${where}: $ref ${ref.slice(0, 200)} is not a valid JSON pointer (bad percent-encoding)`]);
      }
      if (!isObject(node) || !Object.hasOwn(node, key)) throw new OpenApiError([`${where}: $ref ${ref.slice(0, 200)} does not resolve`]);
      node = node[key];
    }
    value = node;
  }
  return value;
}

/**
 * The base path of a `servers` list: the path of its first URL, server variables replaced by their
 * defaults. `where` names the list in problems. Dot segments are read as written (a URL parser
 * would resolve them, and the table would then hold a base the upstream never serves).
 */
function serversBasePath(servers: unknown, where: string): string {
  if (servers === undefined) return '';
  if (!Array.isArray(servers)) throw new OpenApiError([`${where}: must be a list`]);
  if (servers.length === 0) return '';
  const server = servers[0];
  if (!isObject(server) || typeof server.url !== 'string') throw new OpenApiError([`${where}[0].url: must be a string`]);
  const variables = isObject(server.variables) ? server.variables : {};
  const missing: string[] = [];
  const url = server.url.replace(/\{([^}]+)\}/g, (_, name: string) => {
    const v = variables[name];
    // OpenAPI says string; a YAML `default: 8443` reads as a number, and means the same.
    if (isObject(v) && (typeof v.default === 'string' || typeof v.default === 'number')) return String(v.default);
    missing.push(`${where}[0].url: server variable "${name}" has no default`);
    return '';
  });
  if (missing.length > 0) throw new OpenApiError(missing);
  let path = url.split(/[?#]/, 1)[0]!;
  const absolute = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(url);
  if (absolute) {
    try {
      new URL(url);
    } catch {
      throw new OpenApiError([`${where}[0].url: "${url.slice(0, 200)}" is not a URL`]);
    }
    path = path.slice(absolute[0].length);
  }
  return normaliseBase(path);
}

function normaliseBase(path: string): string {
  const trimmed = path.replace(/\/+$/, '');
  return trimmed === '' ? '' : trimmed.startsWith('/') ? trimmed : `/${trimmed}`;
}

/**
 * Checks a base path: literal segments only. A `{...}` would match any segment; a dot segment, an
 * empty one or a character outside the literal set can never be matched, since the request-target
 * grammar refuses it, so the table would serve nothing.
 */
function checkBase(base: string, where: string): string[] {
  if (base === '') return [];
  return base.slice(1).split('/').flatMap((segment) => (segment === '' ? [`${where}: empty path segment`]
    : segment === '.' || segment === '..' ? [`${where}: dot segment`]
      : LITERAL.test(segment) ? [] : [`${where}: segment "${segment}" is not a literal path segment`]));
}

/** Checks a path template segment by segment; returns problems. */
function checkTemplate(path: string, where: string): string[] {
  if (!path.startsWith('/')) return [`${where}: path must start with /`];
  if (path === '/') return [];
  const problems: string[] = [];
  const names = new Set<string>();
  for (const segment of path.slice(1).split('/')) {
    const param = PARAM.exec(segment)?.[1];
    if (segment === '' ) problems.push(`${where}: empty path segment`);
    else if (segment === '.' || segment === '..') problems.push(`${where}: dot segment`);
    else if (!LITERAL.test(segment) && param === undefined) problems.push(`${where}: segment "${segment}" is neither a literal nor a whole {parameter}`);
    else if (param !== undefined && names.has(param)) problems.push(`${where}: parameter {${param}} appears twice`);
    if (param !== undefined) names.add(param);
  }
  return problems;
}

/** The security requirement of one operation, or problems. */
function readSecurity(doc: Json, security: unknown, schemes: Json, where: string): { public: boolean; requirement: Requirement; problems: string[] } {
  if (security === undefined) return { public: true, requirement: [], problems: [] };
  if (!Array.isArray(security)) return { public: false, requirement: [], problems: [`${where}: security must be a list`] };
  if (security.length === 0) return { public: true, requirement: [], problems: [] };
  const alternatives: string[][] = [];
  const uncheckable: string[] = [];
  const problems: string[] = [];
  let optional = false;
  for (const object of security) {
    if (!isObject(object)) {
      problems.push(`${where}: a security requirement must be a mapping`);
      continue;
    }
    const names = Object.keys(object);
    // `{}` among the alternatives makes authentication optional (OpenAPI 3: "optional security");
    // the other alternatives are still read, so that their mistakes are reported.
    if (names.length === 0) {
      optional = true;
      continue;
    }
    const scopes = new Set<string>();
    let checkable = true;
    for (const name of names) {
      const scheme = deref(doc, schemes[name], where);
      if (!isObject(scheme)) {
        problems.push(`${where}: security scheme "${name}" is not defined in components.securitySchemes`);
        checkable = false;
        continue;
      }
      if (!SCOPED_SCHEMES.has(String(scheme.type))) {
        uncheckable.push(`${name} (${String(scheme.type)})`);
        checkable = false;
        continue;
      }
      const list = object[name];
      if (!Array.isArray(list) || list.some((s) => typeof s !== 'string' || !/^[\x21\x23-\x5B\x5D-\x7E]+$/.test(s))) {
        problems.push(`${where}: scopes of "${name}" must be a list of scope tokens`);
        checkable = false;
        continue;
      }
      for (const s of list as string[]) scopes.add(s);
    }
    if (checkable) alternatives.push([...scopes]);
  }
  if (optional) return { public: true, requirement: [], problems };
  if (problems.length === 0 && alternatives.length === 0) {
    problems.push(`${where}: can only be satisfied by ${uncheckable.join(', ')}, which the gateway cannot check; refusing to treat it as public`);
  }
  return { public: false, requirement: alternatives, problems };
}

/** Line and column of `offset` in `text`, counted from 1. */
function position(text: string, offset: number): { line: number; col: number } {
  const before = text.slice(0, offset).split('\n');
  return { line: before.length, col: before.at(-1)!.length + 1 };
}

/**
 * Parses an OpenAPI document (YAML is a superset of JSON), naming line and column on error. A
 * JSON document is read by the strict JSON parser (duplicate members refused, as the YAML parser
 * refuses duplicate keys), five times faster than the YAML parser on a large generated file.
 */
export function parseOpenApiText(text: string, file: string): unknown {
  if (/^\s*\{/.test(text)) {
    try {
      return parseStrictJson(text, 256, false);
    } catch (error) {
      if (!(error instanceof JsonError)) throw error;
      const offset = /at offset (\d+)$/.exec(error.message);
      const at = offset ? position(text, Number(offset[1])) : undefined;
      throw new OpenApiError([`openapi.file: ${file}: syntax error${at ? ` at line ${at.line}, column ${at.col}` : ''}: ${error.message.replace(/ at offset \d+$/, '')}`]);
    }
  }
  // `<<` merge keys are read as YAML 1.1 tools read them (PyYAML, SnakeYAML): a key the loader
  // kept as a plain `<<` would drop what it merges (an operation's security among it).
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true, merge: true });
  if (doc.errors.length > 0) {
    throw new OpenApiError(syntaxProblems(doc.errors, `openapi.file: ${file}`, false));
  }
  try {
    return doc.toJS({ maxAliasCount: 100 }) as unknown;
  } catch (error) {
    // Well-formed YAML that has no value: an alias without its anchor, or too many aliases.
    throw new OpenApiError([`openapi.file: ${file}: ${(error as Error).message}`]);
  }
}

/** The largest OpenAPI file read (jans' own is some 100 KB; 24,000 operations in JSON, 2.7 MB). */
export const MAX_OPENAPI_BYTES = 16 * 1024 * 1024;

/**
 * Reads an OpenAPI file from disk: a regular file or a pipe of UTF-8 text up to MAX_OPENAPI_BYTES
 * (`/dev/zero` or a file of gigabytes would take the memory, at startup or at a reload; a byte
 * that is not UTF-8 would reach a path or a scope name as U+FFFD).
 */
export function readOpenApiFile(file: string): unknown {
  let bytes: Buffer | undefined;
  try {
    bytes = readSmallFile(file, MAX_OPENAPI_BYTES);
  } catch (error) {
    throw new OpenApiError([`openapi.file: cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? 'error'})`]);
  }
  if (bytes === undefined) throw new OpenApiError([`openapi.file: ${file} is not a regular file or a pipe of at most ${MAX_OPENAPI_BYTES} bytes`]);
  let text: string;
  try {
    text = strictUtf8.decode(bytes);
  } catch {
    throw new OpenApiError([`openapi.file: ${file} is not UTF-8 text`]);
  }
  return parseOpenApiText(text, file);
}

/** Options of `operationsFrom`. */
export interface TableOptions {
  basePath?: string | undefined;
  extra?: readonly ExtraOperation[];
}

/**
 * The operations of an OpenAPI document, base path included, plus `extra`. Throws OpenApiError
 * with every problem when the document cannot be turned into a table with certainty.
 */
export function operationsFrom(document: unknown, options: TableOptions = {}): Operation[] {
  if (!isObject(document)) throw new OpenApiError(['openapi.file: the document is not a mapping']);
  if (document.swagger !== undefined) throw new OpenApiError(['openapi.file: Swagger 2.0 is not supported; convert the document to OpenAPI 3']);
  const version = String(document.openapi ?? '');
  // `openapi: 3.0` unquoted is the number 3 to YAML: said so, not shown as a version "3".
  if (typeof document.openapi === 'number') throw new OpenApiError([`openapi.file: "openapi" is the number ${version}, not a version string: write it quoted, with its patch number ("3.0.3")`]);
  if (!/^3\.[012]\.\d+/.test(version)) throw new OpenApiError([`openapi.file: unsupported "openapi" version "${version}" (3.0.x, 3.1.x or 3.2.x)`]);
  const pathItemFields = version.startsWith('3.2.') ? PATH_ITEM_FIELDS_32 : PATH_ITEM_FIELDS;
  let fileBase: string;
  try {
    fileBase = serversBasePath(document.servers, 'openapi.file: servers');
  } catch (error) {
    if (options.basePath === undefined) throw error;
    fileBase = '';
  }
  const base = options.basePath !== undefined ? normaliseBase(options.basePath) : fileBase;
  const components = isObject(document.components) ? document.components : {};
  const schemes = isObject(components.securitySchemes) ? components.securitySchemes : {};
  const paths = isObject(document.paths) ? document.paths : {};
  const problems = checkBase(base, options.basePath !== undefined ? 'openapi.basePath' : 'openapi.file: servers[0].url');
  const operations: Operation[] = [];
  const seen = new Map<string, string>();
  const ids = new Map<string, string>();

  const add = (method: string, template: string, operationId: string | null, sec: { public: boolean; requirement: Requirement }, where: string) => {
    const path = template === '/' && base ? base : base + template;
    // `/Users/{id}` and `/Users/{uid}` are the same route: a conflict, not two entries.
    const shape = `${method} ${path.replace(/\{[^}]+\}/g, '{}')}`;
    const other = seen.get(shape);
    if (other) {
      problems.push(`${where}: conflicts with ${other}`);
      return;
    }
    seen.set(shape, where);
    // An operationId is unique in a file (OpenAPI): it labels the access line and the metrics.
    if (operationId !== null) {
      const named = ids.get(operationId);
      if (named) problems.push(`${where}: operationId "${operationId.slice(0, 100)}" is also ${named}'s`);
      else ids.set(operationId, where);
    }
    operations.push(Object.freeze({
      method, path, operationId, id: operationId ?? `${method} ${path}`, public: sec.public,
      requirement: Object.freeze(sec.requirement.map((a) => Object.freeze([...a]))),
    }));
  };

  const serversOf = (servers: unknown, where: string) => {
    // An empty list is none given (OpenAPI): the file's servers apply.
    if (servers === undefined || (Array.isArray(servers) && servers.length === 0)) return;
    try {
      const other = serversBasePath(servers, where);
      if (other !== fileBase) problems.push(`${where}: serves under ${other || '/'}, not under the base path of the file's servers (${fileBase || '/'}); the gateway serves every operation under one base path`);
    } catch (error) {
      problems.push(...(error as OpenApiError).problems);
    }
  };
  for (const [template, rawItem] of Object.entries(paths)) {
    // Specification extensions may stand among the paths (OpenAPI: "^x-").
    if (template.startsWith('x-')) continue;
    let item: unknown;
    try {
      item = deref(document, rawItem, `paths.${template}`);
    } catch (error) {
      problems.push(...(error as OpenApiError).problems);
      continue;
    }
    if (!isObject(item)) {
      problems.push(`paths.${template}: the path item is not a mapping`);
      continue;
    }
    // A referenced path item beside fields of its own: OpenAPI leaves which wins undefined.
    if (isObject(rawItem) && '$ref' in rawItem) {
      const siblings = Object.keys(rawItem).filter((k) => k !== '$ref' && k !== 'summary' && k !== 'description' && !k.startsWith('x-'));
      if (siblings.length > 0) problems.push(`paths.${template}: fields beside $ref (${siblings.join(', ')}); their meaning is undefined, move them into the referenced path item`);
    }
    problems.push(...checkTemplate(template, `paths.${template}`));
    problems.push(...unknownFields(item, pathItemFields, `paths.${template}`));
    serversOf(item.servers, `paths.${template}.servers`);
    for (const m of NOT_FORWARDED) {
      if (item[m] !== undefined && m === 'trace') problems.push(`paths.${template}.trace: the gateway never forwards TRACE`);
    }
    // OpenAPI 3.2's other methods: refused as TRACE is, rather than left out of the table in
    // silence (their requests would be refused all the same, but the file would say otherwise).
    for (const m of ['query', 'additionalOperations']) {
      if (item[m] !== undefined) problems.push(`paths.${template}.${m}: the gateway forwards GET, PUT, POST, DELETE, PATCH and HEAD only; this operation could never be served`);
    }
    for (const m of FORWARDED) {
      const op = item[m];
      if (op === undefined) continue;
      const where = `${m.toUpperCase()} ${template}`;
      if (!isObject(op)) {
        problems.push(`${where}: the operation is not a mapping`);
        continue;
      }
      problems.push(...unknownFields(op, OPERATION_FIELDS, where));
      serversOf(op.servers, `${where}: servers`);
      let sec;
      try {
        sec = readSecurity(document, 'security' in op ? op.security : document.security, schemes, where);
      } catch (error) {
        problems.push(...(error as OpenApiError).problems);
        continue;
      }
      problems.push(...sec.problems);
      add(m.toUpperCase(), template, typeof op.operationId === 'string' ? op.operationId : null, sec, where);
    }
  }
  for (const [i, extra] of (options.extra ?? []).entries()) {
    const where = `openapi.extra[${i}]`;
    const before = problems.length;
    problems.push(...checkTemplate(extra.path, where));
    if (problems.length === before) {
      add(extra.method, extra.path, extra.operationId ?? null, { public: extra.public, requirement: extra.public ? [] : [extra.scopes] }, where);
    }
  }
  if (problems.length > 0) throw new OpenApiError(problems);
  if (operations.length === 0) throw new OpenApiError(['openapi.file: the document has no operations']);
  return operations;
}
