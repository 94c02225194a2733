import type { VirtualClock } from '../../base/clock.js';
import { expectVersion, type VersionedState } from '../../base/state.js';
import type { MmioBus } from '../../memory/mmio-bus.js';
import type { Device } from '../device.js';

/** Where QEMU's pc puts the HPET, and the size of its register block. */
export const HPET_BASE = 0xfed00000;
export const HPET_LENGTH = 0x400;
/** Counter period in femtoseconds: 10 ns (100 MHz), as QEMU's. */
const PERIOD_FS = 10_000_000;
const NS_PER_TICK = PERIOD_FS / 1e6;
const TIMERS = 3;
const TWO_32 = 0x100000000;
/** Low half of the capabilities register: vendor 8086, 64-bit counter, TIMERS comparators, revision 1. */
export const HPET_CAPABILITIES = (0x8086_0000 | (1 << 13) | ((TIMERS - 1) << 8) | 0x01) >>> 0;

/**
 * The HPET as a clock: a 64-bit main counter at 100 MHz that follows guest time, with three comparators that
 * hold their values but never interrupt. It advertises neither legacy replacement routing nor interrupt
 * routes, so an OS keeps the 8254 and RTC for interrupts and uses the HPET as its reference clock (Linux's
 * clocksource watchdog then trusts the TSC instead of counting timer ticks, which a busy host delays).
 */
export class Hpet implements Device {
  readonly id = 'hpet';
  private enabled = false;
  /** Counter value at `sinceNs` (guest time) while enabled; the frozen value while disabled. */
  private counterBase = 0;
  private sinceNs = 0;
  private readonly comparators = new Float64Array(TIMERS);
  private readonly timerConfig = new Uint32Array(TIMERS);

  constructor(mmio: MmioBus, private readonly clock: VirtualClock) {
    mmio.register(HPET_BASE, HPET_LENGTH, { read: (o) => this.read(o), write: (o, _s, v) => this.write(o, v) }, { sizes: 4, name: 'hpet' });
  }

  reset(): void {
    this.enabled = false;
    this.counterBase = 0;
    this.comparators.fill(0);
    this.timerConfig.fill(0);
  }

  private counter(): number {
    if (!this.enabled) return this.counterBase;
    return this.counterBase + Math.floor((this.clock.nowNs() - this.sinceNs) / NS_PER_TICK);
  }

  private setCounter(value: number): void {
    this.counterBase = value;
    this.sinceNs = this.clock.nowNs();
  }

  private read(offset: number): number {
    if (offset >= 0x100 && offset < 0x100 + 0x20 * TIMERS) {
      const n = (offset - 0x100) >> 5;
      switch (offset & 0x1f) {
        case 0x00: return this.timerConfig[n] | 0x20; // 64-bit capable
        case 0x04: return 0; // no interrupt routes
        case 0x08: return this.comparators[n] % TWO_32;
        case 0x0c: return Math.floor(this.comparators[n] / TWO_32);
        default: return 0;
      }
    }
    switch (offset) {
      case 0x000: return HPET_CAPABILITIES;
      case 0x004: return PERIOD_FS;
      case 0x010: return this.enabled ? 1 : 0;
      case 0x0f0: return this.counter() % TWO_32;
      case 0x0f4: return Math.floor(this.counter() / TWO_32) % TWO_32;
      default: return 0;
    }
  }

  private write(offset: number, value: number): void {
    if (offset >= 0x100 && offset < 0x100 + 0x20 * TIMERS) {
      const n = (offset - 0x100) >> 5;
      const c = this.comparators[n];
      switch (offset & 0x1f) {
        case 0x00: this.timerConfig[n] = value & 0x4e; return; // type, enable, periodic, 32-bit mode bits kept
        case 0x08: this.comparators[n] = Math.floor(c / TWO_32) * TWO_32 + value; return;
        case 0x0c: this.comparators[n] = value * TWO_32 + (c % TWO_32); return;
        default: return;
      }
    }
    switch (offset) {
      case 0x010: {
        const enable = (value & 1) !== 0;
        if (enable !== this.enabled) {
          const now = this.counter();
          this.enabled = enable;
          this.setCounter(now);
        }
        return;
      }
      // The main counter is writable while halted.
      case 0x0f0: if (!this.enabled) this.counterBase = Math.floor(this.counterBase / TWO_32) * TWO_32 + value; return;
      case 0x0f4: if (!this.enabled) this.counterBase = value * TWO_32 + (this.counterBase % TWO_32); return;
      default: return;
    }
  }

  saveState(): VersionedState {
    return {
      version: 1,
      fields: { enabled: this.enabled, counter: this.counter(), comparators: Float64Array.from(this.comparators), timerConfig: Array.from(this.timerConfig) },
    };
  }

  restoreState(state: VersionedState): void {
    expectVersion(this.id, state, 1, 1);
    const f = state.fields;
    this.enabled = f.enabled === true;
    this.setCounter(Math.max(0, Number(f.counter) || 0));
    const comparators = f.comparators;
    if (comparators instanceof Float64Array && comparators.length === TIMERS) this.comparators.set(comparators);
    const config = f.timerConfig;
    if (Array.isArray(config) && config.length === TIMERS) config.forEach((v, i) => (this.timerConfig[i] = Number(v) & 0x4e));
  }
}
