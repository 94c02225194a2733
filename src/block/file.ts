import { open, type FileHandle } from 'node:fs/promises';
import { TsvmError, errorMessage } from '../base/errors.js';

/** A small positional-I/O wrapper over a node:fs/promises FileHandle. */
export class BlockFile {
  private constructor(readonly path: string, private readonly fh: FileHandle, readonly readOnly: boolean) {}

  static async open(path: string, readOnly: boolean): Promise<BlockFile> {
    try {
      return new BlockFile(path, await open(path, readOnly ? 'r' : 'r+'), readOnly);
    } catch (e) {
      throw new TsvmError(`cannot open '${path}': ${errorMessage(e)}`);
    }
  }

  /** Creates (or truncates) a file and opens it read-write. */
  static async create(path: string): Promise<BlockFile> {
    try {
      return new BlockFile(path, await open(path, 'w+'), false);
    } catch (e) {
      throw new TsvmError(`cannot create '${path}': ${errorMessage(e)}`);
    }
  }

  /** Reads `length` bytes at `offset`; bytes past the end of the file read as zero. */
  async pread(offset: number, length: number): Promise<Uint8Array> {
    const buf = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh.read(buf, done, length - done, offset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return buf;
  }

  /** Reads into an existing buffer; returns the number of bytes read (short at end of file). */
  async preadInto(buf: Uint8Array, offset: number): Promise<number> {
    let done = 0;
    while (done < buf.length) {
      const { bytesRead } = await this.fh.read(buf, done, buf.length - done, offset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    buf.fill(0, done);
    return done;
  }

  async pwrite(offset: number, data: Uint8Array): Promise<void> {
    if (this.readOnly) throw new TsvmError(`'${this.path}' is read-only`);
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.fh.write(data, done, data.length - done, offset + done);
      done += bytesWritten;
    }
  }

  async truncate(length: number): Promise<void> {
    if (this.readOnly) throw new TsvmError(`'${this.path}' is read-only`);
    await this.fh.truncate(length);
  }

  async size(): Promise<number> {
    return (await this.fh.stat()).size;
  }

  async sync(): Promise<void> {
    if (!this.readOnly) await this.fh.sync();
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}
