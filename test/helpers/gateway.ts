/**
 * A gateway for tests: a config written to a temp file (the real loading path), listeners on
 * port 0, every log line captured so tests can assert what was (and was not) written.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startGateway, type Gateway } from '../../src/app.js';

const here = dirname(fileURLToPath(import.meta.url));
/** The real jans-scim OpenAPI file, read from ../shared (never copied into the project). */
export const SHARED_OPENAPI = resolve(here, '..', '..', '..', 'shared', 'jans-scim-openapi.yaml');
/** Our own OpenAPI file in config/. */
export const OWN_OPENAPI = resolve(here, '..', '..', 'config', 'scim-openapi.yaml');
/** The jans base path. */
export const B = '/jans-scim/restv1/v2';

/** A started test gateway. */
export interface TestGateway {
  gateway: Gateway;
  port: number;
  url: string;
  adminUrl: string;
  logs: string[];
  configFile: string;
  close(): Promise<void>;
}

function merge(base: Record<string, unknown>, extra: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(extra)) {
    const b = out[k];
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && b && typeof b === 'object' && !Array.isArray(b)
      ? merge(b as Record<string, unknown>, v as Record<string, unknown>) : v;
  }
  return out;
}

/** Writes `config` (merged over port-0 listeners and the shared OpenAPI file) and starts it. */
export async function startTestGateway(config: Record<string, unknown>, env: Record<string, string> = {}): Promise<TestGateway> {
  const dir = mkdtempSync(join(tmpdir(), 'scopegate-test-'));
  const configFile = join(dir, 'scopegate.json');
  const full = merge({ listen: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 }, openapi: { file: SHARED_OPENAPI } }, config);
  writeFileSync(configFile, JSON.stringify(full, null, 2));
  const logs: string[] = [];
  const gateway = await startGateway(configFile, { env, logDestination: { write: (line: string) => logs.push(line) }, closeTimeoutMs: 3000 });
  const port = Number(new URL(gateway.proxyUrl).port);
  const close = async () => {
    await gateway.close();
    rmSync(dir, { recursive: true, force: true });
  };
  return { gateway, port, url: gateway.proxyUrl, adminUrl: gateway.adminUrl, logs, configFile, close };
}

/** One scrape of an admin listener's /metrics. */
export interface Scrape {
  readonly text: string;
  /** The sample `name` with exactly `labels` (in the order the metric exposes them); NaN when absent. */
  value(name: string, labels?: Record<string, string>): number;
  /** The sum of the samples of `name`, whatever their labels. */
  sum(name: string): number;
}

/** Reads `adminUrl`/metrics once. */
export async function scrape(adminUrl: string): Promise<Scrape> {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  const samples = text.split('\n').filter((line) => line !== '' && !line.startsWith('#'));
  const valueOf = (line: string) => Number(line.slice(line.lastIndexOf(' ') + 1));
  return {
    text,
    value(name, labels) {
      const series = labels === undefined ? name : `${name}{${Object.entries(labels).map(([k, v]) => `${k}="${v}"`).join(',')}}`;
      const line = samples.find((l) => l.startsWith(`${series} `));
      return line === undefined ? Number.NaN : valueOf(line);
    },
    sum(name) {
      return samples.filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `)).reduce((total, l) => total + valueOf(l), 0);
    },
  };
}

/** The access lines among captured log lines. */
export function accessLines(logs: readonly string[]): Array<Record<string, unknown>> {
  return logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'access');
}

/** Real tokens from `auth`, one per scope set, issued once and reused across a file's tests. */
export function tokenIssuer(auth: { issueToken(scopes: string[]): Promise<string> }): (...scopes: string[]) => Promise<string> {
  const tokens = new Map<string, Promise<string>>();
  return (...scopes) => {
    const key = [...scopes].sort().join(' ');
    let hit = tokens.get(key);
    if (!hit) {
      hit = auth.issueToken(scopes);
      tokens.set(key, hit);
    }
    return hit;
  };
}
