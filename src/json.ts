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

/** Parses `text`; member names are compared case-insensitively when `caseInsensitiveKeys`. */
export function parseStrictJson(text: string, maxDepth = 64, caseInsensitiveKeys = true): unknown {
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
  const string = (): string => {
    i++; // opening quote
    let out = '';
    let start = i;
    while (true) {
      if (i >= text.length) fail('unterminated string');
      const c = text.charCodeAt(i);
      if (c === 0x22) break;
      if (c < 0x20) fail('control character in string');
      if (c === 0x5c) {
        out += text.slice(start, i);
        const e = text[i + 1];
        const simple: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
        if (e !== undefined && e in simple) {
          out += simple[e];
          i += 2;
        } else if (e === 'u' && /^[0-9A-Fa-f]{4}$/.test(text.slice(i + 2, i + 6))) {
          out += String.fromCharCode(parseInt(text.slice(i + 2, i + 6), 16));
          i += 6;
        } else {
          fail('bad escape');
        }
        start = i;
        continue;
      }
      i++;
    }
    out += text.slice(start, i);
    i++;
    return out;
  };
  const value = (depth: number): unknown => {
    if (depth > maxDepth) fail('nesting too deep');
    ws();
    const c = text[i];
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
        obj[key] = value(depth + 1);
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
        arr.push(value(depth + 1));
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
    const literal = /^(?:true|false|null|-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?)/.exec(text.slice(i, i + 400));
    if (!literal) fail('unexpected token');
    i += literal![0].length;
    const word = literal![0];
    return word === 'true' ? true : word === 'false' ? false : word === 'null' ? null : Number(word);
  };
  const result = value(0);
  ws();
  if (i !== text.length) fail('trailing data');
  return result;
}
