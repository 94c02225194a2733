/**
 * qcow version 1 images (the layout of QEMU's block/qcow.c): a 48-byte big-endian header, an optional
 * backing file name, a one-level L1 table, L2 tables and data clusters appended at the end of the file.
 * There are no refcounts. Compressed clusters are raw deflate streams.
 */
import { inflateRawSync } from 'node:zlib';
import { TsvmError, errorMessage } from '../../base/errors.js';
import type { BlockDriver, BlockStatus } from '../block-driver.js';
import { BlockFile } from '../file.js';
import { Lru, Mutex, alignUp, checkRange, getU64, setU64 } from '../util.js';

const MAGIC = 0x514649fb;
const HEADER_SIZE = 48;

export interface QcowOpenOptions {
  readOnly?: boolean;
  openBacking?: (name: string, format: string | undefined) => Promise<BlockDriver>;
  /** Never fsync (qemu's cache=unsafe). */
  unsafe?: boolean;
}

export interface QcowCreateOptions {
  backingFile?: string;
  /** Cluster size (default: 4 KiB, or 512 bytes with a backing file, as qemu-img does). */
  clusterSize?: number;
}

interface Compressed {
  host: number;
  csize: number;
}

interface L2Table {
  /** Host offsets (0 = unallocated, -1 = compressed, see `comp`). */
  e: Float64Array;
  comp: Map<number, Compressed>;
}

export interface QcowHeader {
  backingFileOffset: number;
  backingFileSize: number;
  mtime: number;
  size: number;
  clusterBits: number;
  l2Bits: number;
  cryptMethod: number;
  l1TableOffset: number;
  backingFile?: string;
}

function encodeHeader(h: QcowHeader): Uint8Array {
  const b = new Uint8Array(HEADER_SIZE);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, MAGIC);
  dv.setUint32(4, 1);
  setU64(dv, 8, h.backingFileOffset);
  dv.setUint32(16, h.backingFileSize);
  dv.setUint32(20, h.mtime);
  setU64(dv, 24, h.size);
  b[32] = h.clusterBits;
  b[33] = h.l2Bits;
  dv.setUint32(36, h.cryptMethod);
  setU64(dv, 40, h.l1TableOffset);
  return b;
}

export async function createQcow(path: string, size: number, opts: QcowCreateOptions = {}): Promise<void> {
  if (!Number.isSafeInteger(size) || size < 0) throw new TsvmError(`invalid image size ${size}`);
  const cs = opts.clusterSize ?? (opts.backingFile !== undefined ? 512 : 4096);
  const clusterBits = Math.log2(cs);
  if (!Number.isInteger(clusterBits) || clusterBits < 9 || clusterBits > 16) {
    throw new TsvmError(`invalid qcow cluster size ${cs}`);
  }
  // qemu-img: 4 KiB clusters with 512-entry L2 tables, or 512-byte clusters with 4096-entry L2 tables.
  const l2Bits = clusterBits === 9 ? 12 : clusterBits === 12 ? 9 : Math.max(9, 21 - clusterBits);
  const name = opts.backingFile !== undefined ? new TextEncoder().encode(opts.backingFile) : undefined;
  if (name && name.length > 1023) throw new TsvmError('backing file name too long');
  let hsize = HEADER_SIZE + (name ? name.length : 0);
  hsize = (hsize + 7) & ~7;
  const l1Size = Math.ceil(size / 2 ** (clusterBits + l2Bits));
  const h: QcowHeader = {
    backingFileOffset: name ? HEADER_SIZE : 0, backingFileSize: name ? name.length : 0, mtime: 0, size,
    clusterBits, l2Bits, cryptMethod: 0, l1TableOffset: hsize,
  };
  const file = await BlockFile.create(path);
  try {
    await file.pwrite(0, encodeHeader(h));
    if (name) await file.pwrite(HEADER_SIZE, name);
    // qemu-img writes the L1 table in 512-byte sectors.
    await file.truncate(hsize + alignUp(l1Size * 8, 512));
    await file.sync();
  } finally {
    await file.close();
  }
}

export class QcowImage implements BlockDriver {
  readonly format = 'qcow' as const;
  private readonly cs: number;
  private readonly l2Entries: number;
  private readonly l1: Float64Array;
  private readonly l2Cache = new Lru<number, L2Table>(64);
  private readonly mutex = new Mutex();
  private lastCompressed?: { host: number; data: Uint8Array };
  private fileEnd = 0;

  private constructor(private readonly file: BlockFile, readonly header: QcowHeader, private backing?: BlockDriver) {
    this.cs = 2 ** header.clusterBits;
    this.l2Entries = 2 ** header.l2Bits;
    this.l1 = new Float64Array(Math.ceil(header.size / (this.cs * this.l2Entries)));
  }

  get virtualSize(): number {
    return this.header.size;
  }
  get readOnly(): boolean {
    return this.file.readOnly;
  }
  get backingDriver(): BlockDriver | undefined {
    return this.backing;
  }

