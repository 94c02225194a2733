import type { VersionedState } from '../../base/state.js';
import { assign, bool, int, pick, record, stateSchema, u8, type FieldValues } from '../../base/state-schema.js';
import type { PortIoBus } from '../../memory/port-io-bus.js';
import type { Device, InterruptAcknowledge, IntrPin, IrqLine } from '../device.js';

const CHIP_STATE = {
  irr: u8, isr: u8, imr: u8, vectorBase: int(0, 0xf8), lines: u8, elcr: u8, initStep: int(0, 3),
  needIcw4: bool, singleMode: bool, autoEoi: bool, readIsr: bool, poll: bool, specialMask: bool, rotateOnAutoEoi: bool,
  lowestPriority: int(0, 7), specialFullyNested: bool,
};
type ChipState = FieldValues<typeof CHIP_STATE>;
const CHIP_PROPERTIES = [
  'irr', 'isr', 'imr', 'vectorBase', 'lines', 'elcr', 'initStep', 'needIcw4', 'singleMode', 'autoEoi', 'readIsr', 'poll',
  'specialMask', 'rotateOnAutoEoi', 'lowestPriority', 'specialFullyNested',
] as const;
/** Version 2 names the registers (version 1 was a list of numbers). */
const PIC_STATE = stateSchema(2, { master: record(CHIP_STATE), slave: record(CHIP_STATE) });

/** One 8259A: the registers and the priority logic. */
class Pic8259Chip {
  irr = 0;
  isr = 0;
  imr = 0xff;
  vectorBase = 0;
  /** Lines currently asserted (for edge detection and level mode). */
  lines = 0;
  /** Edge/level per line from the ELCR (1 = level). */
  elcr = 0;
  initStep = 0;
  needIcw4 = false;
  singleMode = false;
  autoEoi = false;
  readIsr = false;
  poll = false;
  specialMask = false;
  rotateOnAutoEoi = false;
  lowestPriority = 7;
  specialFullyNested = false;

  reset(): void {
    this.irr = this.isr = 0;
    this.imr = 0xff;
    this.vectorBase = 0;
    this.initStep = 0;
    this.needIcw4 = this.singleMode = this.autoEoi = this.readIsr = this.poll = this.specialMask = false;
    this.rotateOnAutoEoi = this.specialFullyNested = false;
    this.lowestPriority = 7;
  }

  setLine(n: number, level: boolean): void {
    const bit = 1 << n;
    if (this.elcr & bit) {
      if (level) {
        this.irr |= bit;
        this.lines |= bit;
      } else {
        this.irr &= ~bit;
        this.lines &= ~bit;
      }
      return;
    }
    if (level) {
      if ((this.lines & bit) === 0) this.irr |= bit;
      this.lines |= bit;
    } else {
      this.lines &= ~bit;
    }
  }

  /** Priority order starting after the lowest-priority line. */
  private priorityOf(mask: number): number {
    if (mask === 0) return 8;
    for (let p = 0; p < 8; p++) {
      const line = (this.lowestPriority + 1 + p) & 7;
      if (mask & (1 << line)) return p;
    }
    return 8;
  }

  /** The line that would be delivered, or -1. */
  pending(): number {
    const req = this.irr & ~this.imr;
    if (req === 0) return -1;
    const reqPrio = this.priorityOf(req);
    let inService = this.isr;
    if (this.specialMask) inService &= ~this.imr;
    // In special fully nested mode (master with cascaded slave), the cascade line may interrupt itself.
    if (this.specialFullyNested) inService &= ~(1 << 2);
    const isrPrio = this.priorityOf(inService);
    if (reqPrio < isrPrio) return (this.lowestPriority + 1 + reqPrio) & 7;
    return -1;
  }

  /** The INTA cycle for line `n`. */
  acknowledge(n: number): void {
    const bit = 1 << n;
    if ((this.elcr & bit) === 0) this.irr &= ~bit;
    if (this.autoEoi) {
      if (this.rotateOnAutoEoi) this.lowestPriority = n;
    } else {
      this.isr |= bit;
    }
  }

  private highestInService(): number {
    for (let p = 0; p < 8; p++) {
      const line = (this.lowestPriority + 1 + p) & 7;
      if (this.isr & (1 << line)) return line;
    }
    return -1;
  }

