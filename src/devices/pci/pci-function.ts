import { StateError } from '../../base/errors.js';
import type { VersionedState } from '../../base/state.js';
import type { BusDevice } from '../../memory/bus-device.js';
import type { Device } from '../device.js';

/** One base address register a function declares: its kind, its size (a power of two) and who serves it. */
export interface PciBar {
  kind: 'io' | 'mem';
  size: number;
  device: BusDevice;
  /** Memory BARs: reads have no side effects (the guest may map them write-combining). */
  prefetchable?: boolean;
  /** Access widths the device implements (as BusRangeOptions.sizes). */
  sizes?: number;
}

export interface PciIdentity {
  vendor: number;
  device: number;
  /** Base class, subclass and programming interface, as the 24-bit value at offset 0x09. */
  classCode: number;
  revision?: number;
  subsystemVendor?: number;
  subsystem?: number;
  /** Bit 7 set: the device has more functions (function 0 of PIIX says so). */
  headerType?: number;
  /** 1 = INTA# ... 4 = INTD#; 0 = no interrupt pin. */
  interruptPin?: number;
}

/** What a function needs from the bus it sits on. */
export interface PciBusSide {
  /** The function's BARs or command register changed: remap its regions. */
  barsChanged(fn: PciFunction): void;
  /** The function drives its INTx# pin. */
  setIntx(fn: PciFunction, level: boolean): void;
}

export const PCI_COMMAND = 0x04, PCI_COMMAND_IO = 1, PCI_COMMAND_MEMORY = 2, PCI_COMMAND_MASTER = 4;
export const PCI_BAR0 = 0x10, PCI_ROM_ADDRESS = 0x30, PCI_INTERRUPT_LINE = 0x3c;

/**
 * A PCI function: 256 bytes of configuration space with write masks, up to six BARs and an expansion ROM.
 * Subclasses add their own registers by overriding configWritten (called after the masked write lands) and
 * keep their state beside the configuration bytes, which are saved here.
 */
export class PciFunction implements Device {
  readonly config = new Uint8Array(256);
  /** Bits the guest may change in each configuration byte. */
  protected readonly writeMask = new Uint8Array(256);
  /** Set when the bus assigns the function a slot. */
  bus: PciBusSide | null = null;
  devfn = -1;
  private initialConfig: Uint8Array;
  private intx = false;

  constructor(
    readonly id: string,
    identity: PciIdentity,
    readonly bars: readonly (PciBar | undefined)[] = [],
    /** Expansion ROM contents (a power-of-two window is decoded at the ROM BAR). */
    readonly rom?: Uint8Array,
  ) {
    const c = this.config;
    this.set16(0x00, identity.vendor);
    this.set16(0x02, identity.device);
    c[0x08] = identity.revision ?? 0;
    c[0x09] = identity.classCode & 0xff;
    c[0x0a] = (identity.classCode >> 8) & 0xff;
    c[0x0b] = (identity.classCode >> 16) & 0xff;
    c[0x0e] = identity.headerType ?? 0;
    this.set16(0x2c, identity.subsystemVendor ?? 0x1af4);
    this.set16(0x2e, identity.subsystem ?? 0x1100);
    c[0x3d] = identity.interruptPin ?? 0;
    this.set16(0x06, 0x0000);
    this.writeMask[PCI_COMMAND] = 0x07; // I/O, memory, bus master
    this.writeMask[PCI_COMMAND + 1] = 0x04; // interrupt disable
    this.writeMask[0x0c] = 0xff; // cache line size
    this.writeMask[0x0d] = 0xff; // latency timer
    this.writeMask[PCI_INTERRUPT_LINE] = 0xff;
    bars.forEach((bar, i) => {
      if (!bar) return;
      if (i > 5 || bar.size < (bar.kind === 'io' ? 4 : 16) || (bar.size & (bar.size - 1)) !== 0) throw new Error(`${id}: bad BAR ${i}`);
      const low = bar.kind === 'io' ? 1 : bar.prefetchable ? 8 : 0;
      this.set32(PCI_BAR0 + 4 * i, low);
      this.setMask32(PCI_BAR0 + 4 * i, ~(bar.size - 1) & ~(bar.kind === 'io' ? 3 : 15));
    });
    if (rom) this.setMask32(PCI_ROM_ADDRESS, (~(romWindow(rom.length) - 1) | 1) >>> 0);
    this.initialConfig = c.slice();
  }

  /** Subclasses that add registers (capabilities) after construction: those bytes are what reset() restores. */
  protected captureInitialConfig(): void {
    this.initialConfig = this.config.slice();
  }

