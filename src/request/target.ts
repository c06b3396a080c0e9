/**
 * The strict request-target grammar, applied before routing and before any token work
 * (SECURITY.md rules 2 and 3). A target is accepted only in the one canonical form that Jetty 12,
 * RESTEasy and this gateway all read the same way: what is ambiguous to either side is refused,
 * never repaired, and nothing is decoded here, so nothing can be decoded twice.
 */
import { InvalidTarget, TargetTooLong } from '../errors.js';

/** A request-target that passed the grammar. */
export interface Target {
  /** The raw, still percent-encoded path: what the table matches and what is forwarded. */
  readonly path: string;
  /** The raw query without `?`, or undefined when there is none. Never used for matching. */
  readonly query: string | undefined;
  /** The origin-form target forwarded upstream, byte for byte what was checked. */
  readonly target: string;
}

// Character classes of RFC 3986, as 128-entry lookup tables (the target is ASCII: llhttp
// refuses bytes >= 0x80 before we see them).
const UNRESERVED = /[A-Za-z0-9\-._~]/;
// pchar without `;` (a matrix parameter to RESTEasy, a path parameter to Jetty: P04-P09) and
// without `%` (handled apart).
const PATH_CHAR = table(/[A-Za-z0-9\-._~!$&'()*+,=:@]/);
const QUERY_CHAR = table(/[A-Za-z0-9\-._~!$&'()*+,;=:@/?]/);
const HEX = /^[0-9A-Fa-f]{2}$/;
// The same classes, `/` added to the path's and `%` left out of both: most targets are only these,
// and a regular expression decides that several times faster than a loop (the loop then names
// the problem, or checks the percent-encoding, for the rest).
const PLAIN_PATH = /^[A-Za-z0-9\-._~!$&'()*+,=:@/]*$/;
const PLAIN_QUERY = /^[A-Za-z0-9\-._~!$&'()*+,;=:@/?]*$/;

function table(re: RegExp): boolean[] {
  return Array.from({ length: 128 }, (_, i) => re.test(String.fromCharCode(i)));
}

/** The reserved characters of pchar but `;`: `:`, `@` and the sub-delimiters. */
const RESERVED_PCHAR = ":@!$&'()*+,=";

/** No byte of the ASCII range may stand percent-encoded (the default of parseTarget). */
const NONE_ENCODABLE: readonly boolean[] = new Array<boolean>(128).fill(false);

/**
 * The ASCII bytes a request path may carry percent-encoded for a table of these path templates:
 * each reserved character of pchar but `;` (`:`, `@`, the sub-delimiters) that no literal segment
 * of any template holds. Clients encode them in ids and schema URNs
 * (`Schemas/urn%3Aietf%3Aparams...`, as `encodeURIComponent` writes it); Jetty 12 accepts them, and
 * RESTEasy decodes a parameter once. Where they can only be part of a parameter, the gateway's
 * router (which decodes before matching) and RESTEasy (which compares literals encoded) read the
 * same operation. A literal segment that holds the character (`/things:batch` beside
 * `/{id}`) would be read by one as the literal and by the other as the parameter: the encoded form
 * of that character is refused for the whole table then. Unreserved characters and `;` are
 * never encodable (P13-P15, P04-P09).
 */
export function encodableIn(templates: readonly string[]): readonly boolean[] {
  const literal = new Set<string>();
  for (const template of templates) {
    for (const segment of template.split('/')) if (!segment.startsWith('{')) for (const c of segment) literal.add(c);
  }
  return Array.from({ length: 128 }, (_, i) => RESERVED_PCHAR.includes(String.fromCharCode(i)) && !literal.has(String.fromCharCode(i)));
}

/**
 * Percent-encoded bytes that are refused: those that change how Jetty or RESTEasy split or decode
 * the path (`%2F` P11, `%5C` P17, `%25` P12, `%3F`, `%23`), controls (`%00`, Jetty's "Illegal
 * character"), and characters that may stand raw unless `encodable` names them.
 */
function refusedEncoded(byte: number, encodable: readonly boolean[]): string | undefined {
  if (byte < 0x20 || byte === 0x7f) return 'encoded control character';
  if (byte === 0x2f) return 'encoded slash (%2F)';
  if (byte === 0x5c) return 'encoded backslash (%5C)';
  if (byte === 0x25) return 'encoded percent (%25)';
  if (byte === 0x3f || byte === 0x23) return 'encoded ? or #';
  if (byte < 0x80 && (PATH_CHAR[byte] || byte === 0x3b) && !encodable[byte]) {
    // An unreserved character (`%55sers`, `%2e`), `;`, or a reserved character that a literal
    // segment of the table holds: Jetty canonicalises it, RESTEasy compares the encoded literal
    // (P13-P15), the gateway's router decodes it.
    return UNRESERVED.test(String.fromCharCode(byte)) ? 'percent-encoded unreserved character' : 'non-canonical percent-encoding';
  }
  return undefined;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });
const C1 = /[\u0080-\u009f]/;

/**
 * The first problem of a segment of `path`, walked in place (no split: this runs on every
 * request): an empty segment except the one trailing slash (RESTEasy strips it), a dot segment,
 * or a dot-like one (`...`, `..a`, `a..`: not dot segments to RFC 3986, but a decoder or
 * normaliser that looks for `/..` or `../` (reply-from does) would read them as one).
 */
function checkSegments(path: string): string | undefined {
  const DOT = 0x2e;
  for (let start = 1; ;) {
    const slash = path.indexOf('/', start);
    const end = slash === -1 ? path.length : slash;
    const length = end - start;
    if (length === 0 && slash !== -1) return 'empty path segment (//)';
    if (length > 0 && length <= 2 && path.charCodeAt(start) === DOT && (length === 1 || path.charCodeAt(start + 1) === DOT)) return 'dot segment';
    if (length >= 2 && ((path.charCodeAt(start) === DOT && path.charCodeAt(start + 1) === DOT) || (path.charCodeAt(end - 1) === DOT && path.charCodeAt(end - 2) === DOT))) {
      return 'dot-like segment';
    }
    if (slash === -1) return undefined;
    start = slash + 1;
  }
}

/** Checks the path: pchar only, canonical percent-encoding, no dot or empty segments. */
function checkPath(path: string, encodable: readonly boolean[]): string | undefined {
  if (path.charCodeAt(0) !== 0x2f) return 'path must start with /';
  const segmentProblem = checkSegments(path);
  if (segmentProblem) return segmentProblem;
  if (PLAIN_PATH.test(path)) return undefined;
  for (let i = 1; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c === 0x2f) continue;
    if (c === 0x25) {
      const bytes: number[] = [];
      let j = i;
      while (j < path.length && path.charCodeAt(j) === 0x25) {
        const hex = path.slice(j + 1, j + 3);
        if (!HEX.test(hex)) return 'malformed percent-encoding';
        const byte = parseInt(hex, 16);
        const refused = refusedEncoded(byte, encodable);
        if (refused) return refused;
        bytes.push(byte);
        j += 3;
      }
      // Non-ASCII must be well-formed, shortest-form UTF-8 (Jetty BAD_UTF8_ENCODING).
      if (bytes.some((b) => b >= 0x80)) {
        let text: string;
        try {
          text = utf8.decode(Uint8Array.from(bytes));
        } catch {
          return 'malformed UTF-8 in percent-encoding';
        }
        // The C1 controls (U+0080-U+009F, `%C2%85` NEL among them) are controls as much as %00-%1F.
        if (C1.test(text)) return 'encoded control character';
      }
      i = j - 1;
      continue;
    }
    if (c >= 0x80 || !PATH_CHAR[c]) {
      if (c === 0x3b) return 'semicolon in path';
      if (c === 0x5c) return 'backslash in path';
      if (c === 0x23) return 'fragment in request-target';
      return 'character not allowed in path';
    }
  }
  return undefined;
}

/** Checks the query: RFC 3986 query characters and well-formed percent-encoding, nothing decoded. */
function checkQuery(query: string): string | undefined {
  if (PLAIN_QUERY.test(query)) return undefined;
  for (let i = 0; i < query.length; i++) {
    const c = query.charCodeAt(i);
    if (c === 0x25) {
      if (!HEX.test(query.slice(i + 1, i + 3))) return 'malformed percent-encoding in query';
      i += 2;
      continue;
    }
    if (c >= 0x80 || !QUERY_CHAR[c]) return c === 0x23 ? 'fragment in request-target' : 'character not allowed in query';
  }
  return undefined;
}

const ABSOLUTE = /^[Hh][Tt][Tt][Pp][Ss]?:\/\/([^/?#]*)(.*)$/;

/**
 * Parses and checks a raw request-target (`req.url`). Absolute-form is accepted when its
 * authority is the Host header (Jetty refuses a mismatch): the path is authorised and the
 * origin-form is forwarded, never the client's authority. `*` and authority-form are refused.
 * `encodable` names the ASCII bytes the path may carry percent-encoded (encodableIn: the table's).
 */
export function parseTarget(raw: string, host: string | undefined, maxBytes: number, encodable: readonly boolean[] = NONE_ENCODABLE): Target {
  if (raw.length > maxBytes) throw new TargetTooLong(`request-target of ${raw.length} bytes`);
  let originForm = raw;
  if (raw.charCodeAt(0) !== 0x2f) {
    const absolute = ABSOLUTE.exec(raw);
    if (!absolute) throw new InvalidTarget(raw === '*' ? 'asterisk-form request-target' : 'request-target is not origin-form');
    const authority = absolute[1]!;
    if (authority.includes('@') || host === undefined || authority.toLowerCase() !== host.toLowerCase()) {
      throw new InvalidTarget('absolute-form authority does not match Host');
    }
    originForm = absolute[2]!;
    if (originForm.charCodeAt(0) !== 0x2f) throw new InvalidTarget('absolute-form without a path');
  }
  const q = originForm.indexOf('?');
  const path = q === -1 ? originForm : originForm.slice(0, q);
  const query = q === -1 ? undefined : originForm.slice(q + 1);
  // A bare `?` cannot be forwarded byte for byte (reply-from drops it): refused, not altered.
  const problem = checkPath(path, encodable) ?? (query === undefined ? undefined : query === '' ? 'empty query' : checkQuery(query));
  if (problem) throw new InvalidTarget(problem);
  return { path, query, target: originForm };
}
