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
}

/** Writes everything `src` reads as into a newly created image at `dstPath`; zero ranges stay sparse. */
export async function convertImage(src: BlockDriver, dstPath: string, format: ImageFormat, opts: ConvertOptions = {}): Promise<void> {
  const { compress, onProgress, ...create } = opts;
  if (compress && format !== 'qcow2') throw new TsvmError('compression needs the qcow2 format');
  await createImage(dstPath, format, src.virtualSize, create);
  const dst = await openImage(dstPath, { format });
  try {
    const total = src.virtualSize;
    const unit = dst instanceof Qcow2Image ? Math.max(dst.clusterSize, 1 << 20) : 1 << 20;
    const hasBacking = create.backingFile !== undefined;
    let off = 0;
    while (off < total) {
      const want = Math.min(unit - (off % unit), total - off);
      const st = await src.blockStatus(off, want);
      const n = st.length;
      if (st.zero) {
        if (hasBacking) await dst.writeZeroes(off, n);
      } else {
        const data = await src.read(off, n);
        if (!isZero(data)) {
          if (compress && dst instanceof Qcow2Image) await writeCompressedRange(dst, off, data);
          else await dst.write(off, data);
        } else if (hasBacking) {
          await dst.writeZeroes(off, n);
        }
      }
      off += n;
      onProgress?.(off, total);
    }
    await dst.flush();
  } finally {
    await dst.close();
  }
}

/** Compressed writes need whole clusters: write the unaligned edges normally. */
async function writeCompressedRange(dst: Qcow2Image, off: number, data: Uint8Array): Promise<void> {
  const cs = dst.clusterSize, end = off + data.length;
  const a = Math.min(end, Math.ceil(off / cs) * cs);
  let b = Math.max(a, Math.floor(end / cs) * cs);
  if (end === dst.virtualSize) b = end;
  if (a > off) await dst.write(off, data.subarray(0, a - off));
  if (b > a) await dst.writeCompressed(a, data.subarray(a - off, b - off));
  if (end > b) await dst.write(b, data.subarray(b - off));
}
