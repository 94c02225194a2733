import type { VersionedState } from '../../base/state.js';
import { bytes, int, nullable, num, stateSchema } from '../../base/state-schema.js';
import type { PortIoBus } from '../../memory/port-io-bus.js';
import type { Device, IrqLine } from '../device.js';
import type { Timer, TimerQueue } from '../timer-queue.js';

const REG_A = 0x0a, REG_B = 0x0b, REG_C = 0x0c, REG_D = 0x0d;
const B_SET = 0x80, B_PIE = 0x40, B_AIE = 0x20, B_UIE = 0x10, B_DM = 0x04, B_24H = 0x02;
const C_IRQF = 0x80, C_PF = 0x40, C_AF = 0x20, C_UF = 0x10;

/** Version 2 adds the periodic and update timers' deadlines (guest-clock ns, null while not armed). */
const RTC_STATE = stateSchema(2, {
  nvram: bytes(128), index: int(0, 0x7f), epochOffsetSeconds: num(),
  periodicNs: nullable(num()), updateNs: nullable(num()),
});

/**
 * The MC146818 CMOS real-time clock and its NVRAM at ports 0x70/0x71. The time is kept as an offset from
 * guest time, starting from the host's UTC clock (QEMU's default `-rtc base=utc`); the date registers are
 * computed when read. Periodic, alarm and update-ended interrupts go to IRQ 8.
 */
export class Mc146818Rtc implements Device {
  readonly id = 'rtc';
  private readonly nvram = new Uint8Array(128);
  private index = 0;
  /** Seconds since the epoch = guest seconds + this offset. */
  private epochOffsetSeconds = 0;
  private readonly periodic: Timer;
  private readonly update: Timer;

  /** `startEpochSeconds`: the date at power-on (QEMU's `-rtc base=`), the host's clock unless given. */
  constructor(io: PortIoBus, private readonly irq: IrqLine, private readonly timers: TimerQueue, startEpochSeconds = Date.now() / 1000) {
    this.periodic = timers.createTimer('rtc-periodic', (now) => this.onPeriodic(now));
    this.update = timers.createTimer('rtc-update', (now) => this.onUpdate(now));
    io.register(0x70, 2, {
      read: (offset) => (offset === 0 ? 0xff : this.readRegister(this.index)),
      write: (offset, _size, value) => {
        if (offset === 0) this.index = value & 0x7f;
        else this.writeRegister(this.index, value & 0xff);
      },
    }, { sizes: 1, name: 'rtc' });
    this.nvram[REG_A] = 0x26;
    this.nvram[REG_B] = B_24H;
    this.nvram[REG_D] = 0x80;
    this.epochOffsetSeconds = startEpochSeconds - this.guestSeconds();
  }

  reset(): void {
    this.nvram[REG_B] &= ~(B_PIE | B_AIE | B_UIE);
    this.nvram[REG_C] = 0;
    this.irq.set(false);
    this.schedule();
  }

  private guestSeconds(): number {
    return this.timers.nowNs() / 1e9;
  }

  /** Writes a byte of CMOS NVRAM (for the machine's memory size and boot order entries). */
  setNvram(index: number, value: number): void {
    this.nvram[index & 0x7f] = value;
  }

  private encode(v: number): number {
    return this.nvram[REG_B] & B_DM ? v : ((Math.floor(v / 10) << 4) | (v % 10));
  }

  private decode(v: number): number {
    return this.nvram[REG_B] & B_DM ? v : (v >> 4) * 10 + (v & 0xf);
  }

  private now(): Date {
    return new Date(Math.floor(this.guestSeconds() + this.epochOffsetSeconds) * 1000);
  }

  private readRegister(i: number): number {
    const d = this.now();
    switch (i) {
      case 0x00: return this.encode(d.getUTCSeconds());
      case 0x02: return this.encode(d.getUTCMinutes());
      case 0x04: {
        const h = d.getUTCHours();
        if (this.nvram[REG_B] & B_24H) return this.encode(h);
        const h12 = h % 12 === 0 ? 12 : h % 12;
        return this.encode(h12) | (h >= 12 ? 0x80 : 0);
      }
      case 0x06: return this.encode(d.getUTCDay() + 1);
      case 0x07: return this.encode(d.getUTCDate());
      case 0x08: return this.encode(d.getUTCMonth() + 1);
      case 0x09: return this.encode(d.getUTCFullYear() % 100);
      case 0x32: return this.encode(Math.floor(d.getUTCFullYear() / 100));
      case REG_A: {
        // Update in progress during the last 244 us of each second.
        const frac = (this.guestSeconds() + this.epochOffsetSeconds) % 1;
        return (this.nvram[REG_A] & 0x7f) | (frac > 1 - 244e-6 ? 0x80 : 0);
      }
      case REG_C: {
        const v = this.nvram[REG_C];
        this.nvram[REG_C] = 0;
        this.irq.set(false);
        return v;
      }
      default: return this.nvram[i];
    }
  }

