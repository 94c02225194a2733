import { createRequire } from 'node:module';

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
}

let libc: Libc | null | undefined;
/** Tests: pretend libc is unavailable (exercises the fallbacks). */
let disabled = false;

export function loadLibc(): Libc | null {
  if (disabled) return null;
  if (libc !== undefined) return libc;
  try {
    const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
    const lib = koffi.load('libc.so.6');
    koffi.struct('tsvm_flock', { l_type: 'short', l_whence: 'short', l_start: 'int64', l_len: 'int64', l_pid: 'int' });
    const fcntl = lib.func('int fcntl(int fd, int cmd, _Inout_ tsvm_flock *lock)') as Libc['fcntl'];
    const lseek = lib.func('int64_t lseek(int fd, int64_t offset, int whence)') as (fd: number, off: number, whence: number) => number | bigint;
    libc = {
      fcntl,
      lseek: (fd, off, whence) => Number(lseek(fd, off, whence)),
      errno: () => koffi.errno(),
    };
  } catch {
    libc = null;
  }
  return libc;
}

/** For tests: make loadLibc() return null (true) or work again (false). */
export function disableLibcForTesting(off: boolean): void {
  disabled = off;
}

export const SEEK_DATA = 3, SEEK_HOLE = 4;
export const ENXIO = 6;
