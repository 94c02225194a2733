import { ALL_ONES, ALL_SIZES, type AccessSize, type BusDevice, type BusRange, type BusRangeOptions, splitRead, splitWrite } from './bus-device.js';
import { debugLog } from '../base/log.js';

/** Memory-mapped device ranges, kept sorted and non-overlapping. Few ranges, so a linear scan is fine. */
export class MmioBus {
  private ranges: BusRange[] = [];
  private readonly warned = new Set<number>();

  register(base: number, length: number, device: BusDevice, options: BusRangeOptions = {}): void {
    if (base < 0 || length <= 0 || base + length > 2 ** 32) throw new RangeError(`bad MMIO range ${base}+${length}`);
    const range: BusRange = { base, length, device, sizes: options.sizes ?? ALL_SIZES, name: options.name ?? 'device' };
    for (const r of this.ranges) {
      if (base < r.base + r.length && r.base < base + length) {
        throw new Error(`MMIO range of ${range.name} at 0x${base.toString(16)} overlaps ${r.name}`);
      }
    }
    this.ranges.push(range);
    this.ranges.sort((a, b) => a.base - b.base);
  }

  unregister(base: number): void {
    this.ranges = this.ranges.filter((r) => r.base !== base);
  }

  find(address: number): BusRange | undefined {
    for (const r of this.ranges) if (address >= r.base && address < r.base + r.length) return r;
    return undefined;
  }

  read(address: number, size: AccessSize): number {
    const range = this.find(address);
    if (range === undefined) {
      this.warnUnclaimed(address, 'read');
      return ALL_ONES[size];
    }
    const offset = address - range.base;
    if ((range.sizes & size) === 0) return splitRead(range, offset, size);
    return range.device.read(offset, size);
  }

  write(address: number, size: AccessSize, value: number): void {
    const range = this.find(address);
    if (range === undefined) {
      this.warnUnclaimed(address, 'write');
      return;
    }
    const offset = address - range.base;
    if ((range.sizes & size) === 0) splitWrite(range, offset, size, value);
    else range.device.write(offset, size, value);
  }

  private warnUnclaimed(address: number, kind: string): void {
    const page = address >>> 12;
    if (this.warned.has(page)) return;
    this.warned.add(page);
    debugLog('mmio', `unclaimed ${kind} at 0x${(address >>> 0).toString(16)}`);
  }
}
