/**
 * Test helpers: a virtio PCI function on a real PCI bus and guest RAM, and a minimal driver that programs it
 * through configuration space and BAR accesses the way Linux's virtio_pci_modern does.
 */
import { setImmediate as tick } from 'node:timers/promises';
import { GuestRam } from '../../memory/guest-ram.js';
import { PhysicalMemory } from '../../memory/physical-memory.js';
import { PortIoBus } from '../../memory/port-io-bus.js';
import { PciBus } from '../pci/pci-bus.js';
import { type VirtioDevice, VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1, featureBit } from './virtio-device.js';
import { VirtioPciFunction } from './virtio-pci.js';

export const RAM_SIZE = 1 << 20;
const BAR4 = 0xc0000000, BAR1 = 0xc0010000, SLOT = 3;
export const F_NEXT = 1, F_WRITE = 2, F_INDIRECT = 4;

export class TestVirtioDriver {
  readonly memory = new PhysicalMemory(new GuestRam(RAM_SIZE));
  readonly io = new PortIoBus();
  readonly pci: PciBus;
  readonly fn: VirtioPciFunction;
  /** INTx level changes on the routed ISA IRQ, and MSIs delivered. */
  readonly intx: boolean[] = [];
  readonly msis: { address: number; data: number }[] = [];
  /** Per queue: ring addresses and the driver's next avail index. */
  private readonly rings = new Map<number, { size: number; desc: number; avail: number; used: number; next: number }>();

  constructor(device: VirtioDevice) {
    this.pci = new PciBus(this.io, this.memory, (_irq, level) => this.intx.push(level));
    this.pci.router = () => 10;
    this.fn = new VirtioPciFunction(device, {
      memory: this.memory,
      deliverMsi: (address, data) => {
        this.msis.push({ address, data });
        return true;
      },
    });
    this.pci.add(this.fn, SLOT);
    this.configWrite(0x10 + 4 * 4, 4, BAR4);
    this.configWrite(0x10 + 4 * 1, 4, BAR1);
    this.configWrite(0x04, 2, 0x06); // memory + bus master
  }

  configRead(offset: number, size: 1 | 2 | 4): number {
    this.io.write(0xcf8, 4, 0x80000000 | (SLOT << 11) | (offset & 0xfc));
    return this.io.read(0xcfc + (offset & 3), size);
  }

  configWrite(offset: number, size: 1 | 2 | 4, value: number): void {
    this.io.write(0xcf8, 4, 0x80000000 | (SLOT << 11) | (offset & 0xfc));
    this.io.write(0xcfc + (offset & 3), size, value);
  }

  common(offset: number, size: 1 | 2 | 4, value?: number): number {
    if (value !== undefined) this.memory.write(BAR4 + offset, size, value);
    return this.memory.read(BAR4 + offset, size);
  }

  get status(): number {
    return this.common(0x14, 1);
  }

  readIsr(): number {
    return this.memory.read(BAR4 + 0x1000, 1);
  }

  deviceConfig(offset: number, size: 1 | 2 | 4): number {
    return this.memory.read(BAR4 + 0x2000 + offset, size);
  }

  deviceFeatures(): bigint {
    this.common(0x00, 4, 0);
    const low = this.common(0x04, 4);
    this.common(0x00, 4, 1);
    return BigInt(low) | (BigInt(this.common(0x04, 4)) << 32n);
  }

  /** Reset, negotiate (VERSION_1, INDIRECT, EVENT_IDX when `eventIndex`, plus `extra`), queues of `size` entries, DRIVER_OK. */
  start(options: { queues?: number[]; size?: number; eventIndex?: boolean; extra?: bigint } = {}): void {
    const size = options.size ?? 8;
    this.common(0x14, 1, 0);
    this.common(0x14, 1, 1 | 2);
    let features = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_INDIRECT_DESC) | (options.extra ?? 0n);
    if (options.eventIndex) features |= featureBit(VIRTIO_F_EVENT_IDX);
    this.common(0x08, 4, 0);
    this.common(0x0c, 4, Number(features & 0xffffffffn));
    this.common(0x08, 4, 1);
    this.common(0x0c, 4, Number(features >> 32n));
    this.common(0x14, 1, 1 | 2 | 8);
    this.rings.clear();
    let base = 0x10000;
    for (const q of options.queues ?? [0]) {
      this.common(0x16, 2, q);
      this.common(0x18, 2, size);
      const ring = { size, desc: base, avail: base + 0x1000, used: base + 0x2000, next: 0 };
      base += 0x3000;
      this.memory.writeBytes(ring.desc, new Uint8Array(0x3000)); // fresh rings, as a driver allocates them
      this.common(0x20, 4, ring.desc);
      this.common(0x28, 4, ring.avail);
      this.common(0x30, 4, ring.used);
      this.common(0x1c, 2, 1);
      this.rings.set(q, ring);
    }
    this.common(0x14, 1, 1 | 2 | 8 | 4);
  }

  /** Writes descriptor `index` of `queue` (or of a table at `table`). */
  descriptor(queue: number, index: number, address: number, length: number, flags: number, next = 0, table?: number): void {
    const at = (table ?? this.rings.get(queue)!.desc) + 16 * index;
    const b = new Uint8Array(16);
    const dv = new DataView(b.buffer);
    dv.setUint32(0, address % 2 ** 32, true);
    dv.setUint32(4, Math.floor(address / 2 ** 32), true);
    dv.setUint32(8, length, true);
    dv.setUint16(12, flags, true);
    dv.setUint16(14, next, true);
    this.memory.writeBytes(at, b);
  }

  /** Makes `head` available and notifies the device. */
  kick(queue: number, head: number): void {
    const ring = this.rings.get(queue)!;
    this.write16(ring.avail + 4 + 2 * (ring.next % ring.size), head);
    ring.next = (ring.next + 1) & 0xffff;
    this.write16(ring.avail + 2, ring.next);
    this.memory.write(BAR4 + 0x3000 + 4 * queue, 2, queue);
  }

  /** Sets the used_event field (event index) of `queue`. */
  setUsedEvent(queue: number, value: number): void {
    const ring = this.rings.get(queue)!;
    this.write16(ring.avail + 4 + 2 * ring.size, value);
  }

  usedIdx(queue: number): number {
    return this.memory.read(this.rings.get(queue)!.used + 2, 2);
  }

  /** Used element `n` of `queue`: head and length. */
  used(queue: number, n: number): { id: number; length: number } {
    const ring = this.rings.get(queue)!;
    const at = ring.used + 4 + 8 * (n % ring.size);
    return { id: this.memory.read(at, 4), length: this.memory.read(at + 4, 4) };
  }

  bytes(address: number, length: number): Uint8Array {
    return this.memory.readBytes(address, length)!;
  }

  /** Lets the device's host requests complete. */
  async settle(): Promise<void> {
    await this.fn.device.drain();
    await tick();
  }

  private write16(address: number, value: number): void {
    this.memory.write(address, 2, value);
  }
}
