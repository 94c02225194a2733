import { TsvmError } from '../../base/errors.js';
import { debugLog } from '../../base/log.js';
import type { VersionedState } from '../../base/state.js';
import type { PhysicalMemory } from '../../memory/physical-memory.js';
import type { PortIoBus } from '../../memory/port-io-bus.js';
import type { Device } from '../device.js';
import type { PciBusSide, PciFunction } from './pci-function.js';

/** Where a function's INTx# pin ends up: an ISA IRQ number, or undefined while the router leaves it unconnected. */
export type IntxRouter = (fn: PciFunction, pin: number) => number | undefined;

interface Mapping {
  kind: 'io' | 'mem';
  base: number;
}

/**
 * PCI bus 0 behind configuration mechanism #1 (address at 0xCF8, data at 0xCFC..0xCFF). Functions sit at a
 * device/function number; the bus maps their BARs and expansion ROMs into port and memory space as the guest
 * programs them, and turns INTx# pins into ISA IRQ levels through the chipset's router (shared, level-triggered).
 */
export class PciBus implements PciBusSide, Device {
  readonly id = 'pci';
  private readonly functions = new Map<number, PciFunction>();
  private readonly mappings = new Map<PciFunction, Mapping[]>();
  private readonly asserted = new Set<PciFunction>();
  private readonly irqLevels = new Array<boolean>(16).fill(false);
  private configAddress = 0;
  router: IntxRouter = () => undefined;

  constructor(private readonly io: PortIoBus, private readonly memory: PhysicalMemory, private readonly setIsaIrq: (irq: number, level: boolean) => void) {
    // Only dword accesses at 0xCF8 reach the address register; 0xCF9 is the chipset's reset control register.
    io.register(0xcf8, 1, {
      read: (offset, size) => (size === 4 && offset === 0 ? this.configAddress : 0xffffffff >>> (32 - 8 * size)),
      write: (offset, size, value) => {
        if (size === 4 && offset === 0) this.configAddress = value & 0x80fffffc;
      },
    }, { name: 'pci-config-address' });
    io.register(0xcfc, 4, {
      read: (offset, size) => {
        const fn = this.selected();
        return fn ? fn.configRead((this.configAddress & 0xfc) + offset, size) : 0xffffffff >>> (32 - 8 * size);
      },
      write: (offset, size, value) => this.selected()?.configWrite((this.configAddress & 0xfc) + offset, size, value),
    }, { name: 'pci-config-data' });
  }

  /** Puts a function at slot `device`, function `fn` of bus 0. */
  add(fn: PciFunction, device: number, func = 0): void {
    const devfn = (device << 3) | func;
    if (this.functions.has(devfn)) throw new Error(`PCI slot ${device}.${func} is taken`);
    fn.bus = this;
    fn.devfn = devfn;
    this.functions.set(devfn, fn);
  }

  /** Puts a function at the first free slot from 3 on (after the host bridge, PIIX and VGA), as QEMU places -device. */
  addToFreeSlot(fn: PciFunction): void {
    for (let device = 3; device < 32; device++) {
      if (!this.functions.has(device << 3)) return this.add(fn, device);
    }
    throw new TsvmError(`no free PCI slot for ${fn.id}`);
  }

  /** The function at `devfn`, if any (for firmware tables and tests). */
  get(devfn: number): PciFunction | undefined {
    return this.functions.get(devfn);
  }

  private selected(): PciFunction | undefined {
    const a = this.configAddress;
    if ((a & 0x80000000) === 0 || ((a >> 16) & 0xff) !== 0) return undefined;
    return this.functions.get((a >> 8) & 0xff);
  }

  barsChanged(fn: PciFunction): void {
    for (const m of this.mappings.get(fn) ?? []) {
      if (m.kind === 'io') this.io.unregister(m.base);
      else this.memory.mmio.unregister(m.base);
    }
    const now: Mapping[] = [];
    const map = (kind: 'io' | 'mem', base: number, length: number, device: Parameters<PortIoBus['register']>[2], sizes?: number) => {
      try {
        if (kind === 'io') this.io.register(base, length, device, { name: fn.id, sizes });
        else this.memory.mmio.register(base, length, device, { name: fn.id, sizes });
        now.push({ kind, base });
      } catch (e) {
        // A guest sizing or moving BARs may briefly point them at something else: that BAR then decodes nothing.
        debugLog('pci', `${fn.id}: ${(e as Error).message}`);
      }
    };
    fn.bars.forEach((bar, i) => {
      const base = fn.barAddress(i);
      if (bar && base !== undefined) map(bar.kind, base, bar.size, bar.device, bar.sizes);
    });
    const romBase = fn.romAddress();
    const rom = fn.rom;
    if (rom && romBase !== undefined) {
      map('mem', romBase, rom.length, {
        read: (offset, size) => {
          let v = 0;
          for (let i = 0; i < size; i++) v |= (rom[offset + i] ?? 0xff) << (8 * i);
          return v >>> 0;
        },
        write: () => {},
      });
    }
    this.mappings.set(fn, now);
  }

  setIntx(fn: PciFunction, level: boolean): void {
    if (level) this.asserted.add(fn);
    else this.asserted.delete(fn);
    this.updateIrqs();
  }

  /** Recomputes every PCI-driven ISA IRQ level (after a pin change or a routing change). */
  updateIrqs(): void {
    const levels = new Array<boolean>(16).fill(false);
    for (const fn of this.asserted) {
      const irq = this.router(fn, fn.config[0x3d]);
      if (irq !== undefined && irq < 16) levels[irq] = true;
    }
    for (let irq = 0; irq < 16; irq++) {
      if (levels[irq] === this.irqLevels[irq]) continue;
      this.irqLevels[irq] = levels[irq];
      this.setIsaIrq(irq, levels[irq]);
    }
  }

  /** Each bus-0 function's INTx pin and the ISA IRQ it is routed to now (for the MP table). */
  interruptRoutes(): { device: number; pin: number; irq: number }[] {
    const routes = [];
    for (const fn of this.functions.values()) {
      const pin = fn.config[0x3d];
      const irq = pin === 0 ? undefined : this.router(fn, pin);
      if (irq !== undefined) routes.push({ device: fn.devfn >> 3, pin, irq });
    }
    return routes;
  }

  /** Writes each function's Interrupt Line register from the current routing, as firmware does at boot. */
  assignInterruptLines(): void {
    for (const fn of this.functions.values()) {
      const pin = fn.config[0x3d];
      if (pin !== 0) fn.config[0x3c] = this.router(fn, pin) ?? 0xff;
    }
  }

  reset(): void {
    this.configAddress = 0;
  }

  saveState(): VersionedState {
    return { version: 1, fields: { configAddress: this.configAddress } };
  }

  restoreState(state: VersionedState): void {
    const a = state?.fields?.configAddress;
    this.configAddress = typeof a === 'number' ? a & 0x80fffffc : 0;
  }
}
