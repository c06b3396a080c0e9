/**
 * A property test of the request-target grammar against an oracle of the upstream: random
 * targets built from risky pieces (dots, encodings, `;`, `//`, `\`, `%00`, `#`, case changes)
 * are sent over raw TCP with a token holding only users.read. For every one, either the gateway
 * refused it (4xx, nothing upstream) or the upstream received exactly the bytes sent, the target
 * is unambiguous, and the operation RESTEasy would dispatch it to is public or needs users.read.
 *
 * Replay a run with SCOPEGATE_SEED=<seed> (printed on every run); SCOPEGATE_CASES sets the count.
 */
import t from 'tap';
import { B, bearer, settle, startStack, type Stack } from '../helpers/stack.js';
import { rawRequest } from '../helpers/raw.js';

const CASES = Number(process.env.SCOPEGATE_CASES ?? 3000);
const SEED = process.env.SCOPEGATE_SEED !== undefined ? Number(process.env.SCOPEGATE_SEED) >>> 0 : (Date.now() ^ (process.pid << 16)) >>> 0;
const WORKERS = 16;
const INUM = '8f3e1a6c-2b4d-4e5f-9a0b-1c2d3e4f5a6b';

/** mulberry32: small, fast, seedable. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const LITERALS = ['Users', 'Groups', 'Schemas', '.search', 'Bulk', 'ResourceTypes', 'ServiceProviderConfig', 'Fido2Devices', 'FidoDevices', 'UpdatedUsers', 'UserTokens', 'User', 'v2'];
const IDS = [INUM, 'abc', 'x1', '.search', 'urn:ietf:params:scim:schemas:core:2.0:User', '...', '..a', 'a.b'];
const RISKY = ['.', '..', '%2e', '%2E', '%2e%2e', '%2E%2e', '.%2e', '%2f', '%2F', '%5c', '%5C', '%25', '%252e', '%55', '%55sers', '%2Esearch', ';', ';x=1', '\\', '%00',
  '%C3%A9', '%c3%a9', '%20', '%FF', '%C0%AE', '%u002e', '%3B', '%3F', '%23', '%7E', '%41', '*', '~', '!', '@', ':', '=', ',',
  '%3A', '%3a', '%40', '%21', '%2C', '%3D', '%2B', '%2A', '%24', '%26', '%27', '%28', '%29'];
const QUERIES = ['?', '?filter=userName%20eq%20%22a%22', '?count=1', '?a=/../Groups', '?x=%2e%2e', '?x=%zz', '?x#y', '?;x'];
const FRAGMENTS = ['#', '#frag', '#/../Groups'];
const METHODS = ['GET', 'GET', 'GET', 'GET', 'GET', 'GET', 'HEAD', 'POST', 'DELETE', 'PUT'];

/** One random request: method and raw target. */
function generate(random: () => number): { method: string; target: string } {
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)]!;
  const token = (): string => {
    const r = random();
    let s = r < 0.4 ? pick(LITERALS) : r < 0.6 ? pick(IDS) : pick(RISKY);
    // Case changes of literals.
    if (random() < 0.08) s = random() < 0.5 ? s.toLowerCase() : s.toUpperCase();
    return s;
  };
  return { method: pick(METHODS), target: random() < 0.5 ? structured(random, pick, token) : free(random, pick, token) };
}

type Pick = <T>(list: readonly T[]) => T;

