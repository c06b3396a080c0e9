/**
 * Raw HTTP/1.1 over node:net for bodies: written in 64 KiB pieces with backpressure, writing stops
 * as soon as the gateway answers (a refused oversized body cannot turn the answer into a reset),
 * and the promise resolves once one whole response arrived, by Content-Length or by the last
 * chunk, without waiting for the connection to close.
 */
import { connect } from 'node:net';
import { isComplete, parseResponse, type RawResponse } from './raw.js';

/** Sends `bytes` to 127.0.0.1:`port` and resolves with the first response (status 0 if none). */
export function send(port: number, bytes: Buffer | string, timeoutMs = 20000): Promise<RawResponse> {
  const data = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes, 'latin1');
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let received = '';
    let settled = false;
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(parseResponse(received));
    };
    const timer = setTimeout(finish, timeoutMs);
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
      if (isComplete(received)) finish();
    });
    socket.on('error', finish);
    socket.on('close', finish);
    socket.on('connect', () => {
      void (async () => {
        for (let off = 0; off < data.length && received === '' && !settled; off += 65536) {
          if (!socket.write(data.subarray(off, off + 65536))) {
            await new Promise<void>((r) => {
              socket.once('drain', r);
              socket.once('close', r);
            });
          }
        }
      })();
    });
  });
}

/**
 * A request with Host, Connection: close, the given header lines and `body`, framed by
 * Content-Length, or by chunks of 64 KiB when `chunked`.
 */
export function request(method: string, target: string, headers: string[], body: Buffer | string = '', chunked = false): Buffer {
  const payload = Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8');
  const lines = [`${method} ${target} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close', ...headers];
  if (!chunked) {
    lines.push(`Content-Length: ${payload.length}`);
    return Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), payload]);
  }
  lines.push('Transfer-Encoding: chunked');
  const parts: Buffer[] = [Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1')];
  for (let off = 0; off < payload.length; off += 65536) {
    const piece = payload.subarray(off, off + 65536);
    parts.push(Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n'));
  }
  parts.push(Buffer.from('0\r\n\r\n'));
  return Buffer.concat(parts);
}
