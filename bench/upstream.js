// The benchmark's upstream: a plain node:http server standing in for jans-scim, answering every
// request with the same small SCIM ListResponse (~300 bytes of JSON). Runs in its own process.
// Prints one JSON line {"port": N} on stdout once it listens on 127.0.0.1.
//
//   node bench/upstream.js [--port N]
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { port: { type: 'string', default: '0' } } });

export const BODY = Buffer.from(JSON.stringify({
  schemas: ['urn:ietf:params:scim:api:messages:2.0:ListResponse'],
  totalResults: 1,
  startIndex: 1,
  itemsPerPage: 1,
  Resources: [{
    schemas: ['urn:ietf:params:scim:schemas:core:2.0:User'],
    id: '2819c223-7f76-453a-919d-413861904646',
    userName: 'bjensen',
    name: { givenName: 'Barbara', familyName: 'Jensen' },
    active: true,
    meta: { resourceType: 'User' },
  }],
}));

const headers = { 'content-type': 'application/scim+json', 'content-length': String(BODY.length) };

const server = createServer({ keepAliveTimeout: 65000 }, (req, res) => {
  // Drain a request body, if any, then answer.
  req.resume();
  res.writeHead(200, headers);
  res.end(BODY);
});
server.keepAliveTimeout = 65000;
server.headersTimeout = 66000;
server.listen(Number(values.port), '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port, bytes: BODY.length })}\n`);
});

const stop = () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.on('disconnect', stop);
