/**
 * An in-memory SCIM 2.0 server that stands in for jans-scim running in BYPASS mode (no authorization at all).
 *
 * Built on `scimmy` for the SCIM semantics (schemas, filters, PATCH, Bulk, search, discovery) and plain
 * `node:http` for transport. It is used by `scopegate demo` and by tests as the real upstream behind the gateway.
 *
 * scimmy keeps its configuration and resource handlers in module-global state, so they are set up once per
 * process. Everything that differs between server instances travels separately:
 * - the data store is handed to the scimmy handlers through scimmy's `ctx` argument;
 * - resource locations are generated against a fixed placeholder base URL that each server replaces with its own
 *   `baseUrl` when it serializes a response.
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import SCIMMY from 'scimmy';

/** Options for {@link startScimServer}. */
export interface ScimServerOptions {
  /** Interface to listen on; defaults to 127.0.0.1. */
  host?: string;
  /** TCP port to listen on; defaults to 0 (an ephemeral port). */
  port?: number;
  /** Path prefix of the SCIM API; defaults to /jans-scim/restv1/v2 (as jans-scim). */
  basePath?: string;
}

/** A running SCIM server. */
export interface ScimServer {
  /** Scheme, host and port the server listens on, e.g. http://127.0.0.1:PORT. */
  origin: string;
  /** The SCIM base URL: origin + basePath. */
  baseUrl: string;
  /**
   * The base URL its answers name (`meta.location`, `Location`): the server's own by default; a
   * server behind a proxy names the proxy's, as jans-scim names its public address.
   */
  publishAs(url: string): void;
  /** Stops the server, dropping open connections. */
  close(): Promise<void>;
}

const DEFAULT_BASE_PATH = '/jans-scim/restv1/v2';
const SCIM_CONTENT_TYPE = 'application/scim+json';
/** Base URL scimmy builds `meta.location` from; replaced per server on output. */
const PLACEHOLDER_BASE = 'http://scim-base.placeholder.invalid';
/** Limits advertised by jans-scim's defaults (bulkMaxOperations, bulkMaxPayloadSize). */
const BULK_MAX_OPERATIONS = 30;
const MAX_PAYLOAD_SIZE = 3_072_000;

type Json = Record<string, unknown>;

/** One stored resource: client-supplied attributes plus server-managed id and timestamps. */
interface StoredResource {
  id: string;
  attributes: Json;
  created: string;
  lastModified: string;
}

/** The per-server data set; passed to the scimmy handlers as their context. */
interface Store {
  Users: Map<string, StoredResource>;
  Groups: Map<string, StoredResource>;
}

type Collection = keyof Store;

// ---------------------------------------------------------------------------------------------------------------
// scimmy set-up (once per process)
// ---------------------------------------------------------------------------------------------------------------

let configured = false;

function configureScimmy(): void {
  if (configured) return;
  configured = true;

  SCIMMY.Config.set({
    patch: true,
    filter: 200,
    sort: true,
    bulk: { maxOperations: BULK_MAX_OPERATIONS, maxPayloadSize: MAX_PAYLOAD_SIZE },
    authenticationSchemes: [
      {
        type: 'oauthbearertoken',
        name: 'OAuth Bearer Token',
        description: 'Bearer access token, enforced by the scopegate gateway in front of this server',
        specUri: 'https://datatracker.ietf.org/doc/html/rfc6750',
      },
    ],
  });

  // The object form of declare() registers ingress/egress/degress handlers in one call.
  SCIMMY.Resources.declare(SCIMMY.Resources.User, resourceHandlers('Users'));
  SCIMMY.Resources.declare(SCIMMY.Resources.Group, resourceHandlers('Groups'));

  for (const R of [
    SCIMMY.Resources.Schema,
    SCIMMY.Resources.ResourceType,
    SCIMMY.Resources.ServiceProviderConfig,
    SCIMMY.Resources.User,
    SCIMMY.Resources.Group,
  ]) {
    R.basepath(PLACEHOLDER_BASE);
  }
}

function storeOf(ctx: unknown): Store {
  const store = (ctx as { store?: Store } | undefined)?.store;
  if (!store) throw new SCIMMY.Types.Error(500, '', 'No data store in request context');
  return store;
}

function notFound(id: string | undefined): SCIMMY.Types.SCIMError {
  return new SCIMMY.Types.Error(404, '', `Resource ${id ?? ''} not found`);
}

/** The form handed back to scimmy, which coerces it through the resource's schema. */
function toScimmy(r: StoredResource): Json {
  return { ...r.attributes, id: r.id, meta: { created: r.created, lastModified: r.lastModified } };
}

