/** Copying a disk's contents into a new image (like `qemu-img convert`, flattening backing chains). */
import { TsvmError } from '../base/errors.js';
import { type BlockDriver, type CreateImageOptions, type ImageFormat, createImage, openImage } from './block-driver.js';
import { Qcow2Image } from './qcow2/qcow2.js';
import { isZero } from './util.js';

export interface ConvertOptions extends CreateImageOptions {
  /** qcow2 only: write compressed clusters. */
  compress?: boolean;
  /** Progress callback: bytes done, total. */
  onProgress?: (done: number, total: number) => void;
  /** Do not fsync the output (qemu-img convert's default cache mode, 'unsafe'). */
  unsafe?: boolean;
}

/** Bytes per request, and requests in flight (as qemu-img: 2 MiB buffers, several at once). */
const CHUNK = 2 << 20;
const PARALLEL = 8;

/** Writes everything `src` reads as into a newly created image at `dstPath`; zero ranges stay sparse. */
export async function convertImage(src: BlockDriver, dstPath: string, format: ImageFormat, opts: ConvertOptions = {}): Promise<void> {
  const { compress, onProgress, unsafe, ...create } = opts;
  if (compress && format !== 'qcow2') throw new TsvmError('compression needs the qcow2 format');
  await createImage(dstPath, format, src.virtualSize, create);
  const dst = await openImage(dstPath, { format, unsafe: unsafe === true });
  try {
    const copy: CopyOptions = { compress: compress === true, zeroOverBacking: create.backingFile !== undefined };
    if (onProgress) copy.onProgress = onProgress;
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
}

/**
 * Copies `src` into `dst` (at least as big): PARALLEL requests of CHUNK bytes in flight; ranges the
 * source reports as zero are not read, and zero blocks (destination clusters, 4 KiB for other formats)
 * are not written.
 */
export async function copyImage(src: BlockDriver, dst: BlockDriver, opts: CopyOptions = {}): Promise<void> {
  const total = src.virtualSize;
  const qcow2 = dst instanceof Qcow2Image ? dst : undefined;
  const unit = qcow2 ? qcow2.clusterSize : 4096;
  const chunk = Math.max(CHUNK, unit);
  const compress = opts.compress === true && qcow2 !== undefined;
  let next = 0, done = 0;
  let failure: { e: unknown } | undefined;

  const copyChunk = async (off: number, n: number, buf: Uint8Array): Promise<void> => {
    let pos = off;
    while (pos < off + n) {
      const st = await src.blockStatus(pos, off + n - pos);
      if (!st.zero) break;
      pos += st.length;
    }
    const writes: Promise<void>[] = [];
    if (pos === off + n) {
      if (opts.zeroOverBacking) writes.push(dst.writeZeroes(off, n));
    } else {
      let data: Uint8Array;
      if (src.readInto) {
        data = buf.subarray(0, n);
        await src.readInto(off, data);
      } else {
        data = await src.read(off, n);
      }
      let p = 0;
      while (p < n) {
        const unitEnd = (q: number) => Math.min(n, (Math.floor((off + q) / unit) + 1) * unit - off);
        let q = unitEnd(p);
        const zero = isZero(data.subarray(p, q));
        while (q < n) {
          const e = unitEnd(q);
          if (isZero(data.subarray(q, e)) !== zero) break;
          q = e;
        }
        if (!zero) {
          const part = data.subarray(p, q);
          writes.push(compress ? writeCompressedRange(qcow2!, off + p, part) : dst.write(off + p, part));
        } else if (opts.zeroOverBacking) {
          writes.push(dst.writeZeroes(off + p, q - p));
        }
        p = q;
      }
    }
    const rs = await Promise.allSettled(writes);
    for (const r of rs) if (r.status === 'rejected') throw r.reason;
  };

  const worker = async (): Promise<void> => {
    const buf = new Uint8Array(chunk);
    while (next < total && failure === undefined) {
      const off = next;
      const n = Math.min(chunk - (off % chunk), total - off);
      next = off + n;
      try {
        await copyChunk(off, n, buf);
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
