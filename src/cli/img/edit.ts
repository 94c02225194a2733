import { realpath, rm } from 'node:fs/promises';
import { resolve } from 'node:path';
import { TsvmError } from '../../base/errors.js';
import {
  type BlockDriver, type ImageFormat, Qcow2Image, QcowImage, RawImage, createImage, openImage, resolveBackingPath,
} from '../../block/index.js';
import { backingOf } from './info.js';
import { isZero } from '../../block/util.js';
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

export { convertCommand } from './convert.js';

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
    if (size <= 0) throw new TsvmError('New image size must be positive');
    if (size < image.virtualSize && !opts.shrink) {
      process.stderr.write('tsvm-img: Use the --shrink option to perform a shrink operation.\n');
      throw new TsvmError('warning: Shrinking an image will delete all data beyond the shrunken image\'s end. Before performing such an operation, make sure there is no important data there.');
    }
    if (!(image instanceof RawImage || image instanceof Qcow2Image)) throw new TsvmError('Image format driver does not support resize');
    if (image instanceof Qcow2Image) {
      if (image.listSnapshots().length > 0 && image.info().version < 3) throw new TsvmError('Can\'t resize a v2 image which has snapshots');
      if (size % 512 !== 0) throw new TsvmError('The new size must be a multiple of 512');
    }
    if (image instanceof Qcow2Image) await image.resize(size, { shrink: true });
    else await image.resize(size);
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

/** One image of a backing chain: its driver, file and how its parent names it. */
interface ChainLink { driver: BlockDriver; path: string; name: string; format?: string }

function backingDriverOf(d: BlockDriver): BlockDriver | undefined {
  return d instanceof Qcow2Image || d instanceof QcowImage ? d.backingDriver : undefined;
}

async function realOrSelf(path: string): Promise<string> {
  try {
    return await realpath(path);
  } catch {
    return resolve(path);
  }
}

/**
 * Writes what the image holds into an image of its backing chain: its backing file, or with -b BASE
 * the named one (everything the images above BASE hold). Then, without -d or -b, empties the image.
 * A base smaller than the image is grown first, as qemu-img does.
 */
export async function commitCommand(file: string, opts: { format?: string; drop: boolean; base?: string }): Promise<number> {
  const top = await openForCommand(file, opts.format, true);
  const chain: ChainLink[] = [{ driver: top, path: file, name: file }];
  for (let d: BlockDriver | undefined = top; d !== undefined;) {
    const b = backingOf(d);
    const next = backingDriverOf(d);
    if (b === undefined || next === undefined) break;
    chain.push({ driver: next, path: resolveBackingPath(chain[chain.length - 1]!.path, b.name), name: b.name, ...(b.format !== undefined && { format: b.format }) });
    d = next;
  }
  let baseIndex = 1;
  if (chain.length < 2) {
    await top.close();
    throw new TsvmError('Image does not have a backing file');
  }
  if (opts.base !== undefined) {
    // Like QEMU: the name as stored in the chain, or the same file (a relative name is taken relative to
    // the directory of each image that names its backing file).
    baseIndex = -1;
    for (let k = 1; k < chain.length && baseIndex < 0; k++) {
      if (chain[k]!.name === opts.base) baseIndex = k;
      else if (await realOrSelf(resolveBackingPath(chain[k - 1]!.path, opts.base)) === await realOrSelf(chain[k]!.path)) baseIndex = k;
    }
    if (baseIndex < 0) {
      await top.close();
      throw new TsvmError(`Did not find '${opts.base}' in the backing chain of '${file}'`);
    }
  }
  const link = chain[baseIndex]!;
  const drop = opts.drop || opts.base !== undefined;
  const topFormat = top.format;
  let snapshots = 0;
  let base: BlockDriver | undefined;
  try {
    base = await openImage(link.path, link.format === undefined ? { lock: true } : { lock: true, format: link.format as ImageFormat });
    if (top instanceof Qcow2Image) snapshots = top.listSnapshots().length;
    if (base.virtualSize < top.virtualSize) {
      if (base instanceof Qcow2Image || base instanceof RawImage) await base.resize(top.virtualSize);
      else throw new TsvmError('Image format driver does not support resize');
    }
    const above = chain.slice(0, baseIndex).map((l) => l.driver);
    for (let off = 0; off < top.virtualSize;) {
      let n = Math.min(CHUNK, top.virtualSize - off), allocated = false;
      for (const d of above) {
        if (off >= d.virtualSize) continue;
        const st = await d.blockStatus(off, Math.min(n, d.virtualSize - off));
        n = Math.min(n, st.length);
        if (st.allocated) allocated = true;
      }
      if (allocated) {
        const data = await top.read(off, n);
        if (isZero(data)) await base.writeZeroes(off, n);
        else await base.write(off, data);
      }
      off += n;
    }
    await base.flush();
  } finally {
    await base?.close();
    await top.close();
  }
  if (!drop && snapshots === 0) {
    // Emptying the image: a fresh one with the same backing file and layout.
    const old = await openImage(file, { readOnly: true, format: topFormat });
    const size = old.virtualSize;
    const layout = old instanceof Qcow2Image ? old.info() : undefined;
    await old.close();
    await rm(file);
    const options: Parameters<typeof createImage>[3] = { backingFile: link.name };
    if (link.format !== undefined) options.backingFormat = link.format;
    if (layout) Object.assign(options, { clusterSize: layout.clusterSize, compat: layout.compat, refcountBits: layout.refcountBits, lazyRefcounts: layout.lazyRefcounts, extendedL2: layout.extendedL2 });
    await createImage(file, topFormat, size, options);
  }
  process.stdout.write('Image committed.\n');
  return 0;
}

