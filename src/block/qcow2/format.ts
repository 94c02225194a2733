/** qcow2 on-disk structures (docs/interop/qcow2.txt): header, header extensions, entry bit layouts. */
import { TsvmError } from '../../base/errors.js';
import { getU64, setU64 } from '../util.js';

export const QCOW_MAGIC = 0x514649fb;

export const EXT_END = 0;
export const EXT_BACKING_FORMAT = 0xe2792aca;
export const EXT_FEATURE_NAMES = 0x6803f857;
export const EXT_BITMAPS = 0x23852875;
export const EXT_CRYPTO = 0x0537be77;
export const EXT_DATA_FILE = 0x44415441;

export const INCOMPAT_DIRTY = 1n << 0n;
export const INCOMPAT_CORRUPT = 1n << 1n;
export const INCOMPAT_DATA_FILE = 1n << 2n;
export const INCOMPAT_COMPRESSION = 1n << 3n;
export const INCOMPAT_EXTL2 = 1n << 4n;
export const INCOMPAT_KNOWN = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
export const COMPAT_LAZY_REFCOUNTS = 1n << 0n;
/** Autoclear bits this implementation keeps consistent (none: bitmaps are not maintained). */
export const AUTOCLEAR_KNOWN = 0n;

/** Byte offsets of header fields. */
export const H = {
  magic: 0, version: 4, backingFileOffset: 8, backingFileSize: 16, clusterBits: 20, size: 24,
  cryptMethod: 32, l1Size: 36, l1TableOffset: 40, refcountTableOffset: 48, refcountTableClusters: 56,
  nbSnapshots: 60, snapshotsOffset: 64, incompatible: 72, compatible: 80, autoclear: 88,
  refcountOrder: 96, headerLength: 100, compressionType: 104,
} as const;

export interface HeaderExtension {
  type: number;
  data: Uint8Array;
}

/** The parsed header; `raw` keeps the fixed part (headerLength bytes) so unknown fields survive rewrites. */
export interface Qcow2Header {
  raw: Uint8Array;
  version: number;
  backingFileOffset: number;
  backingFileSize: number;
  clusterBits: number;
  size: number;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: number;
  incompatible: bigint;
  compatible: bigint;
  autoclear: bigint;
  refcountOrder: number;
  headerLength: number;
  compressionType: number;
  extensions: HeaderExtension[];
  backingFile?: string;
  backingFormat?: string;
}

