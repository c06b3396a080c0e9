/**
 * A strict JSON parser (RFC 8259) that refuses what JSON.parse would silently resolve: duplicate
 * member names (the last would win in JSON.parse and in Jackson, so the gateway and jans-scim
 * could read different values) and excessive nesting.
 */

/** A JSON object (not an array, not null). */
export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Thrown with a position and reason; the Bulk step turns it into a 400. */
export class JsonError extends Error {
  /**
   * The message without the text of the document (a member name): for a document whose text may
   * not be written, an authorization server's answer that echoes a token as a member name.
   */
  readonly withoutText: string;
  constructor(message: string, withoutText = message) {
    super(message);
    this.withoutText = withoutText;
  }
}

/** Where a value left unbuilt hands its strings (member names aside): those that begin with `prefix`, decoded. */
export interface StringSink {
  readonly prefix: string;
  found(value: string): void;
}

/**
 * Which values parseStrictJson builds. Asked of each value before it is read, with its path from
 * the document (member names and array indexes; [] for the document) and its first character:
 * true builds it (its members and elements asked in turn); false checks it to the same grammar
 * and nesting depth, duplicate member names included, without building anything of it, and its
 * place in the result holds SKIPPED; a StringSink does the same and hands the sink the strings
 * found in it. It may throw to stop the parse.
 */
export type BuildRule = (path: ReadonlyArray<string | number>, first: string) => boolean | StringSink;

/** The place of a value that a BuildRule left unbuilt. */
export const SKIPPED: unique symbol = Symbol('scopegate.json.skipped');

