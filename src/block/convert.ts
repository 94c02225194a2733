/** Copying a disk's contents into a new image (like `qemu-img convert`, flattening backing chains). */
import { TsvmError } from '../base/errors.js';
import { type BlockDriver, type BlockStatus, type CreateImageOptions, type ImageFormat, createImage, openImage } from './block-driver.js';
import type { Qcow2Image } from './qcow2/qcow2.js';
import { isZero, zeroRuns } from './util.js';

export interface ConvertOptions extends CreateImageOptions {
  /** qcow2 only: write compressed clusters. */
  compress?: boolean;
  /** Progress callback: bytes done, total. */
  onProgress?: (done: number, total: number) => void;
  /** Do not fsync the output (qemu-img convert's default cache mode, 'unsafe'). */
  unsafe?: boolean;
  /** qemu-img convert -S: see CopyOptions.minSparse. */
  minSparse?: number;
}

/** Bytes per request, and requests in flight (as qemu-img: 2 MiB buffers, several at once). */
const CHUNK = 2 << 20;
const PARALLEL = 8;
/** Synchronous copies go through a buffer of this size (or a destination cluster, if larger). */
const SYNC_PIECE = 512 << 10;
/** Synchronous copying lets the event loop run after this many bytes. */
const YIELD_EVERY = 64 << 20;

/** Writes everything `src` reads as into a newly created image at `dstPath`; zero ranges stay sparse. */
export async function convertImage(src: BlockDriver, dstPath: string, format: ImageFormat, opts: ConvertOptions = {}): Promise<void> {
  const { compress, onProgress, unsafe, minSparse, ...create } = opts;
  if (compress && format !== 'qcow2') throw new TsvmError('compression needs the qcow2 format');
  await createImage(dstPath, format, src.virtualSize, create);
  const dst = await openImage(dstPath, { format, unsafe: unsafe === true });
  try {
    const copy: CopyOptions = { compress: compress === true, zeroOverBacking: create.backingFile !== undefined };
    if (onProgress) copy.onProgress = onProgress;
    if (minSparse !== undefined) copy.minSparse = minSparse;
    await copyImage(src, dst, copy);
    await dst.flush();
  } finally {
    await dst.close();
  }
}

export interface CopyOptions {
  /** Write compressed clusters (qcow2 destinations). */
  compress?: boolean;
  /** Zero ranges are written as zeroes (the destination has a backing file) instead of skipped. */
  zeroOverBacking?: boolean;
  onProgress?: (done: number, total: number) => void;
  /**
   * qemu-img convert -S: the shortest run of zero bytes (a multiple of 512) left unwritten inside data
   * the source reports; 0 writes everything, zeroes included (a fully allocated output). Unset: zero
   * blocks (destination clusters, 4 KiB for other formats) are not written. Ignored when compressing.
   */
  minSparse?: number;
}

/**
 * Copies `src` into `dst` (at least as big): PARALLEL requests of CHUNK bytes in flight; ranges the
 * source reports as zero are not read, and zero blocks (destination clusters, 4 KiB for other formats)
 * are not written. Plain data goes through the drivers' synchronous fast paths (readSync/writeSync)
 * where they can take it: one pread and one pwrite per stretch, no thread-pool round trips.
 */