  private writeRegister(i: number, v: number): void {
    const timeRegs = [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32];
    if (timeRegs.includes(i)) {
      const d = this.now();
      const fields = { s: d.getUTCSeconds(), m: d.getUTCMinutes(), h: d.getUTCHours(), day: d.getUTCDate(), mon: d.getUTCMonth(), y: d.getUTCFullYear() };
      const val = i === 0x04 && !(this.nvram[REG_B] & B_24H) ? (this.decode(v & 0x7f) % 12) + (v & 0x80 ? 12 : 0) : this.decode(v);
      if (i === 0x00) fields.s = val;
      else if (i === 0x02) fields.m = val;
      else if (i === 0x04) fields.h = val;
      else if (i === 0x07) fields.day = val;
      else if (i === 0x08) fields.mon = val - 1;
      else if (i === 0x09) fields.y = Math.floor(fields.y / 100) * 100 + val;
      else if (i === 0x32) fields.y = val * 100 + (fields.y % 100);
      const t = Date.UTC(fields.y, fields.mon, fields.day, fields.h, fields.m, fields.s) / 1000;
      if (Number.isFinite(t)) this.epochOffsetSeconds = t - Math.floor(this.guestSeconds());
      return;
    }
    if (i === REG_C || i === REG_D) return;
    if (i === REG_A) v &= 0x7f;
    this.nvram[i] = v;
    if (i === REG_A || i === REG_B) this.schedule();
  }

  private periodNs(): number {
    const rate = this.nvram[REG_A] & 0xf;
    if (rate === 0) return Infinity;
    const r = rate <= 2 ? rate + 7 : rate;
    return (1e9 * 2 ** (r - 1)) / 32768;
  }

  private schedule(): void {
    const now = this.timers.nowNs();
    const period = this.periodNs();
    if (this.nvram[REG_B] & B_PIE && period !== Infinity) this.periodic.arm(now + period);
    else this.periodic.cancel();
    if (this.nvram[REG_B] & (B_UIE | B_AIE) && !(this.nvram[REG_B] & B_SET)) {
      const frac = (now / 1e9 + this.epochOffsetSeconds) % 1;
      this.update.arm(now + (1 - frac) * 1e9);
    } else this.update.cancel();
  }

  private raise(flag: number): void {
    this.nvram[REG_C] |= flag | C_IRQF;
    this.irq.set(true);
  }

  private onPeriodic(now: number): void {
    this.raise(C_PF);
    this.periodic.arm(now + this.periodNs());
  }

  private onUpdate(now: number): void {
    const b = this.nvram[REG_B];
    if (b & B_UIE) this.raise(C_UF);
    if (b & B_AIE) {
      const d = this.now();
      const match = (reg: number, v: number) => (this.nvram[reg] & 0xc0) === 0xc0 || this.decode(this.nvram[reg]) === v;
      if (match(0x01, d.getUTCSeconds()) && match(0x03, d.getUTCMinutes()) && match(0x05, d.getUTCHours())) this.raise(C_AF);
    }
    this.update.arm(now + 1e9);
  }

  saveState(): VersionedState {
    const deadline = (t: Timer) => (t.armed ? t.deadlineNs : null);
    return RTC_STATE.save({
      nvram: this.nvram, index: this.index, epochOffsetSeconds: this.epochOffsetSeconds,
      periodicNs: deadline(this.periodic), updateNs: deadline(this.update),
    });
  }

  checkState(state: VersionedState): void {
    RTC_STATE.restore(this.id, state);
  }

  restoreState(state: VersionedState): void {
    const s = RTC_STATE.restore(this.id, state);
    this.nvram.set(s.nvram);
    this.index = s.index;
    this.epochOffsetSeconds = s.epochOffsetSeconds;
    this.irq.set((this.nvram[REG_C] & C_IRQF) !== 0);
    const rearm = (t: Timer, deadlineNs: number | null) => (deadlineNs === null ? t.cancel() : t.arm(deadlineNs));
    rearm(this.periodic, s.periodicNs);
    rearm(this.update, s.updateNs);
  }
}
