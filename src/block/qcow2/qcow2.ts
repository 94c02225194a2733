/**
 * qcow2 images (docs/interop/qcow2.txt): versions 2 and 3, cluster sizes 512 B..2 MiB, refcount widths
 * 1..64 bits, zero clusters, compressed clusters (zlib/deflate), extended L2 entries, backing files,
 * internal snapshots, resize (grow and shrink) and check/repair.
 *
 * Requests run under one async mutex with write-through metadata caches, except common reads and
 * writes, which take a fast path (tryFastWrite/tryFastRead) that updates cached metadata in memory,
 * runs its data I/O concurrently and leaves the metadata dirty for writeDirty (see README.md).
 * Allocating writes are ordered data -> refcounts -> L2 -> L1 (with an fsync between steps when
 * `syncMetadata` is set, which also turns the fast writes off), so an interrupted write can leak
 * clusters but never corrupt the image.
 */
import type { deflateRawParallel as DeflateRawParallel } from './deflate-pool.js';
import { TsvmError, errorMessage } from '../../base/errors.js';
import type { BlockDriver, BlockStatus } from '../block-driver.js';
import { BlockFile } from '../file.js';
import { Lru, Mutex, alignUp, checkRange, getU64, setU64 } from '../util.js';
import {
  AUTOCLEAR_KNOWN, COMPAT_LAZY_REFCOUNTS, EXT_BITMAPS, EXT_FEATURE_NAMES,
  INCOMPAT_CORRUPT, INCOMPAT_DATA_FILE, INCOMPAT_DIRTY, INCOMPAT_EXTL2, INCOMPAT_KNOWN, OFLAG_COMPRESSED_HI,
  OFLAG_COPIED_HI, OFLAG_ZERO_LO, type Qcow2Header, compressedRange, encodeCompressed, encodeFixedHeader, encodeFullHeader,
  entryOffset, featureNameTable, parseHeader, setEntry,
} from './format.js';
import {
  type SnapshotEntry, encodeSnapshotTable, makeExtra, parseSnapshotTable, snapshotTableSize,
} from './snapshot-table.js';

export type BackingOpener = (name: string, format: string | undefined) => Promise<BlockDriver>;

export interface Qcow2OpenOptions {
  readOnly?: boolean;
  /** Opens the backing file (resolved by the caller); without it a backing file is an error. */
  openBacking?: BackingOpener;
  /** fsync between the data, refcount, L2 and L1 steps of an allocating write (slow, power-loss safe). */
  syncMetadata?: boolean;
  /** Never fsync (qemu's cache=unsafe); syncMetadata then only orders writes. */
  unsafe?: boolean;
  /** Number of L2 tables (and, separately, refcount blocks) kept in memory (default: 8 MiB worth, 4..1024). */
  cacheEntries?: number;
}

export interface Qcow2CheckResult {
  corruptions: number;
  leaks: number;
  checkErrors: number;
  /** Corruptions/leaks that were found and repaired (only with repair = true). */
  corruptionsFixed: number;
  leaksFixed: number;
  allocatedClusters: number;
  totalClusters: number;
  imageEndOffset: number;
}

export interface Qcow2Info {
  version: number;
  compat: '0.10' | '1.1';
  clusterSize: number;
  refcountBits: number;
  lazyRefcounts: boolean;
  extendedL2: boolean;
  corrupt: boolean;
  dirty: boolean;
  compressionType: 'zlib' | 'zstd';
  backingFile?: string;
  backingFormat?: string;
  snapshots: SnapshotInfo[];
}

export interface SnapshotInfo {
  id: string;
  name: string;
  vmStateSize: number;
  dateSec: number;
  dateNsec: number;
  vmClockNsec: bigint;
  diskSize?: number;
  /** Instruction count of a record/replay run; absent when the snapshot has none. */
  icount?: number;
}

/** A decoded L2 entry. */
interface Mapping {
  kind: 'unalloc' | 'zero' | 'normal' | 'compressed' | 'sub';
  host: number;
  copied: boolean;
  hi: number;
  lo: number;
  allocMask: number;
  zeroMask: number;
}

interface DirtyRange {
  buf: Uint8Array;
  lo: number;
  hi: number;
}

/** zlib and the deflate worker pool, loaded for the first compressed cluster (not every tool run needs them). */
let inflateRawSync: typeof import('node:zlib').inflateRawSync | undefined;
let deflateRawParallel: typeof DeflateRawParallel | undefined;

const UNALLOC: Mapping = { kind: 'unalloc', host: 0, copied: false, hi: 0, lo: 0, allocMask: 0, zeroMask: 0 };
const MAX_BATCH_BYTES = 16 << 20;

export class Qcow2Image implements BlockDriver {
  readonly format = 'qcow2' as const;

  private readonly cs: number;
  private readonly cb: number;
  readonly extendedL2: boolean;
  private readonly entryBytes: number;
  private readonly l2Entries: number;
  private readonly refBits: number;
  private readonly refEntries: number;
  private readonly refMax: number;
  private l1: Uint8Array;
  private l1dv: DataView;
  private rt: Uint8Array;
  private rtdv: DataView;
  private readonly l2Cache: Lru<number, Uint8Array>;
  private readonly rbCache: Lru<number, Uint8Array>;
  private readonly mutex = new Mutex();
  /**
   * Requests on the fast paths (see tryFastWrite) run without the mutex, concurrently with each other.
   * Guest clusters they use: -1 while a write is in flight, else the number of reads in flight.
   */
  private readonly busy = new Map<number, number>();
  private inflight = 0;
  private drainWaiters: (() => void)[] = [];
  /**
   * Metadata changed by fast-path writes and not yet written to the file (writeback; only without
   * syncMetadata): byte ranges of cached refcount blocks and L2 tables, by host offset.
   */
  private readonly dirtyRb = new Map<number, DirtyRange>();
  private readonly dirtyL2 = new Map<number, DirtyRange>();
  /** Clusters allocated by fast-path writes that were not written up to their end. */
  private tailEnd = 0;
  private readonly maxDirty: number;
  private freeHint = 0;
  private compTail = 0;
  private lastCompressed?: { host: number; data: Uint8Array };
  private snapshots: SnapshotEntry[] = [];
  private ro: boolean;
  private closed = false;
  private opener: BackingOpener | undefined;

  private constructor(
    private readonly file: BlockFile,
    readonly header: Qcow2Header,
    private backing: BlockDriver | undefined,
    private readonly syncMetadata: boolean,
    cacheEntries: number,
  ) {
    this.maxDirty = Math.max(1, Math.floor(cacheEntries / 2));
    const h = header;
    this.ro = file.readOnly;
    this.cb = h.clusterBits;
    this.cs = 1 << h.clusterBits;
    this.extendedL2 = (h.incompatible & INCOMPAT_EXTL2) !== 0n;
    this.entryBytes = this.extendedL2 ? 16 : 8;
    this.l2Entries = this.cs / this.entryBytes;
    this.refBits = 1 << h.refcountOrder;
    this.refEntries = (this.cs * 8) / this.refBits;
    this.refMax = this.refBits >= 53 ? Number.MAX_SAFE_INTEGER : 2 ** this.refBits - 1;
    this.l1 = new Uint8Array(0);
    this.l1dv = new DataView(this.l1.buffer);
    this.rt = new Uint8Array(0);
    this.rtdv = new DataView(this.rt.buffer);
    this.l2Cache = new Lru(cacheEntries, (k) => this.dirtyL2.has(k));
    this.rbCache = new Lru(cacheEntries, (k) => this.dirtyRb.has(k));
  }

  get virtualSize(): number {
    return this.header.size;
  }
  get readOnly(): boolean {
    return this.ro;
  }
  get clusterSize(): number {
    return this.cs;
  }
  get backingDriver(): BlockDriver | undefined {
    return this.backing;
  }

  // ---- open / close ------------------------------------------------------------------------

  static async open(path: string, opts: Qcow2OpenOptions = {}): Promise<Qcow2Image> {
    let file = await BlockFile.open(path, opts.readOnly ?? false);
    file.unsafe = opts.unsafe ?? false;
    let img: Qcow2Image | undefined;
    try {
      const first = await file.pread(0, 4096);
      let h = parseHeader(first);
      if ((1 << h.clusterBits) > 4096) h = parseHeader(await file.pread(0, 1 << h.clusterBits));
      else h = parseHeader(first.subarray(0, 1 << h.clusterBits));
      Qcow2Image.checkFeatures(h);
      if (!file.readOnly && (h.incompatible & INCOMPAT_CORRUPT) !== 0n) {
        await file.close();
        file = await BlockFile.open(path, true);
      }
      const cacheEntries = opts.cacheEntries ?? Math.min(1024, Math.max(4, Math.floor((8 << 20) / 2 ** h.clusterBits)));
      img = new Qcow2Image(file, h, undefined, opts.syncMetadata ?? false, cacheEntries);
      await img.load();
      if (h.backingFile !== undefined) {
        if (!opts.openBacking) throw new TsvmError(`'${path}' has a backing file '${h.backingFile}'`);
        img.backing = await opts.openBacking(h.backingFile, h.backingFormat);
      }
      img.opener = opts.openBacking;
      if (!img.ro) await img.prepareForWriting();
      return img;
    } catch (e) {
      if (img) await img.close().catch(() => undefined);
      else await file.close().catch(() => undefined);
      if (e instanceof TsvmError) throw e;
      throw new TsvmError(`cannot open qcow2 image '${path}': ${errorMessage(e)}`);
    }
  }

  private static checkFeatures(h: Qcow2Header): void {
    if (h.cryptMethod !== 0) throw new TsvmError('encrypted qcow2 images are not supported');
    const unknown = h.incompatible & ~INCOMPAT_KNOWN;
    if ((h.incompatible & INCOMPAT_DATA_FILE) !== 0n) {
      throw new TsvmError('qcow2 images with an external data file are not supported');
    }
    if (unknown !== 0n) {
      const names: string[] = [];
      const table = h.extensions.find((e) => e.type === EXT_FEATURE_NAMES);
      for (let bit = 0n; bit < 64n; bit++) {
        if ((unknown & (1n << bit)) === 0n) continue;
        let name = `bit ${bit}`;
        if (table) {
          for (let p = 0; p + 48 <= table.data.length; p += 48) {
            if (table.data[p] === 0 && BigInt(table.data[p + 1]!) === bit) {
              name = new TextDecoder().decode(table.data.subarray(p + 2, p + 48)).replace(/\0.*$/s, '');
            }
          }
        }
        names.push(name);
      }
      throw new TsvmError(`unsupported qcow2 feature(s): ${names.join(', ')}`);
    }
    if (h.extensions.some((e) => e.type === 0x0537be77)) throw new TsvmError('encrypted qcow2 images are not supported');
    if ((h.incompatible & INCOMPAT_EXTL2) !== 0n && h.clusterBits < 14) throw new TsvmError('qcow2 extended L2 entries need 16 KiB clusters');
    if (h.refcountTableClusters === 0 || h.refcountTableOffset % (1 << h.clusterBits) !== 0) {
      throw new TsvmError('qcow2 refcount table is invalid');
    }
    if (h.l1TableOffset % (1 << h.clusterBits) !== 0) throw new TsvmError('qcow2 L1 table is not aligned');
    const l2Entries = (1 << h.clusterBits) / ((h.incompatible & INCOMPAT_EXTL2) !== 0n ? 16 : 8);
    if (h.l1Size * l2Entries * 2 ** h.clusterBits < h.size) throw new TsvmError('qcow2 L1 table is too small');
    // Same limits as QEMU: 32 MiB L1 table, 8 MiB refcount table, 65536 snapshots.
    if (h.l1Size > (32 << 20) / 8) throw new TsvmError('qcow2 L1 table is too large');
    if (h.refcountTableClusters * 2 ** h.clusterBits > 8 << 20) throw new TsvmError('qcow2 refcount table is too large');
    if (h.nbSnapshots > 65536) throw new TsvmError('qcow2 image has too many snapshots');
    if (h.nbSnapshots > 0 && h.snapshotsOffset % (1 << h.clusterBits) !== 0) {
      throw new TsvmError('qcow2 snapshot table is not aligned');
    }
  }

