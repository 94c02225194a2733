import type { PhysicalMemory } from '../../memory/physical-memory.js';

/** Descriptor flags (virtio 1.2, 2.7.5). */
const VIRTQ_DESC_F_NEXT = 1, VIRTQ_DESC_F_WRITE = 2, VIRTQ_DESC_F_INDIRECT = 4;
/** Available ring flag: the driver asks for no interrupts (without event index). */
const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
const DESC_SIZE = 16;
/** The largest total a chain may describe: lengths are 32-bit in the used ring. */
const MAX_CHAIN_BYTES = 2 ** 32 - 1;

/** One guest buffer of a chain: a stretch of guest RAM. */
export interface VirtqSegment {
  address: number;
  length: number;
}

/** A descriptor chain as a device sees it: checked, readable segments before the writable ones. */
export interface VirtqElement {
  /** Head index: what goes back in the used ring. */
  readonly head: number;
  readonly readable: VirtqSegment[];
  readonly writable: VirtqSegment[];
  readonly readableBytes: number;
  readonly writableBytes: number;
}

/** A driver error found in a queue: the device must be reset (DEVICE_NEEDS_RESET). */
export class VirtqueueError extends Error {}

/**
 * One split virtqueue (virtio 1.2, 2.7) in guest memory. The transport sets its size and ring addresses and
 * enables it; the device pops checked chains and pushes them back used. Nothing here trusts the guest: every
 * index, address, length and flag is checked before use, and a bad one throws VirtqueueError.
 */
export class Virtqueue {
  size: number;
  enabled = false;
  descAddress = 0;
  driverAddress = 0;
  deviceAddress = 0;
  /** MSI-X vector for this queue (0xffff = none). */
  msixVector = 0xffff;
  /** Set by the transport from the negotiated features. */
  eventIndex = false;
  indirect = false;
  /** The next available-ring entry to consume, and the next used-ring entry to fill. */
  private lastAvail = 0;
  private usedIdx = 0;
  /** usedIdx when the driver was last interrupted (for the event index). */
  private signalledUsed = 0;
  private signalledValid = false;

  constructor(readonly index: number, readonly maxSize: number, private readonly memory: PhysicalMemory) {
    this.size = maxSize;
  }

  reset(): void {
    this.size = this.maxSize;
    this.enabled = false;
    this.descAddress = this.driverAddress = this.deviceAddress = 0;
    this.msixVector = 0xffff;
    this.lastAvail = this.usedIdx = this.signalledUsed = 0;
    this.signalledValid = false;
  }

  /** Checks the ring addresses when the driver enables the queue. */
  enable(): void {
    const n = this.size;
    if (n === 0 || n > this.maxSize || (n & (n - 1)) !== 0) throw new VirtqueueError(`queue ${this.index}: bad size ${n}`);
    this.ram(this.descAddress, DESC_SIZE * n, 'descriptor table');
    this.ram(this.driverAddress, 6 + 2 * n, 'available ring');
    this.ram(this.deviceAddress, 6 + 8 * n, 'used ring');
    this.enabled = true;
  }

  /** True when the available ring holds chains not yet popped. */
  hasAvailable(): boolean {
    return this.enabled && this.availIdx() !== this.lastAvail;
  }

  /** Pops the next available chain, checked; null when there is none. */
  pop(): VirtqElement | null {
    if (!this.hasAvailable()) return null;
    const pending = (this.availIdx() - this.lastAvail) & 0xffff;
    if (pending > this.size) throw new VirtqueueError(`queue ${this.index}: available index ran ${pending} entries ahead of a ${this.size}-entry ring`);
    const head = this.u16(this.driverAddress + 4 + 2 * (this.lastAvail % this.size));
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    if (this.eventIndex) this.write16(this.deviceAddress + 4 + 8 * this.size, this.lastAvail); // avail_event
    return this.readChain(head);
  }

  /** Puts a chain back used, with the number of bytes the device wrote into it. */
  push(element: VirtqElement, written: number): void {
    const slot = this.deviceAddress + 4 + 8 * (this.usedIdx % this.size);
    const entry = new Uint8Array(8);
    const dv = new DataView(entry.buffer);
    dv.setUint32(0, element.head, true);
    dv.setUint32(4, written, true);
    this.memory.writeBytes(slot, entry);
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    this.write16(this.deviceAddress + 2, this.usedIdx);
  }

