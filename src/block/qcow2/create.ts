/** Creating empty qcow2 images (the layout qemu-img uses: header, refcount table, refcount block(s), L1). */
import { TsvmError } from '../../base/errors.js';
import { BlockFile } from '../file.js';
import { setU64 } from '../util.js';
import {
  COMPAT_LAZY_REFCOUNTS, EXT_FEATURE_NAMES, INCOMPAT_EXTL2, type Qcow2Header, encodeFullHeader, featureNameTable,
} from './format.js';

export interface Qcow2CreateOptions {
  /** Cluster size in bytes, a power of two from 512 to 2 MiB (default 64 KiB). */
  clusterSize?: number;
  /** '1.1' (version 3, default) or '0.10' (version 2). */
  compat?: '0.10' | '1.1';
  /** Refcount width in bits: 1, 2, 4, 8, 16 (default), 32 or 64 (version 3 only unless 16). */
  refcountBits?: number;
  lazyRefcounts?: boolean;
  extendedL2?: boolean;
  /** Backing file name as stored in the image (relative names are relative to the image's directory). */
  backingFile?: string;
  backingFormat?: string;
}

export async function createQcow2(path: string, size: number, opts: Qcow2CreateOptions = {}): Promise<void> {
  const cs = opts.clusterSize ?? 65536;
  const cb = Math.log2(cs);
  if (!Number.isInteger(cb) || cb < 9 || cb > 21) throw new TsvmError(`invalid qcow2 cluster size ${cs}`);
  if (!Number.isSafeInteger(size) || size < 0) throw new TsvmError(`invalid image size ${size}`);
  const version = opts.compat === '0.10' ? 2 : 3;
  const refBits = opts.refcountBits ?? 16;
  const order = Math.log2(refBits);
  if (!Number.isInteger(order) || order < 0 || order > 6) throw new TsvmError(`invalid refcount width ${refBits}`);
  if (version === 2 && refBits !== 16) throw new TsvmError('compat 0.10 images need 16-bit refcounts');
  if (version === 2 && (opts.lazyRefcounts || opts.extendedL2)) {
    throw new TsvmError('lazy refcounts and extended L2 entries need compat 1.1');
  }
  if (opts.extendedL2 && cs < 16384) throw new TsvmError('extended L2 entries need a cluster size of at least 16 KiB');
  if (opts.backingFormat !== undefined && opts.backingFile === undefined) {
    throw new TsvmError('a backing format needs a backing file');
  }
  const entryBytes = opts.extendedL2 ? 16 : 8;
  const l2Entries = cs / entryBytes;
  const l1Size = Math.ceil(size / (cs * l2Entries));
  const l1Clusters = Math.max(1, Math.ceil((l1Size * 8) / cs));
  const refEntries = (cs * 8) / refBits;
  // Layout: [0] header, [1..k] refcount table, then m refcount blocks, then the L1 table.
  let m = 1, k = 1;
  for (;;) {
    const total = 1 + k + m + l1Clusters;
    const needM = Math.ceil(total / refEntries), needK = Math.ceil((needM * 8) / cs);
    if (needM <= m && needK <= k) break;
    m = Math.max(m, needM);
    k = Math.max(k, needK);
  }
  const total = 1 + k + m + l1Clusters;

  const headerLength = version === 3 ? 112 : 72;
  const h: Qcow2Header = {
    raw: new Uint8Array(headerLength), version, backingFileOffset: 0, backingFileSize: 0, clusterBits: cb, size,
    cryptMethod: 0, l1Size, l1TableOffset: (1 + k + m) * cs, refcountTableOffset: cs, refcountTableClusters: k,
    nbSnapshots: 0, snapshotsOffset: 0, incompatible: opts.extendedL2 ? INCOMPAT_EXTL2 : 0n,
    compatible: opts.lazyRefcounts ? COMPAT_LAZY_REFCOUNTS : 0n, autoclear: 0n, refcountOrder: order,
    headerLength, compressionType: 0, extensions: [],
  };
  if (opts.backingFile !== undefined) h.backingFile = opts.backingFile;
  if (opts.backingFormat !== undefined) h.backingFormat = opts.backingFormat;
  // Like qemu-img, version 3 images carry the feature name table when it fits in the first cluster.
  let header: Uint8Array;
  try {
    if (version < 3) throw new RangeError('no feature names in version 2');
    header = encodeFullHeader({ ...h, extensions: [{ type: EXT_FEATURE_NAMES, data: featureNameTable() }] }, cs);
  } catch {
    header = encodeFullHeader(h, cs);
  }

  const rt = new Uint8Array(k * cs);
  const rdv = new DataView(rt.buffer);
  for (let r = 0; r < m; r++) setU64(rdv, r * 8, (1 + k + r) * cs);
  const blocks = new Uint8Array(m * cs);
  for (let c = 0; c < total; c++) {
    const bit = c * refBits;
    if (refBits < 8) blocks[bit >> 3] |= 1 << (bit & 7);
    else blocks[(bit >> 3) + refBits / 8 - 1] = 1;
  }
  const file = await BlockFile.create(path);
  try {
    await file.pwrite(0, header);
    await file.pwrite(cs, rt);
    await file.pwrite((1 + k) * cs, blocks);
    // The file ends where the L1 table does, as qemu-img leaves it.
    await file.truncate(l1Size > 0 ? h.l1TableOffset + l1Size * 8 : total * cs);
    await file.sync();
  } finally {
    await file.close();
  }
}