/** What the two-character escapes that are not the character itself stand for. */
const CONTROL_ESCAPES: Readonly<Record<string, string>> = { b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
/** The characters after a backslash that make a two-character escape. */
const ESCAPES = new Set(['"', '\\', '/', 'b', 'f', 'n', 'r', 't']);
const HEX4 = /^[0-9A-Fa-f]{4}$/;
/** A literal, read where the last index is set: the longest match, which the caller bounds. */
const LITERAL = /true|false|null|-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
/** Past this many members, an unbuilt object's names are kept in a set rather than a list. */
const MANY_NAMES = 16;
/** The longest literal read (a longer number is refused). */
const MAX_LITERAL = 400;

/**
 * Parses `text`; member names are compared case-insensitively when `caseInsensitiveKeys`. With
 * `build`, only the values it names are built (a large document of which a few members matter
 * costs a scan, not an object per value).
 */
export function parseStrictJson(text: string, maxDepth = 64, caseInsensitiveKeys = true, build?: BuildRule): unknown {
  let i = 0;
  const fail = (why: string, member?: string): never => {
    throw new JsonError(member === undefined ? `${why} at offset ${i}` : `${why} "${member}" at offset ${i}`, `${why} at offset ${i}`);
  };
  const ws = () => {
    while (i < text.length) {
      const c = text.charCodeAt(i);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) i++;
      else break;
    }
  };
  /** The length of the escape at `i` (a backslash), which must be a valid one. */
  const escapeLength = (): number => {
    const e = text[i + 1];
    if (e !== undefined && ESCAPES.has(e)) return 2;
    if (e === 'u' && HEX4.test(text.slice(i + 2, i + 6))) return 6;
    return fail('bad escape');
  };
  /** Whether the last string read held an escape. */
  let sawEscape = false;
  /**
   * Reads the string at `i` (its opening quote): its value when `build`, else only checked. One
   * with escapes is decoded by JSON.parse once checked here (the same decoding, in native code: a
   * string of a million escapes built an escape at a time held the event loop for a third of a
   * second).
   */
  const string = (build = true): string => {
    const open = i;
    i++;
    sawEscape = false;
    while (true) {
      if (i >= text.length) fail('unterminated string');
      const c = text.charCodeAt(i);
      if (c === 0x22) break;
      if (c < 0x20) fail('control character in string');
      if (c === 0x5c) {
        i += escapeLength();
        sawEscape = true;
        continue;
      }
      i++;
    }
    i++;
    if (!build) return '';
    return sawEscape ? (JSON.parse(text.slice(open, i)) as string) : text.slice(open + 1, i - 1);
  };
  /** Reads past a string, building nothing; one that begins with the sink's prefix goes to the sink. */
  const skipString = (sink: StringSink | undefined): void => {
    const open = i;
    string(false);
    if (sink === undefined) return;
    if (!sawEscape) {
      if (text.startsWith(sink.prefix, open + 1)) sink.found(text.slice(open + 1, i - 1));
      return;
    }
    // Decoded whole only when it begins with the prefix: a million short escaped strings are a
    // few characters' look each, not a million decodings.
    if (!beginsWith(open + 1, sink.prefix)) return;
    sink.found(JSON.parse(text.slice(open, i)) as string);
  };
  /** Whether the (checked) string whose text starts at `at` decodes to something beginning with `prefix`. */
  const beginsWith = (at: number, prefix: string): boolean => {
    for (let k = 0; k < prefix.length; k++) {
      let c = text[at];
      if (c === '"') return false;
      if (c === '\\') {
        const e = text[at + 1]!;
        c = e === 'u' ? String.fromCharCode(parseInt(text.slice(at + 2, at + 6), 16)) : CONTROL_ESCAPES[e] ?? e;
        at += e === 'u' ? 6 : 2;
      } else {
        at += 1;
      }
      if (c !== prefix[k]) return false;
    }
    return true;
  };
  const literal = (): string => {
    LITERAL.lastIndex = i;
    const match = LITERAL.exec(text);
    if (!match || match[0].length > MAX_LITERAL) return fail('unexpected token');
    i += match[0].length;
    return match[0];
  };
  /** The member names of the object being skipped at each depth. */
  const skippedNames: string[][] = [];
  /** Reads past a value, building nothing (the grammar, the nesting depth and duplicate names checked as value does). */
  const skip = (depth: number, sink: StringSink | undefined): void => {
    if (depth > maxDepth) fail('nesting too deep');
    ws();
    const c = text.charCodeAt(i);
    if (c === 0x7b || c === 0x5b) {
      const object = c === 0x7b;
      const close = object ? 0x7d : 0x5d;
      i++;
      ws();
      if (text.charCodeAt(i) === close) {
        i++;
        return;
      }
      // The names of an object are compared as value() compares them: in a list reused for each
      // object of its depth (one is read at a time at each depth), a set once there are many.
      const names = object ? (skippedNames[depth] ??= []) : undefined;
      if (names) names.length = 0;
      let many: Set<string> | undefined;
      while (true) {
        if (names) {
          ws();
          if (text.charCodeAt(i) !== 0x22) fail('expected a member name');
          const key = string();
          const norm = caseInsensitiveKeys ? key.toLowerCase() : key;
          if (many ? many.has(norm) : names.includes(norm)) fail('duplicate member', key);
          if (many) many.add(norm);
          else if (names.push(norm) > MANY_NAMES) many = new Set(names);
          ws();
          if (text.charCodeAt(i) !== 0x3a) fail('expected :');
          i++;
        }
        skip(depth + 1, sink);
        ws();
        const next = text.charCodeAt(i);
        if (next === 0x2c) {
          i++;
          continue;
        }
        if (next === close) {
          i++;
          return;
        }
        fail(object ? 'expected , or }' : 'expected , or ]');
      }
    }
    if (c === 0x22) skipString(sink);
    else literal();
  };
  const path: Array<string | number> = [];
  const value = (depth: number): unknown => {
    if (depth > maxDepth) fail('nesting too deep');
    ws();
    const c = text[i];
    if (build !== undefined) {
      const rule = build(path, c ?? '');
      if (rule !== true) {
        skip(depth, rule === false ? undefined : rule);
        return SKIPPED;
      }
    }
    if (c === '{') {
      i++;
      const obj: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
      const seen = new Set<string>();
      ws();
      if (text[i] === '}') {
        i++;
        return obj;
      }
      while (true) {
        ws();
        if (text[i] !== '"') fail('expected a member name');
        const key = string();
        const norm = caseInsensitiveKeys ? key.toLowerCase() : key;
        if (seen.has(norm)) fail('duplicate member', key);
        seen.add(norm);
        ws();
        if (text[i] !== ':') fail('expected :');
        i++;
        path.push(key);
        obj[key] = value(depth + 1);
        path.pop();
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === '}') {
          i++;
          return obj;
        }
        fail('expected , or }');
      }
    }
    if (c === '[') {
      i++;
      const arr: unknown[] = [];
      ws();
      if (text[i] === ']') {
        i++;
        return arr;
      }
      while (true) {
        path.push(arr.length);
        arr.push(value(depth + 1));
        path.pop();
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === ']') {
          i++;
          return arr;
        }
        fail('expected , or ]');
      }
    }
    if (c === '"') return string();
    const word = literal();
    return word === 'true' ? true : word === 'false' ? false : word === 'null' ? null : Number(word);
  };
  const result = value(0);
  ws();
  if (i !== text.length) fail('trailing data');
  return result;
}
