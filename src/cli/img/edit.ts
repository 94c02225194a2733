import { rm } from 'node:fs/promises';
import { TsvmError } from '../../base/errors.js';
import {
  type BlockDriver, type ImageFormat, Qcow2Image, RawImage, convertImage, createImage, openImage, resolveBackingPath,
} from '../../block/index.js';
import { copyImage } from '../../block/index.js';
import { backingOf } from './info.js';
import { checkFormat, creationOptions, openForCommand } from './open.js';
import { snapshotTable } from './info.js';
import { parseOnOff, parseOptionList, parseSize } from './units.js';

const CHUNK = 1 << 20;

export async function createCommand(file: string, sizeText: string | undefined, opts: {
  format?: string; backing?: string; backingFormat?: string; options?: string; unsafe: boolean; quiet: boolean;
}): Promise<number> {
  const format = checkFormat(opts.format ?? 'raw', file)!;
  const { options, size: optionSize } = creationOptions(format, opts.options, file);
  if (opts.backing !== undefined) options.backingFile = opts.backing;
  if (opts.backingFormat !== undefined) options.backingFormat = checkFormat(opts.backingFormat, opts.backing ?? file);
  let size = sizeText === undefined ? optionSize : parseSize(sizeText);
  if (options.backingFile !== undefined && options.backingFormat === undefined && format === 'qcow2' && !opts.unsafe) {
    // Like qemu-img 7.2, record the backing file's probed format.
    const backing = await openImage(resolveBackingPath(file, options.backingFile), { readOnly: true });
    options.backingFormat = backing.format;
    size ??= backing.virtualSize;
    await backing.close();
  }
  if (size === undefined && options.backingFile === undefined) throw new TsvmError(`${file}: Image creation needs a size parameter`);
  let shownSize = size;
  if (shownSize === undefined) {
    const backing = await openImage(resolveBackingPath(file, options.backingFile!), { readOnly: true });
    shownSize = backing.virtualSize;
    await backing.close();
  }
  if (!opts.quiet) process.stdout.write(`Formatting '${file}', ${formattingLine(format, Math.ceil(shownSize / 512) * 512, options)}\n`);
  await createImage(file, format, size, options);
  return 0;
}

function formattingLine(format: ImageFormat, size: number, o: Parameters<typeof createImage>[3] = {}): string {
  const backing = (o.backingFile !== undefined ? ` backing_file=${o.backingFile}` : '') + (o.backingFormat !== undefined ? ` backing_fmt=${o.backingFormat}` : '');
  if (format !== 'qcow2') return `fmt=${format} size=${size}${backing}`;
  return `fmt=qcow2 cluster_size=${o.clusterSize ?? 65536} extended_l2=${o.extendedL2 ? 'on' : 'off'} compression_type=zlib size=${size}` +
    `${backing}${o.compat === '0.10' ? ' compat=0.10' : ''} lazy_refcounts=${o.lazyRefcounts ? 'on' : 'off'} refcount_bits=${o.refcountBits ?? 16}`;
}

export async function convertCommand(inputs: string[], output: string, opts: {
  format?: string; outFormat?: string; compress: boolean; progress: boolean; options?: string; backing?: string; noCreate: boolean;
  /** No fsync of the output (cache mode 'unsafe', qemu-img convert's default). */
  unsafe?: boolean;
}): Promise<number> {
  if (inputs.length !== 1) throw new TsvmError('converting several images into one is not supported by this version');
  const outFormat = checkFormat(opts.outFormat ?? 'raw', output)!;
  const src = await openForCommand(inputs[0], opts.format, true);
  let shown = -1;
  const progress = opts.progress ? (done: number, total: number) => {
    const percent = (100 * done) / Math.max(total, 1);
    if (Math.floor(percent) === shown) return;
    shown = Math.floor(percent);
    process.stdout.write(`    (${percent.toFixed(2)}/100%)\r`);
  } : undefined;
  try {
    if (opts.noCreate) {
      const dst = await openImage(output, { format: outFormat, lock: true, unsafe: opts.unsafe === true });
      try {
        await copyInto(src, dst, opts.compress, progress);
      } finally {
        await dst.close();
      }
    } else {
      const { options } = creationOptions(outFormat, opts.options, output);
      if (opts.backing !== undefined) options.backingFile = opts.backing;
      const convertOptions: Parameters<typeof convertImage>[3] = { ...options, compress: opts.compress, unsafe: opts.unsafe === true };
      if (progress) convertOptions.onProgress = progress;
      progress?.(0, 1);
      await convertImage(src, output, outFormat, convertOptions);
    }
    if (progress) process.stdout.write('    (100.00/100%)\n');
  } finally {
    await src.close();
  }
  return 0;
}

async function copyInto(src: BlockDriver, dst: BlockDriver, compress: boolean, progress?: (done: number, total: number) => void): Promise<void> {
  if (compress) throw new TsvmError('-c and -n together are not supported by this version');
  if (dst.virtualSize < src.virtualSize) throw new TsvmError('Target image is smaller than the source');
  // The target's old contents are overwritten, zero ranges included.
  await copyImage(src, dst, progress ? { zeroOverBacking: true, onProgress: progress } : { zeroOverBacking: true });
  await dst.flush();
}

