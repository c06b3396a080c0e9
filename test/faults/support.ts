/**
 * Raw HTTP/1.1 exchanges for the fault tests: a response is complete only when its framing says
 * so (Content-Length reached, or the terminating chunk of a chunked body), never because the
 * connection closed. That is what tells a truncated response from a whole one. And servers that
 * can stop at once, as a crashed one would. Not a test file.
 */
import { connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { http11, parseResponse, type RawResponse } from '../helpers/raw.js';

/** A response as read off the socket, with what its framing says about it. */
export interface FramedResponse extends RawResponse {
  /** The body bytes received (chunked: decoded payload bytes of whole chunks). */
  bodyBytes: number;
  /** The framing reached its end: all Content-Length bytes, or the terminating chunk. */
  complete: boolean;
  /** The server closed (or reset) the connection before the exchange ended on our side. */
  closedByPeer: boolean;
}

/** What the framing of `raw` (one response) says: complete or not, body bytes, decoded body. */
export function frame(raw: Buffer): { complete: boolean; bodyBytes: number; body: Buffer } {
  const end = raw.indexOf('\r\n\r\n');
  if (end === -1) return { complete: false, bodyBytes: 0, body: Buffer.alloc(0) };
  const head = raw.subarray(0, end).toString('latin1');
  const rest = raw.subarray(end + 4);
  const length = /\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1];
  if (/\r\ntransfer-encoding:[^\r]*chunked/i.test(head)) {
    const chunks: Buffer[] = [];
    let at = 0;
    for (;;) {
      const lineEnd = rest.indexOf('\r\n', at);
      if (lineEnd === -1) break;
      const size = parseInt(rest.subarray(at, lineEnd).toString('latin1'), 16);
      if (Number.isNaN(size)) break;
      if (size === 0) {
        // The last chunk, then (no trailers) the final CRLF.
        const complete = rest.indexOf('\r\n', lineEnd + 2) === lineEnd + 2;
        const body = Buffer.concat(chunks);
        return { complete, bodyBytes: body.length, body };
      }
      if (rest.length < lineEnd + 2 + size + 2) {
        chunks.push(rest.subarray(lineEnd + 2, Math.min(rest.length, lineEnd + 2 + size)));
        break;
      }
      chunks.push(rest.subarray(lineEnd + 2, lineEnd + 2 + size));
      at = lineEnd + 2 + size + 2;
    }
    const body = Buffer.concat(chunks);
    return { complete: false, bodyBytes: body.length, body };
  }
  if (length !== undefined) {
    const body = rest.subarray(0, Number(length));
    return { complete: rest.length >= Number(length), bodyBytes: body.length, body };
  }
  // Neither: close-delimited, never known to be complete.
  return { complete: false, bodyBytes: rest.length, body: rest };
}

/**
 * Writes `request` and resolves once the response is complete by its framing, the peer closes,
 * or `timeoutMs` passes (the generous outer bound of a test, not an assertion). `onSocket` gets
 * the socket for tests that keep writing (a slow body).
 */
export function exchange(port: number, request: string | Buffer, opts: { timeoutMs?: number; onSocket?: (write: (data: string) => boolean) => void } = {}): Promise<FramedResponse> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let closedByPeer = false;
    let settled = false;
    const done = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      const raw = Buffer.concat(chunks);
      const parsed = parseResponse(raw.toString('latin1'));
      const framed = frame(raw);
      resolve({ ...parsed, body: framed.body.toString('utf8'), bodyBytes: framed.bodyBytes, complete: framed.complete, closedByPeer });
    };
    const timer = setTimeout(done, opts.timeoutMs ?? 10000);
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      const raw = Buffer.concat(chunks);
      // 1xx responses are skipped: only a final status completes the exchange.
      if (/^HTTP\/1\.1 [2-5]/.test(raw.subarray(0, 12).toString('latin1')) && frame(raw).complete) done();
    });
    socket.on('end', () => {
      closedByPeer = true;
      done();
    });
    socket.on('error', () => {
      closedByPeer = true;
      done();
    });
    socket.on('close', () => {
      closedByPeer = true;
      done();
    });
    socket.write(request);
    opts.onSocket?.((data) => socket.write(data));
  });
}

/** One request (Connection: close, optional bearer token) read with {@link exchange}. */
export function send(port: number, method: string, target: string, opts: { token?: string; headers?: string[]; body?: string; timeoutMs?: number } = {}): Promise<FramedResponse> {
  const headers = [...(opts.headers ?? [])];
  if (opts.token !== undefined) headers.push(`Authorization: Bearer ${opts.token}`);
  if (opts.body !== undefined) headers.push('Content-Type: application/scim+json');
  return exchange(port, http11(method, target, headers, opts.body ?? ''), { timeoutMs: opts.timeoutMs ?? 10000 });
}

/**
 * Listens with `server` (HTTP or raw TCP) on 127.0.0.1:`port` (0: any free port). Its `close` also ends the open
 * connections, so that the server is gone at once, as a crashed one would be.
 */
export async function listenStoppable(server: Server, port = 0): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}
