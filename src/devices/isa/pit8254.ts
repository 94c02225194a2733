import type { VersionedState } from '../../base/state.js';
import { assign, bool, int, list, nullable, num, oneOf, pick, record, since, stateSchema, u8 } from '../../base/state-schema.js';
import type { PortIoBus } from '../../memory/port-io-bus.js';
import type { Device, IrqLine } from '../device.js';
import type { Timer, TimerQueue } from '../timer-queue.js';

/** The PIT's input clock. */
export const PIT_HZ = 1193182;
const NS_PER_TICK = 1e9 / PIT_HZ;

const COUNTER_STATE = record({
  mode: int(0, 5), access: int(1, 3), bcd: bool, reload: int(1, 0x10000),
  /** Guest-clock ns; null while waiting for a count or the gate. */
  startNs: nullable(num()),
  gate: bool, latched: list(u8, { max: 2 }), statusLatched: int(-1, 0xff), writeLow: int(-1, 0xff), readMsbNext: bool,
  outWhenIdle: bool, pendingReload: int(-1, 0x10000), oneShotFired: bool,
});
/** The counter's properties its state holds as they are. */
const COUNTER_PROPERTIES = [
  'mode', 'access', 'bcd', 'reload', 'gate', 'statusLatched', 'writeLow', 'readMsbNext', 'outWhenIdle', 'pendingReload', 'oneShotFired',
] as const;
/** Version 2 adds port 0x61's refresh toggle. */
const PIT_STATE = stateSchema(2, {
  counters: list(COUNTER_STATE, 3),
  speakerData: bool,
  refreshToggle: since(2, 0, oneOf(0, 0x10)),
}, { oldest: 1 });

/** One 8254 counter. Its count is not stepped: it is computed from guest time when read. */
class Counter {
  mode = 0;
  /** 1 lsb, 2 msb, 3 lsb then msb. */
  access = 3;
  bcd = false;
  reload = 0x10000;
  /** Guest time (ns) when counting started with `reload`; NaN while waiting for a count or the gate. */
  startNs = NaN;
  gate = false;
  latched: number[] = [];
  statusLatched = -1;
  writeLow = -1;
  readMsbNext = false;
  outWhenIdle = false;
  /** Count written but counting not yet started (mode 0/1/4/5 wait for it; 2/3 reload at the next period). */
  pendingReload = -1;
  /**
   * The one-shot modes' (0, 1, 4, 5) single interrupt edge for the current count has been delivered. Tracked
   * rather than inferred from the time, so that an edge whose time passed before the run loop fired it (host
   * pauses, e.g. garbage collection between the guest's count write and the scheduling) still arrives late
   * instead of being lost: Linux's one-shot clockevent waits for it forever.
   */
  oneShotFired = false;

  ticksSince(nowNs: number): number {
    return Math.floor((nowNs - this.startNs) / NS_PER_TICK);
  }

  /** The value the counting element holds now. */
  count(nowNs: number): number {
    if (Number.isNaN(this.startNs)) return this.pendingReload >= 0 ? this.pendingReload & 0xffff : 0;
    const t = this.ticksSince(nowNs);
    const n = this.reload;
    switch (this.mode) {
      case 2: return n - (t % n);
      case 3: {
        // Square wave counts down by two each tick, twice per period.
        const half = n >> 1 || 1;
        const inHalf = t % (n >= 2 ? n : 1);
        const pos = inHalf < (n - (n >> 1)) ? inHalf : inHalf - (n - (n >> 1));
        return (n - 2 * pos) & 0xfffe || half;
      }
      default: {
        const c = n - t;
        return ((c % 0x10000) + 0x10000) % 0x10000;
      }
    }
  }

  out(nowNs: number): boolean {
    if (Number.isNaN(this.startNs)) return this.outWhenIdle;
    const t = this.ticksSince(nowNs);
    const n = this.reload;
    switch (this.mode) {
      case 0: return t >= n;
      case 1: return t >= n;
      case 2: return t % n !== n - 1;
      case 3: return t % n < n - (n >> 1);
      case 4: case 5: return t !== n;
      default: return true;
    }
  }

