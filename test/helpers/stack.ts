/**
 * The stack shared by the regression tests: the real authorization server (oidc-provider), a
 * recording upstream and the real gateway, all on 127.0.0.1 port 0, plus raw-socket helpers.
 * Not a test file itself (tap runs only `*.test.ts`).
 */
import { connect, type Socket } from 'node:net';
import { SCIM_SCOPES, startAuthServer, type AuthServer } from '../../src/demo/auth-server.js';
import { startTestGateway, type TestGateway } from './gateway.js';
import { isComplete, parseResponse, type RawResponse } from './raw.js';
export { isComplete } from './raw.js';
import { startRecordingUpstream, type RecordingUpstream } from './upstream.js';

export { B } from './gateway.js';

/** The full scope URI of a short jans scope name (`users.read`). */
export const scope = (name: string): string => `https://jans.io/scim/${name}`;

/** A running stack and tokens for it. */
export interface Stack {
  auth: AuthServer;
  up: RecordingUpstream;
  gw: TestGateway;
  /** A token holding every SCIM scope: a refusal with it is due to the request, not the token. */
  all: string;
  /** A token holding only users.read. */
  usersRead: string;
  close(): Promise<void>;
}

/** Starts auth server, upstream and gateway; `extra` is merged over the gateway config. */
export async function startStack(extra: Record<string, unknown> = {}): Promise<Stack> {
  const auth = await startAuthServer();
  const up = await startRecordingUpstream();
  const gw = await startTestGateway({
    upstream: { url: up.origin },
    token: { issuer: auth.issuer, introspection: { endpoint: auth.introspectionEndpoint, clientId: auth.clientId, clientSecret: auth.clientSecret } },
    ...extra,
  });
  const all = await auth.issueToken([...SCIM_SCOPES]);
  const usersRead = await auth.issueToken([scope('users.read')]);
  return {
    auth, up, gw, all, usersRead,
    async close() {
      await gw.close();
      await up.close();
      await auth.close();
    },
  };
}

/** Lets an in-flight forward (if any) reach the upstream before the recorder is read. */
export const settle = (ms = 30): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Sends `bytes` on a fresh socket and resolves once a whole response arrived (content-length,
 * chunked or HEAD), the server closed, or `timeoutMs` passed. A response preceded by interim
 * 1xx lines is parsed from its final status line; `raw` keeps everything.
 */
export function exchange(port: number, bytes: string | Buffer, timeoutMs = 5000): Promise<RawResponse & { closed: boolean }> {
  const head = /^HEAD /.test(typeof bytes === 'string' ? bytes : bytes.toString('latin1'));
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let data = '';
    let closed = false;
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      let rest = data;
      while (/^HTTP\/1\.[01] 1\d\d/.test(rest) && rest.includes('\r\n\r\n')) rest = rest.slice(rest.indexOf('\r\n\r\n') + 4);
      resolve({ ...parseResponse(rest), raw: data, closed });
    };
    const timer = setTimeout(done, timeoutMs);
    socket.on('data', (chunk: Buffer) => {
      data += chunk.toString('latin1');
      if (isComplete(data, head)) done();
    });
    socket.on('error', done);
    socket.on('close', () => {
      closed = true;
      done();
    });
    socket.write(bytes);
  });
}

/** Resets the recorder, sends `bytes` on a fresh socket, waits for the answer and a short settle. */
export async function send(stack: Stack, bytes: string | Buffer, timeoutMs = 5000): Promise<RawResponse> {
  stack.up.reset();
  const res = await exchange(stack.gw.port, bytes, timeoutMs);
  await settle();
  return res;
}

/** Builds an HTTP/1.1 request from a raw request line (kept byte for byte) and header lines. */
export function requestLine(line: string, headers: string[] = [], body = ''): string {
  const lines = [line, 'Host: 127.0.0.1', 'Connection: close', ...headers];
  if (body) lines.push(`Content-Length: ${Buffer.byteLength(body)}`);
  return `${lines.join('\r\n')}\r\n\r\n${body}`;
}

/** An `Authorization: Bearer` header line. */
export const bearer = (token: string): string => `Authorization: Bearer ${token}`;

/**
 * A socket the test drives step by step: write, wait for bytes matching a pattern, or for the
 * close. Everything received is kept in `data` (latin1).
 */
export interface Conversation {
  socket: Socket;
  readonly data: string;
  readonly closed: boolean;
  write(bytes: string | Buffer): void;
  /** Resolves true when `data` matches `pattern`, false when the socket closes or `timeoutMs` passes first. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<boolean>;
  /** Resolves true when the socket closes within `timeoutMs`. */
  waitClose(timeoutMs?: number): Promise<boolean>;
  response(): RawResponse;
  end(): void;
}

/**
 * Opens a raw connection to `port`. `allowHalfOpen` keeps the client's side open after the
 * gateway's FIN, as a client still sending may (Node's own sockets end theirs at once by default).
 */
export function converse(port: number, options: { allowHalfOpen?: boolean } = {}): Promise<Conversation> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: options.allowHalfOpen ?? false });
    let data = '';
    let closed = false;
    const waiters = new Set<() => void>();
    const poke = () => {
      for (const w of [...waiters]) w();
    };
    /** Resolves with what `decide` says once it says something, or false after `timeoutMs`. */
    const waitUntil = (decide: () => boolean | undefined, timeoutMs: number) => new Promise<boolean>((done) => {
      const check = () => {
        const verdict = decide();
        if (verdict !== undefined) finish(verdict);
      };
      const finish = (value: boolean) => {
        clearTimeout(timer);
        waiters.delete(check);
        done(value);
      };
      const timer = setTimeout(() => finish(false), timeoutMs);
      waiters.add(check);
      check();
    });
    socket.on('data', (chunk: Buffer) => {
      data += chunk.toString('latin1');
      poke();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      closed = true;
      poke();
    });
    const conversation: Conversation = {
      socket,
      get data() {
        return data;
      },
      get closed() {
        return closed;
      },
      write(bytes) {
        if (!socket.destroyed) socket.write(bytes);
      },
      waitFor: (pattern, timeoutMs = 5000) => waitUntil(() => (pattern.test(data) ? true : closed ? false : undefined), timeoutMs),
      waitClose: (timeoutMs = 5000) => waitUntil(() => (closed ? true : undefined), timeoutMs),
      response: () => parseResponse(data),
      end: () => {
        socket.destroy();
      },
    };
    socket.once('connect', () => resolve(conversation));
    socket.once('error', reject);
  });
}
