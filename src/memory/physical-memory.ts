import { MADV_DONTNEED, loadLibc } from '../block/libc.js';
import type { AccessSize } from './bus-device.js';
import type { GuestRam } from './guest-ram.js';
import { MmioBus } from './mmio-bus.js';

/** A read-only image (firmware) mapped at a physical address. */
interface RomRegion {
  base: number;
  bytes: Uint8Array;
}

/**
 * The guest-physical address space of a PC: RAM, ROM images, MMIO ranges, and the A20 gate.
 *
 * The CPU keeps its own fast path straight into `ram.bytes` for pages where isDirectRam() is true and uses the
 * slow read/write methods here for everything else. Devices doing DMA use readBytes/writeBytes/ramView, which
 * check the whole range and report failure as a value: a guest can only ever point a device at its own RAM.
 */
export class PhysicalMemory {
  readonly mmio = new MmioBus();
  private readonly roms: RomRegion[] = [];
  /** Physical ranges below RAM's end that are not plain RAM (e.g. the VGA window 0xA0000-0xBFFFF). */
  private readonly holes: { base: number; end: number }[] = [];
  private a20 = true;
  /** AND-mask applied by the CPU to every physical address: bit 20 cleared while the A20 gate is off. */
  a20Mask = 0xffffffff | 0;
  private readonly a20Listeners: ((enabled: boolean) => void)[] = [];
  private readonly layoutListeners: (() => void)[] = [];
  private readonly ramWriteListeners: ((address: number, length: number) => void)[] = [];

  constructor(readonly ram: GuestRam) {}

  get ramSize(): number {
    return this.ram.size;
  }

  /** Map a ROM image; reads come from it, writes are ignored. */
  mapRom(base: number, bytes: Uint8Array): void {
    this.roms.push({ base, bytes });
    this.layoutChanged();
  }

  /** Take a range below RAM's end away from RAM (the MMIO bus then serves it). */
  addHole(base: number, length: number): void {
    this.holes.push({ base, end: base + length });
    this.layoutChanged();
  }

  removeHole(base: number): void {
    const i = this.holes.findIndex((h) => h.base === base);
    if (i >= 0) this.holes.splice(i, 1);
    this.layoutChanged();
  }

  /** True when the 4 KiB page at `pageAddress` is plain RAM that the CPU may read and write directly. */
  isDirectRam(pageAddress: number): boolean {
    const a = pageAddress >>> 0;
    if (a + 4096 > this.ram.size) return false;
    for (const h of this.holes) if (a < h.end && h.base < a + 4096) return false;
    return true;
  }

  get a20Enabled(): boolean {
    return this.a20;
  }

  setA20(enabled: boolean): void {
    if (enabled === this.a20) return;
    this.a20 = enabled;
    this.a20Mask = enabled ? 0xffffffff | 0 : ~(1 << 20);
    for (const l of this.a20Listeners) l(enabled);
  }

  onA20Change(listener: (enabled: boolean) => void): void {
    this.a20Listeners.push(listener);
  }

  /** Called when ROM, holes or MMIO change, so that a CPU can drop cached translations. */
  /** Device writes into RAM (writeBytes): the CPU drops code compiled from those bytes. */
  onRamWrite(listener: (address: number, length: number) => void): void {
    this.ramWriteListeners.push(listener);
  }

  onLayoutChange(listener: () => void): void {
    this.layoutListeners.push(listener);
  }

  private layoutChanged(): void {
    for (const l of this.layoutListeners) l();
  }

  private inHole(a: number): boolean {
    for (const h of this.holes) if (a >= h.base && a < h.end) return true;
    return false;
  }

  private rom(a: number): RomRegion | undefined {
    for (const r of this.roms) if (a >= r.base && a < r.base + r.bytes.length) return r;
    return undefined;
  }

  /** Slow-path read of one naturally sized value at physical address `address` (already A20-masked). */
  read(address: number, size: AccessSize): number {
    const a = address >>> 0;
    if (a + size <= this.ram.size && !this.inHole(a)) {
      const b = this.ram.bytes;
      if (size === 1) return b[a];
      if (size === 2) return b[a] | (b[a + 1] << 8);
      return (b[a] | (b[a + 1] << 8) | (b[a + 2] << 16) | (b[a + 3] << 24)) >>> 0;
    }
    const rom = this.rom(a);
    if (rom) {
      let v = 0;
      for (let i = 0; i < size; i++) v |= (rom.bytes[a - rom.base + i] ?? 0xff) << (8 * i);
      return v >>> 0;
    }
    return this.mmio.read(a, size);
  }

  write(address: number, size: AccessSize, value: number): void {
    const a = address >>> 0;
    if (a + size <= this.ram.size && !this.inHole(a)) {
      const b = this.ram.bytes;
      b[a] = value;
      if (size >= 2) b[a + 1] = value >>> 8;
      if (size === 4) {
        b[a + 2] = value >>> 16;
        b[a + 3] = value >>> 24;
      }
      return;
    }
    if (this.rom(a)) return;
    this.mmio.write(a, size, value);
  }

  /** A view of guest RAM for DMA, or null unless [address, address+length) is wholly plain RAM. */
  ramView(address: number, length: number): Uint8Array | null {
    if (!Number.isInteger(address) || !Number.isInteger(length) || address < 0 || length < 0) return null;
    if (address + length > this.ram.size) return null;
    for (const h of this.holes) if (address < h.end && h.base < address + length) return null;
    return this.ram.bytes.subarray(address, address + length);
  }

  /** Copy out of guest RAM; null if the range is not wholly RAM. */
  readBytes(address: number, length: number): Uint8Array | null {
    const view = this.ramView(address, length);
    return view ? view.slice() : null;
  }

  /**
   * The guest gave [address, address+length) back (a balloon): it reads as zeroes from now on, and the host
   * pages wholly inside it are returned to the host (madvise MADV_DONTNEED; they come back, zeroed, when
   * touched). The rest of the range is zeroed in place. False if the range is not wholly RAM.
   */
  discardRam(address: number, length: number): boolean {
    const view = this.ramView(address, length);
    if (!view) return false;
    const libc = loadLibc();
    let zeroFrom = 0, zeroTo = length;
    if (libc) {
      const host = libc.addressOf(view);
      const first = (host + 4095n) & ~4095n, end = (host + BigInt(length)) & ~4095n;
      if (end > first && libc.madvise(first, Number(end - first), MADV_DONTNEED) === 0) {
        view.fill(0, 0, Number(first - host));
        zeroFrom = Number(end - host);
      }
    }
    view.fill(0, zeroFrom, zeroTo);
    for (const listener of this.ramWriteListeners) listener(address, length);
    return true;
  }

  /** Copy into guest RAM; false (and nothing written) if the range is not wholly RAM. */
  writeBytes(address: number, data: Uint8Array): boolean {
    const view = this.ramView(address, data.length);
    if (!view) return false;
    view.set(data);
    for (const listener of this.ramWriteListeners) listener(address, data.length);
    return true;
  }
}
