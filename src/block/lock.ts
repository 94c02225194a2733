import { closeSync, openSync } from 'node:fs';
import { TsvmError } from '../base/errors.js';
import { type Flock, loadLibc } from './libc.js';

/**
 * Image locking that QEMU understands. QEMU (block/file-posix.c) takes open-file-description byte locks on
 * the image file: a shared lock on byte 100 + n for each permission it uses, and on byte 200 + n for each
 * permission it does not let others use (n: 0 consistent read, 1 write, 2 write unchanged, 3 resize). Two
 * openers conflict when one uses a permission the other denies. We take the same locks, so a tsvm writer
 * and QEMU (qemu-img, qemu-io, a VM) refuse each other's conflicting opens.
 */

const PERM_BASE = 100, SHARED_BASE = 200;
const CONSISTENT_READ = 0, WRITE = 1, WRITE_UNCHANGED = 2, RESIZE = 3;
const PERM_NAMES = ['consistent read', 'write', 'write unchanged', 'resize'];
const F_OFD_GETLK = 36, F_OFD_SETLK = 37;
const F_RDLCK = 0, F_WRLCK = 1, F_UNLCK = 2;

type Fcntl = (fd: number, cmd: number, lock: Flock) => number;

/** libc's fcntl through koffi; null where it cannot be loaded (then images are not locked). */
function loadFcntl(): Fcntl | null {
  return loadLibc()?.fcntl ?? null;
}

/** A held image lock; release() when the image is closed. */
export interface ImageLock {
  release(): void;
}

const NO_LOCK: ImageLock = { release: () => {} };

/**
 * Locks `path` for reading (others may read but not write) or for writing (others may read, nobody else
 * writes or resizes), as QEMU does. Throws a TsvmError naming the permission another process holds.
 */
export function lockImage(path: string, write: boolean): ImageLock {
  const f = loadFcntl();
  if (f === null) return NO_LOCK;
  const used = write ? [CONSISTENT_READ, WRITE, WRITE_UNCHANGED, RESIZE] : [CONSISTENT_READ];
  const denied = [WRITE, RESIZE];
  const fd = openSync(path, 'r');
  try {
    const held = (byte: number) => {
      const probe: Flock = { l_type: F_WRLCK, l_whence: 0, l_start: byte, l_len: 1, l_pid: 0 };
      return f(fd, F_OFD_GETLK, probe) === 0 && probe.l_type !== F_UNLCK;
    };
    for (const p of used) {
      if (held(SHARED_BASE + p)) throw new TsvmError(`Failed to get "${PERM_NAMES[p]}" lock on '${path}': another process is using the image`);
    }
    for (const p of denied) {
      if (held(PERM_BASE + p)) throw new TsvmError(`Failed to get shared "${PERM_NAMES[p]}" lock on '${path}': another process is using the image`);
    }
    for (const byte of [...used.map((p) => PERM_BASE + p), ...denied.map((p) => SHARED_BASE + p)]) {
      f(fd, F_OFD_SETLK, { l_type: F_RDLCK, l_whence: 0, l_start: byte, l_len: 1, l_pid: 0 });
    }
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  // The locks belong to this descriptor and go away with it.
  return { release: () => closeSync(fd) };
}