/** Parses the header from the first cluster (or at least the first 64 KiB... whatever the caller read). */
export function parseHeader(buf: Uint8Array): Qcow2Header {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (buf.length < 72 || dv.getUint32(0) !== QCOW_MAGIC) throw new TsvmError('not a qcow2 image');
  const version = dv.getUint32(H.version);
  if (version !== 2 && version !== 3) throw new TsvmError(`unsupported qcow2 version ${version}`);
  const clusterBits = dv.getUint32(H.clusterBits);
  if (clusterBits < 9 || clusterBits > 21) throw new TsvmError(`unsupported qcow2 cluster_bits ${clusterBits}`);
  let headerLength = 72, refcountOrder = 4, compressionType = 0;
  let incompatible = 0n, compatible = 0n, autoclear = 0n;
  if (version === 3) {
    if (buf.length < 104) throw new TsvmError('qcow2 header truncated');
    incompatible = dv.getBigUint64(H.incompatible);
    compatible = dv.getBigUint64(H.compatible);
    autoclear = dv.getBigUint64(H.autoclear);
    refcountOrder = dv.getUint32(H.refcountOrder);
    headerLength = dv.getUint32(H.headerLength);
    if (headerLength < 104 || headerLength % 8 !== 0 && headerLength !== 104 || headerLength > buf.length) {
      throw new TsvmError(`invalid qcow2 header length ${headerLength}`);
    }
    if (headerLength > 104) compressionType = buf[H.compressionType]!;
  }
  if (refcountOrder > 6) throw new TsvmError(`invalid qcow2 refcount order ${refcountOrder}`);
  const h: Qcow2Header = {
    raw: buf.slice(0, headerLength),
    version, clusterBits, headerLength, refcountOrder, compressionType, incompatible, compatible, autoclear,
    backingFileOffset: getU64(dv, H.backingFileOffset),
    backingFileSize: dv.getUint32(H.backingFileSize),
    size: getU64(dv, H.size),
    cryptMethod: dv.getUint32(H.cryptMethod),
    l1Size: dv.getUint32(H.l1Size),
    l1TableOffset: getU64(dv, H.l1TableOffset),
    refcountTableOffset: getU64(dv, H.refcountTableOffset),
    refcountTableClusters: dv.getUint32(H.refcountTableClusters),
    nbSnapshots: dv.getUint32(H.nbSnapshots),
    snapshotsOffset: getU64(dv, H.snapshotsOffset),
    extensions: [],
  };
  // Header extensions follow the fixed header (v2: at 72) up to the end of the first cluster.
  const end = Math.min(buf.length, 1 << clusterBits);
  let p = alignTo8(headerLength);
  for (;;) {
    if (p + 8 > end) throw new TsvmError('qcow2 header extensions run past the first cluster');
    const type = dv.getUint32(p), len = dv.getUint32(p + 4);
    p += 8;
    if (type === EXT_END) break;
    if (p + len > end) throw new TsvmError('qcow2 header extension runs past the first cluster');
    const data = buf.slice(p, p + len);
    p += alignTo8(len);
    if (type === EXT_BACKING_FORMAT) h.backingFormat = new TextDecoder().decode(data);
    h.extensions.push({ type, data });
  }
  if (h.backingFileOffset !== 0) {
    if (h.backingFileSize > 1023 || h.backingFileOffset + h.backingFileSize > end) {
      throw new TsvmError('qcow2 backing file name is invalid');
    }
    h.backingFile = new TextDecoder().decode(buf.subarray(h.backingFileOffset, h.backingFileOffset + h.backingFileSize));
  }
  return h;
}

export function alignTo8(n: number): number {
  return (n + 7) & ~7;
}

/** Writes the numeric fields of `h` into `h.raw`. */
export function encodeFixedHeader(h: Qcow2Header): Uint8Array {
  const raw = h.raw;
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  dv.setUint32(H.magic, QCOW_MAGIC);
  dv.setUint32(H.version, h.version);
  setU64(dv, H.backingFileOffset, h.backingFileOffset);
  dv.setUint32(H.backingFileSize, h.backingFileSize);
  dv.setUint32(H.clusterBits, h.clusterBits);
  setU64(dv, H.size, h.size);
  dv.setUint32(H.cryptMethod, h.cryptMethod);
  dv.setUint32(H.l1Size, h.l1Size);
  setU64(dv, H.l1TableOffset, h.l1TableOffset);
  setU64(dv, H.refcountTableOffset, h.refcountTableOffset);
  dv.setUint32(H.refcountTableClusters, h.refcountTableClusters);
  dv.setUint32(H.nbSnapshots, h.nbSnapshots);
  setU64(dv, H.snapshotsOffset, h.snapshotsOffset);
  if (h.version >= 3) {
    dv.setBigUint64(H.incompatible, h.incompatible);
    dv.setBigUint64(H.compatible, h.compatible);
    dv.setBigUint64(H.autoclear, h.autoclear);
    dv.setUint32(H.refcountOrder, h.refcountOrder);
    dv.setUint32(H.headerLength, h.headerLength);
    if (h.headerLength > 104) raw[H.compressionType] = h.compressionType;
  }
  return raw;
}

/**
 * Encodes the whole header area: fixed header, extensions, end marker, backing file name.
 * Updates backingFileOffset/backingFileSize. Throws if it does not fit in `limit` bytes.
 */
