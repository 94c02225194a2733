import type { VersionedState } from '../../base/state.js';
import { int, stateSchema, u32s, u8 } from '../../base/state-schema.js';
import type { MmioBus } from '../../memory/mmio-bus.js';
import type { Device, IrqLine } from '../device.js';
import type { ApicBus, ApicBusIoApic } from './apic-bus.js';

export const IO_APIC_DEFAULT_BASE = 0xfec00000;
export const IO_APIC_PINS = 24;
/** Version 0x11 with 24 redirection entries (max entry 23), an 82093AA as QEMU's. */
export const IO_APIC_VERSION = ((IO_APIC_PINS - 1) << 16) | 0x11;

const ENTRY_MASKED = 1 << 16, ENTRY_LEVEL = 1 << 15, ENTRY_REMOTE_IRR = 1 << 14;
/** Low word bits software writes: vector, delivery mode, destination mode, polarity, trigger, mask (not delivery status, remote IRR). */
const ENTRY_WRITABLE = 0x1afff;

const IO_APIC_STATE = stateSchema(1, {
  select: u8, apicId: int(0, 0xf),
  /** Bits software cannot set are dropped on restore. */
  entries: u32s(2 * IO_APIC_PINS),
  pins: int(0, 2 ** IO_APIC_PINS - 1),
});

/**
 * An 82093AA-style I/O APIC: IOREGSEL (0x00) selects a register that IOWIN (0x10) reads and writes: the ID,
 * the version, the arbitration ID and 24 redirection entries. An edge entry sends its message on each rising
 * edge of its pin; a level entry sends it while the pin is asserted and remote IRR is clear, sets remote IRR,
 * and sends again after the local APIC's EOI broadcast of its vector if the pin is still asserted. Messages are
 * delivered at once, so the delivery status bit always reads idle. The pins carry "asserted" (the machine's
 * lines are active-high), so the polarity bit is stored only.
 */
export class IoApic implements Device, ApicBusIoApic {
  readonly id = 'ioapic';
  private select = 0;
  private apicId = 0;
  /** Redirection entries: low word at 2n, high word (destination in bits 31:24) at 2n+1. */
  private readonly entries = new Uint32Array(2 * IO_APIC_PINS);
  /** Pins currently asserted, one bit each. */
  private pins = 0;

  constructor(mmio: MmioBus, base: number, private readonly bus: ApicBus) {
    mmio.register(base, 0x1000, { read: (o, s) => this.read(o, s), write: (o, s, v) => this.write(o, s, v) }, { name: 'ioapic' });
    bus.addIoApic(this);
    this.reset();
  }

  reset(): void {
    this.select = 0;
    this.apicId = 0;
    for (let i = 0; i < IO_APIC_PINS; i++) {
      this.entries[2 * i] = ENTRY_MASKED;
      this.entries[2 * i + 1] = 0;
    }
  }

  irqLine(pin: number): IrqLine {
    if (pin < 0 || pin >= IO_APIC_PINS) throw new RangeError(`I/O APIC pin ${pin}`);
    return { set: (level: boolean) => this.setPin(pin, level) };
  }

  setPin(pin: number, level: boolean): void {
    const bit = 1 << pin;
    const was = (this.pins & bit) !== 0;
    if (level) this.pins |= bit;
    else this.pins &= ~bit;
    if (!level) return;
    if (this.entries[2 * pin] & ENTRY_LEVEL) this.serviceLevel(pin);
    else if (!was) this.send(pin);
  }

  /** A level entry with its pin asserted sends once until the EOI clears remote IRR. */
  private serviceLevel(pin: number): void {
    const low = this.entries[2 * pin];
    if ((this.pins & (1 << pin)) === 0 || (low & (ENTRY_MASKED | ENTRY_REMOTE_IRR)) !== 0) return;
    this.entries[2 * pin] = low | ENTRY_REMOTE_IRR;
    this.send(pin);
  }

  private send(pin: number): void {
    const low = this.entries[2 * pin];
    if (low & ENTRY_MASKED) return;
    this.bus.deliver({
      destination: this.entries[2 * pin + 1] >>> 24,
      logical: (low & 0x800) !== 0,
      deliveryMode: (low >> 8) & 7,
      vector: low & 0xff,
      levelTriggered: (low & ENTRY_LEVEL) !== 0,
    });
  }

  endOfInterrupt(vector: number): void {
    for (let pin = 0; pin < IO_APIC_PINS; pin++) {
      const low = this.entries[2 * pin];
      if ((low & 0xff) !== vector || (low & ENTRY_REMOTE_IRR) === 0) continue;
      this.entries[2 * pin] = low & ~ENTRY_REMOTE_IRR;
      this.serviceLevel(pin);
    }
  }

  read(offset: number, size: number): number {
    let value = 0;
    if (offset >= 0x10 && offset < 0x14) value = this.readRegister(this.select);
    else if (offset < 4) value = this.select;
    if (size === 4) return value >>> 0;
    return (value >>> ((offset & 3) * 8)) & (size === 1 ? 0xff : 0xffff);
  }

  write(offset: number, size: number, value: number): void {
    if (offset < 4) {
      // IOREGSEL is written with byte or dword accesses alike.
      if ((offset & 3) === 0) this.select = value & 0xff;
      return;
    }
    if (offset === 0x10 && size === 4) this.writeRegister(this.select, value);
  }

  private readRegister(index: number): number {
    if (index === 0x00) return this.apicId << 24;
    if (index === 0x01) return IO_APIC_VERSION;
    if (index === 0x02) return this.apicId << 24; // arbitration ID
    if (index >= 0x10 && index < 0x10 + 2 * IO_APIC_PINS) return this.entries[index - 0x10];
    return 0;
  }

  private writeRegister(index: number, value: number): void {
    if (index === 0x00) {
      this.apicId = (value >>> 24) & 0xf;
      return;
    }
    if (index < 0x10 || index >= 0x10 + 2 * IO_APIC_PINS) return;
    const i = index - 0x10;
    const pin = i >> 1;
    if (i & 1) {
      this.entries[i] = value & 0xff000000;
      return;
    }
    const old = this.entries[i];
    let low = (value & ENTRY_WRITABLE) | (old & ENTRY_REMOTE_IRR);
    if ((low & ENTRY_LEVEL) === 0) low &= ~ENTRY_REMOTE_IRR; // remote IRR exists for level entries only
    this.entries[i] = low;
    // Unmasking (or making level) an entry whose pin is asserted sends it now.
    if (low & ENTRY_LEVEL) this.serviceLevel(pin);
  }

  saveState(): VersionedState {
    const { select, apicId, entries, pins } = this;
    return IO_APIC_STATE.save({ select, apicId, entries, pins });
  }

  checkState(state: VersionedState): void {
    IO_APIC_STATE.restore(this.id, state);
  }

  restoreState(state: VersionedState): void {
    const s = IO_APIC_STATE.restore(this.id, state);
    ({ select: this.select, apicId: this.apicId, pins: this.pins } = s);
    s.entries.forEach((v, i) => (this.entries[i] = i & 1 ? v & 0xff000000 : v & (ENTRY_WRITABLE | ENTRY_REMOTE_IRR)));
  }
}