  /** The current address of BAR `i`, or undefined while it is not decoded (disabled or unassigned). */
  barAddress(i: number): number | undefined {
    const bar = this.bars[i];
    if (!bar) return undefined;
    const command = this.config[PCI_COMMAND];
    const raw = this.get32(PCI_BAR0 + 4 * i);
    if (bar.kind === 'io') {
      const base = raw & 0xfffc;
      return command & PCI_COMMAND_IO && base !== 0 && base + bar.size <= 0x10000 ? base : undefined;
    }
    const base = (raw & ~15) >>> 0;
    return command & PCI_COMMAND_MEMORY && base !== 0 && base + bar.size <= 2 ** 32 ? base : undefined;
  }

  /** The expansion ROM's address while the guest has it enabled. */
  romAddress(): number | undefined {
    if (!this.rom) return undefined;
    const raw = this.get32(PCI_ROM_ADDRESS);
    const base = (raw & ~0x7ff) >>> 0;
    return raw & 1 && this.config[PCI_COMMAND] & PCI_COMMAND_MEMORY && base !== 0 ? base : undefined;
  }

  get busMaster(): boolean {
    return (this.config[PCI_COMMAND] & PCI_COMMAND_MASTER) !== 0;
  }

  configRead(offset: number, size: 1 | 2 | 4): number {
    let v = 0;
    for (let i = 0; i < size; i++) v |= this.config[(offset + i) & 0xff] << (8 * i);
    return v >>> 0;
  }

  configWrite(offset: number, size: 1 | 2 | 4, value: number): void {
    for (let i = 0; i < size; i++) {
      const o = (offset + i) & 0xff, m = this.writeMask[o];
      this.config[o] = (this.config[o] & ~m) | ((value >>> (8 * i)) & m);
    }
    const touchesBars = offset < PCI_BAR0 + 24 && offset + size > PCI_BAR0;
    const touchesRom = offset < PCI_ROM_ADDRESS + 4 && offset + size > PCI_ROM_ADDRESS;
    const touchesCommand = offset <= PCI_COMMAND && offset + size > PCI_COMMAND;
    if (touchesBars || touchesRom || touchesCommand) this.bus?.barsChanged(this);
    if (offset <= PCI_COMMAND + 1 && offset + size > PCI_COMMAND + 1) this.updateIntx();
    this.configWritten(offset, size);
  }

  /** Hook for function-specific registers: called after a configuration write landed. */
  protected configWritten(_offset: number, _size: number): void {}

  /** Drives the function's INTx# pin (masked by the command register's interrupt-disable bit). */
  setIrq(level: boolean): void {
    this.intx = level;
    this.updateIntx();
  }

  private updateIntx(): void {
    const disabled = (this.config[PCI_COMMAND + 1] & 0x04) !== 0;
    this.bus?.setIntx(this, this.intx && !disabled);
  }

  reset(): void {
    this.config.set(this.initialConfig);
    this.intx = false;
    this.bus?.barsChanged(this);
    this.updateIntx();
  }

  /** The configuration bytes as state; subclasses add their own fields under other names. */
  saveState(): VersionedState {
    return { version: 1, fields: { config: this.config.slice() } };
  }

  restoreState(state: VersionedState): void {
    const config = state?.fields?.config;
    if (!(config instanceof Uint8Array) || config.length !== 256) throw new StateError(`${this.id}: bad configuration space in state`);
    // Read-only bytes keep their values: a state file cannot change what the device is.
    for (let o = 0; o < 256; o++) this.config[o] = (this.config[o] & ~this.writeMask[o]) | (config[o] & this.writeMask[o]);
    this.bus?.barsChanged(this);
  }

  protected get32(o: number): number {
    return (this.config[o] | (this.config[o + 1] << 8) | (this.config[o + 2] << 16) | (this.config[o + 3] << 24)) >>> 0;
  }

  protected set16(o: number, v: number): void {
    this.config[o] = v & 0xff;
    this.config[o + 1] = (v >> 8) & 0xff;
  }

  protected set32(o: number, v: number): void {
    for (let i = 0; i < 4; i++) this.config[o + i] = (v >>> (8 * i)) & 0xff;
  }

  protected setMask32(o: number, v: number): void {
    for (let i = 0; i < 4; i++) this.writeMask[o + i] = (v >>> (8 * i)) & 0xff;
  }
}

/** The ROM BAR decodes a power-of-two window of at least 2 KiB. */
function romWindow(length: number): number {
  let size = 2048;
  while (size < length) size *= 2;
  return size;
}