const AMENDABLE = ['compat', 'lazy_refcounts', 'refcount_bits', 'size', 'backing_file', 'backing_fmt', 'data_file', 'data_file_raw'];

/**
 * `amend -o` for qcow2, with qemu-img's checks and messages: compat (0.10/v2, 1.1/v3), lazy_refcounts,
 * size (grows or shrinks), backing_file/backing_fmt only unchanged; refcount_bits only unchanged here.
 * Applied as QEMU does: upgrade first, then the other changes, downgrade last.
 */
export async function amendCommand(file: string, opts: { format?: string; options: string }): Promise<number> {
  const image = await openForCommand(file, opts.format, false);
  try {
    if (!(image instanceof Qcow2Image)) throw new TsvmError(`Format driver '${image.format}' does not support option amendment`);
    const o = parseOptionList(opts.options);
    for (const key of o.keys()) {
      if (AMENDABLE.includes(key)) continue;
      // (qemu-img adds "This option is only supported for image creation" on a second line)
      throw new TsvmError(`Invalid parameter '${key}'`);
    }
    const info = image.info();
    let version = info.version;
    const compat = o.get('compat');
    if (compat !== undefined) {
      if (compat === '0.10' || compat === 'v2') version = 2;
      else if (compat === '1.1' || compat === 'v3') version = 3;
      else throw new TsvmError(`Unknown compatibility level ${compat}`);
    }
    const lazy = o.has('lazy_refcounts') ? parseOnOff('lazy_refcounts', o.get('lazy_refcounts')!) : undefined;
    let refBits: number | undefined;
    if (o.has('refcount_bits')) {
      refBits = Number(o.get('refcount_bits'));
      if (!/^\d+$/.test(o.get('refcount_bits')!) || ![1, 2, 4, 8, 16, 32, 64].includes(refBits)) {
        throw new TsvmError('Refcount width must be a power of two and may not exceed 64 bits');
      }
    }
    const size = o.has('size') ? parseSize(o.get('size')!) : undefined;
    if (o.has('backing_file') || o.has('backing_fmt')) {
      if (o.get('backing_file') !== info.backingFile || o.get('backing_fmt') !== info.backingFormat) {
        // (qemu-img adds "You can use 'qemu-img rebase' instead." on a second line)
        throw new TsvmError('Cannot amend the backing file');
      }
    }
    if (o.has('data_file')) throw new TsvmError('data-file can only be set for images that use an external data file');
    if (o.has('data_file_raw')) throw new TsvmError('data-file-raw cannot be set on existing images');
    if (lazy === true && version < 3) {
      throw new TsvmError('Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)');
    }
    if (refBits !== undefined && refBits !== 16 && version < 3) {
      throw new TsvmError('Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)');
    }
    if (refBits !== undefined && refBits !== info.refcountBits) {
      throw new TsvmError(`Changing refcount_bits (${info.refcountBits} to ${refBits}) is not supported by this version; use convert -o refcount_bits=${refBits}`);
    }
    if (size !== undefined && size !== image.virtualSize && info.snapshots.length > 0 && info.version < 3 && version < 3) {
      throw new TsvmError('Can\'t resize a v2 image which has snapshots');
    }
    if (version > info.version) await image.setCompat('1.1');
    if (lazy !== undefined && lazy !== info.lazyRefcounts) await image.setLazyRefcounts(lazy);
    if (size !== undefined && size !== image.virtualSize) {
      if (size % 512 !== 0) throw new TsvmError('The new size must be a multiple of 512');
      await image.resize(size, { shrink: true });
    }
    if (version < info.version) await image.setCompat('0.10');
    await image.flush();
  } finally {
    await image.close();
  }
  return 0;
}