  static async open(path: string, opts: QcowOpenOptions = {}): Promise<QcowImage> {
    const file = await BlockFile.open(path, opts.readOnly ?? false);
    file.unsafe = opts.unsafe ?? false;
    let img: QcowImage | undefined;
    try {
      const b = await file.pread(0, HEADER_SIZE);
      const dv = new DataView(b.buffer);
      if (dv.getUint32(0) !== MAGIC || dv.getUint32(4) !== 1) throw new TsvmError(`'${path}' is not a qcow image`);
      const h: QcowHeader = {
        backingFileOffset: getU64(dv, 8), backingFileSize: dv.getUint32(16), mtime: dv.getUint32(20),
        size: getU64(dv, 24), clusterBits: b[32]!, l2Bits: b[33]!, cryptMethod: dv.getUint32(36),
        l1TableOffset: getU64(dv, 40),
      };
      if (h.clusterBits < 9 || h.clusterBits > 16) throw new TsvmError(`invalid qcow cluster bits ${h.clusterBits}`);
      if (h.l2Bits < 6 || h.l2Bits > 16) throw new TsvmError(`invalid qcow L2 bits ${h.l2Bits}`);
      if (h.cryptMethod !== 0) throw new TsvmError('encrypted qcow images are not supported');
      if (h.size / 2 ** (h.clusterBits + h.l2Bits) > 0x2000000) throw new TsvmError('qcow image is too large');
      if (h.backingFileOffset !== 0) {
        if (h.backingFileSize > 1023) throw new TsvmError('qcow backing file name too long');
        h.backingFile = new TextDecoder().decode(await file.pread(h.backingFileOffset, h.backingFileSize));
      }
      img = new QcowImage(file, h);
      const l1 = await file.pread(h.l1TableOffset, img.l1.length * 8);
      const ldv = new DataView(l1.buffer);
      for (let i = 0; i < img.l1.length; i++) img.l1[i] = getU64(ldv, i * 8);
      img.fileEnd = await file.size();
      if (h.backingFile !== undefined) {
        if (!opts.openBacking) throw new TsvmError(`'${path}' has a backing file '${h.backingFile}'`);
        img.backing = await opts.openBacking(h.backingFile, undefined);
      }
      return img;
    } catch (e) {
      if (img) await img.close().catch(() => undefined);
      else await file.close().catch(() => undefined);
      if (e instanceof TsvmError) throw e;
      throw new TsvmError(`cannot open qcow image '${path}': ${errorMessage(e)}`);
    }
  }

  /** Waits for pending requests, then closes the file and the backing chain. */
  async close(): Promise<void> {
    await this.mutex.run(async () => {
      try {
        await this.file.sync().catch(() => undefined);
        if (this.backing) await this.backing.close();
      } finally {
        await this.file.close();
      }
    });
  }

  flush(): Promise<void> {
    return this.mutex.run(() => this.file.sync());
  }

  private async l2Table(off: number): Promise<L2Table> {
    let t = this.l2Cache.get(off);
    if (!t) {
      const raw = await this.file.pread(off, this.l2Entries * 8);
      const dv = new DataView(raw.buffer);
      t = { e: new Float64Array(this.l2Entries), comp: new Map() };
      const shift = BigInt(63 - this.header.clusterBits);
      for (let i = 0; i < this.l2Entries; i++) {
        const hi = dv.getUint32(i * 8), lo = dv.getUint32(i * 8 + 4);
        if ((hi & 0x80000000) !== 0) {
          const v = dv.getBigUint64(i * 8) & ((1n << 63n) - 1n);
          t.e[i] = -1;
          t.comp.set(i, { host: Number(v & ((1n << shift) - 1n)), csize: Number(v >> shift) & (this.cs - 1) });
        } else {
          t.e[i] = hi * 0x100000000 + lo;
        }
      }
      this.l2Cache.set(off, t);
    }
    return t;
  }

  /** The L2 entry for guest cluster g: 0 = unallocated, >0 = host offset, or a compressed cluster. */
  private async entry(g: number): Promise<number | Compressed> {
    const l1i = Math.floor(g / this.l2Entries);
    const off = this.l1[l1i]!;
    if (off === 0) return 0;
    const t = await this.l2Table(off);
    const i = g % this.l2Entries;
    const e = t.e[i]!;
    return e < 0 ? t.comp.get(i)! : e;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    checkRange(this, offset, length);
    return this.mutex.run(() => this.readLocked(offset, length));
  }

  private async readLocked(offset: number, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    let pos = 0;
    while (pos < length) {
      const cur = offset + pos, g = Math.floor(cur / this.cs), inOff = cur % this.cs;
      const n = Math.min(this.cs - inOff, length - pos);
      const e = await this.entry(g);
      if (e === 0) {
        if (this.backing) {
          const avail = Math.min(n, this.backing.virtualSize - cur);
          if (avail > 0) out.set(await this.backing.read(cur, avail), pos);
        }
      } else if (typeof e === 'number') {
        await this.file.preadInto(out.subarray(pos, pos + n), e + inOff);
      } else {
        out.set((await this.decompress(e)).subarray(inOff, inOff + n), pos);
      }
      pos += n;
    }
    return out;
  }

