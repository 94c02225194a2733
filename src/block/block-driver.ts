/**
 * The block layer's driver interface: one open disk image (raw, qcow2, qcow v1).
 * Offsets and lengths are bytes of the guest-visible (virtual) disk.
 */
import { realpath } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { TsvmError } from '../base/errors.js';
import { BlockFile } from './file.js';
import { type ImageLock, lockImage } from './lock.js';
import { RawImage } from './raw.js';
import type { Qcow2CreateOptions } from './qcow2/create.js';
// The qcow2 and qcow drivers are loaded when an image needs them (a command-line tool starts faster).

export type ImageFormat = 'raw' | 'qcow2' | 'qcow';

export interface BlockStatus {
  /** Bytes from the queried offset that share this status (>0, <= the queried length). */
  length: number;
  /** Data for the range is present in this image (not in a backing file, not unallocated). */
  allocated: boolean;
  /** The range reads as zeroes. */
  zero: boolean;
  /** Host file offset of the data, when it is stored uncompressed in this image's file. */
  offset?: number;
}

export interface BlockDriver {
  readonly format: ImageFormat;
  readonly virtualSize: number;
  readonly readOnly: boolean;
  read(offset: number, length: number): Promise<Uint8Array>;
  /** Like read, into a caller's buffer (its length is the request length); saves an allocation. */
  readInto?(offset: number, buf: Uint8Array): Promise<void>;
  write(offset: number, data: Uint8Array): Promise<void>;
  /**
   * Bulk-copy fast path (convert): when the read can be done at once (plain data in this image's file,
   * metadata at hand, no other request it would have to wait for), do it synchronously and return true;
   * otherwise do nothing and return false, and the caller uses readInto/read. It blocks the event loop
   * for the duration of the file I/O, which a copy loop with nothing else to do does not mind.
   */
  readSync?(offset: number, buf: Uint8Array): boolean;
  /** blockStatus at once, or undefined (then use blockStatus); it may describe a shorter stretch. */
  blockStatusSync?(offset: number, length: number): BlockStatus | undefined;
  writeZeroes(offset: number, length: number): Promise<void>;
  discard(offset: number, length: number): Promise<void>;
  flush(): Promise<void>;
  blockStatus(offset: number, length: number): Promise<BlockStatus>;
  close(): Promise<void>;
}

// ---- opening and creating images ---------------------------------------------------------------


export interface OpenImageOptions {
  /** Image format; probed from the file's magic when omitted. */
  format?: ImageFormat;
  readOnly?: boolean;
  /** qcow2: fsync between the steps of allocating writes. */
  syncMetadata?: boolean;
  /**
   * Never fsync the image file, not even on flush() or close() (qemu's cache=unsafe, which qemu-img
   * convert uses for its output by default). The data still reaches the file (the OS page cache).
   */
  unsafe?: boolean;
  /**
   * Take QEMU-compatible locks on the image file (not its backing files) while it is open: for reading,
   * others may not write; for writing, others may only read. Off by default (qemu-img's -U).
   */
  lock?: boolean;
}

export interface CreateImageOptions extends Qcow2CreateOptions {
  /** qcow v1: cluster size (default 4 KiB). */
  clusterSize?: number;
}

const MAX_BACKING_DEPTH = 32;

/** Guesses an image's format from its first bytes ('raw' when nothing matches). */
export async function probeFormat(path: string): Promise<ImageFormat> {
  const f = await BlockFile.open(path, true);
  try {
    const b = await f.pread(0, 8);
    const dv = new DataView(b.buffer);
    if (dv.getUint32(0) === 0x514649fb) {
      const v = dv.getUint32(4);
      if (v === 1) return 'qcow';
      if (v === 2 || v === 3) return 'qcow2';
    }
    return 'raw';
  } finally {
    await f.close();
  }
}

/** Resolves a backing file name stored in `imagePath` (relative names are relative to its directory). */
export function resolveBackingPath(imagePath: string, name: string): string {
  return isAbsolute(name) ? name : resolve(dirname(imagePath), name);
}

/**
 * Opens a disk image. Backing files are opened recursively (read-only); a chain that loops or is deeper
 * than 32 images is an error.
 */
