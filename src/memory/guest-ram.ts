/**
 * Guest RAM: one contiguous byte array. It can wrap any buffer, so that the KVM accelerator can later hand
 * in memory mmap()ed from the host and shared with the kernel; the emulated CPU reads `bytes` directly.
 */
export class GuestRam {
  readonly bytes: Uint8Array;

  constructor(readonly size: number, buffer?: ArrayBufferLike) {
    if (!Number.isInteger(size) || size <= 0 || size % 4096 !== 0) {
      throw new RangeError(`guest RAM size must be a positive multiple of 4 KiB, got ${size}`);
    }
    this.bytes = buffer ? new Uint8Array(buffer, 0, size) : new Uint8Array(size);
  }
}