  private async load(): Promise<void> {
    const h = this.header;
    this.l1 = await this.file.pread(h.l1TableOffset, h.l1Size * 8);
    this.l1dv = new DataView(this.l1.buffer);
    this.rt = await this.file.pread(h.refcountTableOffset, h.refcountTableClusters * this.cs);
    this.rtdv = new DataView(this.rt.buffer);
    if (h.nbSnapshots > 0) {
      // Read generously: entries are variable-length (at most 40 + 64 KiB + 2 * 64 KiB each).
      let len = Math.min(h.nbSnapshots * 1024, 64 << 20);
      for (;;) {
        const buf = await this.file.pread(h.snapshotsOffset, len);
        try {
          this.snapshots = parseSnapshotTable(buf, h.nbSnapshots);
          break;
        } catch (e) {
          if (len >= 64 << 20) throw e;
          len *= 4;
        }
      }
    }
  }

  /** Repairs a dirty image, clears autoclear bits we do not maintain. */
  private async prepareForWriting(): Promise<void> {
    const h = this.header;
    let dirty = false;
    if ((h.incompatible & INCOMPAT_DIRTY) !== 0n) {
      await this.checkLocked(true);
      h.incompatible &= ~INCOMPAT_DIRTY;
      dirty = true;
    }
    if ((h.autoclear & ~AUTOCLEAR_KNOWN) !== 0n) {
      h.autoclear &= AUTOCLEAR_KNOWN;
      dirty = true;
    }
    if (dirty) {
      await this.file.sync();
      await this.writeHeader();
    }
  }

  private async writeHeader(): Promise<void> {
    await this.file.pwrite(0, encodeFixedHeader(this.header));
    await this.barrier();
  }

  private async barrier(): Promise<void> {
    if (this.syncMetadata) await this.file.sync();
  }

  /** Waits for pending requests, syncs and closes the file and the backing chain. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.locked(async () => {
      try {
        await this.file.sync().catch(() => undefined);
        if (this.backing) await this.backing.close();
      } finally {
        await this.file.close();
      }
    });
  }

  flush(): Promise<void> {
    return this.locked(() => this.file.sync());
  }

  /**
   * Runs `fn` under the mutex, after the fast-path requests in flight have finished and the metadata
   * they changed has been written: the rest of the driver sees write-through caches and has the image
   * to itself.
   */
  private locked<T>(fn: () => Promise<T>): Promise<T> {
    return this.mutex.run(async () => {
      await this.drain();
      if (this.dirtyRb.size > 0 || this.dirtyL2.size > 0 || this.tailEnd > 0) await this.writeDirty();
      return fn();
    });
  }

  /**
   * For a request that found the mutex busy: when its turn comes it takes the fast path if it can
   * (releasing the mutex without waiting for its I/O, so requests queued behind a slow one do not
   * all become slow), else runs `slow` like locked().
   */
  private async fastOrLocked<T>(fast: () => Promise<T> | undefined, slow: () => Promise<T>): Promise<T> {
    const r = await this.mutex.run(async (): Promise<{ p: Promise<T> } | { v: T }> => {
      if (!this.closed) {
        const p = fast();
        if (p !== undefined) return { p };
      }
      await this.drain();
      if (this.dirtyRb.size > 0 || this.dirtyL2.size > 0 || this.tailEnd > 0) await this.writeDirty();
      return { v: await slow() };
    });
    return 'p' in r ? r.p : r.v;
  }

  private drain(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise<void>((r) => this.drainWaiters.push(r));
  }

  private opDone(): void {
    if (--this.inflight === 0 && this.drainWaiters.length > 0) {
      const w = this.drainWaiters;
      this.drainWaiters = [];
      for (const r of w) r();
    }
  }

  /**
   * Writes back what fast-path writes changed (their data is already written): refcount blocks before
   * the L2 tables that point to the new clusters, so an interrupted process leaves at most leaks.
   */
  private async writeDirty(): Promise<void> {
    if (this.tailEnd > this.file.highWater) await this.file.truncate(this.tailEnd);
    this.tailEnd = 0;
    const put = async (map: Map<number, DirtyRange>) => {
      const ranges = [...map];
      map.clear();
      try {
        await Promise.all(ranges.map(([off, d]) => this.file.pwrite(off + d.lo, d.buf.subarray(d.lo, d.hi))));
      } catch (e) {
        for (const [off, d] of ranges) this.markDirty(map, off, d.buf, d.lo, d.hi);
        throw e;
      }
    };
    await put(this.dirtyRb);
    if (this.syncMetadata) await this.file.sync();
    await put(this.dirtyL2);
  }

  private markDirty(map: Map<number, DirtyRange>, off: number, buf: Uint8Array, lo: number, hi: number): void {
    const d = map.get(off);
    if (d === undefined) {
      map.set(off, { buf, lo, hi });
    } else {
      if (lo < d.lo) d.lo = lo;
      if (hi > d.hi) d.hi = hi;
    }
  }

  private writable(): void {
    if (this.closed) throw new TsvmError('image is closed');
    if (this.ro) throw new TsvmError('image is read-only');
  }

  /** Marks the image corrupt (if writable) and throws. */
  private async corrupt(msg: string): Promise<never> {
    if (!this.ro && this.header.version >= 3) {
      this.header.incompatible |= INCOMPAT_CORRUPT;
      await this.writeHeader().catch(() => undefined);
      this.ro = true;
    }
    throw new TsvmError(`qcow2 image is corrupt: ${msg}`);
  }

  // ---- refcounts ---------------------------------------------------------------------------

  private rtEntries(): number {
    return this.rt.length / 8;
  }

  private rtEntry(i: number): number {
    if (i >= this.rtEntries()) return 0;
    return getU64(this.rtdv, i * 8) - (this.rtdv.getUint32(i * 8 + 4) & 0x1ff);
  }

  private refBlock(off: number): Promise<Uint8Array> {
    return this.cachedTable(this.rbCache, off, 'refcount block');
  }

  /** A one-cluster metadata table through its cache, read from the file on a miss. */
  private async cachedTable(cache: Lru<number, Uint8Array>, off: number, what: string): Promise<Uint8Array> {
    let t = cache.get(off);
    if (!t) {
      if (off % this.cs !== 0) await this.corrupt(`${what} offset ${off} is not aligned`);
      t = await this.file.pread(off, this.cs);
      cache.set(off, t);
    }
    return t;
  }

  private refAt(b: Uint8Array, i: number): number {
    const bits = this.refBits;
    if (bits === 16) return (b[i * 2]! << 8) | b[i * 2 + 1]!;
    if (bits < 8) return (b[(i * bits) >> 3]! >> ((i * bits) & 7)) & ((1 << bits) - 1);
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    switch (bits) {
      case 8: return b[i]!;
      case 16: return dv.getUint16(i * 2);
      case 32: return dv.getUint32(i * 4);
      default: return getU64(dv, i * 8);
    }
  }

  private setRefAt(b: Uint8Array, i: number, v: number): void {
    const bits = this.refBits;
    if (bits === 16) {
      b[i * 2] = v >>> 8;
      b[i * 2 + 1] = v & 0xff;
      return;
    }
    if (bits < 8) {
      const byte = (i * bits) >> 3, sh = (i * bits) & 7, mask = ((1 << bits) - 1) << sh;
      b[byte] = (b[byte]! & ~mask) | ((v << sh) & mask);
      return;
    }
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    switch (bits) {
      case 8: b[i] = v; break;
      case 16: dv.setUint16(i * 2, v); break;
      case 32: dv.setUint32(i * 4, v); break;
      default: setU64(dv, i * 8, v);
    }
  }

  async getRefcount(cluster: number): Promise<number> {
    const off = this.rtEntry(Math.floor(cluster / this.refEntries));
    if (off === 0) return 0;
    return this.refAt(await this.refBlock(off), cluster % this.refEntries);
  }

  /** Adds `delta` to the refcounts of clusters [first, first+count); the refcount blocks must exist. */
  private async updateRefcounts(first: number, count: number, delta: number): Promise<void> {
    let c = first;
    const end = first + count;
    while (c < end) {
      const r = Math.floor(c / this.refEntries);
      const off = this.rtEntry(r);
      const stop = Math.min(end, (r + 1) * this.refEntries);
      if (off === 0) {
        if (delta < 0) await this.corrupt(`freeing cluster ${c} that has no refcount block`);
        await this.corrupt(`refcount block for cluster ${c} is missing`);
      }
      const b = await this.refBlock(off);
      const i0 = c % this.refEntries, i1 = i0 + (stop - c);
      for (let i = i0; i < i1; i++) {
        const v = this.refAt(b, i) + delta;
        if (v < 0) await this.corrupt(`refcount of cluster ${r * this.refEntries + i} would drop below zero`);
        if (v > this.refMax) throw new TsvmError('qcow2 refcount overflow');
        this.setRefAt(b, i, v);
        if (v === 0) this.onClusterFreed(r * this.refEntries + i);
      }
      const lo = Math.floor((i0 * this.refBits) / 8), hi = Math.ceil((i1 * this.refBits) / 8);
      await this.file.pwrite(off + lo, b.subarray(lo, hi));
      c = stop;
    }
  }

  private onClusterFreed(c: number): void {
    if (c < this.freeHint) this.freeHint = c;
    const off = c * this.cs;
    this.l2Cache.delete(off);
    this.rbCache.delete(off);
    if (this.compTail !== 0 && Math.floor(this.compTail / this.cs) === c) this.compTail = 0;
    if (this.lastCompressed && Math.floor(this.lastCompressed.host / this.cs) === c) this.lastCompressed = undefined;
  }

  /** First cluster index of a run of `n` clusters whose refcount is 0 (missing blocks count as free). */
  private async findFreeRun(n: number): Promise<number> {
    let idx = this.freeHint, start = idx, run = 0, firstFree = -1;
    for (;;) {
      const r = Math.floor(idx / this.refEntries);
      if (r >= this.rtEntries()) {
        if (firstFree < 0) firstFree = start;
        break;
      }
      const off = this.rtEntry(r);
      if (off === 0) {
        if (firstFree < 0) firstFree = start;
        run += (r + 1) * this.refEntries - idx;
        idx = (r + 1) * this.refEntries;
        if (run >= n) break;
        continue;
      }
      const b = await this.refBlock(off);
      let i = idx % this.refEntries;
      for (; i < this.refEntries; i++, idx++) {
        if (this.refAt(b, i) === 0) {
          if (firstFree < 0) firstFree = idx;
          if (++run >= n) break;
        } else {
          run = 0;
          start = idx + 1;
        }
      }
      if (run >= n) break;
    }
    this.freeHint = firstFree === start ? start + n : firstFree;
    return start;
  }

