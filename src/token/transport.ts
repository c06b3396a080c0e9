/**
 * The connections to the authorization server (introspection, JWKS, discovery): TLS is always
 * verified (SECURITY.md I09), whatever NODE_TLS_REJECT_UNAUTHORIZED says. Node's default for
 * `rejectUnauthorized` reads that variable, so an unset option would let one environment variable
 * turn verification off; here it is set. A private CA is `token.caFile` (trusted in place of the
 * public CAs, as `upstream.caFile` is for the upstream), or NODE_EXTRA_CA_CERTS, which Node adds to
 * its default trust store at startup.
 */
import { readFileSync } from 'node:fs';
import { Agent } from 'undici';

/** Node's trust store: the dispatcher of a config without token.caFile, and of a verifier built without a transport (tests, tools). */
export const authServerDispatcher = new Agent({ connect: { rejectUnauthorized: true } });

/** What the token verifiers reach the authorization server through, and its release. */
export interface AuthServerTransport {
  readonly dispatcher: Agent;
  /** Lets the connections of a CA file's own dispatcher end once their requests have (graceful). */
  close(): void;
}

/** The transport for `caFile` (its certificates only), or Node's trust store without one. */
export function authServerTransport(caFile: string | undefined): AuthServerTransport {
  if (!caFile) return { dispatcher: authServerDispatcher, close() {} };
  const dispatcher = new Agent({ connect: { rejectUnauthorized: true, ca: readFileSync(caFile) } });
  return { dispatcher, close: () => void dispatcher.close().catch(() => undefined) };
}
