#!/usr/bin/env node
// Installs the Debian packages listed in scripts/test-deps.txt that are missing (needs root and apt-get).
// Tests that need a tool which could not be installed report themselves as skipped.
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

const wanted = readFileSync(new URL('./test-deps.txt', import.meta.url), 'utf8')
  .split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
const missing = wanted.filter((p) => spawnSync('dpkg-query', ['-W', '-f=${Status}', p], { encoding: 'utf8' }).stdout !== 'install ok installed');
if (missing.length === 0) process.exit(0);
if (process.getuid?.() !== 0 || spawnSync('which', ['apt-get']).status !== 0) {
  console.error(`install-test-deps: cannot install ${missing.join(' ')} (needs root and apt-get); dependent tests will be skipped`);
  process.exit(0);
}
console.error(`install-test-deps: installing ${missing.join(' ')}`);
const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
try {
  execFileSync('apt-get', ['update', '-q'], { stdio: ['ignore', 'ignore', 'inherit'], env });
} catch {
  console.error('install-test-deps: apt-get update reported errors; trying the install anyway');
}
const r = spawnSync('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...missing], { stdio: ['ignore', 'ignore', 'inherit'], env });
if (r.status !== 0) console.error('install-test-deps: apt-get install failed; dependent tests will be skipped');
