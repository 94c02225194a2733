import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The compiled commands (tests run from dist/test). */
const cli = (name: string) => fileURLToPath(new URL(`../src/cli/${name}.js`, import.meta.url));

function runTsvm(args: string[]) {
  return spawnSync(process.execPath, [cli('tsvm'), ...args], { encoding: 'utf8', timeout: 30_000, input: '' });
}

test('tsvm: bad input gives one line on stderr, exit 1, no stack trace', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tsvm-cli-'));
  const corrupt = join(dir, 'corrupt.bin');
  writeFileSync(corrupt, Buffer.alloc(8192, 0x41));
  const cases: [string[], RegExp][] = [
    [['-frobnicate'], /^tsvm: -frobnicate: invalid option$/],
    [['-m', 'x', '-kernel', corrupt], /^tsvm: -m x: invalid memory size$/],
    [['-kernel', join(dir, 'missing')], /^tsvm: could not load kernel '.*missing': no such file or directory/i],
    [['-kernel', corrupt], /^tsvm: .*corrupt\.bin: not a Linux bzImage/],
    [['-smp', '4', '-kernel', corrupt], /^tsvm: -smp 4: only 1 CPU/],
  ];
  for (const [args, message] of cases) {
    const r = runTsvm(args);
    assert.equal(r.status, 1, `${args.join(' ')}: exit status`);
    const lines = r.stderr.trimEnd().split('\n');
    assert.equal(lines.length, 1, `${args.join(' ')}: one line, got ${JSON.stringify(r.stderr)}`);
    assert.match(lines[0], message);
    assert.doesNotMatch(r.stderr, /\bat .*\.js:\d+/);
  }
});

test('tsvm -h and --version', () => {
  const help = runTsvm(['-h']);
  assert.equal(help.status, 0);
  assert.match(help.stdout, /^usage: tsvm/);
  const version = runTsvm(['--version']);
  assert.equal(version.status, 0);
  assert.match(version.stdout, /^tsvm version \d+\.\d+\.\d+/);
});

test('tsvm-guest: unknown command is one line', () => {
  const r = spawnSync(process.execPath, [cli('tsvm-guest'), 'fly'], { encoding: 'utf8' });
  assert.equal(r.status, 1);
  assert.equal(r.stderr, "tsvm-guest: unknown command 'fly' (try --help)\n");
});