  /**
   * Finds `n` contiguous free clusters and makes sure refcount blocks cover them. With `mark` the
   * clusters get refcount 1; otherwise the caller writes them and then calls updateRefcounts.
   * Returns a host offset.
   */
  private async allocClusters(n: number, mark: boolean): Promise<number> {
    for (;;) {
      const hint = this.freeHint;
      const s = await this.findFreeRun(n);
      let created = false;
      for (let r = Math.floor(s / this.refEntries); r <= Math.floor((s + n - 1) / this.refEntries); r++) {
        if (this.rtEntry(r) === 0) {
          await this.createRefBlock(r);
          created = true;
          break;
        }
      }
      if (created) {
        this.freeHint = Math.min(hint, this.freeHint);
        continue;
      }
      if (mark) await this.updateRefcounts(s, n, 1);
      return s * this.cs;
    }
  }

  /**
   * Allocates the first free cluster and as many free clusters directly after it as possible (at most
   * `max`, within one refcount block), without setting refcounts. First fit, so holes get reused.
   */
  private async allocRun(max: number): Promise<{ off: number; n: number }> {
    for (;;) {
      const hint = this.freeHint;
      const s = await this.findFreeRun(1);
      const r = Math.floor(s / this.refEntries);
      const boff = this.rtEntry(r);
      if (boff === 0) {
        await this.createRefBlock(r);
        this.freeHint = Math.min(hint, this.freeHint);
        continue;
      }
      const b = await this.refBlock(boff);
      let n = 1;
      while (n < max && (s + n) % this.refEntries !== 0 && this.refAt(b, (s + n) % this.refEntries) === 0) n++;
      this.freeHint = s + n;
      return { off: s * this.cs, n };
    }
  }

  /** Creates the refcount block for refcount-table index r; it describes itself (placed at its first cluster). */
  private async createRefBlock(r: number): Promise<void> {
    if (r >= this.rtEntries()) {
      await this.growRefTable(r);
      return;
    }
    const c0 = r * this.refEntries;
    const b = new Uint8Array(this.cs);
    this.setRefAt(b, 0, 1);
    await this.file.pwrite(c0 * this.cs, b);
    await this.barrier();
    this.rbCache.set(c0 * this.cs, b);
    setU64(this.rtdv, r * 8, c0 * this.cs);
    await this.file.pwrite(this.header.refcountTableOffset + r * 8, this.rt.subarray(r * 8, r * 8 + 8));
    await this.barrier();
  }

  /** Moves the refcount table to a bigger one; new blocks for r.. and the table are placed in r's range. */
  private async growRefTable(r: number): Promise<void> {
    const oldClusters = this.header.refcountTableClusters;
    const c0 = r * this.refEntries;
    let m = 1, k = 0;
    for (;;) {
      k = Math.max(Math.ceil(((r + m) * 8) / this.cs), Math.ceil(oldClusters * 1.5));
      if (m * this.refEntries >= m + k) break;
      m++;
    }
    const total = m + k;
    const newRt = new Uint8Array(k * this.cs);
    newRt.set(this.rt);
    const ndv = new DataView(newRt.buffer);
    for (let j = 0; j < m; j++) {
      const b = new Uint8Array(this.cs);
      for (let c = 0; c < this.refEntries; c++) {
        const idx = (r + j) * this.refEntries + c - c0;
        if (idx < total) this.setRefAt(b, c, 1);
      }
      const off = (c0 + j) * this.cs;
      await this.file.pwrite(off, b);
      this.rbCache.set(off, b);
      setU64(ndv, (r + j) * 8, off);
    }
    const rtOff = (c0 + m) * this.cs;
    await this.file.pwrite(rtOff, newRt);
    await this.file.sync();
    const oldOff = this.header.refcountTableOffset;
    this.header.refcountTableOffset = rtOff;
    this.header.refcountTableClusters = k;
    await this.file.pwrite(0, encodeFixedHeader(this.header));
    await this.file.sync();
    this.rt = newRt;
    this.rtdv = ndv;
    await this.updateRefcounts(oldOff / this.cs, oldClusters, -1);
  }

  /** Frees whatever host clusters an L2 entry references (one reference). */
  private async releaseEntry(m: Mapping): Promise<void> {
    if (m.kind === 'compressed') {
      const r = compressedRange(m.hi, m.lo, this.cb);
      const first = Math.floor(r.offset / this.cs), last = Math.floor((r.offset + r.length - 1) / this.cs);
      await this.updateRefcounts(first, last - first + 1, -1);
    } else if (m.host !== 0) {
      await this.updateRefcounts(m.host / this.cs, 1, -1);
    }
  }

  // ---- L1 / L2 -----------------------------------------------------------------------------

  private l1Entry(i: number): { off: number; copied: boolean } {
    const hi = this.l1dv.getUint32(i * 8), lo = this.l1dv.getUint32(i * 8 + 4);
    return { off: entryOffset(hi, lo), copied: (hi & OFLAG_COPIED_HI) !== 0 };
  }

  private async writeL1Entry(i: number, off: number, copied: boolean): Promise<void> {
    setEntry(this.l1dv, i * 8, off, copied);
    await this.file.pwrite(this.header.l1TableOffset + i * 8, this.l1.subarray(i * 8, i * 8 + 8));
  }

  private l2Table(off: number): Promise<Uint8Array> {
    return this.cachedTable(this.l2Cache, off, 'L2 table');
  }

  private decode(t: Uint8Array, i: number): Mapping {
    const dv = new DataView(t.buffer, t.byteOffset, t.byteLength);
    const p = i * this.entryBytes;
    const hi = dv.getUint32(p), lo = dv.getUint32(p + 4);
    const copied = (hi & OFLAG_COPIED_HI) !== 0;
    if ((hi & OFLAG_COMPRESSED_HI) !== 0) return { kind: 'compressed', host: 0, copied: false, hi, lo, allocMask: 0, zeroMask: 0 };
    const host = entryOffset(hi, lo);
    if (this.extendedL2) {
      const zeroMask = dv.getUint32(p + 8), allocMask = dv.getUint32(p + 12);
      let kind: Mapping['kind'] = 'sub';
      if (allocMask === 0xffffffff) kind = 'normal';
      else if (zeroMask === 0xffffffff && allocMask === 0) kind = 'zero';
      else if (zeroMask === 0 && allocMask === 0) kind = 'unalloc';
      return { kind, host, copied, hi, lo, allocMask, zeroMask };
    }
    let kind: Mapping['kind'];
    if (this.header.version >= 3 && (lo & OFLAG_ZERO_LO) !== 0) kind = 'zero';
    else if (host === 0) kind = 'unalloc';
    else kind = 'normal';
    return { kind, host, copied, hi, lo, allocMask: 0, zeroMask: 0 };
  }

  private async lookup(g: number): Promise<Mapping> {
    const l1i = Math.floor(g / this.l2Entries);
    const e = this.l1Entry(l1i);
    if (e.off === 0) return UNALLOC;
    return this.decode(await this.l2Table(e.off), g % this.l2Entries);
  }

  /** Returns a writable (refcount 1) L2 table for L1 index i, allocating or copying it as needed. */
  private async l2ForWrite(i: number): Promise<{ off: number; t: Uint8Array }> {
    const e = this.l1Entry(i);
    if (e.off !== 0 && e.copied) return { off: e.off, t: await this.l2Table(e.off) };
    const t = e.off !== 0 ? (await this.l2Table(e.off)).slice() : new Uint8Array(this.cs);
    const off = await this.allocClusters(1, false);
    await this.file.pwrite(off, t);
    await this.barrier();
    await this.updateRefcounts(off / this.cs, 1, 1);
    await this.barrier();
    this.l2Cache.set(off, t);
    await this.writeL1Entry(i, off, true);
    await this.barrier();
    if (e.off !== 0) await this.updateRefcounts(e.off / this.cs, 1, -1);
    return { off, t };
  }

  private setL2(t: Uint8Array, i: number, off: number, copied: boolean, zero: boolean, alloc: number, zeroMask: number): void {
    const dv = new DataView(t.buffer, t.byteOffset, t.byteLength);
    const p = i * this.entryBytes;
    setEntry(dv, p, off, copied, zero && !this.extendedL2);
    if (this.extendedL2) {
      dv.setUint32(p + 8, zeroMask >>> 0);
      dv.setUint32(p + 12, alloc >>> 0);
    }
  }

  private async writeL2Range(off: number, t: Uint8Array, i0: number, i1: number): Promise<void> {
    const a = i0 * this.entryBytes, b = (i1 + 1) * this.entryBytes;
    await this.file.pwrite(off + a, t.subarray(a, b));
  }

  // ---- reads -------------------------------------------------------------------------------

  read(offset: number, length: number): Promise<Uint8Array> {
    try {
      checkRange(this, offset, length);
      if (this.closed) throw new TsvmError('image is closed');
    } catch (e) {
      return Promise.reject(e);
    }
    return this.tryFastRead(offset, length, false) ??
      this.fastOrLocked(() => this.tryFastRead(offset, length, true), () => this.readLocked(offset, length));
  }

  async readInto(offset: number, buf: Uint8Array): Promise<void> {
    checkRange(this, offset, buf.length);
    if (this.closed) throw new TsvmError('image is closed');
    const fast = this.tryFastRead(offset, buf.length, false, buf);
    if (fast !== undefined) {
      await fast;
      return;
    }
    const data = await this.fastOrLocked(() => this.tryFastRead(offset, buf.length, true, buf), () => this.readLocked(offset, buf.length));
    if (data !== buf) buf.set(data);
  }

  /** readInto done synchronously when tryFastRead could do it (see BlockDriver.readSync). */
  readSync(offset: number, buf: Uint8Array): boolean {
    checkRange(this, offset, buf.length);
    if (this.closed) throw new TsvmError('image is closed');
    if (buf.length === 0) return true;
    const plan = this.fastReadPlan(offset, buf.length, false, buf);
    if (plan === undefined) return false;
    const runs = plan.runs;
    for (let j = 0; j < runs.length; j += 3) this.file.preadSync(buf.subarray(runs[j + 1]!, runs[j + 2]!), runs[j]!);
    return true;
  }

  /** Reads without the mutex (see tryFastWrite) when only cached, plain clusters are involved. */
  private tryFastRead(offset: number, length: number, inLock: boolean, into?: Uint8Array): Promise<Uint8Array> | undefined {
    const plan = this.fastReadPlan(offset, length, inLock, into);
    if (plan === undefined) return undefined;
    const { out, runs } = plan;
    const cs = this.cs;
    const g0 = Math.floor(offset / cs), g1 = Math.floor((offset + length - 1) / cs);
    if (runs.length === 0) return Promise.resolve(out);
    for (let g = g0; g <= g1; g++) this.busy.set(g, (this.busy.get(g) ?? 0) + 1);
    this.inflight++;
    const finish = () => {
      for (let g = g0; g <= g1; g++) {
        const v = this.busy.get(g)!;
        if (v <= 1) this.busy.delete(g);
        else this.busy.set(g, v - 1);
      }
      this.opDone();
    };
    if (runs.length === 3) {
      return this.file.preadInto(out.subarray(runs[1]!, runs[2]!), runs[0]!).then(
        () => { finish(); return out; }, (e: unknown) => { finish(); throw e; });
    }
    const ios: Promise<number>[] = [];
    for (let j = 0; j < runs.length; j += 3) ios.push(this.file.preadInto(out.subarray(runs[j + 1]!, runs[j + 2]!), runs[j]!));
    return Promise.allSettled(ios).then((rs) => {
      finish();
      for (const r of rs) if (r.status === 'rejected') throw r.reason;
      return out;
    });
  }