export function encodeFullHeader(h: Qcow2Header, limit: number): Uint8Array {
  const exts = h.extensions.filter((e) => e.type !== EXT_BACKING_FORMAT);
  if (h.backingFormat !== undefined && h.backingFile !== undefined) {
    exts.unshift({ type: EXT_BACKING_FORMAT, data: new TextEncoder().encode(h.backingFormat) });
  }
  let len = alignTo8(h.headerLength);
  for (const e of exts) len += 8 + alignTo8(e.data.length);
  len += 8;
  const name = h.backingFile !== undefined ? new TextEncoder().encode(h.backingFile) : undefined;
  if (name) {
    if (name.length > 1023) throw new TsvmError('backing file name too long');
    h.backingFileOffset = len;
    h.backingFileSize = name.length;
    len += name.length;
  } else {
    h.backingFileOffset = 0;
    h.backingFileSize = 0;
  }
  if (len > limit) throw new TsvmError('qcow2 header does not fit in the first cluster');
  const out = new Uint8Array(len);
  out.set(encodeFixedHeader(h), 0);
  const dv = new DataView(out.buffer);
  let p = alignTo8(h.headerLength);
  for (const e of exts) {
    dv.setUint32(p, e.type);
    dv.setUint32(p + 4, e.data.length);
    out.set(e.data, p + 8);
    p += 8 + alignTo8(e.data.length);
  }
  p += 8; // end marker (zeros)
  if (name) out.set(name, p);
  return out;
}

/** QEMU 7.2's feature name table (type, bit, name) as written by qemu-img create. */
export function featureNameTable(): Uint8Array {
  const names: [number, number, string][] = [
    [0, 0, 'dirty bit'], [0, 1, 'corrupt bit'], [0, 2, 'external data file'],
    [0, 3, 'compression type'], [0, 4, 'extended L2 entries'], [1, 0, 'lazy refcounts'],
    [2, 0, 'bitmaps'], [2, 1, 'raw external data'],
  ];
  const out = new Uint8Array(names.length * 48);
  names.forEach(([type, bit, name], i) => {
    out[i * 48] = type;
    out[i * 48 + 1] = bit;
    out.set(new TextEncoder().encode(name), i * 48 + 2);
  });
  return out;
}

// ---- table entries -------------------------------------------------------------------------

export const OFLAG_COPIED_HI = 0x80000000;
export const OFLAG_COMPRESSED_HI = 0x40000000;
export const OFLAG_ZERO_LO = 1;

/** Bits 9..55 of a 64-bit entry given as two 32-bit halves. */
export function entryOffset(hi: number, lo: number): number {
  return (hi & 0x00ffffff) * 0x100000000 + ((lo & 0xfffffe00) >>> 0);
}

export function setEntry(dv: DataView, pos: number, offset: number, copied: boolean, zero = false): void {
  const hi = Math.floor(offset / 0x100000000);
  dv.setUint32(pos, ((copied ? OFLAG_COPIED_HI : 0) | hi) >>> 0);
  dv.setUint32(pos + 4, ((offset >>> 0) | (zero ? OFLAG_ZERO_LO : 0)) >>> 0);
}

/** Decodes a compressed cluster descriptor into the host byte range holding the deflate stream. */
export function compressedRange(hi: number, lo: number, clusterBits: number): { offset: number; length: number } {
  const x = BigInt(62 - (clusterBits - 8));
  const v = (BigInt(hi & 0x3fffffff) << 32n) | BigInt(lo >>> 0);
  const offset = Number(v & ((1n << x) - 1n));
  const nsect = Number(v >> x);
  const end = (Math.floor(offset / 512) + 1 + nsect) * 512;
  return { offset, length: end - offset };
}

export function encodeCompressed(offset: number, length: number, clusterBits: number): bigint {
  const x = BigInt(62 - (clusterBits - 8));
  const nsect = Math.floor((offset + length - 1) / 512) - Math.floor(offset / 512);
  if (BigInt(nsect) >= 1n << (62n - x)) throw new TsvmError('compressed cluster too large');
  return (1n << 62n) | (BigInt(nsect) << x) | BigInt(offset);
}
