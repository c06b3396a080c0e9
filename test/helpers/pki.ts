/**
 * A self-signed certificate for 127.0.0.1 and its key (openssl, once per test process), written
 * where a test needs them. Not a test file.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

/** PEM texts: a certificate, its key, and a key that belongs to no certificate. */
export interface Pki {
  cert: string;
  key: string;
  otherKey: string;
}

let made: Pki | undefined;

/** Generates the PEM texts (EC P-256: fast) the first time it is called. */
export function pki(): Pki {
  if (made) return made;
  const dir = mkdtempSync(join(tmpdir(), 'scopegate-pki-'));
  try {
    const [cert, key, otherKey] = ['cert.pem', 'key.pem', 'other.pem'].map((n) => join(dir, n)) as [string, string, string];
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    execFileSync('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-out', otherKey], { stdio: 'ignore' });
    made = { cert: readFileSync(cert, 'utf8'), key: readFileSync(key, 'utf8'), otherKey: readFileSync(otherKey, 'utf8') };
    return made;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Writes `text` at `path`, creating its folder. */
export function writePem(path: string, text: string): string {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, text);
  return path;
}