  /**
   * The host reads of a fast read: (host offset, start, end in the buffer) triples; zero ranges are
   * already filled in `into`. Undefined when the slow path must run.
   */
  private fastReadPlan(offset: number, length: number, inLock: boolean, into?: Uint8Array): { out: Uint8Array; runs: number[] } | undefined {
    if (length === 0 || this.extendedL2 || (!inLock && !this.mutex.idle)) return undefined;
    const cs = this.cs, l2e = this.l2Entries;
    const g0 = Math.floor(offset / cs), g1 = Math.floor((offset + length - 1) / cs);
    if (g1 - g0 >= 4096) return undefined;
    const v3 = this.header.version >= 3;
    const runs: number[] = [];
    let l1Cur = -1, dv: DataView | undefined;
    let runHost = -1, runStart = 0, runEnd = 0;
    for (let g = g0; g <= g1; g++) {
      if (this.busy.get(g) === -1) return undefined;
      const l1i = Math.floor(g / l2e);
      if (l1i !== l1Cur) {
        l1Cur = l1i;
        const l2off = entryOffset(this.l1dv.getUint32(l1i * 8), this.l1dv.getUint32(l1i * 8 + 4));
        dv = undefined;
        if (l2off !== 0) {
          const t = this.l2Cache.get(l2off);
          if (t === undefined) return undefined;
          dv = new DataView(t.buffer, t.byteOffset, t.byteLength);
        }
      }
      let host = 0;
      if (dv !== undefined) {
        const p = (g % l2e) * 8;
        const hi = dv.getUint32(p), lo = dv.getUint32(p + 4);
        if ((hi & OFLAG_COMPRESSED_HI) !== 0) return undefined;
        const zero = v3 && (lo & OFLAG_ZERO_LO) !== 0;
        host = zero ? 0 : entryOffset(hi, lo);
        if (host === 0 && !zero && this.backing !== undefined) return undefined;
      } else if (this.backing !== undefined) {
        return undefined;
      }
      const a = g === g0 ? offset : g * cs, b = g === g1 ? offset + length : (g + 1) * cs;
      if (host === 0) {
        if (into !== undefined) runs.push(-1, a - offset, b - offset);
        continue;
      }
      const target = host + (a - g * cs);
      if (runHost >= 0 && runHost + (runEnd - runStart) === target && runEnd === a - offset) {
        runEnd = b - offset;
      } else {
        if (runHost >= 0) runs.push(runHost, runStart, runEnd);
        runHost = target;
        runStart = a - offset;
        runEnd = b - offset;
      }
    }
    if (runHost >= 0) runs.push(runHost, runStart, runEnd);
    let out: Uint8Array;
    if (into !== undefined) {
      out = into;
      let w = 0;
      for (let j = 0; j < runs.length; j += 3) {
        if (runs[j] === -1) {
          out.fill(0, runs[j + 1], runs[j + 2]);
        } else {
          runs[w++] = runs[j]!;
          runs[w++] = runs[j + 1]!;
          runs[w++] = runs[j + 2]!;
        }
      }
      runs.length = w;
    } else {
      out = new Uint8Array(length);
    }
    return { out, runs };
  }

  private async readLocked(offset: number, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    let pos = 0;
    while (pos < length) {
      const cur = offset + pos, g = Math.floor(cur / this.cs), inOff = cur % this.cs;
      let n = Math.min(this.cs - inOff, length - pos);
      const m = await this.lookup(g);
      switch (m.kind) {
        case 'unalloc':
          await this.readBacking(cur, n, out, pos);
          break;
        case 'zero':
          break;
        case 'normal': {
          // Merge physically contiguous clusters into one read.
          let hostEnd = m.host + inOff + n;
          while (pos + n < length) {
            const next = await this.lookup(Math.floor((cur + n) / this.cs));
            if (next.kind !== 'normal' || next.host !== hostEnd) break;
            const add = Math.min(this.cs, length - pos - n);
            n += add;
            hostEnd += add;
          }
          await this.file.preadInto(out.subarray(pos, pos + n), m.host + inOff);
          break;
        }
        case 'compressed':
          out.set((await this.readCompressed(m)).subarray(inOff, inOff + n), pos);
          break;
        case 'sub': {
          const sc = this.cs / 32;
          let p = 0;
          while (p < n) {
            const s = Math.floor((inOff + p) / sc);
            const len = Math.min(n - p, (s + 1) * sc - (inOff + p));
            if ((m.allocMask >>> s) & 1) await this.file.preadInto(out.subarray(pos + p, pos + p + len), m.host + inOff + p);
            else if (!((m.zeroMask >>> s) & 1)) await this.readBacking(cur + p, len, out, pos + p);
            p += len;
          }
          break;
        }
      }
      pos += n;
    }
    return out;
  }

  private async readBacking(cur: number, n: number, out: Uint8Array, pos: number): Promise<void> {
    if (!this.backing) return;
    const avail = Math.min(n, this.backing.virtualSize - cur);
    if (avail > 0) out.set(await this.backing.read(cur, avail), pos);
  }

  private async readCompressed(m: Mapping): Promise<Uint8Array> {
    const r = compressedRange(m.hi, m.lo, this.cb);
    if (this.lastCompressed?.host === r.offset) return this.lastCompressed.data;
    if (this.header.compressionType !== 0) throw new TsvmError('qcow2 zstd compression is not supported');
    const raw = await this.file.pread(r.offset, r.length);
    inflateRawSync ??= (await import('node:zlib')).inflateRawSync;
    let data: Uint8Array;
    try {
      data = inflateRawSync(raw, { finishFlush: 2 /* Z_SYNC_FLUSH: input may have trailing bytes */ });
    } catch (e) {
      throw new TsvmError(`qcow2 compressed cluster at ${r.offset} is corrupt: ${errorMessage(e)}`);
    }
    if (data.length < this.cs) {
      const full = new Uint8Array(this.cs);
      full.set(data);
      data = full;
    }
    this.lastCompressed = { host: r.offset, data };
    return data;
  }

  async blockStatus(offset: number, length: number): Promise<BlockStatus> {
    const fast = this.blockStatusSync(offset, length);
    if (fast !== undefined) return fast;
    return this.locked(async () => {
      const st = async (cur: number) => this.classify(await this.lookup(Math.floor(cur / this.cs)), cur);
      const unit = this.extendedL2 ? this.cs / 32 : this.cs;
      const first = await st(offset);
      let n = Math.min(length, unit - (offset % unit));
      while (n < length) {
        const next = await st(offset + n);
        if (next.allocated !== first.allocated || next.zero !== first.zero) break;
        if (first.offset !== undefined && next.offset !== first.offset + n) break;
        if (first.offset === undefined && next.offset !== undefined) break;
        n = Math.min(length, n + unit);
      }
      const res: BlockStatus = { length: n, allocated: first.allocated, zero: first.zero };
      if (first.offset !== undefined) res.offset = first.offset;
      return res;
    });
  }

  /**
   * blockStatus without waiting for the mutex, when it is idle and the first L2 table is cached (the
   * status may then be shorter than the one blockStatus finds, stopping at an uncached table).
   */
  blockStatusSync(offset: number, length: number): BlockStatus | undefined {
    checkRange(this, offset, length);
    if (!this.mutex.idle || length === 0) return undefined;
    if (!this.extendedL2) return this.scanStatus(offset, length);
    let missing = false;
    const res = this.statusOf(offset, length, (g) => {
      const m = this.lookupCached(g);
      if (m !== undefined) return m;
      missing = true;
      return UNALLOC;
    }, () => missing);
    return missing ? undefined : res;
  }

  /**
   * statusOf(classify(lookupCached)) for standard L2 entries, without the objects and per-cluster calls
   * (bulk copies ask often, before the optimizing compiler has looked at this).
   */
  private scanStatus(offset: number, length: number): BlockStatus | undefined {
    const cs = this.cs, l2e = this.l2Entries, v3 = this.header.version >= 3, end = offset + length;
    // Unallocated clusters read as zero but where a backing file has data.
    const unallocZeroFrom = this.backing === undefined ? 0 : this.backing.virtualSize;
    // The first cluster's status; host -1: no offset.
    let allocated = false, zero = false, host = -1;
    let g = Math.floor(offset / cs), pos = offset;
    while (pos < end) {
      const l1i = Math.floor(g / l2e);
      const l2off = entryOffset(this.l1dv.getUint32(l1i * 8), this.l1dv.getUint32(l1i * 8 + 4));
      let dv: DataView | undefined;
      if (l2off !== 0) {
        const t = this.l2Cache.peek(l2off);
        if (t === undefined) {
          if (pos === offset) return undefined;
          break;
        }
        dv = new DataView(t.buffer, t.byteOffset, t.byteLength);
      }
      for (let i = g - l1i * l2e; i < l2e && pos < end; i++, g++) {
        let a = false, z: boolean, h = -1;
        if (dv === undefined) {
          z = pos >= unallocZeroFrom;
        } else {
          const hi = dv.getUint32(i * 8), lo = dv.getUint32(i * 8 + 4);
          if ((hi & OFLAG_COMPRESSED_HI) !== 0) {
            a = true;
            z = false;
          } else if (v3 && (lo & OFLAG_ZERO_LO) !== 0) {
            a = true;
            z = true;
          } else {
            // entryOffset(hi, lo), inline.
            const e = (hi & 0x00ffffff) * 0x100000000 + ((lo & 0xfffffe00) >>> 0);
            if (e === 0) {
              z = pos >= unallocZeroFrom;
            } else {
              a = true;
              z = false;
              h = e + (pos - g * cs);
            }
          }
        }
        if (pos === offset) {
          allocated = a;
          zero = z;
          host = h;
        } else if (a !== allocated || z !== zero || (host >= 0 ? h !== host + (pos - offset) : h >= 0)) {
          return this.status(pos - offset, allocated, zero, host);
        }
        pos = (g + 1) * cs;
      }
    }
    return this.status(Math.min(pos, end) - offset, allocated, zero, host);
  }

  private status(length: number, allocated: boolean, zero: boolean, host: number): BlockStatus {
    const res: BlockStatus = { length, allocated, zero };
    if (host >= 0) res.offset = host;
    return res;
  }

  /** blockStatus from mappings that are at hand; stops early when `stop` says a lookup failed. */
  private statusOf(offset: number, length: number, look: (g: number) => Mapping, stop: () => boolean): BlockStatus {
    const st = (cur: number) => this.classify(look(Math.floor(cur / this.cs)), cur);
    const unit = this.extendedL2 ? this.cs / 32 : this.cs;
    const first = st(offset);
    let n = Math.min(length, unit - (offset % unit));
    while (n < length && !stop()) {
      const next = st(offset + n);
      if (next.allocated !== first.allocated || next.zero !== first.zero) break;
      if (first.offset !== undefined && next.offset !== first.offset + n) break;
      if (first.offset === undefined && next.offset !== undefined) break;
      n = Math.min(length, n + unit);
    }
    const res: BlockStatus = { length: n, allocated: first.allocated, zero: first.zero };
    if (first.offset !== undefined) res.offset = first.offset;
    return res;
  }

  /** The mapping of guest cluster g when its L2 table is cached (or there is none). */
  private lookupCached(g: number): Mapping | undefined {
    const e = this.l1Entry(Math.floor(g / this.l2Entries));
    if (e.off === 0) return UNALLOC;
    const t = this.l2Cache.peek(e.off);
    return t === undefined ? undefined : this.decode(t, g % this.l2Entries);
  }

