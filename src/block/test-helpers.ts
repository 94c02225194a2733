/** Shared helpers for the block layer tests (qemu-img / qemu-io interop). */
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, truncateSync, writeSync } from 'node:fs';
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

/** A sparse file: data extents (one with zero blocks inside) between holes; returns its bytes. */
export function writeSparse(path: string): Uint8Array {
  const size = 6 << 20;
  const bytes = new Uint8Array(size);
  const put = (off: number, data: Uint8Array) => {
    bytes.set(data, off);
    const fd = openSync(path, 'r+');
    try {
      writeSync(fd, data, 0, data.length, off);
    } finally {
      closeSync(fd);
    }
  };
  closeSync(openSync(path, 'w'));
  truncateSync(path, size);
  put(4096, pattern(8192, 1));
  put(1 << 20, fill(64 << 10, 0)); // written zeroes: data to lseek, zeroes to convert's zero detection
  put((1 << 20) + (64 << 10), pattern(100 << 10, 2));
  put(3 << 20, pattern(4096, 3));
  put((3 << 20) + (192 << 10), pattern(70000, 4)); // not a whole number of file blocks
  put(size - 512, pattern(512, 5));
  return bytes;
}

/**
 * What qemu-img map --output=json says of an image, without host offsets and with neighbours of the same
 * kind merged: the allocation, comparable between two images with the same contents.
 */
export function qemuMapShape(path: string, format: string): string {
  const entries = JSON.parse(qemuImg('map', '--output=json', '-f', format, path)) as Record<string, unknown>[];
  const out: Record<string, unknown>[] = [];
  for (const e of entries) {
    delete e.offset;
    const last = out[out.length - 1];
    const key = (x: Record<string, unknown>) => JSON.stringify({ ...x, start: 0, length: 0 });
    if (last && key(last) === key(e) && (last.start as number) + (last.length as number) === e.start) (last.length as number) += e.length as number;
    else out.push(e);
  }
  return JSON.stringify(out);
}