export async function snapshotCommand(file: string, action: { list?: boolean; create?: string; apply?: string; remove?: string }, format?: string): Promise<number> {
  const image = await openForCommand(file, format, action.list === true);
  try {
    if (!(image instanceof Qcow2Image)) throw new TsvmError(`Could not ${action.list ? 'list' : 'change'} snapshots of '${file}': Operation not supported`);
    if (action.list) {
      process.stdout.write(snapshotTable(image.listSnapshots()));
    } else if (action.create !== undefined) {
      if (image.listSnapshots().some((s) => s.name === action.create)) throw new TsvmError(`Could not create snapshot '${action.create}': snapshot name exists`);
      await image.createSnapshot(action.create);
    } else if (action.apply !== undefined) {
      if (!image.listSnapshots().some((s) => s.name === action.apply || s.id === action.apply)) throw new TsvmError(`Could not apply snapshot '${action.apply}': snapshot not found`);
      await image.applySnapshot(action.apply);
    } else if (action.remove !== undefined) {
      if (!image.listSnapshots().some((s) => s.name === action.remove || s.id === action.remove)) throw new TsvmError(`Could not delete snapshot '${action.remove}': snapshot not found`);
      await image.deleteSnapshot(action.remove);
    }
    await image.flush();
  } finally {
    await image.close();
  }
  return 0;
}

export async function resizeCommand(file: string, sizeText: string, opts: { format?: string; shrink: boolean }): Promise<number> {
  const image = await openForCommand(file, opts.format, false);
  try {
    const relative = /^[+-]/.test(sizeText);
    const delta = parseSize(relative ? sizeText.slice(1) : sizeText);
    const size = relative ? image.virtualSize + (sizeText[0] === '-' ? -delta : delta) : delta;
    if (size < 0) throw new TsvmError('New image size must be positive');
    if (size < image.virtualSize && !opts.shrink) {
      throw new TsvmError('Use the --shrink option to perform a shrink operation.');
    }
    if (image instanceof RawImage || image instanceof Qcow2Image) {
      if (image instanceof Qcow2Image && size < image.virtualSize) throw new TsvmError('qcow2 doesn\'t support shrinking images yet');
      await image.resize(size);
    } else {
      throw new TsvmError('Image format driver does not support resize');
    }
    process.stdout.write('Image resized.\n');
  } finally {
    await image.close();
  }
  return 0;
}

export async function rebaseCommand(file: string, opts: { format?: string; backing?: string; backingFormat?: string; unsafe: boolean }): Promise<number> {
  if (opts.backing === undefined) throw new TsvmError('Expecting one image file name');
  const image = await openForCommand(file, opts.format, false);
  try {
    if (!(image instanceof Qcow2Image)) throw new TsvmError(`Could not change the backing file to '${opts.backing}': Operation not supported`);
    await image.rebase(opts.backing === '' ? undefined : opts.backing, opts.backingFormat, opts.unsafe);
  } finally {
    await image.close();
  }
  return 0;
}

/** Writes what the image holds into its backing file; then (without -d) empties the image. */
export async function commitCommand(file: string, opts: { format?: string; drop: boolean }): Promise<number> {
  const top = await openForCommand(file, opts.format, true);
  const backing = backingOf(top);
  if (backing === undefined) {
    await top.close();
    throw new TsvmError('Image does not have a backing file');
  }
  const basePath = resolveBackingPath(file, backing.name);
  const base = await openImage(basePath, backing.format === undefined ? { lock: true } : { lock: true, format: backing.format as ImageFormat });
  const topFormat = top.format;
  let snapshots = 0;
  try {
    if (top instanceof Qcow2Image) snapshots = top.listSnapshots().length;
    for (let off = 0; off < top.virtualSize;) {
      const status = await top.blockStatus(off, Math.min(CHUNK, top.virtualSize - off));
      if (status.allocated) {
        if (status.zero) await base.writeZeroes(off, status.length);
        else await base.write(off, await top.read(off, status.length));
      }
      off += status.length;
    }
    await base.flush();
  } finally {
    await base.close();
    await top.close();
  }
  if (!opts.drop && snapshots === 0) {
    // Emptying the image: a fresh one with the same backing file and layout.
    const old = await openImage(file, { readOnly: true, format: topFormat });
    const size = old.virtualSize;
    const layout = old instanceof Qcow2Image ? old.info() : undefined;
    await old.close();
    await rm(file);
    const options: Parameters<typeof createImage>[3] = { backingFile: backing.name };
    if (backing.format !== undefined) options.backingFormat = backing.format;
    if (layout) Object.assign(options, { clusterSize: layout.clusterSize, compat: layout.compat, refcountBits: layout.refcountBits, lazyRefcounts: layout.lazyRefcounts, extendedL2: layout.extendedL2 });
    await createImage(file, topFormat, size, options);
  }
  process.stdout.write('Image committed.\n');
  return 0;
}

/** `amend -o`: the qcow2 options that can change in place here (lazy_refcounts); others are refused. */
export async function amendCommand(file: string, opts: { format?: string; options: string }): Promise<number> {
  const image = await openForCommand(file, opts.format, false);
  try {
    if (!(image instanceof Qcow2Image)) throw new TsvmError(`Format driver '${image.format}' does not support option amendment`);
    for (const [key, value] of parseOptionList(opts.options)) {
      if (key === 'lazy_refcounts') await image.setLazyRefcounts(parseOnOff(key, value));
      else throw new TsvmError(`Changing '${key}' is not supported by this version (only lazy_refcounts)`);
    }
  } finally {
    await image.close();
  }
  return 0;
}