  /** Guest time of the next rising edge of OUT after nowNs (for IRQ 0), or Infinity. */
  nextRisingEdgeNs(nowNs: number): number {
    if (Number.isNaN(this.startNs)) return Infinity;
    const n = this.reload;
    let edgeTick: number;
    switch (this.mode) {
      case 0: case 1:
        if (this.oneShotFired) return Infinity;
        edgeTick = n;
        break;
      case 2: case 3:
        edgeTick = (Math.floor(this.ticksSince(nowNs) / n) + 1) * n;
        break;
      case 4: case 5:
        // Strobe modes: OUT drops for one tick when the count expires; the edge back up is the interrupt.
        if (this.oneShotFired) return Infinity;
        edgeTick = n + 1;
        break;
      default:
        return Infinity;
    }
    return this.startNs + edgeTick * NS_PER_TICK;
  }
}

/**
 * The 8254 programmable interval timer (ports 0x40-0x43) and port 0x61's timer-2 gate and output bits.
 * Counter 0 drives IRQ 0; counter 2 is what Linux uses to calibrate the TSC, so reads track guest time.
 */
export class Pit8254 implements Device {
  readonly id = 'pit';
  private readonly counters = [new Counter(), new Counter(), new Counter()];
  private readonly timer: Timer;
  private speakerData = false;
  private refreshToggle = 0;

  constructor(io: PortIoBus, private readonly irq0: IrqLine, private readonly timers: TimerQueue) {
    this.timer = timers.createTimer('pit', (now) => this.onTimer(now));
    io.register(0x40, 4, {
      read: (offset) => this.readCounter(offset),
      write: (offset, _size, value) => this.write(offset, value & 0xff),
    }, { sizes: 1, name: 'pit' });
    io.register(0x61, 1, {
      read: () => this.readPort61(),
      write: (_o, _s, value) => this.writePort61(value),
    }, { sizes: 1, name: 'port61' });
    this.reset();
  }

  reset(): void {
    for (const c of this.counters) {
      Object.assign(c, new Counter());
    }
    this.counters[0].gate = true;
    this.counters[1].gate = true;
    this.speakerData = false;
    this.timer.cancel();
  }

  private now(): number {
    return this.timers.nowNs();
  }

  private write(port: number, value: number): void {
    if (port === 3) {
      const sel = value >> 6;
      if (sel === 3) {
        // Read-back command.
        for (let i = 0; i < 3; i++) {
          if ((value & (2 << i)) === 0) continue;
          const c = this.counters[i];
          if ((value & 0x20) === 0) this.latch(c);
          if ((value & 0x10) === 0 && c.statusLatched < 0) {
            c.statusLatched = (c.out(this.now()) ? 0x80 : 0) | (c.access << 4) | (c.mode << 1) | (c.bcd ? 1 : 0);
          }
        }
        return;
      }
      const c = this.counters[sel];
      const access = (value >> 4) & 3;
      if (access === 0) {
        this.latch(c);
        return;
      }
      c.access = access;
      c.mode = (value >> 1) & 7;
      if (c.mode > 5) c.mode -= 4;
      c.bcd = (value & 1) !== 0;
      c.startNs = NaN;
      c.pendingReload = -1;
      c.writeLow = -1;
      c.readMsbNext = false;
      c.latched = [];
      c.outWhenIdle = c.mode !== 0;
      if (sel === 0) this.schedule();
      return;
    }
    const c = this.counters[port];
    let count: number;
    if (c.access === 1) count = value;
    else if (c.access === 2) count = value << 8;
    else if (c.writeLow < 0) {
      c.writeLow = value;
      if (c.mode === 0) {
        // Mode 0 stops counting when the first byte of a new count is written.
        c.startNs = NaN;
        c.outWhenIdle = false;
      }
      return;
    } else {
      count = c.writeLow | (value << 8);
      c.writeLow = -1;
    }
    if (c.bcd) count = fromBcd(count);
    this.loadCount(port, c, count === 0 ? 0x10000 : count);
  }

  private loadCount(index: number, c: Counter, count: number): void {
    const periodic = c.mode === 2 || c.mode === 3;
    if (periodic && !Number.isNaN(c.startNs)) {
      // A new count for a running periodic counter takes effect at the end of the current period.
      const now = this.now();
      const t = c.ticksSince(now);
      const endTick = (Math.floor(t / c.reload) + 1) * c.reload;
      c.startNs = c.startNs + endTick * NS_PER_TICK;
      c.reload = count;
    } else {
      c.reload = count;
      c.pendingReload = count;
      c.oneShotFired = false;
      if (c.gate || index === 0 || c.mode === 0 || c.mode === 4) {
        // Gate-triggered modes (1, 5) wait for a rising gate edge.
        if (c.mode !== 1 && c.mode !== 5 && (c.gate || index !== 2)) c.startNs = this.now() + NS_PER_TICK;
      }
    }
    if (index === 0) this.schedule();
  }

