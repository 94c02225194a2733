import type { BlockDriver, BlockStatus } from './block-driver.js';
import { BlockFile } from './file.js';
import { TsvmError } from '../base/errors.js';
import { checkRange } from './util.js';
import { ENXIO, SEEK_DATA, SEEK_HOLE, loadLibc } from './libc.js';

/** A raw disk image: the file's bytes are the disk's bytes. */
export class RawImage implements BlockDriver {
  readonly format = 'raw' as const;

  /**
   * The data extent blockStatus found last (as QEMU's block-status cache, only data is remembered: a hole
   * may fill while the file is open, but data does not turn into a hole under us).
   */
  private dataExtent: { data: number; end: number } | undefined;

  private constructor(private readonly file: BlockFile, private size: number) {}

  get virtualSize(): number {
    return this.size;
  }
  get readOnly(): boolean {
    return this.file.readOnly;
  }

  static async open(path: string, readOnly: boolean, unsafe = false): Promise<RawImage> {
    const file = await BlockFile.open(path, readOnly);
    file.unsafe = unsafe;
    return new RawImage(file, await file.size());
  }

  static async create(path: string, size: number): Promise<void> {
    const file = await BlockFile.create(path);
    try {
      await file.truncate(size);
      // As QEMU (file-posix's allocate_first_block): the first block is allocated, written with zeroes.
      if (size > 0) await file.pwrite(0, new Uint8Array(Math.min(size, 4096)));
    } finally {
      await file.close();
    }
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    checkRange(this, offset, length);
    return this.file.pread(offset, length);
  }

  async readInto(offset: number, buf: Uint8Array): Promise<void> {
    checkRange(this, offset, buf.length);
    await this.file.preadInto(buf, offset);
  }

  readSync(offset: number, buf: Uint8Array): boolean {
    checkRange(this, offset, buf.length);
    this.file.preadSync(buf, offset);
    return true;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    checkRange(this, offset, data.length);
    this.writable();
    await this.file.pwrite(offset, data);
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    checkRange(this, offset, length);
    this.writable();
    const chunk = new Uint8Array(Math.min(length, 1 << 20));
    for (let done = 0; done < length; done += chunk.length) {
      const n = Math.min(chunk.length, length - done);
      await this.file.pwrite(offset + done, n === chunk.length ? chunk : chunk.subarray(0, n));
    }
  }

  async discard(offset: number, length: number): Promise<void> {
    checkRange(this, offset, length);
    this.writable();
    // Discarded contents are unspecified; leaving the data in place is valid.
  }

  flush(): Promise<void> {
    return this.file.sync();
  }

  /**
   * Holes in the file (lseek SEEK_DATA/SEEK_HOLE, as QEMU's file driver) read as zero; without lseek (no
   * koffi, or a file system that refuses) every byte counts as data.
   */
  async blockStatus(offset: number, length: number): Promise<BlockStatus> {
    return this.blockStatusSync(offset, length);
  }

  blockStatusSync(offset: number, length: number): BlockStatus {
    checkRange(this, offset, length);
    const e = length === 0 ? undefined : this.findExtent(offset);
    if (e === undefined) return { length, allocated: true, zero: false, offset };
    const zero = offset < e.data;
    const end = zero ? e.data : e.end;
    return { length: Math.max(1, Math.min(length, end - offset)), allocated: true, zero, offset };
  }

  /** [from, data) is a hole and [data, end) data, for some from <= offset < end; undefined when holes cannot be found. */
  private findExtent(offset: number): { data: number; end: number } | undefined {
    const c = this.dataExtent;
    if (c !== undefined && offset >= c.data && offset < c.end) return c;
    const libc = loadLibc();
    if (libc === null || offset >= this.size) return undefined;
    const fd = this.file.fd, size = this.size;
    const data = libc.lseek(fd, offset, SEEK_DATA);
    if (data < 0) {
      // ENXIO: no data from here to the end of the file.
      return libc.errno() === ENXIO ? { data: size, end: size } : undefined;
    }
    if (data >= size) return { data: size, end: size };
    let end = libc.lseek(fd, data, SEEK_HOLE);
    if (end < 0) return undefined;
    end = Math.min(Math.max(end, data + 1), size);
    return (this.dataExtent = { data, end });
  }

  /** Grows or shrinks the image file. */
  async resize(size: number): Promise<void> {
    this.writable();
    this.dataExtent = undefined;
    await this.file.truncate(size);
    this.size = size;
  }

  close(): Promise<void> {
    return this.file.close();
  }

  private writable(): void {
    if (this.readOnly) throw new TsvmError('image is read-only');
  }
}