  private classify(m: Mapping, cur: number): { allocated: boolean; zero: boolean; offset?: number } {
    const inOff = cur % this.cs;
    switch (m.kind) {
      case 'unalloc': return { allocated: false, zero: !this.backing || cur >= this.backing.virtualSize };
      case 'zero': return { allocated: true, zero: true };
      case 'normal': return { allocated: true, zero: false, offset: m.host + inOff };
      case 'compressed': return { allocated: true, zero: false };
      case 'sub': {
        const s = Math.floor(inOff / (this.cs / 32));
        if ((m.allocMask >>> s) & 1) return { allocated: true, zero: false, offset: m.host + inOff };
        if ((m.zeroMask >>> s) & 1) return { allocated: true, zero: true };
        return { allocated: false, zero: !this.backing };
      }
    }
  }

  // ---- writes ------------------------------------------------------------------------------

  write(offset: number, data: Uint8Array): Promise<void> {
    try {
      checkRange(this, offset, data.length);
      this.writable();
    } catch (e) {
      return Promise.reject(e);
    }
    return this.tryFastWrite(offset, data, false) ??
      this.fastOrLocked(() => this.tryFastWrite(offset, data, true), () => this.writeLocked(offset, data));
  }

  /**
   * The common write without the mutex: no other request waits for it, the L2 table is cached and
   * writable, the clusters are ones this image owns (written in place) or unallocated/zero ones to be
   * allocated from cached refcount blocks, and no other fast request is using them. The metadata is
   * updated in memory at once (so concurrent requests see the new mapping, and wait through `busy`
   * for the data) and written back later by writeDirty. Returns undefined when the slow path must run.
   */
  private tryFastWrite(offset: number, data: Uint8Array, inLock: boolean): Promise<void> | undefined {
    const len = data.length;
    if (len === 0 || this.syncMetadata || this.extendedL2 || this.ro || (!inLock && !this.mutex.idle)) return undefined;
    const cs = this.cs, l2e = this.l2Entries;
    const g0 = Math.floor(offset / cs), g1 = Math.floor((offset + len - 1) / cs);
    const l1i = Math.floor(g0 / l2e);
    if (Math.floor(g1 / l2e) !== l1i || g1 - g0 >= 4096) return undefined;
    const l1hi = this.l1dv.getUint32(l1i * 8);
    if ((l1hi & OFLAG_COPIED_HI) === 0) return undefined;
    const l2off = entryOffset(l1hi, this.l1dv.getUint32(l1i * 8 + 4));
    if (l2off === 0) return undefined;
    const t = this.l2Cache.get(l2off);
    if (t === undefined || (!this.dirtyL2.has(l2off) && this.dirtyL2.size >= this.maxDirty)) return undefined;
    const dv = new DataView(t.buffer, t.byteOffset, t.byteLength);
    const v3 = this.header.version >= 3;
    let fresh = 0;
    for (let g = g0; g <= g1; g++) {
      if (this.busy.has(g)) return undefined;
      const p = (g % l2e) * 8;
      const hi = dv.getUint32(p), lo = dv.getUint32(p + 4);
      if ((hi & OFLAG_COMPRESSED_HI) !== 0) return undefined;
      const host = entryOffset(hi, lo);
      const zero = v3 && (lo & OFLAG_ZERO_LO) !== 0;
      if (host !== 0) {
        if (zero || (hi & OFLAG_COPIED_HI) === 0 || host % cs !== 0) return undefined;
      } else if (!zero && this.backing !== undefined) {
        return undefined;
      } else {
        fresh++;
      }
    }
    let hosts: number[] | undefined;
    if (fresh > 0) {
      hosts = this.allocSync(fresh);
      if (hosts === undefined) return undefined;
    }
    // From here on nothing fails synchronously.
    const puts: [number, Uint8Array][] = [];
    const revert: number[] = [];
    let runHost = -1, runStart = 0, runEnd = 0;
    const flushRun = () => {
      if (runHost >= 0) puts.push([runHost, data.subarray(runStart, runEnd)]);
      runHost = -1;
    };
    let k = 0, dirtyLo = -1, dirtyHi = 0;
    for (let g = g0; g <= g1; g++) {
      const p = (g % l2e) * 8;
      const hi = dv.getUint32(p), lo = dv.getUint32(p + 4);
      const host = entryOffset(hi, lo);
      const a = g === g0 ? offset : g * cs, b = g === g1 ? offset + len : (g + 1) * cs;
      const ds = a - offset, de = b - offset, inOff = a - g * cs;
      let target: number;
      if (host === 0) {
        const h = hosts![k++]! * cs;
        revert.push(p, hi, lo);
        setEntry(dv, p, h, true);
        if (dirtyLo < 0) dirtyLo = p;
        dirtyHi = p + 8;
        if (b - a < cs) {
          if (h < this.file.highWater) {
            // A reused cluster: write all of it.
            flushRun();
            const buf = new Uint8Array(cs);
            buf.set(data.subarray(ds, de), inOff);
            puts.push([h, buf]);
            continue;
          }
          // Never written: the rest of the cluster already reads as zeroes.
          if (h + cs > this.tailEnd) this.tailEnd = h + cs;
        }
        target = h + inOff;
      } else {
        target = host + inOff;
      }
      if (runHost >= 0 && runHost + (runEnd - runStart) === target) {
        runEnd = de;
      } else {
        flushRun();
        runHost = target;
        runStart = ds;
        runEnd = de;
      }
    }
    flushRun();
    if (dirtyLo >= 0) this.markDirty(this.dirtyL2, l2off, t, dirtyLo, dirtyHi);
    const undo = () => {
      // The new clusters leak; the mapping goes back to what it was.
      for (let j = 0; j < revert.length; j += 3) {
        dv.setUint32(revert[j]!, revert[j + 1]!);
        dv.setUint32(revert[j]! + 4, revert[j + 2]!);
      }
    };
    const ios = puts.map(([h, b]) => this.file.pwrite(h, b));
    for (let g = g0; g <= g1; g++) this.busy.set(g, -1);
    this.inflight++;
    const finish = () => {
      for (let g = g0; g <= g1; g++) this.busy.delete(g);
      this.opDone();
    };
    const fail = (e: unknown) => {
      undo();
      finish();
      throw e;
    };
    if (ios.length === 1) return ios[0]!.then(finish, fail);
    return Promise.allSettled(ios).then((rs) => {
      for (const r of rs) if (r.status === 'rejected') fail(r.reason);
      finish();
    });
  }

  /**
   * Allocates `k` clusters (first fit, not necessarily contiguous) from cached refcount blocks, setting
   * their refcounts to 1 in the cache only; undefined (and nothing changed) when that is not possible.
   */
  private allocSync(k: number): number[] | undefined {
    const E = this.refEntries;
    const out: number[] = [];
    let idx = this.freeHint;
    while (out.length < k) {
      const r = Math.floor(idx / E);
      if (r >= this.rtEntries()) return undefined;
      const off = this.rtEntry(r);
      if (off === 0) return undefined;
      const b = this.rbCache.peek(off);
      if (b === undefined || (!this.dirtyRb.has(off) && this.dirtyRb.size >= this.maxDirty)) return undefined;
      for (let i = idx - r * E; i < E && out.length < k; i++, idx++) if (this.refAt(b, i) === 0) out.push(idx);
    }
    // One cache lookup and one dirty range per refcount block (the clusters are in increasing order).
    const bits = this.refBits;
    let r0 = -1, off = 0, lo = 0, hi = 0, b: Uint8Array | undefined;
    for (let j = 0; j < out.length; j++) {
      const c = out[j]!, r = Math.floor(c / E), i = c - r * E;
      if (r !== r0) {
        if (b !== undefined) this.markDirty(this.dirtyRb, off, b, lo, hi);
        r0 = r;
        off = this.rtEntry(r);
        b = this.rbCache.get(off)!;
        lo = Math.floor((i * bits) / 8);
      }
      this.setRefAt(b!, i, 1);
      hi = Math.ceil(((i + 1) * bits) / 8);
    }
    if (b !== undefined) this.markDirty(this.dirtyRb, off, b, lo, hi);
    this.freeHint = idx;
    return out;
  }

  private async writeLocked(offset: number, data: Uint8Array): Promise<void> {
    let pos = 0;
    const span = this.cs * this.l2Entries;
    while (pos < data.length) {
      const cur = offset + pos;
      const n = Math.min(data.length - pos, (Math.floor(cur / span) + 1) * span - cur);
      await this.writeInTable(cur, data.subarray(pos, pos + n));
      pos += n;
    }
  }

  /** Writes within one L2 table's range. */
  private async writeInTable(cur: number, d: Uint8Array): Promise<void> {
    const l1i = Math.floor(cur / (this.cs * this.l2Entries));
    const { off: l2off, t } = await this.l2ForWrite(l1i);
    const g0 = Math.floor(cur / this.cs), g1 = Math.floor((cur + d.length - 1) / this.cs);
    const needs: number[] = [];
    for (let g = g0; g <= g1; g++) {
      const m = this.decode(t, g % this.l2Entries);
      if (m.kind === 'normal' && m.copied && m.host !== 0) {
        const a = Math.max(cur, g * this.cs), b = Math.min(cur + d.length, (g + 1) * this.cs);
        await this.file.pwrite(m.host + (a - g * this.cs), d.subarray(a - cur, b - cur));
      } else {
        needs.push(g);
      }
    }
    const batch = Math.max(1, Math.floor(MAX_BATCH_BYTES / this.cs));
    for (let k = 0; k < needs.length;) {
      const run = await this.allocRun(Math.min(batch, needs.length - k));
      const gs = needs.slice(k, k + run.n);
      k += run.n;
      const host = run.off;
      const buf = new Uint8Array(gs.length * this.cs);
      for (let j = 0; j < gs.length; j++) {
        const g = gs[j]!;
        const a = Math.max(cur, g * this.cs), b = Math.min(cur + d.length, (g + 1) * this.cs);
        if (b - a < this.cs) {
          const valid = Math.min(this.cs, this.header.size - g * this.cs);
          buf.set(await this.readLocked(g * this.cs, valid), j * this.cs);
        }
        buf.set(d.subarray(a - cur, b - cur), j * this.cs + (a - g * this.cs));
      }
      await this.file.pwrite(host, buf);
      await this.barrier();
      await this.updateRefcounts(host / this.cs, gs.length, 1);
      await this.barrier();
      const old: Mapping[] = [];
      for (let j = 0; j < gs.length; j++) {
        const i = gs[j]! % this.l2Entries;
        old.push(this.decode(t, i));
        this.setL2(t, i, host + j * this.cs, true, false, 0xffffffff, 0);
      }
      await this.writeL2Range(l2off, t, gs[0]! % this.l2Entries, gs[gs.length - 1]! % this.l2Entries);
      await this.barrier();
      for (const m of old) await this.releaseEntry(m);
    }
  }

