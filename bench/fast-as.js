// A tiny, fast RFC 7662 introspection server for the benchmark only (NOT a real authorization
// server): it answers `active: true` for any token of a known form and `active: false` for
// everything else, so that scopegate's cache can be filled with many distinct valid tokens
// quickly. Runs in its own process. Prints {"port": N} on stdout once it listens on 127.0.0.1.
//
// Token forms:
//   sgb-<anything>   active, holds the ten jans SCIM scopes (the bundled SCIM client's set)
//   fill-<anything>  active, holds only https://jans.io/scim/users.read (used to fill the cache
//                    through a 403 path, so that the fill never reaches the upstream)
// GET /stats answers {"introspections": N}; POST /stats/reset zeroes it.
//
//   node bench/fast-as.js [--port 0] [--ttl 7200]
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { port: { type: 'string', default: '0' }, ttl: { type: 'string', default: '7200' } } });
const ttl = Number(values.ttl);

const ALL = ['users.read', 'users.write', 'groups.read', 'groups.write', 'fido.read', 'fido.write',
  'fido2.read', 'fido2.write', 'all-resources.search', 'bulk'].map((s) => `https://jans.io/scim/${s}`).join(' ');
const READ = 'https://jans.io/scim/users.read';

let introspections = 0;
const json = { 'content-type': 'application/json', 'cache-control': 'no-store' };
const INACTIVE = '{"active":false}';

function answer(token) {
  const scope = token.startsWith('sgb-') ? ALL : token.startsWith('fill-') ? READ : undefined;
  if (scope === undefined) return INACTIVE;
  const now = Math.floor(Date.now() / 1000);
  return JSON.stringify({
    active: true, scope, client_id: 'bench-client', sub: 'bench-client', token_type: 'Bearer',
    iat: now, exp: now + ttl, iss: 'http://127.0.0.1/bench-as',
  });
}

const server = createServer({ keepAliveTimeout: 65000 }, (req, res) => {
  if (req.url === '/stats') {
    req.resume();
    if (req.method === 'POST') introspections = 0;
    res.writeHead(200, json);
    res.end(JSON.stringify({ introspections }));
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    introspections += 1;
    const token = new URLSearchParams(Buffer.concat(chunks).toString('latin1')).get('token') ?? '';
    res.writeHead(200, json);
    res.end(answer(token));
  });
});
server.keepAliveTimeout = 65000;
server.listen(Number(values.port), '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
});

const stop = () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
