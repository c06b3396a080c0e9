// The baseline: Fastify + @fastify/http-proxy toward the same upstream, through an undici Pool built
// with the same options as scopegate's (src/server.ts: connections, pipelining 1, timeouts,
// keep-alive), but no authorization, no access log, no metrics. Runs in its own process.
// Prints one JSON line {"port": N} on stdout once it listens on 127.0.0.1.
//
// --hook forwards the way scopegate does (src/gateway.ts): from the route's preHandler, with
// reply.from and the raw path and query, so that neither @fastify/http-proxy's handler (which
// parses and resolves the target again) nor Fastify's wait on the handler's returned reply run.
// The baseline of the same forwarding, without authorization (bench target bare-proxy-hook).
//
//   node bench/bare-proxy.js --upstream http://127.0.0.1:PORT [--connections 128] [--port 0] [--hook]
import { parseArgs } from 'node:util';
import Fastify from 'fastify';
import proxy from '@fastify/http-proxy';
import { Pool } from 'undici';

const { values } = parseArgs({
  options: {
    upstream: { type: 'string' },
    connections: { type: 'string', default: '128' },
    port: { type: 'string', default: '0' },
    timeout: { type: 'string', default: '30000' },
    hook: { type: 'boolean', default: false },
  },
});
if (!values.upstream) {
  console.error('usage: node bench/bare-proxy.js --upstream URL [--connections N] [--port N]');
  process.exit(2);
}
const upstream = new URL(values.upstream);
const timeoutMs = Number(values.timeout);
const dispatcher = new Pool(upstream.origin, {
  connections: Number(values.connections),
  pipelining: 1,
  headersTimeout: timeoutMs,
  bodyTimeout: timeoutMs,
  keepAliveTimeout: 4000,
  connect: { timeout: Math.min(timeoutMs, 10000), rejectUnauthorized: true },
});

const app = Fastify({ logger: false, disableRequestLogging: true });
await app.register(proxy, {
  upstream: upstream.origin,
  httpMethods: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'],
  undici: dispatcher,
  disableRequestLogging: true,
  internalRewriteLocationHeader: false,
  ...(values.hook ? { preHandler: forwardFromHook } : {}),
});

let fromOptions;
function forwardFromHook(request, reply) {
  fromOptions ??= { ...reply.fromParameters('/').options, queryString: rawQuery };
  const url = request.raw.url;
  const q = url.indexOf('?');
  reply.from(q < 0 ? url : url.slice(0, q), fromOptions);
}

function rawQuery(_search, url) {
  const q = url.indexOf('?');
  return q < 0 ? '' : url.slice(q + 1);
}
await app.listen({ host: '127.0.0.1', port: Number(values.port) });
process.stdout.write(`${JSON.stringify({ port: app.server.address().port })}\n`);

const stop = async () => {
  setTimeout(() => process.exit(0), 2000).unref();
  await app.close().catch(() => undefined);
  await dispatcher.close().catch(() => undefined);
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.on('disconnect', stop);
