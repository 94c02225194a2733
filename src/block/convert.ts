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

/** Bytes per request, and requests in flight, of the asynchronous copy (as qemu-img: 2 MiB buffers, several at once). */
const CHUNK = 2 << 20;
const PARALLEL = 8;
/** The pipelined copy reads into a ring of RING buffers of PIECE bytes (or a destination cluster, if larger). */
const PIECE = 512 << 10;
const RING = 4;
/** Destination requests of the pipelined copy in flight at once. */
const WRITE_DEPTH = 2;
/** The pipelined copy lets the event loop run after this many bytes (a source of holes writes nothing). */
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
 * Copies `src` into `dst` (at least as big), CHUNK bytes at a time; ranges the source reports as zero
 * are not read, and zero blocks (destination clusters, 4 KiB for other formats) are not written.
 * A source with synchronous reads (readSync) is copied as a pipeline: this thread reads (and looks for
 * zero blocks) while the previous pieces are written on the thread pool, WRITE_DEPTH at a time, through
 * a small ring of buffers. Otherwise, and for compression and -S, PARALLEL chunks are copied at once
 * through the drivers' asynchronous calls.
 */
export async function copyImage(src: BlockDriver, dst: BlockDriver, opts: CopyOptions = {}): Promise<void> {
  const total = src.virtualSize;
  const qcow2 = dst.format === 'qcow2' ? dst as Qcow2Image : undefined;
  const unit = qcow2 ? qcow2.clusterSize : 4096;
  const chunk = Math.max(CHUNK, unit);
  const compress = opts.compress === true && qcow2 !== undefined;
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
   * The units of [off, end) with data in them, as [start, end) pairs, from the source's block status (a
   * zero stretch is not read; a unit with any data is judged, and written, as a whole, zeroes included,
   * as qemu-img does).
   */
  const dataUnits = async (off: number, end: number): Promise<number[]> => {
    const ranges: number[] = [];
    for (let pos = off; pos < end;) {
      const s = src.blockStatusSync?.(pos, end - pos) ?? await src.blockStatus(pos, end - pos);
      if (!s.zero) {
        const a = Math.max(off, Math.floor(pos / unit) * unit), b = Math.min(end, Math.ceil((pos + s.length) / unit) * unit);
        if (ranges.length > 0 && ranges[ranges.length - 1]! >= a) ranges[ranges.length - 1] = b;
        else ranges.push(a, b);
      }
      pos += s.length;
    }
    return ranges;
  };

  /** The asynchronous copy of [off, off + n), in a worker's buffer. */
  const copyChunk = async (off: number, n: number, worker: { buf?: Uint8Array }): Promise<void> => {
    const buf = (worker.buf ??= new Uint8Array(chunk)).subarray(0, n);
    if (minSparse !== undefined) return copySparseChunk(off, n, buf, minSparse);
    const end = off + n;
    const writes: Promise<void>[] = [];
    const ranges = await dataUnits(off, end);
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

  if (compress || minSparse !== undefined || src.readSync === undefined) {
    let next = 0, done = 0;
    let failure: { e: unknown } | undefined;
    const worker = async (): Promise<void> => {
      const state: { buf?: Uint8Array } = {};
      while (next < total && failure === undefined) {
        const off = next;
        const n = Math.min(chunk - (off % chunk), total - off);
        next = off + n;
        try {
          await copyChunk(off, n, state);
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
    return;
  }

  // The pipeline. Requests to the destination (writes, zeroes, progress reports) start in order, at
  // most WRITE_DEPTH at a time: buffered writes to one file serialize in the kernel, but a second one
  // waiting there starts the moment the first ends instead of after this thread's next turn. A ring
  // buffer is read into again only once the writes from it have finished. This thread waits only for
  // a free buffer or a free request, so the event loop (which completes the writes) gets a turn
  // whenever the writes fall behind. After a failure no further request starts.
  const inFlight = new Set<Promise<void>>();
  let failure: { e: unknown } | undefined;
  /**
   * Starts `job` as soon as fewer than WRITE_DEPTH requests run (at once if that is now, so the write
   * reaches the thread pool before the next read), unless a request has failed; the request, which
   * never rejects, goes into `writes` (a ring buffer's) if given.
   */
  const start = async (job: () => unknown, writes?: Promise<void>[]): Promise<void> => {
    while (inFlight.size >= WRITE_DEPTH) await Promise.race(inFlight);
    if (failure) return;
    const request: Promise<void> = (async () => { await job(); })()
      .catch((e: unknown) => { failure ??= { e }; })
      .finally(() => inFlight.delete(request));
    inFlight.add(request);
    writes?.push(request);
  };
  const size = Math.max(PIECE, unit);
  const ring = Array.from({ length: RING }, () => ({ buf: new Uint8Array(size), writes: [] as Promise<void>[] }));
  let turn = 0, sinceYield = 0;
  try {
    for (let off = 0; off < total && !failure;) {
      const end = Math.min(off + chunk - (off % chunk), total);
      const ranges = await dataUnits(off, end);
      for (let i = 0, pos = off; i <= ranges.length && !failure; i += 2) {
        const a0 = i < ranges.length ? ranges[i]! : end, b0 = i < ranges.length ? ranges[i + 1]! : end;
        if (a0 > pos && opts.zeroOverBacking) {
          const at = pos;
          await start(() => dst.writeZeroes(at, a0 - at));
        }
        pos = b0;
        for (let a = a0, b = a; a < b0 && !failure; a = b) {
          b = Math.min(b0, (Math.floor(a / size) + 1) * size);
          const slot = ring[turn++ % RING]!;
          await Promise.all(slot.writes);
          slot.writes.length = 0;
          if (failure) break;
          const data = slot.buf.subarray(0, b - a), at = a;
          if (!src.readSync(a, data)) await read(a, data);
          const runs: [number, number, boolean][] = [];
          eachRun(data, a, (p, q, zero) => {
            runs.push([p, q, zero]);
            return true;
          });
          for (const [p, q, zero] of runs) {
            if (!zero) await start(() => dst.write(at + p, data.subarray(p, q)), slot.writes);
            else if (opts.zeroOverBacking) await start(() => dst.writeZeroes(at + p, q - p), slot.writes);
          }
        }
      }
      if (opts.onProgress) await start(() => opts.onProgress!(end, total));
      sinceYield += end - off;
      off = end;
      if (sinceYield >= YIELD_EVERY) {
        sinceYield = 0;
        await new Promise((r) => setImmediate(r));
      }
    }
  } finally {
    await Promise.all(inFlight);
  }
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
