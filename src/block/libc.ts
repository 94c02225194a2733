import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';

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
    const koffi = loadKoffi();
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

type Koffi = typeof import('koffi');

/**
 * koffi's native module. Its entry point spends 10-40 ms (on a 2-vCPU VM) finding the binary: ELF header
 * parsing, one require per candidate package, wrappers for deprecated calls. tsvm-img pays that on every
 * command (image locks, raw holes), so on Linux this loads the prebuilt glibc binary of koffi's platform
 * package itself (~2 ms), next to koffi as npm installs it; anything else goes through koffi's loader.
 */
function loadKoffi(): Koffi {
  const require = createRequire(import.meta.url);
  if (process.platform === 'linux') {
    try {
      const koffiDir = dirname(require.resolve('koffi'));
      const dir = dirname(require.resolve(`@koromix/koffi-linux-${process.arch}/package.json`, { paths: [koffiDir] }));
      const native = require(`${dir}/linux_${process.arch}/koffi.node`) as Koffi;
      // As koffi's loader: the binary must be the one of this koffi version.
      const { version } = JSON.parse(readFileSync(`${koffiDir}/package.json`, 'utf8')) as { version?: string };
      if (typeof native.load === 'function' && native.version === version) return native;
    } catch {
      // Not laid out as npm does it (or musl): koffi finds its binary itself.
    }
  }
  return require('koffi') as Koffi;
}

/** For tests: make loadLibc() return null (true) or work again (false). */
export function disableLibcForTesting(off: boolean): void {
  disabled = off;
}

export const SEEK_DATA = 3, SEEK_HOLE = 4;
export const ENXIO = 6;
