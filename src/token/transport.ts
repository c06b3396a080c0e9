/**
 * The connections to the authorization server (introspection, JWKS, discovery): TLS is always
 * verified (SECURITY.md I09), whatever NODE_TLS_REJECT_UNAUTHORIZED says. Node's default for
 * `rejectUnauthorized` reads that variable, so an unset option would let one environment variable
 * turn verification off; here it is set. A private CA is added with NODE_EXTRA_CA_CERTS, which
 * Node reads into the default trust store at startup.
 */
import { Agent } from 'undici';

export const authServerDispatcher = new Agent({ connect: { rejectUnauthorized: true } });
