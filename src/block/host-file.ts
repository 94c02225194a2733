import { open, type FileHandle } from 'node:fs/promises';

/**
 * A host file as the block layer sees it: positioned reads and writes, no shared cursor, so that many
 * requests can be in flight. Formats take this interface (not a path) so that tests can inject faults.
 */
export interface HostFile {
  readonly path: string;
  readonly readOnly: boolean;
  /** Reads exactly buffer.length bytes at `offset`; bytes past end of file read as zero. */
  pread(buffer: Uint8Array, offset: number): Promise<void>;
  pwrite(data: Uint8Array, offset: number): Promise<void>;
  size(): Promise<number>;
  truncate(length: number): Promise<void>;
  sync(): Promise<void>;
  close(): Promise<void>;
  /** The OS file descriptor, for byte-range locks; -1 when the file is not a real host file. */
  readonly fd: number;
}

export async function openHostFile(path: string, readOnly: boolean, create = false): Promise<HostFile> {
  const handle = await open(path, readOnly ? 'r' : create ? 'w+' : 'r+');
  return new NodeHostFile(path, readOnly, handle);
}

class NodeHostFile implements HostFile {
  constructor(readonly path: string, readonly readOnly: boolean, private readonly handle: FileHandle) {}

  get fd(): number {
    return this.handle.fd;
  }

  async pread(buffer: Uint8Array, offset: number): Promise<void> {
    let done = 0;
    while (done < buffer.length) {
      const { bytesRead } = await this.handle.read(buffer, done, buffer.length - done, offset + done);
      if (bytesRead === 0) {
        buffer.fill(0, done);
        return;
      }
      done += bytesRead;
    }
  }

  async pwrite(data: Uint8Array, offset: number): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.handle.write(data, done, data.length - done, offset + done);
      done += bytesWritten;
    }
  }

  async size(): Promise<number> {
    return (await this.handle.stat()).size;
  }

  truncate(length: number): Promise<void> {
    return this.handle.truncate(length);
  }

  sync(): Promise<void> {
    return this.handle.datasync();
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}
