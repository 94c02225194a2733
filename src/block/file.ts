import { read as readCb, readSync, write as writeCb } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { TsvmError, errorMessage } from '../base/errors.js';

/** A small positional-I/O wrapper over a node:fs/promises FileHandle. */
export class BlockFile {
  /**
   * No byte at or past this offset has been written through this handle or existed when it was opened
   * (so that part of the file reads as zeroes until written). Updated when a write or truncate starts.
   */
  private high = 0;
  /** qemu's cache=unsafe: sync() does nothing (for scratch output such as `convert`'s). */
  unsafe = false;

  private constructor(readonly path: string, private readonly fh: FileHandle, readonly readOnly: boolean) {}

  get highWater(): number {
    return this.high;
  }

  /** The file descriptor (for lseek and the like; do not close it). */
  get fd(): number {
    return this.fh.fd;
  }

  static async open(path: string, readOnly: boolean): Promise<BlockFile> {
    try {
      const f = new BlockFile(path, await open(path, readOnly ? 'r' : 'r+'), readOnly);
      if (!readOnly) {
        try {
          f.high = await f.size();
        } catch (e) {
          await f.close().catch(() => undefined);
          throw e;
        }
      }
      return f;
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
  preadInto(buf: Uint8Array, offset: number): Promise<number> {
    // The callback API: cheaper per request than FileHandle's promises.
    if (!Number.isSafeInteger(offset + buf.length) || offset < 0) return Promise.reject(this.badOffset(offset));
    return new Promise((resolve, reject) => {
      const step = (done: number) => {
        if (done >= buf.length) {
          resolve(done);
          return;
        }
        readCb(this.fh.fd, buf, done, buf.length - done, offset + done, (err, n) => {
          if (err) reject(err);
          else if (n === 0) {
            buf.fill(0, done);
            resolve(done);
          } else step(done + n);
        });
      };
      step(0);
    });
  }

  /**
   * preadInto without the thread pool: blocks the event loop, but costs far less per request (bulk copies
   * that have nothing else to do meanwhile). Bytes past the end of the file read as zero.
   */
  preadSync(buf: Uint8Array, offset: number): number {
    if (!Number.isSafeInteger(offset + buf.length) || offset < 0) throw this.badOffset(offset);
    let done = 0;
    while (done < buf.length) {
      const n = readSync(this.fh.fd, buf, done, buf.length - done, offset + done);
      if (n === 0) {
        buf.fill(0, done);
        break;
      }
      done += n;
    }
    return done;
  }

  pwrite(offset: number, data: Uint8Array): Promise<void> {
    if (this.readOnly) return Promise.reject(new TsvmError(`'${this.path}' is read-only`));
    if (!Number.isSafeInteger(offset + data.length) || offset < 0) return Promise.reject(this.badOffset(offset));
    if (offset + data.length > this.high) this.high = offset + data.length;
    return new Promise((resolve, reject) => {
      const step = (done: number) => {
        writeCb(this.fh.fd, data, done, data.length - done, offset + done, (err, n) => {
          if (err) reject(err);
          else if (done + n >= data.length) resolve();
          else step(done + n);
        });
      };
      if (data.length === 0) resolve();
      else step(0);
    });
  }

  private badOffset(offset: number): TsvmError {
    return new TsvmError(`'${this.path}': file offset ${offset} is out of range`);
  }

  async truncate(length: number): Promise<void> {
    if (this.readOnly) throw new TsvmError(`'${this.path}' is read-only`);
    if (length > this.high) this.high = length;
    await this.fh.truncate(length);
  }

  async size(): Promise<number> {
    return (await this.fh.stat()).size;
  }

  async sync(): Promise<void> {
    if (!this.readOnly && !this.unsafe) await this.fh.sync();
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}
