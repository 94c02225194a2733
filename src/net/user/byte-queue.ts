/** Bytes in arrival order, kept as the chunks they came in, read at any offset and consumed from the front. */
export class ByteQueue {
  private readonly chunks: Uint8Array[] = [];
  /** Bytes of chunks[0] already consumed. */
  private headOffset = 0;
  private bytes = 0;

  get length(): number {
    return this.bytes;
  }

  append(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.bytes += chunk.length;
  }

  /** A copy of `length` bytes from `offset` (both within the queue). */
  read(offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    let chunkIndex = 0;
    let position = offset + this.headOffset;
    while (position >= this.chunks[chunkIndex].length) position -= this.chunks[chunkIndex++].length;
    for (let filled = 0; filled < length; chunkIndex++, position = 0) {
      const chunk = this.chunks[chunkIndex];
      const n = Math.min(chunk.length - position, length - filled);
      out.set(chunk.subarray(position, position + n), filled);
      filled += n;
    }
    return out;
  }

  consume(n: number): void {
    this.bytes -= n;
    n += this.headOffset;
    while (this.chunks.length > 0 && n >= this.chunks[0].length) n -= this.chunks.shift()!.length;
    this.headOffset = n;
  }
}