  /**
   * Writes whole clusters compressed (offset cluster-aligned; length a multiple of the cluster size,
   * or reaching the end of the disk). Clusters that do not shrink are written uncompressed.
   * The clusters are compressed in parallel (zlib thread pool) before the request is queued, so
   * against overlapping concurrent requests it is ordered as of when its compression finishes.
   */
  async writeCompressed(offset: number, data: Uint8Array): Promise<void> {
    checkRange(this, offset, data.length);
    this.writable();
    if (offset % this.cs !== 0 || (data.length % this.cs !== 0 && offset + data.length !== this.header.size)) {
      throw new TsvmError('compressed writes must be cluster-aligned');
    }
    if (this.header.compressionType !== 0) throw new TsvmError('qcow2 zstd compression is not supported');
    const cs = this.cs, n = Math.ceil(data.length / cs);
    const deflate = deflateRawParallel ??= (await import('./deflate-pool.js')).deflateRawParallel;
    const zs = await Promise.all(Array.from({ length: n }, (_, j) => {
      let chunk = data.subarray(j * cs, Math.min(data.length, (j + 1) * cs));
      if (chunk.length < cs) {
        const full = new Uint8Array(cs);
        full.set(chunk);
        chunk = full;
      }
      // The parameters QEMU uses (a 4 KiB window): the same output, and faster than zlib's defaults.
      return deflate(chunk, { level: 6, windowBits: 12, memLevel: 9, chunkSize: cs + 4096 })
        .then((z): Uint8Array | undefined => (z.length >= cs - 512 ? undefined : z));
    }));
    const writes: Promise<void>[] = [];
    for (let j = 0; j < n;) {
      let k = j;
      while (k < n && zs[k] === undefined) k++;
      if (k > j) {
        writes.push(this.write(offset + j * cs, data.subarray(j * cs, Math.min(data.length, k * cs))));
        j = k;
      } else {
        while (k < n && zs[k] !== undefined) k++;
        const first = j, last = k;
        writes.push(this.locked(async () => {
          for (let c = first; c < last; c++) await this.writeCompressedCluster(offset / cs + c, zs[c]!);
        }));
        j = k;
      }
    }
    const rs = await Promise.allSettled(writes);
    for (const r of rs) if (r.status === 'rejected') throw r.reason;
  }

  private async writeCompressedCluster(g: number, z: Uint8Array): Promise<void> {
    const { off: l2off, t } = await this.l2ForWrite(Math.floor(g / this.l2Entries));
    let host: number;
    const room = this.compTail === 0 ? 0 : this.cs - (this.compTail % this.cs);
    if (this.compTail !== 0 && this.compTail % this.cs !== 0 && z.length <= room &&
        (await this.getRefcount(Math.floor(this.compTail / this.cs))) < this.refMax) {
      host = this.compTail;
      await this.file.pwrite(host, z);
      await this.barrier();
      await this.updateRefcounts(Math.floor(host / this.cs), 1, 1);
    } else {
      const n = Math.ceil(z.length / this.cs);
      host = await this.allocClusters(n, false);
      await this.file.pwrite(host, z);
      await this.barrier();
      await this.updateRefcounts(host / this.cs, n, 1);
    }
    this.compTail = host + z.length;
    await this.barrier();
    const i = g % this.l2Entries;
    const old = this.decode(t, i);
    const desc = encodeCompressed(host, z.length, this.cb);
    const dv = new DataView(t.buffer, t.byteOffset, t.byteLength);
    dv.setBigUint64(i * this.entryBytes, desc);
    if (this.extendedL2) dv.setBigUint64(i * this.entryBytes + 8, 0n);
    await this.writeL2Range(l2off, t, i, i);
    await this.barrier();
    await this.releaseEntry(old);
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    checkRange(this, offset, length);
    this.writable();
    await this.zeroOrDiscard(offset, length, true);
  }

  async discard(offset: number, length: number): Promise<void> {
    checkRange(this, offset, length);
    this.writable();
    await this.zeroOrDiscard(offset, length, false);
  }

  private async zeroOrDiscard(offset: number, length: number, zero: boolean): Promise<void> {
    const end = offset + length;
    // Partial clusters: write real zeroes (for discard: leave alone).
    const a = Math.min(end, alignUp(offset, this.cs));
    let b = Math.max(a, Math.floor(end / this.cs) * this.cs);
    if (end === this.header.size) b = end; // the last, partial cluster counts as whole
    await this.locked(async () => {
      if (zero) {
        if (a > offset) await this.writeLocked(offset, new Uint8Array(a - offset));
        if (end > b) await this.writeLocked(b, new Uint8Array(end - b));
      }
      if (b <= a) return;
      const g0 = a / this.cs, g1 = Math.ceil(b / this.cs) - 1;
      let g = g0;
      while (g <= g1) {
        const l1i = Math.floor(g / this.l2Entries);
        const last = Math.min(g1, (l1i + 1) * this.l2Entries - 1);
        await this.zeroClusters(l1i, g, last, zero);
        g = last + 1;
      }
    });
  }

  /** `full`: the clusters become unallocated even over a backing file (a full discard). */
  private async zeroClusters(l1i: number, g0: number, g1: number, zero: boolean, full = false): Promise<void> {
    const hasBacking = this.backing !== undefined && !full;
    const canZeroFlag = this.header.version >= 3;
    if (this.l1Entry(l1i).off === 0 && !hasBacking) return;
    // Without a zero flag, zeroing over a backing file needs real zeroes.
    if (zero && hasBacking && !canZeroFlag) {
      const buf = new Uint8Array(Math.min((g1 - g0 + 1) * this.cs, MAX_BATCH_BYTES));
      for (let g = g0; g <= g1; g += buf.length / this.cs) {
        const n = Math.min(buf.length, (g1 + 1) * this.cs - g * this.cs, this.header.size - g * this.cs);
        await this.writeInTable(g * this.cs, buf.subarray(0, n));
      }
      return;
    }
    const { off: l2off, t } = await this.l2ForWrite(l1i);
    const old: Mapping[] = [];
    const useZero = hasBacking && canZeroFlag;
    for (let g = g0; g <= g1; g++) {
      const i = g % this.l2Entries;
      old.push(this.decode(t, i));
      this.setL2(t, i, 0, false, useZero, 0, useZero ? 0xffffffff : 0);
    }
    await this.writeL2Range(l2off, t, g0 % this.l2Entries, g1 % this.l2Entries);
    await this.barrier();
    for (const m of old) await this.releaseEntry(m);
  }

  // ---- backing file ------------------------------------------------------------------------

  /**
   * Changes the backing file (like `qemu-img rebase`; `undefined` removes it). Unless `unsafe`, every
   * cluster this image does not allocate and whose contents differ between the old and new backing
   * files is first copied into this image, so the disk's contents do not change.
   */
  async rebase(name: string | undefined, format?: string, unsafe = false): Promise<void> {
    this.writable();
    if (name !== undefined && !this.opener) throw new TsvmError('this image was opened without a way to open backing files');
    const next = name !== undefined ? await this.opener!(name, format) : undefined;
    try {
      await this.locked(async () => {
        if (!unsafe) {
          const step = this.cs;
          for (let off = 0; off < this.header.size; off += step) {
            const n = Math.min(step, this.header.size - off);
            const m = await this.lookup(Math.floor(off / this.cs));
            if (m.kind !== 'unalloc' && m.kind !== 'sub') continue;
            const oldData = await this.readLocked(off, n);
            const newData = new Uint8Array(n);
            if (next) {
              const avail = Math.min(n, next.virtualSize - off);
              if (avail > 0) newData.set(await next.read(off, avail));
            }
            if (Buffer.compare(Buffer.from(oldData), Buffer.from(newData)) !== 0) await this.writeLocked(off, oldData);
          }
        }
        await this.file.sync();
        const h = this.header;
        const oldLen = encodeFullHeader({ ...h }, this.cs).length;
        if (name === undefined) {
          delete h.backingFile;
          delete h.backingFormat;
        } else {
          h.backingFile = name;
          if (format !== undefined) h.backingFormat = format;
          else delete h.backingFormat;
        }
        const hdr = encodeFullHeader(h, this.cs);
        const out = new Uint8Array(Math.max(hdr.length, oldLen));
        out.set(hdr);
        await this.file.pwrite(0, out);
        await this.file.sync();
        const old = this.backing;
        this.backing = next;
        if (old) await old.close();
      });
    } catch (e) {
      if (next && this.backing !== next) await next.close();
      throw e;
    }
  }

  // ---- resize ------------------------------------------------------------------------------

  /**
   * Changes the virtual disk size. Shrinking (only with `shrink`, like `qemu-img resize --shrink`) drops
   * every cluster past the new end (the cluster holding an unaligned new end is kept), frees L2 tables and
   * refcount blocks that no longer describe anything, and truncates the file after its last used cluster.
   * Snapshots keep the clusters they reference.
   */
  async resize(size: number, opts: { shrink?: boolean } = {}): Promise<void> {
    this.writable();
    if (!Number.isSafeInteger(size) || size < 0) throw new TsvmError(`invalid size ${size}`);
    await this.locked(async () => {
      if (this.snapshots.length > 0 && size !== this.header.size && this.header.version < 3) {
        throw new TsvmError('Can\'t resize a v2 image which has snapshots');
      }
      if (size < this.header.size) {
        if (!opts.shrink) throw new TsvmError('Use the --shrink option to perform a shrink operation.');
        await this.shrinkLocked(size);
        return;
      }
      const need = Math.ceil(size / (this.cs * this.l2Entries));
      if (need > this.header.l1Size) await this.growL1(need);
      this.header.size = size;
      await this.writeHeader();
      await this.file.sync();
    });
  }

  private async shrinkLocked(size: number): Promise<void> {
    const oldClusters = Math.ceil(this.header.size / this.cs);
    const g0 = Math.ceil(size / this.cs);
    const keepL1 = Math.ceil(g0 / this.l2Entries);
    // The L2 table holding the new end: drop its entries past the end.
    if (g0 < oldClusters && g0 % this.l2Entries !== 0) {
      const l1i = Math.floor(g0 / this.l2Entries);
      if (this.l1Entry(l1i).off !== 0) {
        await this.zeroClusters(l1i, g0, Math.min(oldClusters - 1, (l1i + 1) * this.l2Entries - 1), false, true);
      }
    }
    // Whole L2 tables past the end: unhook them and drop this L1's references (to the table and, as
    // every L1 table referencing an L2 table counts for its clusters too, to what it maps).
    for (let i = keepL1; i < this.header.l1Size; i++) {
      const e = this.l1Entry(i);
      if (e.off === 0) continue;
      const t = (await this.l2Table(e.off)).slice();
      await this.writeL1Entry(i, 0, false);
      await this.barrier();
      await this.updateRefcounts(e.off / this.cs, 1, -1);
      for (let j = 0; j < this.l2Entries; j++) await this.releaseEntry(this.decode(t, j));
    }
    // Refcount blocks that now count nothing but themselves.
    for (let r = 0; r < this.rtEntries(); r++) {
      const off = this.rtEntry(r);
      if (off === 0) continue;
      const b = await this.refBlock(off);
      const self = Math.floor(off / this.cs / this.refEntries) === r ? (off / this.cs) % this.refEntries : -1;
      let used = false;
      for (let i = 0; i < this.refEntries && !used; i++) used = i !== self && this.refAt(b, i) !== 0;
      if (used) continue;
      setU64(this.rtdv, r * 8, 0);
      await this.file.pwrite(this.header.refcountTableOffset + r * 8, this.rt.subarray(r * 8, r * 8 + 8));
      await this.barrier();
      this.rbCache.delete(off);
      if (self < 0) await this.updateRefcounts(off / this.cs, 1, -1);
      else this.onClusterFreed(off / this.cs);
    }
    this.header.size = size;
    await this.writeHeader();
    await this.file.sync();
    // The file ends after its last cluster in use.
    let last = -1;
    for (let r = this.rtEntries() - 1; r >= 0 && last < 0; r--) {
      const off = this.rtEntry(r);
      if (off === 0) continue;
      const b = await this.refBlock(off);
      for (let i = this.refEntries - 1; i >= 0; i--) {
        if (this.refAt(b, i) !== 0) {
          last = r * this.refEntries + i;
          break;
        }
      }
    }
    if (last >= 0 && (last + 1) * this.cs < (await this.file.size())) {
      await this.file.truncate((last + 1) * this.cs);
      await this.file.sync();
    }
    this.freeHint = 0;
  }

