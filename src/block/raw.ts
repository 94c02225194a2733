import type { BlockDriver, BlockStatus } from './block-driver.js';
import { BlockFile } from './file.js';
import { TsvmError } from '../base/errors.js';
import { checkRange } from './util.js';

/** A raw disk image: the file's bytes are the disk's bytes. */
export class RawImage implements BlockDriver {
  readonly format = 'raw' as const;

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

  async blockStatus(offset: number, length: number): Promise<BlockStatus> {
    checkRange(this, offset, length);
    return { length, allocated: true, zero: false, offset };
  }

  /** Grows or shrinks the image file. */
  async resize(size: number): Promise<void> {
    this.writable();
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
