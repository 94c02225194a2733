#!/usr/bin/env node
// Bundles tsvm-img (tsc's output, dist/src/cli/tsvm-img.js) into one file, dist/bin/tsvm-img.js, its
// installed command. Each tsvm-img command is a short process, and loading its ~20 ES modules one by
// one (resolve, read, compile, link each) cost 15-30 ms of a 1 GiB convert that takes ~300 ms (on a
// 2-vCPU VM); the one file is compiled at once, and its modules still run only when a command imports
// them. koffi stays outside: it is a native module found at run time.
import { build } from 'esbuild';
import { chmodSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const outfile = `${root}dist/bin/tsvm-img.js`;
try {
  await build({
    entryPoints: [`${root}dist/src/cli/tsvm-img.js`],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    external: ['koffi'],
    logLevel: 'warning',
  });
  chmodSync(outfile, 0o755);
} catch (e) {
  console.error(`bundle-cli: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`);
  process.exit(1);
}