export async function copyImage(src: BlockDriver, dst: BlockDriver, opts: CopyOptions = {}): Promise<void> {
  const total = src.virtualSize;
  const qcow2 = dst.format === 'qcow2' ? dst as Qcow2Image : undefined;
  const unit = qcow2 ? qcow2.clusterSize : 4096;
  const chunk = Math.max(CHUNK, unit);
  const compress = opts.compress === true && qcow2 !== undefined;
  let next = 0, done = 0;
  let failure: { e: unknown } | undefined;

  const minSparse = compress ? undefined : opts.minSparse;
  const read = async (off: number, data: Uint8Array): Promise<void> => {
    if (src.readInto) await src.readInto(off, data);
    else data.set(await src.read(off, data.length));
  };
  /**
   * -S: each stretch the source reports as data is split into data and zero runs as qemu-img does; a
   * qcow2 destination gets whole clusters (as QEMU's allocating writes fill the rest of a new cluster).
   */
  const copySparseChunk = async (off: number, n: number, buf: Uint8Array, min: number): Promise<void> => {
    const data = buf.subarray(0, n);
    await read(off, data);
    const ranges: [number, number][] = [];
    const add = (a: number, b: number) => {
      if (qcow2) {
        a = Math.max(0, Math.floor(a / unit) * unit);
        b = Math.min(n, Math.ceil(b / unit) * unit);
      }
      const last = ranges[ranges.length - 1];
      if (last && last[1] >= a) last[1] = Math.max(last[1], b);
      else ranges.push([a, b]);
    };
    for (let pos = 0; pos < n;) {
      const st = await src.blockStatus(off + pos, n - pos);
      if (min === 0) {
        add(pos, pos + st.length);
      } else if (!st.zero) {
        for (let p = pos; p < pos + st.length;) {
          const run = sparseRun(data.subarray(p, pos + st.length), off + p, min);
          if (run.data) add(p, p + run.length);
          p += run.length;
        }
      }
      pos += st.length;
    }
    const writes: Promise<void>[] = [];
    let done = 0;
    for (const [a, b] of ranges) {
      if (a > done && opts.zeroOverBacking) writes.push(dst.writeZeroes(off + done, a - done));
      writes.push(dst.write(off + a, data.subarray(a, b)));
      done = b;
    }
    if (n > done && opts.zeroOverBacking) writes.push(dst.writeZeroes(off + done, n - done));
    const rs = await Promise.allSettled(writes);
    for (const r of rs) if (r.status === 'rejected') throw r.reason;
  };

  /** Runs of whole zero units (destination clusters, aligned on the disk) in `data` (at disk offset `at`). */
  const eachRun = (data: Uint8Array, at: number, fn: (p: number, q: number, zero: boolean) => boolean): boolean =>
    zeroRuns(data, at, unit, fn);

  /**
   * The units of [off, end) with data in them, as [start, end) pairs (zero stretches are not read; a
   * unit with any data is judged, and written, as a whole, zeroes included, as qemu-img does), from
   * the statuses `st` gives. When it gives none, or with `stopAtZero` a zero stretch, the pairs end at
   * the unit boundary returned as `stop`.
   */
  const dataUnits = (off: number, end: number, st: (pos: number) => BlockStatus | undefined, stopAtZero: boolean): { ranges: number[]; stop: number } => {
    const ranges: number[] = [];
    let pos = off;
    for (; pos < end;) {
      const s = st(pos);
      if (s === undefined || (s.zero && stopAtZero)) break;
      if (!s.zero) {
        const a = Math.max(off, Math.floor(pos / unit) * unit), b = Math.min(end, Math.ceil((pos + s.length) / unit) * unit);
        if (ranges.length > 0 && ranges[ranges.length - 1]! >= a) ranges[ranges.length - 1] = b;
        else ranges.push(a, b);
      }
      pos += s.length;
    }
    const stop = pos >= end ? end : Math.max(off, Math.floor(pos / unit) * unit);
    for (let i = ranges.length - 2; i >= 0 && ranges[i + 1]! > stop; i -= 2) {
      if (ranges[i]! >= stop) ranges.length = i;
      else ranges[i + 1] = stop;
    }
    return { ranges, stop };
  };

  /**
   * The synchronous copy (readSync/writeSync/blockStatusSync): one buffer (small: fresh memory costs
   * page faults) and no awaits. Copies [off, end) as far as the drivers allow and returns where it
   * stopped (a unit boundary): `end`, or where a request needs the asynchronous path.
   */
  const scratch = new Uint8Array(Math.min(Math.max(SYNC_PIECE, unit), chunk));
  const copySync = (off: number, end: number): number => {
    // Zero stretches over a backing file need writeZeroes: the asynchronous path.
    const { ranges, stop } = dataUnits(off, end, (pos) => src.blockStatusSync!(pos, end - pos), opts.zeroOverBacking === true);
    for (let i = 0; i < ranges.length; i += 2) {
      for (let a = ranges[i]!, b = a; a < ranges[i + 1]!; a = b) {
        b = Math.min(ranges[i + 1]!, (Math.floor(a / scratch.length) + 1) * scratch.length);
        const data = scratch.subarray(0, b - a);
        if (!src.readSync!(a, data)) return a;
        let failed = -1;
        eachRun(data, a, (p, q, zero) => {
          if (zero ? opts.zeroOverBacking : !dst.writeSync!(a + p, data.subarray(p, q))) failed = a + p;
          return failed < 0;
        });
        if (failed >= 0) return failed;
      }
    }
    return stop;
  };
  const canSync = !compress && minSparse === undefined && src.blockStatusSync !== undefined && src.readSync !== undefined &&
    dst.writeSync !== undefined;

  /** The asynchronous copy of [off, off + n), in a worker's buffer. */
  const copyChunk = async (off: number, n: number, worker: { buf?: Uint8Array }): Promise<void> => {
    const buf = (worker.buf ??= new Uint8Array(chunk)).subarray(0, n);
    if (minSparse !== undefined) return copySparseChunk(off, n, buf, minSparse);
    const end = off + n;
    const writes: Promise<void>[] = [];
    const statuses: BlockStatus[] = [];
    for (let pos = off; pos < end;) {
      const st = await src.blockStatus(pos, end - pos);
      statuses.push(st);
      pos += st.length;
    }
    let k = 0;
    const { ranges } = dataUnits(off, end, () => statuses[k++], false);
    for (let i = 0, pos = off; i <= ranges.length; i += 2) {
      const a = i < ranges.length ? ranges[i]! : end, b = i < ranges.length ? ranges[i + 1]! : end;
      if (a > pos && opts.zeroOverBacking) writes.push(dst.writeZeroes(pos, a - pos));
      pos = b;
      if (a === b) continue;
      const data = buf.subarray(a - off, b - off);
      await read(a, data);
      eachRun(data, a, (p, q, zero) => {
        if (!zero) writes.push(compress ? writeCompressedRange(qcow2!, a + p, data.subarray(p, q)) : dst.write(a + p, data.subarray(p, q)));
        else if (opts.zeroOverBacking) writes.push(dst.writeZeroes(a + p, q - p));
        return true;
      });
    }
    const rs = await Promise.allSettled(writes);
    for (const r of rs) if (r.status === 'rejected') throw r.reason;
  };

  let sinceYield = 0;
  let slowPiece: Promise<void> | undefined;
  const slowState: { buf?: Uint8Array } = {};
  const worker = async (): Promise<void> => {
    const state: { buf?: Uint8Array } = {};
    while (next < total && failure === undefined) {
      const off = next;
      const n = Math.min(chunk - (off % chunk), total - off);
      next = off + n;
      try {
        const end = off + n;
        if (!canSync) {
          await copyChunk(off, n, state);
        } else {
          // Synchronously but for the pieces the drivers cannot do so (say, the first write into a
          // new L2 table): those take the asynchronous path, one at a time (the others would most
          // likely have to wait for the same thing), in one buffer.
          for (let pos = off; pos < end;) {
            while (slowPiece !== undefined) await slowPiece;
            pos = copySync(pos, end);
            if (pos >= end) break;
            const stop = Math.min(end, (Math.floor(pos / scratch.length) + 1) * scratch.length);
            let release!: () => void;
            slowPiece = new Promise((r) => { release = r; });
            try {
              await copyChunk(pos, stop - pos, slowState);
            } finally {
              slowPiece = undefined;
              release();
            }
            pos = stop;
          }
          if ((sinceYield += n) >= YIELD_EVERY) {
            // Synchronous copying does not give the event loop a turn (progress output, signals).
            sinceYield = 0;
            await new Promise((r) => setImmediate(r));
          }
        }
      } catch (e) {
        failure ??= { e };
        return;
      }
      done += n;
      opts.onProgress?.(done, total);
    }
  };
  await Promise.all(Array.from({ length: PARALLEL }, worker));
  if (failure) throw failure.e;
}

