import { ALL_ONES, ALL_SIZES, type AccessSize, type BusDevice, type BusRange, type BusRangeOptions, splitRead, splitWrite } from './bus-device.js';
import { debugLog } from '../base/log.js';

/**
 * The x86 I/O port space (64 Ki ports). Lookup is one array index per access: this is on the path of every
 * IN/OUT the guest executes. Only the first port of an access selects the device, as on real buses.
 */
export class PortIoBus {
  private readonly byPort: (BusRange | undefined)[] = new Array(0x10000).fill(undefined);
  private readonly warned = new Set<number>();

  register(base: number, length: number, device: BusDevice, options: BusRangeOptions = {}): void {
    if (base < 0 || length <= 0 || base + length > 0x10000) throw new RangeError(`bad port range ${base}+${length}`);
    const range: BusRange = { base, length, device, sizes: options.sizes ?? ALL_SIZES, name: options.name ?? 'device' };
    for (let p = base; p < base + length; p++) {
      const existing = this.byPort[p];
      if (existing) throw new Error(`port 0x${p.toString(16)} of ${range.name} overlaps ${existing.name}`);
    }
    for (let p = base; p < base + length; p++) this.byPort[p] = range;
  }

  unregister(base: number): void {
    const range = this.byPort[base];
    if (!range) return;
    for (let p = range.base; p < range.base + range.length; p++) this.byPort[p] = undefined;
  }

  read(port: number, size: AccessSize): number {
    const range = this.byPort[port];
    if (range === undefined) {
      this.warnUnclaimed(port, 'read');
      return ALL_ONES[size];
    }
    const offset = port - range.base;
    if ((range.sizes & size) === 0) return splitRead(range, offset, size);
    return range.device.read(offset, size);
  }

  write(port: number, size: AccessSize, value: number): void {
    const range = this.byPort[port];
    if (range === undefined) {
      this.warnUnclaimed(port, 'write');
      return;
    }
    const offset = port - range.base;
    if ((range.sizes & size) === 0) splitWrite(range, offset, size, value);
    else range.device.write(offset, size, value);
  }

  private warnUnclaimed(port: number, kind: string): void {
    if (this.warned.has(port)) return;
    this.warned.add(port);
    debugLog('ioport', `unclaimed ${kind} of port 0x${port.toString(16)}`);
  }
}