  write(port: number, value: number): void {
    if (port === 0) {
      if (value & 0x10) {
        // ICW1
        this.initStep = 1;
        this.needIcw4 = (value & 1) !== 0;
        this.singleMode = (value & 2) !== 0;
        this.imr = 0;
        this.isr = 0;
        this.irr &= this.elcr & this.lines;
        this.lowestPriority = 7;
        this.specialMask = false;
        this.readIsr = false;
        this.autoEoi = false;
        return;
      }
      if (value & 0x08) {
        // OCW3
        if (value & 0x04) this.poll = true;
        if (value & 0x02) this.readIsr = (value & 1) !== 0;
        if (value & 0x40) this.specialMask = (value & 0x20) !== 0;
        return;
      }
      // OCW2
      const cmd = value >> 5;
      switch (cmd) {
        case 0: this.rotateOnAutoEoi = false; break;
        case 4: this.rotateOnAutoEoi = true; break;
        case 1: case 5: {
          const line = this.highestInService();
          if (line >= 0) {
            this.isr &= ~(1 << line);
            if (cmd === 5) this.lowestPriority = line;
          }
          break;
        }
        case 3: this.isr &= ~(1 << (value & 7)); break;
        case 7: this.isr &= ~(1 << (value & 7)); this.lowestPriority = value & 7; break;
        case 6: this.lowestPriority = value & 7; break;
      }
      return;
    }
    switch (this.initStep) {
      case 1:
        this.vectorBase = value & 0xf8;
        this.initStep = this.singleMode ? (this.needIcw4 ? 3 : 0) : 2;
        return;
      case 2:
        this.initStep = this.needIcw4 ? 3 : 0;
        return;
      case 3:
        this.autoEoi = (value & 2) !== 0;
        this.specialFullyNested = (value & 0x10) !== 0;
        this.initStep = 0;
        return;
      default:
        this.imr = value;
    }
  }

  read(port: number): number {
    if (this.poll) {
      this.poll = false;
      const line = this.pending();
      if (line < 0) return 0;
      this.acknowledge(line);
      return 0x80 | line;
    }
    if (port === 0) return this.readIsr ? this.isr : this.irr;
    return this.imr;
  }

  save(): ChipState {
    return pick(this, CHIP_PROPERTIES);
  }

  load(s: ChipState): void {
    assign(this, s, CHIP_PROPERTIES);
  }
}

/**
 * The PC's two cascaded 8259A interrupt controllers (master 0x20, slave 0xA0 on IRQ 2) and the ELCR
 * (0x4D0/0x4D1) that makes lines level-triggered for PCI. Drives the CPU's INTR pin.
 */
export class DualPic8259 implements Device, InterruptAcknowledge {
  readonly id = 'pic';
  private readonly master = new Pic8259Chip();
  private readonly slave = new Pic8259Chip();
  private intr = false;

  constructor(io: PortIoBus, private readonly cpu: IntrPin) {
    const chipPorts = (chip: Pic8259Chip) => ({
      read: (offset: number) => {
        const v = chip.read(offset);
        this.update();
        return v;
      },
      write: (offset: number, _size: number, value: number) => {
        chip.write(offset, value & 0xff);
        this.update();
      },
    });
    io.register(0x20, 2, chipPorts(this.master), { sizes: 1, name: 'pic-master' });
    io.register(0xa0, 2, chipPorts(this.slave), { sizes: 1, name: 'pic-slave' });
    io.register(0x4d0, 2, {
      read: (offset) => (offset === 0 ? this.master.elcr : this.slave.elcr),
      write: (offset, _s, value) => {
        // IRQ 0, 1, 2, 8 and 13 are always edge-triggered.
        if (offset === 0) this.master.elcr = value & 0xf8;
        else this.slave.elcr = value & 0xde;
      },
    }, { sizes: 1, name: 'elcr' });
  }

  reset(): void {
    this.master.reset();
    this.slave.reset();
    this.update();
  }

  irqLine(n: number): IrqLine {
    if (n < 0 || n > 15) throw new RangeError(`IRQ ${n}`);
    return { set: (level: boolean) => this.setIrq(n, level) };
  }

  setIrq(n: number, level: boolean): void {
    if (n < 8) this.master.setLine(n, level);
    else this.slave.setLine(n - 8, level);
    this.update();
  }

  private update(): void {
    // The cascade wire behaves as a level: IRQ 2 is requested while the slave has something to deliver.
    if (this.slave.pending() >= 0) this.master.irr |= 4;
    else this.master.irr &= ~4;
    const level = this.master.pending() >= 0;
    if (level !== this.intr) {
      this.intr = level;
      this.cpu.setIntr(level);
    }
  }

  acknowledge(): number {
    const line = this.master.pending();
    let vector: number;
    if (line < 0) {
      vector = this.master.vectorBase | 7; // spurious IRQ 7
    } else if (line === 2) {
      this.master.acknowledge(2);
      const sl = this.slave.pending();
      if (sl < 0) vector = this.slave.vectorBase | 7;
      else {
        this.slave.acknowledge(sl);
        vector = this.slave.vectorBase | sl;
      }
    } else {
      this.master.acknowledge(line);
      vector = this.master.vectorBase | line;
    }
    this.update();
    return vector;
  }

  saveState(): VersionedState {
    return PIC_STATE.save({ master: this.master.save(), slave: this.slave.save() });
  }

  checkState(state: VersionedState): void {
    PIC_STATE.restore(this.id, state);
  }

  restoreState(state: VersionedState): void {
    const s = PIC_STATE.restore(this.id, state);
    this.master.load(s.master);
    this.slave.load(s.slave);
    this.update();
  }
}
