/**
 * `scopegate serve` as a child process, the way operators run it: argv, config file, signals.
 * Resolves once the process logs that it listens, with its proxy and admin URLs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
/** The built binary (npm run build). */
export const CLI = resolve(here, '..', '..', 'dist', 'cli.js');

/** A running `scopegate serve`. */
export interface ServeProcess {
  child: ChildProcess;
  proxyUrl: string;
  adminUrl: string;
  port: number;
  /** Every stdout line so far (pino JSON). */
  lines: string[];
  /** Resolves with the exit code once the process ends. */
  exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Spawns `node dist/cli.js serve --config FILE` and waits for its "listening" line. */
export function startServe(configFile: string, env: Record<string, string> = {}, timeoutMs = 20000): Promise<ServeProcess> {
  const child = spawn(process.execPath, [CLI, 'serve', '--config', configFile], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let stderr = '';
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`scopegate serve did not start: ${stderr}`)), timeoutMs);
    let buffer = '';
    child.stderr!.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    child.stdout!.on('data', (c: Buffer) => {
      buffer += c.toString();
      let i;
      while ((i = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, i);
        buffer = buffer.slice(i + 1);
        lines.push(line);
        if (!line.includes('scopegate listening')) continue;
        const parsed = JSON.parse(line) as { proxy: string; admin: string };
        clearTimeout(timer);
        resolvePromise({
          child, lines, exited, proxyUrl: parsed.proxy, adminUrl: parsed.admin, port: Number(new URL(parsed.proxy).port),
          stop: (signal = 'SIGTERM') => {
            if (child.exitCode === null) child.kill(signal);
            return exited;
          },
        });
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`scopegate serve exited ${code}: ${stderr}`));
    });
  });
}
