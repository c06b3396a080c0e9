/**
 * The built command line for tests: `node dist/cli.js`, built once (and again when src/ is newer
 * than dist/), then spawned with a clean environment so that a `SCOPEGATE_*` variable of the
 * developer's shell never changes what a test sees.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
/** The project root. */
export const ROOT = resolve(here, '..', '..');
/** The built entry point. */
export const CLI = join(ROOT, 'dist', 'cli.js');

/** What a finished command printed and how it exited. */
export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function newestMtimeMs(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtimeMs(path) : statSync(path).mtimeMs);
  }
  return newest;
}

function isBuilt(): boolean {
  try {
    return statSync(CLI).mtimeMs >= newestMtimeMs(join(ROOT, 'src'));
  } catch {
    return false;
  }
}

function run(command: string, args: readonly string[], options: { env: NodeJS.ProcessEnv; cwd: string }, input?: string): Promise<CliResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, args, { ...options, stdio: ['pipe', 'pipe', 'pipe'] });
    // Without input, stdin is closed at once: a command that reads it sees its end.
    child.stdin.end(input ?? '');
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => resolvePromise({ code, stdout, stderr }));
  });
}

/** The parent's environment without any `SCOPEGATE_*` variable or tap's loader options. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (!name.startsWith('SCOPEGATE_') && name !== 'NODE_OPTIONS') env[name] = value;
  }
  return { ...env, ...extra };
}

/**
 * Runs `npm run build` unless dist/cli.js is newer than every file of src/. Test files run in
 * parallel, so a lock directory makes the second one wait for the first one's build.
 */
export async function ensureBuilt(): Promise<void> {
  if (isBuilt()) return;
  const lock = join(tmpdir(), `scopegate-build-${Buffer.from(ROOT).toString('hex').slice(-32)}.lock`);
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      // A lock older than two minutes belongs to a build that died.
      const held = statSync(lock, { throwIfNoEntry: false });
      if (Date.now() > deadline || (held && Date.now() - held.mtimeMs > 120_000)) rmSync(lock, { recursive: true, force: true });
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  try {
    if (isBuilt()) return;
    const result = await run('npm', ['run', 'build', '--silent'], { env: cleanEnv({}), cwd: ROOT });
    if (result.code !== 0) throw new Error(`npm run build failed (${result.code}):\n${result.stdout}${result.stderr}`);
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

/** Runs `node dist/cli.js ...args` in the project root (or `cwd`) with only `env` added, `input` on its stdin. */
export function runCli(args: readonly string[], options: { env?: Record<string, string>; cwd?: string; input?: string } = {}): Promise<CliResult> {
  return run(process.execPath, [CLI, ...args], { env: cleanEnv(options.env ?? {}), cwd: options.cwd ?? ROOT }, options.input);
}