  private async decompress(c: Compressed): Promise<Uint8Array> {
    const { host, csize } = c;
    if (this.lastCompressed?.host === host) return this.lastCompressed.data;
    const raw = await this.file.pread(host, csize);
    let data: Uint8Array;
    try {
      data = inflateRawSync(raw, { finishFlush: 2 });
    } catch (e) {
      throw new TsvmError(`qcow compressed cluster at ${host} is corrupt: ${errorMessage(e)}`);
    }
    if (data.length !== this.cs) {
      const full = new Uint8Array(this.cs);
      full.set(data.subarray(0, this.cs));
      data = full;
    }
    this.lastCompressed = { host, data };
    return data;
  }

  private async allocAtEnd(bytes: number, data?: Uint8Array): Promise<number> {
    const off = alignUp(this.fileEnd, this.cs);
    this.fileEnd = off + bytes;
    await this.file.pwrite(off, data ?? new Uint8Array(bytes));
    return off;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    checkRange(this, offset, data.length);
    if (this.readOnly) throw new TsvmError('image is read-only');
    await this.mutex.run(() => this.writeLocked(offset, data));
  }

  private async writeLocked(offset: number, data: Uint8Array): Promise<void> {
    {
      let pos = 0;
      while (pos < data.length) {
        const cur = offset + pos, g = Math.floor(cur / this.cs), inOff = cur % this.cs;
        const n = Math.min(this.cs - inOff, data.length - pos);
        const chunk = data.subarray(pos, pos + n);
        const e = await this.entry(g);
        if (typeof e === 'number' && e > 0) {
          await this.file.pwrite(e + inOff, chunk);
        } else {
          const full = n === this.cs ? chunk.slice() : await this.readLocked(g * this.cs, Math.min(this.cs, this.header.size - g * this.cs));
          const buf = new Uint8Array(this.cs);
          buf.set(full);
          buf.set(chunk, inOff);
          const l1i = Math.floor(g / this.l2Entries);
          let l2off = this.l1[l1i]!;
          if (l2off === 0) {
            l2off = await this.allocAtEnd(this.l2Entries * 8);
            this.l2Cache.set(l2off, { e: new Float64Array(this.l2Entries), comp: new Map() });
            await this.file.sync();
            const b = new Uint8Array(8);
            setU64(new DataView(b.buffer), 0, l2off);
            await this.file.pwrite(this.header.l1TableOffset + l1i * 8, b);
            this.l1[l1i] = l2off;
          }
          const host = await this.allocAtEnd(this.cs, buf);
          const t = await this.l2Table(l2off);
          t.e[g % this.l2Entries] = host;
          t.comp.delete(g % this.l2Entries);
          const b = new Uint8Array(8);
          setU64(new DataView(b.buffer), 0, host);
          await this.file.pwrite(l2off + (g % this.l2Entries) * 8, b);
          if (typeof e !== 'number') this.lastCompressed = undefined;
        }
        pos += n;
      }
    }
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    checkRange(this, offset, length);
    if (this.readOnly) throw new TsvmError('image is read-only');
    await this.mutex.run(async () => {
      const zeros = new Uint8Array(this.cs);
      let pos = 0;
      while (pos < length) {
        const cur = offset + pos, g = Math.floor(cur / this.cs);
        const n = Math.min(this.cs - (cur % this.cs), length - pos);
        // Unallocated clusters without a backing file already read as zero.
        if (this.backing || (await this.entry(g)) !== 0) await this.writeLocked(cur, zeros.subarray(0, n));
        pos += n;
      }
    });
  }

  async discard(offset: number, length: number): Promise<void> {
    checkRange(this, offset, length);
    if (this.readOnly) throw new TsvmError('image is read-only');
    // qcow has no way to free clusters; discarded data may stay.
  }

  async blockStatus(offset: number, length: number): Promise<BlockStatus> {
    checkRange(this, offset, length);
    return this.mutex.run(async () => {
      const kind = async (cur: number) => {
        const e = await this.entry(Math.floor(cur / this.cs));
        if (e === 0) return { allocated: false, zero: !this.backing, host: -1 };
        return { allocated: true, zero: false, host: typeof e === 'number' ? e + (cur % this.cs) : -1 };
      };
      const first = await kind(offset);
      let n = Math.min(length, this.cs - (offset % this.cs));
      while (n < length) {
        const k = await kind(offset + n);
        if (k.allocated !== first.allocated || k.zero !== first.zero) break;
        if ((first.host < 0) !== (k.host < 0) || (first.host >= 0 && k.host !== first.host + n)) break;
        n = Math.min(length, n + this.cs);
      }
      const res: BlockStatus = { length: n, allocated: first.allocated, zero: first.zero };
      if (first.host >= 0) res.offset = first.host;
      return res;
    });
  }
}