  private latch(c: Counter): void {
    if (c.latched.length > 0) return;
    const v = c.count(this.now());
    const out = c.bcd ? toBcd(v) : v;
    if (c.access === 1) c.latched = [out & 0xff];
    else if (c.access === 2) c.latched = [out >> 8];
    else c.latched = [out & 0xff, (out >> 8) & 0xff];
  }

  private readCounter(port: number): number {
    if (port === 3) return 0xff;
    const c = this.counters[port];
    if (c.statusLatched >= 0) {
      const s = c.statusLatched;
      c.statusLatched = -1;
      return s;
    }
    if (c.latched.length > 0) return c.latched.shift()!;
    const raw = c.count(this.now());
    const v = c.bcd ? toBcd(raw) : raw;
    if (c.access === 1) return v & 0xff;
    if (c.access === 2) return (v >> 8) & 0xff;
    const msb = c.readMsbNext;
    c.readMsbNext = !msb;
    return msb ? (v >> 8) & 0xff : v & 0xff;
  }

  private readPort61(): number {
    const c2 = this.counters[2];
    this.refreshToggle ^= 0x10;
    return (c2.gate ? 1 : 0) | (this.speakerData ? 2 : 0) | this.refreshToggle | (c2.out(this.now()) ? 0x20 : 0);
  }

  private writePort61(value: number): void {
    const c2 = this.counters[2];
    const gate = (value & 1) !== 0;
    this.speakerData = (value & 2) !== 0;
    if (gate && !c2.gate) {
      // Rising gate edge: modes 1, 2, 3, 5 (re)start counting; mode 0/4 resume.
      if (c2.reload > 0 && (c2.pendingReload >= 0 || c2.mode !== 0)) {
        c2.startNs = this.now() + NS_PER_TICK;
        c2.oneShotFired = false;
      }
    } else if (!gate && c2.gate && (c2.mode === 0 || c2.mode === 2 || c2.mode === 3 || c2.mode === 4)) {
      // Counting pauses while the gate is low; approximate by restarting from reload on the next rise.
      c2.outWhenIdle = c2.mode !== 0 ? true : c2.out(this.now());
      c2.startNs = NaN;
    }
    c2.gate = gate;
  }

  private schedule(): void {
    const next = this.counters[0].nextRisingEdgeNs(this.now());
    if (next === Infinity) this.timer.cancel();
    else this.timer.arm(next);
  }

  private onTimer(now: number): void {
    // A rising edge of OUT0: an edge on IRQ 0.
    this.irq0.set(false);
    this.irq0.set(true);
    const c = this.counters[0];
    if (c.mode === 2 || c.mode === 3) {
      // Drop the line again so the next period produces a new edge, and keep periods aligned.
      this.irq0.set(false);
      const next = c.nextRisingEdgeNs(now);
      // If the host fell behind by many periods, skip the missed ones rather than firing them all.
      this.timer.arm(next < now ? now + NS_PER_TICK * c.reload : next);
    } else {
      c.oneShotFired = true;
      this.timer.cancel();
    }
  }

  saveState(): VersionedState {
    return PIT_STATE.save({
      counters: this.counters.map((c) => ({
        ...pick(c, COUNTER_PROPERTIES), startNs: Number.isNaN(c.startNs) ? null : c.startNs, latched: [...c.latched],
      })),
      speakerData: this.speakerData,
      refreshToggle: this.refreshToggle ? 0x10 : 0,
    });
  }

  checkState(state: VersionedState): void {
    PIT_STATE.restore(this.id, state);
  }

  /** Counting start times are guest-clock times: the machine restores the clock first. */
  restoreState(state: VersionedState): void {
    const s = PIT_STATE.restore(this.id, state);
    s.counters.forEach((saved, i) => {
      const c = this.counters[i];
      assign(c, saved, COUNTER_PROPERTIES);
      c.startNs = saved.startNs ?? NaN;
      c.latched = [...saved.latched];
    });
    this.speakerData = s.speakerData;
    this.refreshToggle = s.refreshToggle;
    this.schedule();
  }
}

function fromBcd(v: number): number {
  return ((v >> 12) & 0xf) * 1000 + ((v >> 8) & 0xf) * 100 + ((v >> 4) & 0xf) * 10 + (v & 0xf);
}

function toBcd(v: number): number {
  v %= 10000;
  return ((Math.floor(v / 1000) % 10) << 12) | ((Math.floor(v / 100) % 10) << 8) | ((Math.floor(v / 10) % 10) << 4) | (v % 10);
}