/** Compressed writes need whole clusters: write the unaligned edges normally. */
async function writeCompressedRange(dst: Qcow2Image, off: number, data: Uint8Array): Promise<void> {
  const cs = dst.clusterSize, end = off + data.length;
  const a = Math.min(end, Math.ceil(off / cs) * cs);
  let b = Math.max(a, Math.floor(end / cs) * cs);
  if (end === dst.virtualSize) b = end;
  const writes: Promise<void>[] = [];
  if (a > off) writes.push(dst.write(off, data.subarray(0, a - off)));
  if (b > a) writes.push(dst.writeCompressed(a, data.subarray(a - off, b - off)));
  if (end > b) writes.push(dst.write(b, data.subarray(b - off)));
  const rs = await Promise.allSettled(writes);
  for (const r of rs) if (r.status === 'rejected') throw r.reason;
}

const SECTOR = 512;

/**
 * The run at the start of `data` (at image offset `off`), judged as qemu-img convert -S does:
 * sectors are data or zero; a zero stretch counts as a hole only if it is at least `min` bytes long
 * (or all of `data`), and stretch ends are moved to multiples of `align` (the largest power of two
 * <= min): data ends are rounded up, hole ends down, and a hole that would vanish is data. A run that
 * starts as data goes on over holes shorter than `min`.
 */
export function sparseRun(data: Uint8Array, off: number, min: number): { data: boolean; length: number } {
  const n = data.length;
  const align = Math.max(SECTOR, 2 ** Math.floor(Math.log2(Math.max(min, 1))));
  const minLen = Math.min(min, n);
  const stretch = (p: number): { data: boolean; length: number } => {
    const zero = isZero(data.subarray(p, Math.min(n, p + SECTOR)));
    let q = p + SECTOR;
    while (q < n && isZero(data.subarray(q, Math.min(n, q + SECTOR))) === zero) q += SECTOR;
    q = Math.min(q, n);
    if (q === n) return { data: !zero, length: q - p };
    const tail = (off + q) % align;
    let isData = !zero;
    if (tail !== 0) {
      if (!isData && q - p <= tail) isData = true;
      q = isData ? Math.min(n, q + align - tail) : q - tail;
    }
    return { data: isData, length: q - p };
  };
  const first = stretch(0);
  if (!first.data) return first;
  let used = first.length, checked = first.length;
  while (checked < n) {
    const s = stretch(checked);
    checked += s.length;
    if (s.data) used = checked;
    else if (s.length >= minLen) break;
  }
  return { data: true, length: used };
}
