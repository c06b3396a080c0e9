/**
 * The PEM files the config names (listen.tls.certFile/keyFile, upstream.caFile, token.caFile), read and parsed
 * when the config is loaded, so that `check` refuses what `serve` would fail on, by key path. A
 * problem names the key and the file, never the file's content.
 */
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';

/** The keys that name PEM files, as far as validation got (any may be absent). */
interface PemKeys {
  listen?: { tls?: { certFile?: string; keyFile?: string } };
  upstream?: { caFile?: string };
  token?: { caFile?: string };
}

const CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/**
 * The text of `path`. The path of the private key is not repeated when it cannot be read: the value
 * may be no path at all but the key itself (or another secret) pasted in its place.
 */
function read(path: string, key: string, problems: string[], secret = false): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    problems.push(`${key}: cannot read ${secret ? 'the file it names' : path} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
    return undefined;
  }
}

/** Every certificate of a PEM bundle, or a problem when there is none or one does not parse. */
function certificates(path: string, key: string, problems: string[]): X509Certificate[] | undefined {
  const text = read(path, key, problems);
  if (text === undefined) return undefined;
  const blocks = text.match(CERTIFICATE) ?? [];
  if (blocks.length === 0) {
    problems.push(`${key}: ${path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
    return undefined;
  }
  const parsed: X509Certificate[] = [];
  for (const [i, block] of blocks.entries()) {
    try {
      parsed.push(new X509Certificate(block));
    } catch {
      problems.push(`${key}: certificate ${i + 1} of ${path} cannot be parsed`);
      return undefined;
    }
  }
  return parsed;
}

function privateKey(path: string, key: string, problems: string[]): KeyObject | undefined {
  const text = read(path, key, problems, true);
  if (text === undefined) return undefined;
  try {
    return createPrivateKey(text);
  } catch {
    problems.push(`${key}: ${path} holds no PEM private key that can be read without a passphrase`);
    return undefined;
  }
}

/** Problems of the PEM files named in `config`; an empty list when they are all usable. */
export function checkPemFiles(config: PemKeys): string[] {
  const problems: string[] = [];
  const tls = config.listen?.tls;
  // Each file is read even when the other is missing: `check` lists every problem at once.
  const chain = tls?.certFile ? certificates(tls.certFile, 'listen.tls.certFile', problems) : undefined;
  const key = tls?.keyFile ? privateKey(tls.keyFile, 'listen.tls.keyFile', problems) : undefined;
  // The first certificate is the server's own: the key must be its key.
  if (chain && key && !chain[0]!.checkPrivateKey(key)) problems.push('listen.tls.keyFile: does not match the certificate of listen.tls.certFile');
  // What the listener will do with them: OpenSSL also refuses keys below its security level
  // (RSA under 2048 bits, ...), which parse well enough.
  else if (chain && key) {
    try {
      createSecureContext({ cert: chain.map((c) => c.toString()).join('\n'), key: key.export({ type: 'pkcs8', format: 'pem' }) });
    } catch (error) {
      problems.push(`listen.tls.keyFile: OpenSSL refuses this key and certificate for TLS (${(error as { reason?: string }).reason ?? 'unusable'})`);
    }
  }
  const caFile = config.upstream?.caFile;
  if (caFile) certificates(caFile, 'upstream.caFile', problems);
  const tokenCaFile = config.token?.caFile;
  if (tokenCaFile) certificates(tokenCaFile, 'token.caFile', problems);
  return problems;
}