/** Drops the attributes the server owns from an inbound resource, keeping a plain JSON copy. */
function clientAttributes(instance: unknown): Json {
  const { id: _id, meta: _meta, schemas: _schemas, ...rest } = JSON.parse(JSON.stringify(instance)) as Json;
  return rest;
}

function assertUniqueUserName(store: Store, attributes: Json, selfId: string | undefined): void {
  const userName = attributes['userName'];
  if (typeof userName !== 'string') return;
  for (const u of store.Users.values()) {
    const other = u.attributes['userName'];
    if (u.id !== selfId && typeof other === 'string' && other.toLowerCase() === userName.toLowerCase()) {
      throw new SCIMMY.Types.Error(409, 'uniqueness', `userName '${userName}' is already taken`);
    }
  }
}

function resourceHandlers(collection: Collection) {
  return {
    /** Create (no id) or replace (id) a resource. */
    ingress(resource: SCIMMY.Types.Resource, instance: unknown, ctx: unknown): Json {
      const store = storeOf(ctx);
      const items = store[collection];
      const attributes = clientAttributes(instance);
      if (collection === 'Users') assertUniqueUserName(store, attributes, resource.id);

      const now = new Date().toISOString();
      if (resource.id !== undefined) {
        const existing = items.get(resource.id);
        if (!existing) throw notFound(resource.id);
        const updated: StoredResource = { ...existing, attributes, lastModified: now };
        items.set(updated.id, updated);
        return toScimmy(updated);
      }
      const created: StoredResource = { id: randomUUID(), attributes, created: now, lastModified: now };
      items.set(created.id, created);
      return toScimmy(created);
    },

    /** Read one resource (by id) or all resources matching the request's filter. */
    egress(resource: SCIMMY.Types.Resource, ctx: unknown): Json | Json[] {
      const items = storeOf(ctx)[collection];
      if (resource.id !== undefined) {
        const found = items.get(resource.id);
        if (!found) throw notFound(resource.id);
        return toScimmy(found);
      }
      const all = [...items.values()].map(toScimmy);
      return resource.filter ? (resource.filter.match(all) as Json[]) : all;
    },

    /** Delete one resource; deleting a user also removes it from every group. */
    degress(resource: SCIMMY.Types.Resource, ctx: unknown): void {
      const store = storeOf(ctx);
      if (resource.id === undefined || !store[collection].delete(resource.id)) throw notFound(resource.id);
      if (collection !== 'Users') return;
      for (const g of store.Groups.values()) {
        const members = g.attributes['members'];
        if (Array.isArray(members)) {
          g.attributes['members'] = members.filter((m: { value?: unknown }) => m?.value !== resource.id);
        }
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Seed data
// ---------------------------------------------------------------------------------------------------------------

const SEED_TIME = '2024-01-01T00:00:00.000Z';

function seed(id: string, attributes: Json): [string, StoredResource] {
  return [id, { id, attributes, created: SEED_TIME, lastModified: SEED_TIME }];
}

function seededStore(): Store {
  const admin = '00000000-0000-4000-8000-000000000001';
  const jdoe = '00000000-0000-4000-8000-000000000002';
  const bsmith = '00000000-0000-4000-8000-000000000003';
  const user = (userName: string, givenName: string, familyName: string, displayName: string): Json => ({
    userName,
    displayName,
    name: { givenName, familyName, formatted: `${givenName} ${familyName}` },
    emails: [{ value: `${userName}@example.org`, type: 'work', primary: true }],
    active: true,
  });
  return {
    Users: new Map([
      seed(admin, user('admin', 'Admin', 'User', 'Admin')),
      seed(jdoe, user('jdoe', 'Jane', 'Doe', 'Jane Doe')),
      seed(bsmith, user('bsmith', 'Bob', 'Smith', 'Bob Smith')),
    ]),
    Groups: new Map([
      seed('00000000-0000-4000-8000-000000000101', {
        displayName: 'Administrators',
        members: [{ value: admin, display: 'Admin', type: 'User' }],
      }),
      seed('00000000-0000-4000-8000-000000000102', {
        displayName: 'Staff',
        members: [
          { value: jdoe, display: 'Jane Doe', type: 'User' },
          { value: bsmith, display: 'Bob Smith', type: 'User' },
        ],
      }),
    ]),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------------------------

/** A response ready to be written: status, optional JSON body, extra headers. */
interface Reply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

/** Thrown for transport-level errors that scimmy's ErrorResponse cannot express (e.g. 405). */
class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

function errorReply(ex: unknown): Reply {
  if (ex instanceof HttpError) {
    const body = { schemas: [SCIMMY.Messages.ErrorResponse.id], status: String(ex.status), detail: ex.message };
    return { status: ex.status, body, headers: ex.headers };
  }
  try {
    const body = new SCIMMY.Messages.ErrorResponse(ex as Error);
    return { status: Number(body.status), body };
  } catch {
    // ErrorResponse rejects status/scimType pairs outside RFC 7644; fall back to a plain 500.
    const detail = ex instanceof Error ? ex.message : String(ex);
    return { status: 500, body: { schemas: [SCIMMY.Messages.ErrorResponse.id], status: '500', detail } };
  }
}

type QueryConfig = {
  filter?: string;
  attributes?: string;
  excludedAttributes?: string;
  sortBy?: string;
  sortOrder?: string;
  startIndex?: number;
  count?: number;
};

/** The SCIM query parameters scimmy understands, with startIndex/count as numbers. */
function queryConfig(params: URLSearchParams, list: boolean): QueryConfig {
  const config: QueryConfig = {};
  const names = list
    ? (['filter', 'attributes', 'excludedAttributes', 'sortBy', 'sortOrder'] as const)
    : (['attributes', 'excludedAttributes'] as const);
  for (const name of names) {
    const value = params.get(name);
    if (value !== null) config[name] = value;
  }
  if (list) {
    for (const name of ['startIndex', 'count'] as const) {
      const value = params.get(name);
      if (value !== null && /^-?\d+$/.test(value)) config[name] = Number(value);
    }
  }
  return config;
}

async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > MAX_PAYLOAD_SIZE) throw new SCIMMY.Types.Error(413, '', `Payload exceeds ${MAX_PAYLOAD_SIZE} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  // Keep draining past the limit (leaving the loop early would destroy the socket before the 413 is sent).
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size <= MAX_PAYLOAD_SIZE) chunks.push(chunk);
  }
  if (size > MAX_PAYLOAD_SIZE) throw new SCIMMY.Types.Error(413, '', `Payload exceeds ${MAX_PAYLOAD_SIZE} bytes`);
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new SCIMMY.Types.Error(400, 'invalidSyntax', 'Request body is not valid JSON');
  }
}

function methodNotAllowed(allowed: string[]): HttpError {
  return new HttpError(405, 'Method not allowed', { allow: allowed.join(', ') });
}

/** Routes one request below the base path; `segments` are the decoded path segments after it. */
async function route(
  method: string,
  segments: string[],
  params: URLSearchParams,
  req: http.IncomingMessage,
  store: Store,
): Promise<Reply> {
  const ctx = { store };
  const [first, second, ...more] = segments;
  if (first === undefined || more.length > 0) throw new HttpError(404, 'Endpoint not found');

  // /Users and /Groups
  const Resource =
    first === 'Users' ? SCIMMY.Resources.User : first === 'Groups' ? SCIMMY.Resources.Group : undefined;
  if (Resource) {
    if (second === undefined) {
      if (method === 'GET') return { status: 200, body: await new Resource(undefined, queryConfig(params, true)).read(ctx) };
      if (method === 'POST') {
        const created = await new Resource(undefined, queryConfig(params, false)).write(await readJson(req), ctx);
        return { status: 201, body: created, headers: { location: created.meta.location } };
      }
      throw methodNotAllowed(['GET', 'POST']);
    }
    if (second === '.search') {
      if (method !== 'POST') throw methodNotAllowed(['POST']);
      const request = new SCIMMY.Messages.SearchRequest(searchBody(await readJson(req)));
      return { status: 200, body: await request.apply(resourceTypes(Resource), ctx) };
    }
    const one = new Resource(second, queryConfig(params, false));
    switch (method) {
      case 'GET':
        return { status: 200, body: await one.read(ctx) };
      case 'PUT':
        return { status: 200, body: await one.write(await readJson(req), ctx) };
      case 'PATCH': {
        const patched = await one.patch(patchBody(await readJson(req)), ctx);
        return patched ? { status: 200, body: patched } : { status: 204 };
      }
      case 'DELETE':
        await one.dispose(ctx);
        return { status: 204 };
      default:
        throw methodNotAllowed(['GET', 'PUT', 'PATCH', 'DELETE']);
    }
  }

  // Root-level endpoints without a sub-path
  if (second === undefined) {
    switch (first) {
      case '.search': {
        if (method !== 'POST') throw methodNotAllowed(['POST']);
        const request = new SCIMMY.Messages.SearchRequest(searchBody(await readJson(req)));
        return { status: 200, body: await request.apply(undefined, ctx) };
      }
      case 'Bulk': {
        if (method !== 'POST') throw methodNotAllowed(['POST']);
        const request = new SCIMMY.Messages.BulkRequest(bulkBody(await readJson(req)), BULK_MAX_OPERATIONS);
        return { status: 200, body: await request.apply(undefined, ctx) };
      }
    }
  }

  // Discovery endpoints (GET only). Like jans-scim's ServiceMetadataFilter, refuse a filter parameter with 403.
  const discovery =
    first === 'ServiceProviderConfig' && second === undefined
      ? SCIMMY.Resources.ServiceProviderConfig
      : first === 'ResourceTypes'
        ? SCIMMY.Resources.ResourceType
        : first === 'Schemas'
          ? SCIMMY.Resources.Schema
          : undefined;
  if (discovery) {
    if (method !== 'GET') throw methodNotAllowed(['GET']);
    if (params.has('filter')) throw new SCIMMY.Types.Error(403, '', 'No filter allowed here');
    const query = Object.fromEntries(params);
    const resource = new discovery(second, query);
    return { status: 200, body: await resource.read() };
  }

  throw new HttpError(404, 'Endpoint not found');
}

// scimmy validates message bodies itself; these only narrow `unknown` to the constructor parameter types.
type SearchBody = ConstructorParameters<typeof SCIMMY.Messages.SearchRequest>[0];
type BulkBody = ConstructorParameters<typeof SCIMMY.Messages.BulkRequest>[0];
type PatchBody = Parameters<SCIMMY.Types.Resource['patch']>[0];
const searchBody = (body: unknown) => body as SearchBody;
const bulkBody = (body: unknown) => body as BulkBody;
const patchBody = (body: unknown) => body as PatchBody;
/** scimmy's typings do not treat User/Group as assignable to the generic Resource class they extend. */
const resourceTypes = (...types: unknown[]) => types as (typeof SCIMMY.Types.Resource)[];

/** Splits the part of the path below the base path into decoded segments, or returns undefined if not below it. */
function pathSegments(pathname: string, basePath: string): string[] | undefined {
  if (pathname !== basePath && !pathname.startsWith(basePath + '/')) return undefined;
  let rest = pathname.slice(basePath.length + 1);
  if (rest.endsWith('/')) rest = rest.slice(0, -1); // tolerate one trailing slash, as JAX-RS does
  if (rest === '') return [];
  try {
    return rest.split('/').map((s) => decodeURIComponent(s));
  } catch {
    return undefined;
  }
}

function send(res: http.ServerResponse, reply: Reply, baseUrl: string): void {
  const headers: Record<string, string> = { ...reply.headers };
  if (headers['location']) headers['location'] = headers['location'].split(PLACEHOLDER_BASE).join(baseUrl);
  if (reply.body === undefined || reply.status === 204) {
    res.writeHead(reply.status, headers).end();
    return;
  }
  const body = JSON.stringify(reply.body).split(PLACEHOLDER_BASE).join(baseUrl);
  headers['content-type'] = SCIM_CONTENT_TYPE;
  headers['content-length'] = String(Buffer.byteLength(body));
  res.writeHead(reply.status, headers).end(body);
}

/** Starts an in-memory, seeded SCIM 2.0 server (a stand-in for jans-scim in BYPASS mode) and resolves once it listens. */
export async function startScimServer(opts: ScimServerOptions = {}): Promise<ScimServer> {
  configureScimmy();
  const host = opts.host ?? '127.0.0.1';
  const basePath = (opts.basePath ?? DEFAULT_BASE_PATH).replace(/\/+$/, '');
  const store = seededStore();
  let baseUrl = '';

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const method = req.method === 'HEAD' ? 'GET' : (req.method ?? 'GET');
    const segments = pathSegments(url.pathname, basePath);
    const reply = segments
      ? route(method, segments, url.searchParams, req, store).catch(errorReply)
      : Promise.resolve(errorReply(new HttpError(404, 'Endpoint not found')));
    reply
      .then((r) => {
        // Discard any unread request body so the connection can be reused.
        if (!req.readableEnded) req.resume();
        send(res, r, baseUrl);
      })
      .catch(() => res.destroy());
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });

  const { port } = server.address() as AddressInfo;
  const origin = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  baseUrl = origin + basePath;

  return {
    origin,
    baseUrl,
    publishAs: (url) => {
      baseUrl = url.replace(/\/+$/, '');
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
  };
}
