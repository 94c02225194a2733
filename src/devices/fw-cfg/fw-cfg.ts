import type { VersionedState } from '../../base/state.js';
import { int, stateSchema, u16, u32 } from '../../base/state-schema.js';
import type { PhysicalMemory } from '../../memory/physical-memory.js';
import type { PortIoBus } from '../../memory/port-io-bus.js';
import type { Device } from '../device.js';

/** The items themselves are the machine's configuration, built again by the machine restored into. */
const FW_CFG_STATE = stateSchema(1, { selector: u16, position: int(0, 2 ** 32), dmaAddressHigh: u32 });

/** Well-known fw_cfg selectors (QEMU's docs/specs/fw_cfg.rst). */
export const FwCfgKey = {
  SIGNATURE: 0x00,
  ID: 0x01,
  UUID: 0x02,
  RAM_SIZE: 0x03,
  NOGRAPHIC: 0x04,
  NB_CPUS: 0x05,
  BOOT_DEVICE: 0x0c,
  BOOT_MENU: 0x0e,
  MAX_CPUS: 0x0f,
  FILE_DIR: 0x19,
  FILE_FIRST: 0x20,
  /** x86: ISA IRQ 0 is wired to I/O APIC pin 2 (SeaBIOS's own MADT and MP table then say so). */
  IRQ0_OVERRIDE: 0x8002,
} as const;

const FEATURE_TRADITIONAL = 1, FEATURE_DMA = 2;
const DMA_ERROR = 0x01, DMA_READ = 0x02, DMA_SKIP = 0x04, DMA_SELECT = 0x08, DMA_WRITE = 0x10;
/** "QEMU CFG", what a read of the DMA address register returns. */
const DMA_SIGNATURE = 0x51454d5520434647n;
const FILE_NAME_BYTES = 56;
/** A DMA request naming more than this is treated as hostile and fails (QEMU has no such limit, guests never need it). */
const MAX_DMA_LENGTH = 64 << 20;

/**
 * QEMU's firmware configuration device on x86 (selector 0x510, data 0x511, DMA address 0x514): a read-only
 * key/value store through which the firmware learns the machine (RAM size, CPUs, e820, boot order, ACPI
 * tables). Items are fixed when the machine is built; the guest only moves a read position.
 */
export class FwCfg implements Device {
  readonly id = 'fw-cfg';
  private readonly items = new Map<number, Uint8Array>();
  private readonly files: { name: string; key: number }[] = [];
  private selector = 0;
  private position = 0;
  private dmaAddressHigh = 0;

  constructor(io: PortIoBus, private readonly memory: PhysicalMemory) {
    this.items.set(FwCfgKey.SIGNATURE, new TextEncoder().encode('QEMU'));
    this.setU32(FwCfgKey.ID, FEATURE_TRADITIONAL | FEATURE_DMA);
    io.register(0x510, 1, {
      read: () => 0,
      write: (offset, size, value) => {
        if (offset === 0 && size === 2) this.select(value & 0xffff);
      },
    }, { sizes: 2, name: 'fw-cfg-selector' });
    io.register(0x511, 1, { read: () => this.readByte(), write: () => {} }, { sizes: 1, name: 'fw-cfg-data' });
    io.register(0x514, 8, {
      // The address is written big-endian as two 32-bit halves; writing the low half starts the transfer.
      read: (offset, size) => {
        const be = Number((DMA_SIGNATURE >> BigInt(8 * (8 - offset - size))) & ((1n << BigInt(8 * size)) - 1n));
        return size === 4 ? swap32(be) : size === 2 ? ((be & 0xff) << 8) | (be >> 8) : be;
      },
      write: (offset, size, value) => {
        if (size !== 4) return;
        if (offset === 0) this.dmaAddressHigh = swap32(value);
        else if (offset === 4) this.dma(this.dmaAddressHigh * 2 ** 32 + swap32(value));
      },
    }, { sizes: 4 | 2 | 1, name: 'fw-cfg-dma' });
  }

  setBytes(key: number, bytes: Uint8Array): void {
    this.items.set(key, bytes);
  }

  setU16(key: number, value: number): void {
    this.items.set(key, Uint8Array.of(value & 0xff, (value >> 8) & 0xff));
  }

  setU32(key: number, value: number): void {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, value, true);
    this.items.set(key, b);
  }

  setU64(key: number, value: number): void {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(value), true);
    this.items.set(key, b);
  }

  /** Adds a named file (listed in the directory, sorted by name as QEMU does). */
  addFile(name: string, bytes: Uint8Array): void {
    if (name.length >= FILE_NAME_BYTES) throw new Error(`fw_cfg file name too long: ${name}`);
    if (this.files.some((f) => f.name === name)) throw new Error(`fw_cfg file ${name} added twice`);
    const key = FwCfgKey.FILE_FIRST + this.files.length;
    this.files.push({ name, key });
    this.items.set(key, bytes);
    this.items.set(FwCfgKey.FILE_DIR, this.directory());
  }

  private directory(): Uint8Array {
    const sorted = [...this.files].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const dir = new Uint8Array(4 + 64 * sorted.length);
    const dv = new DataView(dir.buffer);
    dv.setUint32(0, sorted.length);
    sorted.forEach((f, i) => {
      const at = 4 + 64 * i;
      dv.setUint32(at, this.items.get(f.key)!.length);
      dv.setUint16(at + 4, f.key);
      dir.set(new TextEncoder().encode(f.name), at + 8);
    });
    return dir;
  }

  private select(key: number): void {
    this.selector = key;
    this.position = 0;
  }

  private readByte(): number {
    const item = this.items.get(this.selector);
    if (!item || this.position >= item.length) return 0;
    return item[this.position++];
  }

  /** Runs one DMA request (FWCfgDmaAccess: control, length, address; big-endian) and writes its status back. */
  private dma(descriptor: number): void {
    const header = this.memory.readBytes(descriptor, 16);
    if (!header) return;
    const dv = new DataView(header.buffer);
    const control = dv.getUint32(0);
    const length = dv.getUint32(4);
    const address = Number(dv.getBigUint64(8));
    if (control & DMA_SELECT) this.select(control >>> 16);
    let status = 0;
    if (control & DMA_WRITE || length > MAX_DMA_LENGTH) {
      status = DMA_ERROR; // every item is read-only
    } else if (control & (DMA_READ | DMA_SKIP)) {
      const item = this.items.get(this.selector) ?? new Uint8Array(0);
      const available = Math.max(0, Math.min(length, item.length - this.position));
      if (control & DMA_READ) {
        // Bytes past the item's end read as zeros, as on QEMU.
        const out = new Uint8Array(length);
        out.set(item.subarray(this.position, this.position + available));
        if (!this.memory.writeBytes(address, out)) status = DMA_ERROR;
      }
      this.position += available;
    }
    const done = new Uint8Array(4);
    new DataView(done.buffer).setUint32(0, status);
    this.memory.writeBytes(descriptor, done);
  }

  reset(): void {
    this.select(0);
    this.dmaAddressHigh = 0;
  }

  saveState(): VersionedState {
    const { selector, position, dmaAddressHigh } = this;
    return FW_CFG_STATE.save({ selector, position, dmaAddressHigh });
  }

  checkState(state: VersionedState): void {
    FW_CFG_STATE.restore(this.id, state);
  }

  restoreState(state: VersionedState): void {
    ({ selector: this.selector, position: this.position, dmaAddressHigh: this.dmaAddressHigh } = FW_CFG_STATE.restore(this.id, state));
  }
}

function swap32(v: number): number {
  return (((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | (v >>> 24)) >>> 0;
}
