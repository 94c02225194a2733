import { stat } from 'node:fs/promises';
import { TsvmError } from '../../base/errors.js';
import { type BlockDriver, type ImageFormat, type CreateImageOptions, openImage } from '../../block/block-driver.js';
import { parseOnOff, parseOptionList, parseSize } from './units.js';

const FORMATS: readonly ImageFormat[] = ['raw', 'qcow2', 'qcow'];

export function checkFormat(name: string | undefined, file: string): ImageFormat | undefined {
  if (name === undefined) return undefined;
  if (!(FORMATS as readonly string[]).includes(name)) throw new TsvmError(`${file}: Unknown file format '${name}'`);
  return name as ImageFormat;
}

/** -U (--force-share): read-only opens take no locks, so images in use by a VM can be inspected. */
let forceShare = false;

export function setForceShare(share: boolean): void {
  forceShare = share;
}

/** Opens an image as qemu-img does for a command (locked unless -U on a read-only open), with its error wording. */
export async function openForCommand(file: string, format: string | undefined, readOnly: boolean): Promise<BlockDriver> {
  try {
    await stat(file);
  } catch {
    throw new TsvmError(`Could not open '${file}': No such file or directory`);
  }
  const fmt = checkFormat(format, file);
  const lock = !(readOnly && forceShare);
  return openImage(file, fmt === undefined ? { readOnly, lock } : { readOnly, lock, format: fmt });
}

/** Bytes the file takes on disk (qemu-img's "disk size", JSON "actual-size"). */
export async function diskUsage(file: string): Promise<number> {
  return (await stat(file)).blocks * 512;
}

/** The `-o` options of create/convert/amend, checked against what `format` takes. */
export function creationOptions(format: ImageFormat, text: string | undefined, file: string): { options: CreateImageOptions; size?: number } {
  const options: CreateImageOptions = {};
  let size: number | undefined;
  if (text === undefined) return { options };
  const allowed: Record<ImageFormat, string[]> = {
    raw: ['size', 'preallocation'],
    qcow: ['size', 'backing_file', 'backing_fmt', 'encryption'],
    qcow2: ['size', 'compat', 'backing_file', 'backing_fmt', 'cluster_size', 'preallocation', 'lazy_refcounts',
      'refcount_bits', 'extended_l2', 'compression_type'],
  };
  for (const [key, value] of parseOptionList(text)) {
    if (!allowed[format].includes(key)) throw new TsvmError(`${file}: Invalid parameter '${key}'`);
    switch (key) {
      case 'size': size = parseSize(value); break;
      case 'compat':
        if (value === '0.10' || value === 'v2') options.compat = '0.10';
        else if (value === '1.1' || value === 'v3') options.compat = '1.1';
        else throw new TsvmError(`${file}: Invalid parameter '${value}'`);
        break;
      case 'backing_file': options.backingFile = value; break;
      case 'backing_fmt': options.backingFormat = value; break;
      case 'cluster_size': options.clusterSize = parseSize(value); break;
      case 'lazy_refcounts': options.lazyRefcounts = parseOnOff(key, value); break;
      case 'extended_l2': options.extendedL2 = parseOnOff(key, value); break;
      case 'refcount_bits': options.refcountBits = Number(value); break;
      case 'preallocation':
        if (value !== 'off') throw new TsvmError(`${file}: preallocation=${value} is not supported by this version (use off)`);
        break;
      case 'compression_type':
        if (value !== 'zlib') throw new TsvmError(`${file}: compression_type=${value} is not supported (zlib only)`);
        break;
      case 'encryption':
        if (value !== 'off') throw new TsvmError(`${file}: encrypted images are not supported`);
        break;
    }
  }
  if (options.refcountBits !== undefined && ![1, 2, 4, 8, 16, 32, 64].includes(options.refcountBits)) {
    throw new TsvmError(`${file}: Refcount width must be a power of two and may not exceed 64 bits`);
  }
  return size === undefined ? { options } : { options, size };
}
