/**
 * A recording upstream: a real node:http server on 127.0.0.1:0 that stores every request it
 * receives (method, raw target, headers, body bytes) so tests can assert what reached it, and
 * that nothing did.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** One request as the upstream saw it. */
export interface Recorded {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  rawHeaders: string[];
  body: Buffer;
  /** False when the body did not arrive whole (the client side aborted). */
  complete: boolean;
}

/** A running recording upstream. */
export interface RecordingUpstream {
  origin: string;
  port: number;
  requests: Recorded[];
  /** Replace the responder (default: 200 with a small SCIM ListResponse). */
  respond: (req: IncomingMessage, res: ServerResponse, body: Buffer) => void;
  reset(): void;
  close(): Promise<void>;
}

const LIST = JSON.stringify({ schemas: ['urn:ietf:params:scim:api:messages:2.0:ListResponse'], totalResults: 0, Resources: [] });

/** Starts a recording upstream on 127.0.0.1, port 0. */
export async function startRecordingUpstream(): Promise<RecordingUpstream> {
  const requests: Recorded[] = [];
  const upstream: RecordingUpstream = {
    origin: '',
    port: 0,
    requests,
    respond: (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/scim+json' });
      res.end(LIST);
    },
    reset() {
      requests.length = 0;
    },
    close: async () => undefined,
  };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    const record: Recorded = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, body: Buffer.alloc(0), complete: false };
    requests.push(record);
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', () => undefined);
    req.on('aborted', () => {
      record.body = Buffer.concat(chunks);
    });
    req.on('end', () => {
      record.body = Buffer.concat(chunks);
      record.complete = true;
      upstream.respond(req, res, record.body);
    });
  });
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  upstream.port = port;
  upstream.origin = `http://127.0.0.1:${port}`;
  upstream.close = () => new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
  return upstream;
}
