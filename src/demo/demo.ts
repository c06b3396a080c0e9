/**
 * `scopegate demo`: a whole local stack in one process tree - an authorization server laid out
 * like jans-auth, a SCIM server standing in for jans-scim in BYPASS mode, and the gateway in
 * front of it - with the client credentials and the curl commands of the jans docs to try.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startGateway, type Gateway } from '../app.js';
import { SCIM_SCOPES, startAuthServer } from './auth-server.js';
import { startScimServer } from './scim-server.js';

/** Where the packaged config folder is, from dist/demo or src/demo. */
const CONFIG_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'config');

/** Options of the demo. */
export interface DemoOptions {
  port: number;
  adminPort?: number;
  /** Print to this function instead of stdout (tests). */
  print?: (text: string) => void;
  /** Resolve once started instead of waiting for a signal (tests). */
  signal?: AbortSignal;
}

/** Starts the stack, prints how to use it, and runs until SIGINT/SIGTERM or `signal`. */
export async function runDemo(options: DemoOptions): Promise<number> {
  const print = options.print ?? ((text: string) => process.stdout.write(`${text}\n`));
  const auth = await startAuthServer();
  const scim = await startScimServer();
  const dir = mkdtempSync(join(tmpdir(), 'scopegate-demo-'));
  const file = join(dir, 'scopegate.yaml');
  writeFileSync(file, JSON.stringify({
    listen: { host: '127.0.0.1', port: options.port },
    admin: { host: '127.0.0.1', port: options.adminPort ?? 0 },
    upstream: { url: scim.origin },
    openapi: { file: join(CONFIG_DIR, 'scim-openapi.yaml') },
    token: {
      issuer: auth.issuer,
      introspection: { endpoint: auth.introspectionEndpoint, clientId: auth.clientId, clientSecret: auth.clientSecret, authMethod: 'client_secret_basic' },
      jwt: { jwksUri: auth.jwksUri, issuer: auth.issuer },
    },
    log: { level: 'info' },
  }, null, 2));
  let gateway: Gateway;
  try {
    gateway = await startGateway(file, {});
  } catch (error) {
    // The two servers would keep the process alive after the error, a demo without a gateway.
    await Promise.allSettled([auth.close(), scim.close()]);
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  const base = `${gateway.proxyUrl.replace('127.0.0.1', 'localhost')}/jans-scim/restv1/v2`;
  // Resource locations name the gateway, the SCIM server's only way in.
  scim.publishAs(base);
  print(`
scopegate demo: running on localhost
  authorization server (oidc-provider, jans-auth layout): ${auth.issuer}
  SCIM server (jans-scim in BYPASS mode stand-in):        ${scim.baseUrl}  (reach it only through the gateway)
  gateway:                                                ${gateway.proxyUrl}   admin: ${gateway.adminUrl}

  SCIM client id:     ${auth.clientId}
  SCIM client secret: ${auth.clientSecret}
  scopes it may get:  ${SCIM_SCOPES.join(' ')}

1. Get a token (client_credentials, client_secret_basic), as in the jans docs:

  curl -u '${auth.clientId}:${auth.clientSecret}' -d grant_type=client_credentials -d scope='https://jans.io/scim/users.read https://jans.io/scim/users.write' ${auth.tokenEndpoint}

2. Call SCIM through the gateway with the access_token of the answer:

  curl -G -H 'Authorization: Bearer ...' --data-urlencode 'filter=displayName co "Admin"' ${base}/Users

Without a token the gateway answers 401; with a token lacking users.read, 403. Ctrl-C stops the demo.
`);
  await new Promise<void>((done) => {
    if (options.signal) {
      if (options.signal.aborted) done();
      options.signal.addEventListener('abort', () => done(), { once: true });
      return;
    }
    process.once('SIGINT', () => done());
    process.once('SIGTERM', () => done());
  });
  await gateway.close();
  await Promise.allSettled([auth.close(), scim.close()]);
  // The config holds the demo client's secret: not left behind in the temporary folder.
  rmSync(dir, { recursive: true, force: true });
  return 0;
}
