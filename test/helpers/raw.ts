/**
 * Raw HTTP/1.1 over node:net: the bytes a test writes are the bytes the gateway reads (fetch,
 * undici and inject() normalise URLs with WHATWG URL, which hides path confusion).
 */
import { connect } from 'node:net';

/** A parsed raw response; `status` is 0 when the connection closed without one. */
export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
  raw: string;
}

/** Parses the first response in `raw` (content-length or close-delimited; chunked decoded). */
export function parseResponse(raw: string): RawResponse {
  const end = raw.indexOf('\r\n\r\n');
  if (end === -1) return { status: 0, headers: {}, body: '', raw };
  const [statusLine, ...lines] = raw.slice(0, end).split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine ?? '')?.[1] ?? 0);
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  let body = raw.slice(end + 4);
  if (headers['content-length'] !== undefined) body = body.slice(0, Number(headers['content-length']));
  else if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
    let out = '';
    let rest = body;
    while (rest.length > 0) {
      const lineEnd = rest.indexOf('\r\n');
      const size = parseInt(rest.slice(0, lineEnd), 16);
      if (!size) break;
      out += rest.slice(lineEnd + 2, lineEnd + 2 + size);
      rest = rest.slice(lineEnd + 2 + size + 2);
    }
    body = out;
  }
  return { status, headers, body, raw };
}

/** Whether `raw` holds one whole response (a HEAD answer ends with its head). */
export function isComplete(raw: string, head = false): boolean {
  let rest = raw;
  // Skip interim 1xx responses (100 Continue).
  for (;;) {
    const end = rest.indexOf('\r\n\r\n');
    if (end === -1) return false;
    if (/^HTTP\/1\.[01] 1\d\d/.test(rest)) {
      rest = rest.slice(end + 4);
      continue;
    }
    const res = parseResponse(rest);
    const body = rest.slice(end + 4);
    if (head || res.status === 204 || res.status === 304) return true;
    const length = res.headers['content-length'];
    if (length !== undefined) return Buffer.byteLength(body, 'latin1') >= Number(length);
    if (/chunked/i.test(res.headers['transfer-encoding'] ?? '')) return /(^|\r\n)0\r\n(?:[^\r\n]+\r\n)*\r\n$/.test(body);
    return false;
  }
}

/**
 * Sends `request` as is and resolves with the response once it is complete by its framing, the
 * server closed the connection, or `timeoutMs` passed.
 */
export function rawRequest(port: number, request: string | Buffer, timeoutMs = 5000): Promise<RawResponse> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let data = '';
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(parseResponse(data));
    };
    const timer = setTimeout(done, timeoutMs);
    const head = /^HEAD /.test(typeof request === 'string' ? request : request.toString('latin1'));
    socket.on('data', (chunk) => {
      data += chunk.toString('latin1');
      if (isComplete(data, head)) done();
    });
    socket.on('error', done);
    socket.on('close', done);
    socket.write(request);
  });
}

/** `METHOD target HTTP/1.1` with Host, Connection: close and the given extra header lines. */
export function http11(method: string, target: string, headers: string[] = [], body = ''): string {
  const lines = [`${method} ${target} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close', ...headers];
  if (body) lines.push(`Content-Length: ${Buffer.byteLength(body)}`);
  return `${lines.join('\r\n')}\r\n\r\n${body}`;
}