  private async growL1(entries: number): Promise<void> {
    const bytes = entries * 8, n = Math.ceil(bytes / this.cs);
    const newL1 = new Uint8Array(bytes);
    newL1.set(this.l1);
    const off = await this.allocClusters(n, false);
    const padded = new Uint8Array(n * this.cs);
    padded.set(newL1);
    await this.file.pwrite(off, padded);
    await this.barrier();
    await this.updateRefcounts(off / this.cs, n, 1);
    await this.file.sync();
    const oldOff = this.header.l1TableOffset, oldN = Math.ceil((this.header.l1Size * 8) / this.cs);
    this.header.l1TableOffset = off;
    this.header.l1Size = entries;
    await this.writeHeader();
    await this.file.sync();
    this.l1 = newL1;
    this.l1dv = new DataView(newL1.buffer);
    if (oldN > 0) await this.updateRefcounts(oldOff / this.cs, oldN, -1);
  }

  // ---- snapshots ---------------------------------------------------------------------------

  listSnapshots(): SnapshotInfo[] {
    return this.snapshots.map((s) => {
      const info: SnapshotInfo = {
        id: s.id, name: s.name, vmStateSize: s.vmStateSize, dateSec: s.dateSec, dateNsec: s.dateNsec,
        vmClockNsec: s.vmClockNsec,
      };
      if (s.diskSize !== undefined) info.diskSize = s.diskSize;
      if (s.extra.length >= 24) {
        const icount = new DataView(s.extra.buffer, s.extra.byteOffset).getBigInt64(16);
        if (icount >= 0n) info.icount = Number(icount);
      }
      return info;
    });
  }

  private findSnapshot(nameOrId: string): number {
    let i = this.snapshots.findIndex((s) => s.id === nameOrId);
    if (i < 0) i = this.snapshots.findIndex((s) => s.name === nameOrId);
    if (i < 0) throw new TsvmError(`snapshot '${nameOrId}' not found`);
    return i;
  }

  /** Adds `delta` to the refcounts of everything reachable from an L1 table (L2 tables and data). */
  private async updateTreeRefcounts(l1: Uint8Array, delta: number): Promise<void> {
    const dv = new DataView(l1.buffer, l1.byteOffset, l1.byteLength);
    for (let i = 0; i < l1.length / 8; i++) {
      const off = entryOffset(dv.getUint32(i * 8), dv.getUint32(i * 8 + 4));
      if (off === 0) continue;
      const t = await this.l2Table(off);
      for (let j = 0; j < this.l2Entries; j++) {
        const m = this.decode(t, j);
        if (m.kind === 'compressed') {
          const r = compressedRange(m.hi, m.lo, this.cb);
          const first = Math.floor(r.offset / this.cs), last = Math.floor((r.offset + r.length - 1) / this.cs);
          await this.updateRefcounts(first, last - first + 1, delta);
        } else if (m.host !== 0) {
          await this.updateRefcounts(m.host / this.cs, 1, delta);
        }
      }
      await this.updateRefcounts(off / this.cs, 1, delta);
    }
  }

  /** Sets the COPIED flags of the active L1 and its L2 tables from the refcounts; returns fixes made. */
  private async fixCopiedFlags(write: boolean): Promise<number> {
    let fixes = 0;
    for (let i = 0; i < this.header.l1Size; i++) {
      const e = this.l1Entry(i);
      if (e.off === 0) continue;
      const rc = await this.getRefcount(e.off / this.cs);
      const t = await this.l2Table(e.off);
      const dv = new DataView(t.buffer, t.byteOffset, t.byteLength);
      let lo = -1, hi = -1;
      for (let j = 0; j < this.l2Entries; j++) {
        const m = this.decode(t, j);
        if (m.kind === 'compressed' || m.host === 0) {
          if (m.copied && m.kind !== 'compressed') {
            fixes++;
            if (write) {
              dv.setUint32(j * this.entryBytes, m.hi & ~OFLAG_COPIED_HI);
              if (lo < 0) lo = j;
              hi = j;
            }
          }
          continue;
        }
        const want = (await this.getRefcount(m.host / this.cs)) === 1;
        if (want !== m.copied) {
          fixes++;
          if (write) {
            dv.setUint32(j * this.entryBytes, want ? (m.hi | OFLAG_COPIED_HI) >>> 0 : m.hi & ~OFLAG_COPIED_HI);
            if (lo < 0) lo = j;
            hi = j;
          }
        }
      }
      if (lo >= 0) await this.writeL2Range(e.off, t, lo, hi);
      if ((rc === 1) !== e.copied) {
        fixes++;
        if (write) await this.writeL1Entry(i, e.off, rc === 1);
      }
    }
    return fixes;
  }

  private async writeSnapshotTable(entries: SnapshotEntry[]): Promise<void> {
    const oldOff = this.header.snapshotsOffset, oldSize = snapshotTableSize(this.snapshots);
    let off = 0;
    if (entries.length > 0) {
      const buf = encodeSnapshotTable(entries);
      const n = Math.ceil(buf.length / this.cs);
      off = await this.allocClusters(n, false);
      const padded = new Uint8Array(n * this.cs);
      padded.set(buf);
      await this.file.pwrite(off, padded);
      await this.barrier();
      await this.updateRefcounts(off / this.cs, n, 1);
    }
    await this.file.sync();
    this.header.nbSnapshots = entries.length;
    this.header.snapshotsOffset = off;
    await this.writeHeader();
    await this.file.sync();
    if (this.snapshots.length > 0 && oldSize > 0) {
      await this.updateRefcounts(oldOff / this.cs, Math.ceil(oldSize / this.cs), -1);
    }
    this.snapshots = entries;
  }

  /** Creates an internal snapshot of the current disk state (no VM state). */
  async createSnapshot(name: string, id?: string): Promise<SnapshotInfo> {
    this.writable();
    return this.locked(async () => {
      if (this.snapshots.some((s) => s.name === name)) throw new TsvmError(`snapshot '${name}' already exists`);
      let newId = id;
      if (newId === undefined) {
        let max = 0;
        for (const s of this.snapshots) max = Math.max(max, Number.parseInt(s.id, 10) || 0);
        newId = String(max + 1);
      } else if (this.snapshots.some((s) => s.id === newId)) {
        throw new TsvmError(`snapshot id '${newId}' already exists`);
      }
      const n = Math.ceil((this.header.l1Size * 8) / this.cs);
      const copy = new Uint8Array(Math.max(1, n) * this.cs);
      copy.set(this.l1);
      const cdv = new DataView(copy.buffer);
      for (let i = 0; i < this.header.l1Size; i++) cdv.setUint32(i * 8, cdv.getUint32(i * 8) & ~OFLAG_COPIED_HI);
      let l1Off = 0;
      if (n > 0) {
        l1Off = await this.allocClusters(n, false);
        await this.file.pwrite(l1Off, copy);
        await this.barrier();
        await this.updateRefcounts(l1Off / this.cs, n, 1);
      }
      await this.updateTreeRefcounts(this.l1, 1);
      await this.fixCopiedFlags(true);
      await this.file.sync();
      const now = Date.now();
      const entry: SnapshotEntry = {
        l1TableOffset: l1Off, l1Size: this.header.l1Size, id: newId, name,
        dateSec: Math.floor(now / 1000), dateNsec: (now % 1000) * 1e6, vmClockNsec: 0n, vmStateSize: 0,
        diskSize: this.header.size, extra: makeExtra(0, this.header.size),
      };
      await this.writeSnapshotTable([...this.snapshots, entry]);
      return this.listSnapshots()[this.snapshots.length - 1]!;
    });
  }

  /** Reverts the disk to a snapshot. */
  async applySnapshot(nameOrId: string): Promise<void> {
    this.writable();
    await this.locked(async () => {
      const s = this.snapshots[this.findSnapshot(nameOrId)]!;
      const snapL1 = await this.file.pread(s.l1TableOffset, s.l1Size * 8);
      const size = s.diskSize ?? this.header.size;
      const entries = Math.max(s.l1Size, Math.ceil(size / (this.cs * this.l2Entries)));
      // Take references on the snapshot's tree before dropping the current one.
      await this.updateTreeRefcounts(snapL1, 1);
      const oldL1 = this.l1;
      if (entries > this.header.l1Size) {
        await this.growL1(entries);
      }
      const newL1 = new Uint8Array(this.header.l1Size * 8);
      newL1.set(snapL1.subarray(0, Math.min(snapL1.length, newL1.length)));
      const padded = new Uint8Array(Math.ceil(newL1.length / this.cs) * this.cs);
      padded.set(newL1);
      await this.file.pwrite(this.header.l1TableOffset, padded);
      await this.file.sync();
      this.l1 = newL1;
      this.l1dv = new DataView(newL1.buffer);
      this.header.size = size;
      await this.writeHeader();
      await this.updateTreeRefcounts(oldL1, -1);
      await this.fixCopiedFlags(true);
      await this.file.sync();
    });
  }

  async deleteSnapshot(nameOrId: string): Promise<void> {
    this.writable();
    await this.locked(async () => {
      const idx = this.findSnapshot(nameOrId);
      const s = this.snapshots[idx]!;
      const rest = this.snapshots.filter((_, i) => i !== idx);
      await this.writeSnapshotTable(rest);
      const snapL1 = await this.file.pread(s.l1TableOffset, s.l1Size * 8);
      await this.updateTreeRefcounts(snapL1, -1);
      const n = Math.ceil((s.l1Size * 8) / this.cs);
      if (n > 0) await this.updateRefcounts(s.l1TableOffset / this.cs, n, -1);
      await this.fixCopiedFlags(true);
      await this.file.sync();
    });
  }

  // ---- check / repair ----------------------------------------------------------------------

  /** Checks refcounts and COPIED flags; with `repair` rebuilds the refcount structures and flags. */
  async check(repair = false): Promise<Qcow2CheckResult> {
    if (repair) this.writable();
    return this.locked(() => this.checkLocked(repair));
  }

  private async checkLocked(repair: boolean): Promise<Qcow2CheckResult> {
    const first = await this.scan();
    const res: Qcow2CheckResult = { ...first, corruptionsFixed: 0, leaksFixed: 0 };
    if (!repair || (first.corruptions === 0 && first.leaks === 0)) return res;
    const refs = await this.computeRefs(false);
    await this.rebuildRefcounts(refs.refs);
    await this.fixCopiedFlags(true);
    await this.file.sync();
    const after = await this.scan();
    return {
      ...after,
      corruptionsFixed: first.corruptions - after.corruptions,
      leaksFixed: first.leaks - after.leaks,
    };
  }

  private async scan(): Promise<Omit<Qcow2CheckResult, 'corruptionsFixed' | 'leaksFixed'>> {
    const { refs, errors, allocated } = await this.computeRefs(true);
    let corruptions = errors, leaks = 0;
    const fileClusters = Math.ceil((await this.file.size()) / this.cs);
    const n = Math.max(refs.length, fileClusters);
    for (let c = 0; c < n; c++) {
      const want = c < refs.length ? refs[c]! : 0;
      const have = await this.getRefcount(c);
      if (have > want) leaks++;
      else if (have < want) corruptions++;
    }
    corruptions += await this.fixCopiedFlags(false);
    const total = Math.ceil(this.header.size / this.cs);
    return { corruptions, leaks, checkErrors: 0, allocatedClusters: allocated, totalClusters: total, imageEndOffset: await this.file.size() };
  }

