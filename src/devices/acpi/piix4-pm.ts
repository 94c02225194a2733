import type { VersionedState } from '../../base/state.js';
import { bytes, stateSchema, u16 } from '../../base/state-schema.js';
import type { PortIoBus } from '../../memory/port-io-bus.js';
import type { Device, IrqLine } from '../device.js';
import type { SystemControl } from '../system-control.js';
import type { TimerQueue } from '../timer-queue.js';
import { GPE0_BLK, GPE0_BLK_LEN, PM1A_CNT_OFFSET, PM1A_EVT_OFFSET, PM_TIMER_HZ, PM_TMR_OFFSET, SLP_TYP_S5 } from './pm-constants.js';

const PM1_STS_PWRBTN = 0x100, PM1_STS_TMR = 0x01, PM1_CNT_SCI_EN = 1, PM1_CNT_SLP_EN = 0x2000;

/** Version 2 names the PM1 registers (version 1 listed them). */
const PM_STATE = stateSchema(2, { pm1Status: u16, pm1Enable: u16, pm1Control: u16, gpe: bytes(GPE0_BLK_LEN) });

/**
 * The ACPI power-management registers of the PIIX4: PM1a event (status/enable, power button), PM1a control
 * (SCI_EN, SLP_TYP + SLP_EN: S5 powers the machine off), the 24-bit 3.58 MHz PM timer and GPE0. SCI is IRQ 9.
 */
export class Piix4Pm implements Device {
  readonly id = 'piix4-pm';
  private pm1Status = 0;
  private pm1Enable = 0;
  /** SCI_EN starts set: the tables declare no SMI command port, so the hardware is always in ACPI mode. */
  private pm1Control = PM1_CNT_SCI_EN;
  private readonly gpe = new Uint8Array(GPE0_BLK_LEN);

  /** Where the PM1a and PM timer registers decode (PMBA), or null while the PCI function has them off. */
  private base: number | null = null;

  constructor(private readonly io: PortIoBus, private readonly sci: IrqLine, private readonly timers: TimerQueue, private readonly control: SystemControl) {
    io.register(GPE0_BLK, GPE0_BLK_LEN, {
      read: (offset, size) => this.readBytes(offset, size, (o) => this.gpe[o]),
      write: (offset, size, value) => {
        for (let i = 0; i < size; i++) {
          const o = offset + i, b = (value >> (8 * i)) & 0xff;
          // First half: status (write 1 to clear); second half: enable.
          if (o < GPE0_BLK_LEN / 2) this.gpe[o] &= ~b;
          else this.gpe[o] = b;
        }
      },
    }, { name: 'gpe0' });
  }

  /**
   * Moves the PM1a event/control and PM timer registers to `base` (the PIIX4's PMBA), or takes them off the
   * bus (null). SeaBIOS puts them at 0x600 when QEMU-style ACPI tables come through fw_cfg, and at 0xB000
   * when it builds its own tables (-no-acpi); tsvm's tables and direct Linux boot use 0x600.
   */
  mapAt(base: number | null): void {
    if (base === this.base) return;
    if (this.base !== null) for (const o of [PM1A_EVT_OFFSET, PM1A_CNT_OFFSET, PM_TMR_OFFSET]) this.io.unregister(this.base + o);
    this.base = base;
    if (base === null) return;
    this.io.register(base + PM1A_EVT_OFFSET, 4, {
      read: (offset, size) => this.readBytes(offset, size, (o) => [this.pm1Status & 0xff, this.pm1Status >> 8, this.pm1Enable & 0xff, this.pm1Enable >> 8][o]),
      write: (offset, size, value) => {
        for (let i = 0; i < size; i++) {
          const b = (value >> (8 * i)) & 0xff, o = offset + i;
          if (o === 0) this.pm1Status &= ~b;
          else if (o === 1) this.pm1Status &= ~(b << 8);
          else if (o === 2) this.pm1Enable = (this.pm1Enable & 0xff00) | b;
          else this.pm1Enable = (this.pm1Enable & 0xff) | (b << 8);
        }
        this.updateSci();
      },
    }, { name: 'pm1a-evt' });
    this.io.register(base + PM1A_CNT_OFFSET, 2, {
      read: (offset, size) => this.readBytes(offset, size, (o) => (o === 0 ? this.pm1Control & 0xff : this.pm1Control >> 8)),
      write: (offset, size, value) => {
        let v = this.pm1Control;
        for (let i = 0; i < size; i++) {
          const o = offset + i;
          v = o === 0 ? (v & 0xff00) | ((value >> (8 * i)) & 0xff) : (v & 0xff) | (((value >> (8 * i)) & 0xff) << 8);
        }
        this.writeControl(v);
      },
    }, { name: 'pm1a-cnt' });
    this.io.register(base + PM_TMR_OFFSET, 4, {
      read: (offset, size) => {
        const ticks = Math.floor((this.timers.nowNs() * PM_TIMER_HZ) / 1e9) & 0xffffff;
        return (ticks >>> (8 * offset)) & (size === 4 ? 0xffffffff : size === 2 ? 0xffff : 0xff);
      },
      write: () => {},
    }, { name: 'pm-timer' });
  }

  private readBytes(offset: number, size: number, byte: (o: number) => number): number {
    let v = 0;
    for (let i = 0; i < size; i++) v |= (byte(offset + i) & 0xff) << (8 * i);
    return v >>> 0;
  }

  private writeControl(v: number): void {
    this.pm1Control = v & ~PM1_CNT_SLP_EN;
    if (v & PM1_CNT_SLP_EN && ((v >> 10) & 7) === SLP_TYP_S5) this.control.requestPowerOff();
  }

  /** The power button: sets PWRBTN_STS and raises SCI if enabled (QMP system_powerdown). */
  pressPowerButton(): void {
    this.pm1Status |= PM1_STS_PWRBTN;
    this.updateSci();
  }

  private updateSci(): void {
    const pending = this.pm1Status & this.pm1Enable & (PM1_STS_PWRBTN | PM1_STS_TMR);
    this.sci.set(pending !== 0 && (this.pm1Control & PM1_CNT_SCI_EN) !== 0);
  }

  reset(): void {
    this.pm1Status = this.pm1Enable = 0;
    this.pm1Control = PM1_CNT_SCI_EN;
    this.gpe.fill(0);
    this.updateSci();
  }

  saveState(): VersionedState {
    const { pm1Status, pm1Enable, pm1Control, gpe } = this;
    return PM_STATE.save({ pm1Status, pm1Enable, pm1Control, gpe });
  }

  checkState(state: VersionedState): void {
    PM_STATE.restore(this.id, state);
  }

  /** Where the registers decode is the PCI function's (PMBA), restored with it. */
  restoreState(state: VersionedState): void {
    const s = PM_STATE.restore(this.id, state);
    ({ pm1Status: this.pm1Status, pm1Enable: this.pm1Enable, pm1Control: this.pm1Control } = s);
    this.gpe.set(s.gpe);
    this.updateSci();
  }
}
