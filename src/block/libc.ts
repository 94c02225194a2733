import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The few libc calls Node's fs module lacks (image locks, hole detection), through koffi. Loaded once, on
 * first use; null where koffi or libc cannot be loaded (other platforms, a build without the native
 * module): callers then do without (no locks; every byte of a raw file counts as data).
 */

export interface Flock { l_type: number; l_whence: number; l_start: number; l_len: number; l_pid: number }

export interface Libc {
  fcntl(fd: number, cmd: number, lock: Flock): number;
  /** lseek(2); -1 on error, see errno(). */
  lseek(fd: number, offset: number, whence: number): number;
  errno(): number;
  /** madvise(2) on a host address (from addressOf); 0 or -1. */
  madvise(address: bigint, length: number, advice: number): number;
  /** The host address of a typed array's first byte (its backing store does not move while it lives). */
  addressOf(bytes: Uint8Array): bigint;
}

let libc: Libc | null | undefined;
/** Tests: pretend libc is unavailable (exercises the fallbacks). */
let disabled = false;

export function loadLibc(): Libc | null {
  if (disabled) return null;
  if (libc !== undefined) return libc;
  try {
    const koffi = loadKoffi();
    const lib = koffi.load('libc.so.6');
    koffi.struct('tsvm_flock', { l_type: 'short', l_whence: 'short', l_start: 'int64', l_len: 'int64', l_pid: 'int' });
    const fcntl = lib.func('int fcntl(int fd, int cmd, _Inout_ tsvm_flock *lock)') as Libc['fcntl'];
    const lseek = lib.func('int64_t lseek(int fd, int64_t offset, int whence)') as (fd: number, off: number, whence: number) => number | bigint;
    const madvise = lib.func('int madvise(uintptr_t addr, size_t length, int advice)') as Libc['madvise'];
    // memmove(dst, src, 0) returns dst: the address koffi passed for the array.
    const memmove = lib.func('uintptr_t memmove(void *dst, void *src, size_t n)') as (dst: Uint8Array, src: Uint8Array, n: number) => number | bigint;
    libc = {
      fcntl,
      madvise,
      addressOf: (bytes) => BigInt(memmove(bytes, bytes, 0)),
      lseek: (fd, off, whence) => Number(lseek(fd, off, whence)),
      errno: () => koffi.errno(),
    };
  } catch {
    libc = null;
  }
  return libc;
}

type Koffi = typeof import('koffi');

/**
 * koffi's native module. Its entry point spends 10-40 ms (on a 2-vCPU VM) finding the binary: ELF header
 * parsing, one require per candidate package, wrappers for deprecated calls; Node's own package resolution
 * of 'koffi' costs ~4 ms more. tsvm-img pays that on every command (image locks, raw holes), so on Linux
 * this finds koffi as npm installs it (node_modules in this file's directory or above, its platform
 * package beside it or inside it) and opens the prebuilt glibc binary itself (~2.5 ms in all); anything
 * else goes through koffi's loader.
 */
function loadKoffi(): Koffi {
  const prebuilt = process.platform === 'linux' ? prebuiltKoffi() : undefined;
  if (prebuilt !== undefined) {
    try {
      const native = { exports: {} as Koffi };
      process.dlopen(native, prebuilt.binary);
      // As koffi's loader: the binary must be the one of this koffi version.
      const { version } = JSON.parse(readFileSync(join(prebuilt.koffiDir, 'package.json'), 'utf8')) as { version?: string };
      if (typeof native.exports.load === 'function' && native.exports.version === version) return native.exports;
    } catch {
      // Not loadable here (musl, say): koffi finds its binary itself.
    }
  }
  return createRequire(import.meta.url)('koffi') as Koffi;
}

/** The nearest koffi as npm installs it, and the glibc binary of its platform package (beside it or inside it). */
function prebuiltKoffi(): { koffiDir: string; binary: string } | undefined {
  const binaryPath = join('@koromix', `koffi-linux-${process.arch}`, `linux_${process.arch}`, 'koffi.node');
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const koffiDir = join(dir, 'node_modules', 'koffi');
    if (existsSync(join(koffiDir, 'package.json'))) {
      const binary = [join(dir, 'node_modules', binaryPath), join(koffiDir, 'node_modules', binaryPath)].find((p) => existsSync(p));
      return binary === undefined ? undefined : { koffiDir, binary };
    }
    if (dirname(dir) === dir) return undefined;
  }
}

/** For tests: make loadLibc() return null (true) or work again (false). */
export function disableLibcForTesting(off: boolean): void {
  disabled = off;
}

export const SEEK_DATA = 3, SEEK_HOLE = 4;
export const MADV_DONTNEED = 4;
export const ENXIO = 6;