/** A plausible target (base path, a collection, maybe an id) with zero to two risky mutations. */
function structured(random: () => number, pick: Pick, token: () => string): string {
  let target = `${B}/${pick(['Users', 'Users', 'Users', 'Groups', 'Schemas', 'ResourceTypes', 'ServiceProviderConfig', 'UpdatedUsers', 'Fido2Devices'])}`;
  if (random() < 0.6) target += `/${pick(IDS)}`;
  const mutations = Math.floor(random() * 3);
  for (let m = 0; m < mutations; m++) {
    const kind = random();
    if (kind < 0.45) {
      // Insert a risky piece anywhere, the base path included.
      const at = 1 + Math.floor(random() * (target.length - 1));
      target = target.slice(0, at) + pick(RISKY) + target.slice(at);
    } else if (kind < 0.65) {
      // Insert a whole segment (dots, encodings) at a slash.
      const slashes = [...target.matchAll(/\//g)].map((x) => x.index ?? 0);
      const at = pick(slashes);
      target = `${target.slice(0, at)}/${token()}${target.slice(at)}`;
    } else if (kind < 0.75) {
      // Change the case of one segment.
      const parts = target.split('/');
      const i = 1 + Math.floor(random() * (parts.length - 1));
      parts[i] = random() < 0.5 ? parts[i]!.toLowerCase() : parts[i]!.toUpperCase();
      target = parts.join('/');
    } else if (kind < 0.85) {
      target = target.replace('/', pick(['//', '\\', '/./', '/%2F']));
    } else {
      // Replace one character by its percent-encoding (either hex case).
      const at = 1 + Math.floor(random() * (target.length - 1));
      const hex = target.charCodeAt(at).toString(16).padStart(2, '0');
      target = `${target.slice(0, at)}%${random() < 0.5 ? hex.toUpperCase() : hex}${target.slice(at + 1)}`;
    }
  }
  if (random() < 0.2) target += '/';
  if (random() < 0.15) target += pick(QUERIES);
  if (random() < 0.05) target += pick(FRAGMENTS);
  return target;
}

/** A target assembled freely from the pieces. */
function free(random: () => number, pick: Pick, token: () => string): string {
  const segment = (): string => (random() < 0.75 ? token() : token() + token());
  let base = B;
  const b = random();
  if (b < 0.08) {
    // Mutate one base path segment.
    const parts = B.split('/');
    const i = 1 + Math.floor(random() * (parts.length - 1));
    parts[i] = random() < 0.5 ? `${parts[i]}${pick(RISKY)}` : pick(RISKY);
    base = parts.join('/');
  } else if (b < 0.12) {
    base = B.replace('restv1', random() < 0.5 ? 'RESTV1' : 'restv1/.');
  } else if (b < 0.15) {
    base = '/jans-scim/restv1';
  }
  let target = base;
  const count = Math.floor(random() * 4);
  for (let i = 0; i < count; i++) {
    const sep = random();
    target += sep < 0.88 ? '/' : sep < 0.95 ? '//' : '\\';
    target += segment();
  }
  if (random() < 0.15) target += '/';
  if (random() < 0.12) target += pick(QUERIES);
  if (random() < 0.05) target += pick(FRAGMENTS);
  if (random() < 0.02) target = `/${target}`;
  return target;
}

// ---- The oracle: an independent reading of what Jetty 12 and RESTEasy would do. ----

const UNRESERVED = /^[A-Za-z0-9\-._~]$/;
const PCHAR_RAW = /^[A-Za-z0-9\-._~!$&'()*+,=:@]$/;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Why a forwarded target would be ambiguous to Jetty or RESTEasy (SECURITY.md 0.2, rule 3), or undefined. */
function ambiguity(target: string): string | undefined {
  if (target.includes('#')) return 'fragment';
  const q = target.indexOf('?');
  const path = q === -1 ? target : target.slice(0, q);
  if (q !== -1 && q === target.length - 1) return 'empty query';
  if (!path.startsWith('/')) return 'not origin-form';
  const segments = path.slice(1).split('/');
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i]!;
    if (segment === '' && i < segments.length - 1) return 'empty segment';
    const bytes: number[] = [];
    for (let j = 0; j < segment.length; j++) {
      const c = segment[j]!;
      if (c === '%') {
        const hex = segment.slice(j + 1, j + 3);
        if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return 'malformed percent';
        const byte = parseInt(hex, 16);
        // An unreserved character encoded: Jetty decodes it, RESTEasy compares it encoded. `:`, `@`
        // and the sub-delimiters are read alike by both (no literal of the table holds one).
        if (byte < 0x80 && UNRESERVED.test(String.fromCharCode(byte))) return 'encoded unreserved';
        if (byte < 0x20 || byte === 0x7f || [0x2f, 0x5c, 0x25, 0x3b, 0x3f, 0x23].includes(byte)) return `encoded 0x${hex}`;
        bytes.push(byte);
        j += 2;
      } else if (!PCHAR_RAW.test(c)) {
        return `raw ${JSON.stringify(c)}`;
      } else {
        bytes.push(c.charCodeAt(0));
      }
    }
    try {
      utf8.decode(Uint8Array.from(bytes));
    } catch {
      return 'bad UTF-8';
    }
    const decoded = Buffer.from(bytes).toString('latin1');
    if (decoded === '.' || decoded === '..') return 'dot segment';
  }
  return undefined;
}

/** RESTEasy's resources (SECURITY.md 0.1), by method: [template under /restv1, scope or 'public']. */
const RESTEASY: Record<string, Array<[string, string]>> = {
  GET: [
    ['/v2/Users', 'users.read'], ['/v2/Users/{id}', 'users.read'], ['/v2/UpdatedUsers', 'users.read'],
    ['/v2/Groups', 'groups.read'], ['/v2/Groups/{id}', 'groups.read'],
    ['/v2/Fido2Devices', 'fido2.read'], ['/v2/Fido2Devices/{id}', 'fido2.read'],
    ['/v2/UserTokens/{id}', 'tokens'],
    ['/v2/Schemas', 'public'], ['/v2/Schemas/{id}', 'public'], ['/v2/ResourceTypes', 'public'], ['/v2/ResourceTypes/{id}', 'public'],
    ['/v2/ServiceProviderConfig', 'public'], ['/scim-configuration', 'public'],
  ],
  POST: [
    ['/v2/Users', 'users.write'], ['/v2/Users/.search', 'users.read'], ['/v2/Groups', 'groups.write'], ['/v2/Groups/.search', 'groups.read'],
    ['/v2/Fido2Devices', 'fido2.write'], ['/v2/Fido2Devices/.search', 'fido2.read'], ['/v2/.search', 'all-resources.search'], ['/v2/Bulk', 'bulk'],
  ],
  PUT: [['/v2/Users/{id}', 'users.write'], ['/v2/Groups/{id}', 'groups.write'], ['/v2/Fido2Devices/{id}', 'fido2.write']],
  DELETE: [['/v2/Users/{id}', 'users.write'], ['/v2/Groups/{id}', 'groups.write'], ['/v2/Fido2Devices/{id}', 'fido2.write'], ['/v2/UserTokens/{id}', 'tokens']],
};

/** The scope RESTEasy's dispatch of `method target` would need, 'public', or undefined when it matches nothing. */
function dispatch(method: string, target: string): string | undefined {
  const prefix = '/jans-scim/restv1';
  let path = target.split('?')[0]!;
  if (!path.startsWith(prefix)) return undefined;
  path = path.slice(prefix.length);
  // Matrix parameters stripped from every segment, then one trailing slash removed.
  path = path.split('/').map((s) => s.split(';')[0]).join('/');
  if (path.length > 1 && path.endsWith('/')) path = path.slice(0, -1);
  const segments = path.split('/');
  const routes = RESTEASY[method === 'HEAD' ? 'GET' : method] ?? [];
  // Literal templates win over {id} ones (JAX-RS: more literal characters first).
  const ordered = [...routes].sort((a, b) => Number(a[0].includes('{')) - Number(b[0].includes('{')));
  for (const [template, needs] of ordered) {
    const parts = template.split('/');
    if (parts.length !== segments.length) continue;
    if (parts.every((p, i) => (p.startsWith('{') ? (segments[i] ?? '') !== '' : p === segments[i]))) return needs;
  }
  return undefined;
}

t.test(`property: random request-targets against the RESTEasy oracle (seed ${SEED})`, async (t) => {
  t.comment(`seed ${SEED} (replay with SCOPEGATE_SEED=${SEED}), ${CASES} cases`);
  const stack: Stack = await startStack();
  t.teardown(() => stack.close());
  const random = prng(SEED);
  const cases = Array.from({ length: CASES }, () => generate(random));
  const statuses: number[] = new Array(CASES).fill(-1);
  const started = Date.now();

  let next = 0;
  const worker = async () => {
    while (next < cases.length) {
      const i = next++;
      const { method, target } = cases[i]!;
      const body = method === 'POST' || method === 'PUT' ? '{}' : '';
      const lines = [`${method} ${target} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close', bearer(stack.usersRead), `X-Case: ${i}`];
      if (body) lines.push('Content-Type: application/scim+json', `Content-Length: ${body.length}`);
      statuses[i] = (await rawRequest(stack.gw.port, Buffer.from(`${lines.join('\r\n')}\r\n\r\n${body}`, 'latin1'))).status;
    }
  };
  stack.up.reset();
  await Promise.all(Array.from({ length: WORKERS }, worker));
  await settle(200);
  const elapsedMs = Date.now() - started;

  const seen = new Map<number, Array<{ method: string; url: string; complete: boolean }>>();
  for (const r of stack.up.requests) {
    const i = Number(r.headers['x-case']);
    const list = seen.get(i) ?? [];
    list.push({ method: r.method, url: r.url, complete: r.complete });
    seen.set(i, list);
  }

  const refused = new Map<number, number>();
  const forwardedBy = new Map<string, number>();
  const failures: string[] = [];
  for (let i = 0; i < CASES; i++) {
    const { method, target } = cases[i]!;
    const status = statuses[i]!;
    const upstream = seen.get(i) ?? [];
    const label = `#${i} ${method} ${JSON.stringify(target)} -> ${status}`;
    if (status >= 400 && status < 500) {
      refused.set(status, (refused.get(status) ?? 0) + 1);
      if (upstream.length > 0) failures.push(`${label}: refused, yet the upstream received ${JSON.stringify(upstream)}`);
      continue;
    }
    if (status !== 200) {
      failures.push(`${label}: neither a 4xx refusal nor the upstream's 200`);
      continue;
    }
    if (upstream.length !== 1) {
      failures.push(`${label}: 200 but the upstream received ${upstream.length} requests`);
      continue;
    }
    const got = upstream[0]!;
    if (got.method !== method) failures.push(`${label}: forwarded as ${got.method}`);
    if (got.url !== target) failures.push(`${label}: forwarded as ${JSON.stringify(got.url)}, not byte for byte`);
    const ambiguous = ambiguity(target);
    if (ambiguous) failures.push(`${label}: forwarded although ambiguous (${ambiguous})`);
    const needs = dispatch(method, target);
    if (needs === undefined) failures.push(`${label}: forwarded, but RESTEasy would dispatch it to nothing`);
    else if (needs !== 'public' && needs !== 'users.read') failures.push(`${label}: forwarded with users.read, but RESTEasy runs an operation that needs ${needs}`);
    const key = `${method} ${needs ?? '?'}`;
    forwardedBy.set(key, (forwardedBy.get(key) ?? 0) + 1);
  }

  const refusedTotal = [...refused.values()].reduce((a, b) => a + b, 0);
  const forwardedTotal = [...forwardedBy.values()].reduce((a, b) => a + b, 0);
  t.comment(`${CASES} cases in ${elapsedMs} ms: refused ${refusedTotal} ${JSON.stringify(Object.fromEntries([...refused].sort()))}, forwarded ${forwardedTotal} ${JSON.stringify(Object.fromEntries([...forwardedBy].sort()))}`);
  for (const failure of failures.slice(0, 40)) t.fail(failure);
  t.equal(failures.length, 0, `no oracle violations (seed ${SEED})`);
  t.ok(forwardedTotal > CASES / 50, 'the generator reaches allowed shapes too (the test is not vacuous)');
  t.ok(refusedTotal > CASES / 4, 'and risky shapes');
});
