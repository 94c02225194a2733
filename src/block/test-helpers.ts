/** Shared helpers for the block layer tests (qemu-img / qemu-io interop). */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const hasQemuImg = spawnSync('qemu-img', ['--version']).status === 0;
export const hasQemuIo = spawnSync('qemu-io', ['--version']).status === 0;

export function tmpDir(): { dir: string; path: (name: string) => string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'tsvm-block-'));
  return { dir, path: (n) => join(dir, n), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function qemuImg(...args: string[]): string {
  return execFileSync('qemu-img', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Runs qemu-img and returns its exit status and output (does not throw). */
export function qemuImgStatus(...args: string[]): { status: number; out: string } {
  const r = spawnSync('qemu-img', args, { encoding: 'utf8' });
  return { status: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

/** Runs qemu-io commands on an image; throws if one fails (qemu-io reports pattern mismatches on stdout). */
export function qemuIo(image: string, cmds: string[], format?: string): string {
  const args: string[] = [];
  if (format) args.push('-f', format);
  for (const c of cmds) args.push('-c', c);
  args.push(image);
  const r = spawnSync('qemu-io', args, { encoding: 'utf8' });
  const out = `${r.stdout}${r.stderr}`;
  if (r.status !== 0 || /fail|error|mismatch/i.test(out)) throw new Error(`qemu-io ${cmds.join('; ')}: ${out}`);
  return out;
}

/** Deterministic pseudo-random bytes. */
export function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

export function fill(len: number, v: number): Uint8Array {
  return new Uint8Array(len).fill(v);
}

/** xorshift PRNG: `rng(seed)(n)` is a number in [0, n). */
export function rng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    return x % n;
  };
}