  /** After pushes: does the driver want an interrupt (event index or the NO_INTERRUPT flag)? */
  shouldInterrupt(): boolean {
    if (!this.eventIndex) return (this.u16(this.driverAddress) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
    const usedEvent = this.u16(this.driverAddress + 4 + 2 * this.size);
    const old = this.signalledUsed, now = this.usedIdx, valid = this.signalledValid;
    this.signalledUsed = now;
    this.signalledValid = true;
    // vring_need_event: the driver asked to hear when used_idx passes used_event.
    return !valid || ((now - usedEvent - 1) & 0xffff) < ((now - old) & 0xffff);
  }

  /** Reads `length` bytes from the readable segments, starting `offset` bytes in. */
  gather(element: VirtqElement, offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    let at = 0, skip = offset;
    for (const s of element.readable) {
      if (at === length) break;
      if (skip >= s.length) {
        skip -= s.length;
        continue;
      }
      const n = Math.min(s.length - skip, length - at);
      out.set(this.memory.ramView(s.address + skip, n)!, at);
      at += n;
      skip = 0;
    }
    return out.subarray(0, at);
  }

  /** Writes `data` into the writable segments, starting `offset` bytes in; returns the bytes written. */
  scatter(element: VirtqElement, offset: number, data: Uint8Array): number {
    let at = 0, skip = offset;
    for (const s of element.writable) {
      if (at === data.length) break;
      if (skip >= s.length) {
        skip -= s.length;
        continue;
      }
      const n = Math.min(s.length - skip, data.length - at);
      this.memory.writeBytes(s.address + skip, data.subarray(at, at + n));
      at += n;
      skip = 0;
    }
    return at;
  }

  saveState(): Record<string, number | boolean> {
    return {
      size: this.size, enabled: this.enabled, descAddress: this.descAddress, driverAddress: this.driverAddress,
      deviceAddress: this.deviceAddress, msixVector: this.msixVector, lastAvail: this.lastAvail, usedIdx: this.usedIdx,
    };
  }

  private readChain(head: number): VirtqElement {
    const readable: VirtqSegment[] = [], writable: VirtqSegment[] = [];
    let readableBytes = 0, writableBytes = 0;
    let table = this.descAddress, tableSize = this.size, index = head, seen = 0, inIndirect = false;
    for (;;) {
      if (index >= tableSize) throw new VirtqueueError(`queue ${this.index}: descriptor index ${index} beyond ${tableSize}`);
      if (++seen > tableSize) throw new VirtqueueError(`queue ${this.index}: descriptor chain loops or is longer than ${tableSize}`);
      const d = this.ram(table + DESC_SIZE * index, DESC_SIZE, 'descriptor');
      const dv = new DataView(d.buffer, d.byteOffset, DESC_SIZE);
      const address = dv.getUint32(0, true) + dv.getUint32(4, true) * 2 ** 32;
      const length = dv.getUint32(8, true), flags = dv.getUint16(12, true), next = dv.getUint16(14, true);
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (!this.indirect) throw new VirtqueueError(`queue ${this.index}: indirect descriptor without VIRTIO_F_INDIRECT_DESC`);
        if (inIndirect) throw new VirtqueueError(`queue ${this.index}: nested indirect descriptor table`);
        if (flags & VIRTQ_DESC_F_NEXT) throw new VirtqueueError(`queue ${this.index}: indirect descriptor with NEXT`);
        if (length === 0 || length % DESC_SIZE !== 0) throw new VirtqueueError(`queue ${this.index}: indirect table of ${length} bytes`);
        this.ram(address, length, 'indirect table');
        table = address;
        tableSize = length / DESC_SIZE;
        index = 0;
        seen = 0;
        inIndirect = true;
        continue;
      }
      this.ram(address, length, 'buffer');
      if (flags & VIRTQ_DESC_F_WRITE) {
        writable.push({ address, length });
        writableBytes += length;
      } else {
        if (writable.length > 0) throw new VirtqueueError(`queue ${this.index}: readable buffer after a writable one`);
        readable.push({ address, length });
        readableBytes += length;
      }
      if (readableBytes + writableBytes > MAX_CHAIN_BYTES) throw new VirtqueueError(`queue ${this.index}: chain longer than 4 GiB`);
      if (!(flags & VIRTQ_DESC_F_NEXT)) break;
      index = next;
    }
    return { head, readable, writable, readableBytes, writableBytes };
  }

  private availIdx(): number {
    return this.u16(this.driverAddress + 2);
  }

  /** A view of guest RAM, or a VirtqueueError when the range is not wholly RAM. */
  private ram(address: number, length: number, what: string): Uint8Array {
    const view = this.memory.ramView(address, length);
    if (!view) throw new VirtqueueError(`queue ${this.index}: ${what} at 0x${address.toString(16)} (+${length}) is not in guest RAM`);
    return view;
  }

  private u16(address: number): number {
    const b = this.ram(address, 2, 'ring');
    return b[0] | (b[1] << 8);
  }

  private write16(address: number, value: number): void {
    this.memory.writeBytes(address, Uint8Array.of(value & 0xff, (value >> 8) & 0xff));
  }
}
