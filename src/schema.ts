/**
 * A small schema language: every config key once, with its type, default and description.
 * Validation, defaults, environment overrides and the README's configuration reference are all
 * derived from one schema (src/config.ts), so they cannot drift apart.
 */
import { isObject } from './json.js';

/** A leaf: one config key. */
export interface Leaf {
  kind: 'string' | 'url' | 'port' | 'int' | 'bool' | 'enum' | 'list' | 'path' | 'custom';
  description: string;
  /** Absent when the key is optional without a default, or required. */
  default?: unknown;
  /** How the default is shown in the reference, when its value depends on the installation. */
  defaultText?: string;
  required?: boolean;
  /** Never printed, never logged. */
  secret?: boolean;
  /** `enum`, and `list` of enum values. */
  values?: readonly string[];
  /** `int`: inclusive bounds. */
  min?: number;
  max?: number;
  /** `list`: at least one value (an empty list would refuse everything). */
  nonEmpty?: boolean;
  /** `url`: accepted protocols (default http and https). */
  protocols?: readonly string[];
  /** `url`: no user nor password in it (it would be written wherever the URL is: errors, logs). */
  noUserinfo?: boolean;
  /** `custom`: validates and converts a value, returning problems (relative to the key). */
  check?: (value: unknown, key: string) => { value?: unknown; problems: string[] };
}

/** A section: a group of keys. `optional` sections are undefined unless present. */
export interface Section {
  kind: 'object';
  description: string;
  optional?: boolean;
  fields: Record<string, Node>;
}

export type Node = Leaf | Section;

/** A key path and its leaf, in schema order. */
export function leaves(node: Section, prefix = ''): Array<[string, Leaf]> {
  const out: Array<[string, Leaf]> = [];
  for (const [name, child] of Object.entries(node.fields)) {
    const path = prefix ? `${prefix}.${name}` : name;
    if (child.kind === 'object') out.push(...leaves(child, path));
    else out.push([path, child]);
  }
  return out;
}

/** `token.introspection.clientSecret` -> `SCOPEGATE_TOKEN_INTROSPECTION_CLIENT_SECRET`. */
export function envName(path: string): string {
  return 'SCOPEGATE_' + path.split('.').map((p) => p.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()).join('_');
}


/** Levenshtein distance, for "did you mean" on unknown keys. */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1]!.toLowerCase() === b[j - 1]!.toLowerCase() ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length]!;
}

/** The nearest of `candidates` to `name`, when it is near enough to be a typo. */
export function nearest(name: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const d = distance(name, candidate);
    if (d < bestDistance) [best, bestDistance] = [candidate, d];
  }
  return bestDistance <= Math.max(2, Math.floor(name.length / 3)) ? best : undefined;
}

/** Converts a raw environment string to the leaf's type (validation happens later). */
export function fromEnv(leaf: Leaf, raw: string): unknown {
  switch (leaf.kind) {
    case 'port':
    case 'int':
      return /^-?\d+$/.test(raw.trim()) ? Number(raw.trim()) : raw;
    case 'bool':
      // Spaces around the word are read as around a number's digits (a value quoted with them in a manifest).
      return raw.trim() === 'true' ? true : raw.trim() === 'false' ? false : raw;
    case 'list':
    case 'custom':
      if (raw.trim().startsWith('[') || raw.trim().startsWith('{')) {
        try {
          return JSON.parse(raw) as unknown;
        } catch {
          return raw;
        }
      }
      return leaf.kind === 'list' ? raw.split(',').map((s) => s.trim()).filter(Boolean) : raw;
    default:
      return raw;
  }
}