  /** Reference counts of every host cluster as implied by the metadata. */
  private async computeRefs(includeRefcountStructures: boolean): Promise<{ refs: Float64Array; errors: number; allocated: number }> {
    const fileSize = await this.file.size();
    let refs = new Float64Array(Math.max(16, Math.ceil(fileSize / this.cs) + 16));
    let errors = 0, allocated = 0;
    const inc = (off: number, len: number) => {
      if (len <= 0) return;
      // A reference past the end of the file (damaged metadata) is an error, as in qemu-img; counting it
      // would only grow the table towards the bogus offset.
      if (off + len > alignUp(fileSize, this.cs)) {
        errors++;
        return;
      }
      const a = Math.floor(off / this.cs), b = Math.floor((off + len - 1) / this.cs);
      if (b >= refs.length) {
        const bigger = new Float64Array(Math.max(b + 1, refs.length * 2));
        bigger.set(refs);
        refs = bigger;
      }
      for (let c = a; c <= b; c++) refs[c]!++;
    };
    inc(0, this.cs);
    const walkL1 = async (l1: Uint8Array, active: boolean) => {
      const dv = new DataView(l1.buffer, l1.byteOffset, l1.byteLength);
      for (let i = 0; i < l1.length / 8; i++) {
        const off = entryOffset(dv.getUint32(i * 8), dv.getUint32(i * 8 + 4));
        if (off === 0) continue;
        if (off % this.cs !== 0) {
          errors++;
          continue;
        }
        inc(off, this.cs);
        const t = await this.l2Table(off);
        for (let j = 0; j < this.l2Entries; j++) {
          const m = this.decode(t, j);
          if (m.kind === 'compressed') {
            const r = compressedRange(m.hi, m.lo, this.cb);
            inc(r.offset, r.length);
            if (active) allocated++;
          } else if (m.host !== 0) {
            if (m.host % this.cs !== 0) {
              errors++;
              continue;
            }
            inc(m.host, this.cs);
            if (active) allocated++;
          }
        }
      }
    };
    inc(this.header.l1TableOffset, this.header.l1Size * 8);
    await walkL1(this.l1, true);
    for (const s of this.snapshots) {
      inc(s.l1TableOffset, s.l1Size * 8);
      await walkL1(await this.file.pread(s.l1TableOffset, s.l1Size * 8), false);
    }
    if (this.snapshots.length > 0) inc(this.header.snapshotsOffset, snapshotTableSize(this.snapshots));
    await this.countBitmaps(inc);
    if (includeRefcountStructures) {
      inc(this.header.refcountTableOffset, this.header.refcountTableClusters * this.cs);
      for (let r = 0; r < this.rtEntries(); r++) {
        const off = this.rtEntry(r);
        if (off !== 0) inc(off, this.cs);
      }
    }
    return { refs, errors, allocated };
  }

  private async countBitmaps(inc: (off: number, len: number) => void): Promise<void> {
    // Like QEMU, bitmaps only count while the 'bitmaps' autoclear bit says the extension is valid.
    const ext = this.header.extensions.find((e) => e.type === EXT_BITMAPS);
    if (!ext || ext.data.length < 24 || (this.header.autoclear & 1n) === 0n) return;
    const dv = new DataView(ext.data.buffer, ext.data.byteOffset, ext.data.byteLength);
    const nb = dv.getUint32(0), dirSize = getU64(dv, 8), dirOff = getU64(dv, 16);
    inc(dirOff, dirSize);
    const dir = await this.file.pread(dirOff, dirSize);
    const ddv = new DataView(dir.buffer);
    let p = 0;
    for (let i = 0; i < nb && p + 24 <= dir.length; i++) {
      const tOff = getU64(ddv, p), tSize = ddv.getUint32(p + 8);
      const nameSize = ddv.getUint16(p + 18), extra = ddv.getUint32(p + 20);
      inc(tOff, tSize * 8);
      const table = await this.file.pread(tOff, tSize * 8);
      const tdv = new DataView(table.buffer);
      for (let j = 0; j < tSize; j++) {
        const off = entryOffset(tdv.getUint32(j * 8), tdv.getUint32(j * 8 + 4));
        if (off !== 0) inc(off, this.cs);
      }
      p += (24 + extra + nameSize + 7) & ~7;
    }
  }

  /** Writes fresh refcount structures after the end of the file describing `refs`, then switches to them. */
  private async rebuildRefcounts(refsIn: Float64Array): Promise<void> {
    let used = refsIn.length;
    while (used > 0 && refsIn[used - 1] === 0) used--;
    const start = Math.max(used, Math.ceil((await this.file.size()) / this.cs));
    const E = this.refEntries;
    let m = Math.max(1, Math.ceil(start / E)), k = 0;
    for (;;) {
      k = Math.ceil((m * 8) / this.cs);
      const need = Math.ceil((start + m + k) / E);
      if (need <= m) break;
      m = need;
    }
    const refs = new Float64Array(m * E);
    refs.set(refsIn.subarray(0, Math.min(refsIn.length, refs.length)));
    for (let c = start; c < start + m + k; c++) refs[c] = 1;
    const rt = new Uint8Array(k * this.cs);
    const rdv = new DataView(rt.buffer);
    for (let r = 0; r < m; r++) {
      const b = new Uint8Array(this.cs);
      for (let i = 0; i < E; i++) {
        const v = refs[r * E + i]!;
        if (v > this.refMax) throw new TsvmError('qcow2 refcount overflow during repair');
        if (v) this.setRefAt(b, i, v);
      }
      await this.file.pwrite((start + r) * this.cs, b);
      setU64(rdv, r * 8, (start + r) * this.cs);
    }
    await this.file.pwrite((start + m) * this.cs, rt);
    await this.file.sync();
    this.header.refcountTableOffset = (start + m) * this.cs;
    this.header.refcountTableClusters = k;
    await this.file.pwrite(0, encodeFixedHeader(this.header));
    await this.file.sync();
    this.rt = rt;
    this.rtdv = rdv;
    this.rbCache.clear();
    this.freeHint = 0;
    this.compTail = 0;
  }

  /** Format-specific details (like `qemu-img info`). */
  info(): Qcow2Info {
    const h = this.header;
    const i: Qcow2Info = {
      version: h.version, compat: h.version >= 3 ? '1.1' : '0.10', clusterSize: this.cs, refcountBits: this.refBits,
      lazyRefcounts: this.lazyRefcounts, extendedL2: this.extendedL2,
      corrupt: (h.incompatible & INCOMPAT_CORRUPT) !== 0n, dirty: (h.incompatible & INCOMPAT_DIRTY) !== 0n,
      compressionType: h.compressionType === 0 ? 'zlib' : 'zstd', snapshots: this.listSnapshots(),
    };
    if (h.backingFile !== undefined) i.backingFile = h.backingFile;
    if (h.backingFormat !== undefined) i.backingFormat = h.backingFormat;
    return i;
  }

  /**
   * `amend -o compat=`: version 2 <-> 3. Upgrading only rewrites the header. Downgrading turns zero
   * clusters into unallocated ones (no backing file) or allocated zeroes, drops the v3 feature bits, and
   * is refused for what version 2 cannot express (incompatible features, refcount widths other than 16,
   * zero clusters referenced by snapshots).
   */
  async setCompat(compat: '0.10' | '1.1'): Promise<void> {
    this.writable();
    await this.locked(async () => {
      const h = this.header;
      const target = compat === '0.10' ? 2 : 3;
      if (target === h.version) return;
      const oldLen = encodeFullHeader({ ...h, extensions: [...h.extensions] }, this.cs).length;
      if (target === 3) {
        const raw = new Uint8Array(112);
        raw.set(h.raw.subarray(0, 72));
        Object.assign(h, { raw, version: 3, headerLength: 112, incompatible: 0n, compatible: 0n, autoclear: 0n, refcountOrder: 4, compressionType: 0 });
        if (!h.extensions.some((e) => e.type === EXT_FEATURE_NAMES)) h.extensions.push({ type: EXT_FEATURE_NAMES, data: featureNameTable() });
        try {
          encodeFullHeader({ ...h }, this.cs);
        } catch {
          h.extensions = h.extensions.filter((e) => e.type !== EXT_FEATURE_NAMES);
        }
      } else {
        const incompat = h.incompatible & ~INCOMPAT_DIRTY;
        if (incompat !== 0n) throw new TsvmError(`Cannot downgrade an image with incompatible features 0x${incompat.toString(16)} set`);
        if (this.refBits !== 16) throw new TsvmError('compat=0.10 requires refcount_bits=16');
        for (const sn of this.snapshots) {
          const l1 = await this.file.pread(sn.l1TableOffset, sn.l1Size * 8);
          const dv = new DataView(l1.buffer, l1.byteOffset, l1.byteLength);
          for (let i = 0; i < sn.l1Size; i++) {
            const off = entryOffset(dv.getUint32(i * 8), dv.getUint32(i * 8 + 4));
            if (off === 0) continue;
            const t = await this.l2Table(off);
            for (let j = 0; j < this.l2Entries; j++) {
              if (this.decode(t, j).kind === 'zero') throw new TsvmError(`Cannot downgrade: snapshot '${sn.name}' has zero clusters`);
            }
          }
        }
        // Zero clusters of the active table: unallocated, or (over a backing file) allocated zeroes.
        const clusters = Math.ceil(h.size / this.cs);
        for (let i = 0; i < h.l1Size; i++) {
          if (this.l1Entry(i).off === 0) continue;
          for (let j = 0; j < this.l2Entries; j++) {
            const g = i * this.l2Entries + j;
            if (g >= clusters) break;
            const e = this.l1Entry(i);
            if (this.decode(await this.l2Table(e.off), j).kind !== 'zero') continue;
            if (this.backing) await this.writeLocked(g * this.cs, new Uint8Array(Math.min(this.cs, h.size - g * this.cs)));
            else await this.zeroClusters(i, g, g, false, true);
          }
        }
        await this.file.sync();
        Object.assign(h, { raw: h.raw.slice(0, 72), version: 2, headerLength: 72, incompatible: 0n, compatible: 0n, autoclear: 0n, refcountOrder: 4, compressionType: 0 });
        h.extensions = h.extensions.filter((e) => e.type !== EXT_FEATURE_NAMES && e.type !== EXT_BITMAPS);
      }
      const hdr = encodeFullHeader(h, this.cs);
      const out = new Uint8Array(Math.max(hdr.length, oldLen));
      out.set(hdr);
      await this.file.pwrite(0, out);
      await this.file.sync();
    });
  }

  /** Lazy refcounts flag (informational: refcounts are always kept up to date). */
  get lazyRefcounts(): boolean {
    return (this.header.compatible & COMPAT_LAZY_REFCOUNTS) !== 0n;
  }

  /** `amend -o lazy_refcounts=on|off`: only the flag changes, since refcounts here are always exact. */
  async setLazyRefcounts(on: boolean): Promise<void> {
    if (this.readOnly) throw new TsvmError('image is read-only');
    if (on && this.header.version < 3) {
      throw new TsvmError('Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)');
    }
    await this.locked(async () => {
      if (on) this.header.compatible |= COMPAT_LAZY_REFCOUNTS;
      else this.header.compatible &= ~COMPAT_LAZY_REFCOUNTS;
      await this.writeHeader();
      await this.file.sync();
    });
  }
}