export async function openImage(path: string, options: OpenImageOptions = {}): Promise<BlockDriver> {
  if (!options.lock) return openChain(path, options, []);
  let lock: ImageLock;
  try {
    lock = lockImage(path, !(options.readOnly ?? false));
  } catch (e) {
    if (e instanceof TsvmError) throw e;
    throw new TsvmError(`cannot open '${path}': ${(e as Error).message}`);
  }
  try {
    const image = await openChain(path, options, []);
    const close = image.close.bind(image);
    // The lock lives as long as the image is open.
    image.close = async () => {
      try {
        await close();
      } finally {
        lock.release();
      }
    };
    return image;
  } catch (e) {
    lock.release();
    throw e;
  }
}

async function openChain(path: string, options: OpenImageOptions, seen: string[]): Promise<BlockDriver> {
  let real: string;
  try {
    real = await realpath(path);
  } catch {
    throw new TsvmError(`cannot open '${path}': no such file`);
  }
  if (seen.includes(real)) throw new TsvmError(`backing file loop detected at '${path}'`);
  if (seen.length >= MAX_BACKING_DEPTH) throw new TsvmError(`backing chain of '${seen[0]}' is too deep`);
  const chain = [...seen, real];
  const format = options.format ?? (await probeFormat(path));
  const readOnly = options.readOnly ?? false;
  const openBacking = async (name: string, fmt: string | undefined): Promise<BlockDriver> => {
    if (fmt !== undefined && fmt !== 'raw' && fmt !== 'qcow2' && fmt !== 'qcow') {
      throw new TsvmError(`unsupported backing file format '${fmt}'`);
    }
    const opts: OpenImageOptions = { readOnly: true };
    if (fmt !== undefined) opts.format = fmt;
    return openChain(resolveBackingPath(path, name), opts, chain);
  };
  switch (format) {
    case 'raw':
      return RawImage.open(path, readOnly, options.unsafe ?? false);
    case 'qcow2': {
      const { Qcow2Image } = await import('./qcow2/qcow2.js');
      const o: Parameters<typeof Qcow2Image.open>[1] = { readOnly, openBacking };
      if (options.syncMetadata !== undefined) o.syncMetadata = options.syncMetadata;
      if (options.unsafe !== undefined) o.unsafe = options.unsafe;
      return Qcow2Image.open(path, o);
    }
    case 'qcow': {
      const { QcowImage } = await import('./qcow/qcow.js');
      return QcowImage.open(path, options.unsafe === undefined ? { readOnly, openBacking } : { readOnly, openBacking, unsafe: options.unsafe });
    }
    default:
      throw new TsvmError(`unknown image format '${String(format)}'`);
  }
}

/**
 * Creates an empty image. With a backing file and no size (or size < 0), the backing file's size is used.
 */
export async function createImage(
  path: string, format: ImageFormat, size: number | undefined, options: CreateImageOptions = {},
): Promise<void> {
  let sz = size ?? -1;
  if (options.backingFile !== undefined) {
    if (format === 'raw') throw new TsvmError('raw images cannot have a backing file');
    const bpath = resolveBackingPath(path, options.backingFile);
    if (sz < 0) {
      const o: OpenImageOptions = { readOnly: true };
      if (options.backingFormat !== undefined) o.format = options.backingFormat as ImageFormat;
      const b = await openImage(bpath, o);
      sz = b.virtualSize;
      await b.close();
    }
  }
  if (sz < 0) throw new TsvmError('image size is required');
  sz = Math.ceil(sz / 512) * 512; // like qemu-img: whole sectors
  switch (format) {
    case 'raw':
      return RawImage.create(path, sz);
    case 'qcow2': {
      const { createQcow2 } = await import('./qcow2/create.js');
      return createQcow2(path, sz, options);
    }
    case 'qcow': {
      const { createQcow } = await import('./qcow/qcow.js');
      const o: Parameters<typeof createQcow>[2] = {};
      if (options.backingFile !== undefined) o.backingFile = options.backingFile;
      if (options.clusterSize !== undefined) o.clusterSize = options.clusterSize;
      return createQcow(path, sz, o);
    }
    default:
      throw new TsvmError(`unknown image format '${String(format)}'`);
  }
}
