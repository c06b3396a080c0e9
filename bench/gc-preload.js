// Loaded with `node --expose-gc --import ./bench/gc-preload.js dist/cli.js serve` by the RSS
// measurement only: on SIGUSR2 the process runs a full garbage collection and says so on stderr,
// so that memory can be read with the garbage gone. Nothing else changes.
if (typeof globalThis.gc === 'function') {
  process.on('SIGUSR2', () => {
    globalThis.gc();
    globalThis.gc();
    process.stderr.write(`bench-gc-done ${Date.now()}\n`);
  });
}