function checkLeaf(leaf: Leaf, value: unknown, key: string, resolvePath: (p: string) => string): { value?: unknown; problems: string[] } {
  const fail = (message: string) => ({ problems: [`${key}: ${message}`] });
  switch (leaf.kind) {
    case 'string':
    case 'path':
      if (typeof value !== 'string' || value.length === 0) return fail('must be a non-empty string');
      return { value: leaf.kind === 'path' ? resolvePath(value) : value, problems: [] };
    case 'url': {
      const protocols = leaf.protocols ?? ['http:', 'https:'];
      if (typeof value !== 'string') return fail('must be a URL');
      let url: URL;
      try {
        url = new URL(value);
      } catch {
        return fail('must be a URL');
      }
      if (!protocols.includes(url.protocol)) return fail(`must be a URL (${protocols.map((p) => p.replace(':', '')).join(' or ')})`);
      if (leaf.noUserinfo && (url.username || url.password)) return fail('must not carry a user or password: the URL is written in errors and logs, and the gateway authenticates with token.introspection.clientId/clientSecret');
      return { value, problems: [] };
    }
    case 'port':
      if (!Number.isInteger(value) || (value as number) < 0 || (value as number) > 65535) return fail('must be a port number (0-65535)');
      return { value, problems: [] };
    case 'int': {
      const min = leaf.min ?? 0;
      const max = leaf.max ?? Number.MAX_SAFE_INTEGER;
      if (!Number.isInteger(value) || (value as number) < min || (value as number) > max) {
        return fail(`must be an integer${leaf.max === undefined ? ` >= ${min}` : ` from ${min} to ${max}`}`);
      }
      return { value, problems: [] };
    }
    case 'bool':
      if (typeof value !== 'boolean') return fail('must be true or false');
      return { value, problems: [] };
    case 'enum':
      if (typeof value !== 'string' || !leaf.values!.includes(value)) return fail(`must be one of ${leaf.values!.join(', ')}`);
      return { value, problems: [] };
    case 'list': {
      if (!Array.isArray(value) || value.some((v) => typeof v !== 'string' || v.length === 0)) return fail('must be a list of non-empty strings');
      if (leaf.nonEmpty && value.length === 0) return fail('must name at least one value');
      const bad = leaf.values ? value.filter((v) => !leaf.values!.includes(v as string)) : [];
      if (bad.length > 0) return fail(`may only contain ${leaf.values!.join(', ')}`);
      return { value: Object.freeze([...(value as string[])]), problems: [] };
    }
    case 'custom':
      return leaf.check!(value, key);
  }
}

/**
 * Validates `raw` against `schema`: defaults applied, unknown keys refused with the nearest known
 * key suggested, every problem collected with its key path. Returns a deeply frozen value.
 */
export function validate(schema: Section, raw: unknown, resolvePath: (p: string) => string, prefix = ''): { value: Record<string, unknown> | undefined; problems: string[] } {
  const problems: string[] = [];
  const where = prefix || '(top level)';
  if (raw !== undefined && !isObject(raw)) return { value: undefined, problems: [`${where}: must be a mapping of keys`] };
  const input = raw ?? {};
  const known = Object.keys(schema.fields);
  for (const name of Object.keys(input)) {
    if (known.includes(name)) continue;
    const suggestion = nearest(name, known);
    const key = prefix ? `${prefix}.${name}` : name;
    problems.push(`${key}: unknown key${suggestion ? ` (did you mean ${prefix ? `${prefix}.` : ''}${suggestion}?)` : ''}`);
  }
  const out: Record<string, unknown> = {};
  for (const [name, node] of Object.entries(schema.fields)) {
    const key = prefix ? `${prefix}.${name}` : name;
    const value = input[name];
    if (node.kind === 'object') {
      if (value === undefined && node.optional) continue;
      const result = validate(node, value, resolvePath, key);
      problems.push(...result.problems);
      out[name] = result.value;
      continue;
    }
    // A key written with no value (`url:`, a template that rendered to nothing) is a mistake, not
    // a wish for the default: the gateway would point at 127.0.0.1:8081 without a word.
    if (value === null) {
      problems.push(`${key}: has no value (remove the key to take its default)`);
      continue;
    }
    if (value === undefined) {
      if (node.required) problems.push(`${key}: is required`);
      // A default path is relative to the config file too, like a written one.
      else if (node.default !== undefined) out[name] = node.kind === 'path' ? resolvePath(node.default as string) : node.default;
      continue;
    }
    const result = checkLeaf(node, value, key, resolvePath);
    problems.push(...result.problems);
    if (result.problems.length === 0) out[name] = result.value;
  }
  return { value: Object.freeze(out), problems };
}
