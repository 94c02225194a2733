import type { VirtualClock } from '../base/clock.js';

/**
 * Guest timers. Devices arm timers at absolute guest times (ns); the machine's run loop asks for the next
 * deadline (so a halted CPU can sleep until then) and fires whatever has expired.
 */
export class TimerQueue {
  private readonly timers = new Set<Timer>();
  /** Earliest armed deadline, cached; Infinity when none. */
  private next = Infinity;

  constructor(readonly clock: VirtualClock) {}

  createTimer(name: string, callback: (nowNs: number) => void): Timer {
    const t = new Timer(this, name, callback);
    this.timers.add(t);
    return t;
  }

  nowNs(): number {
    return this.clock.nowNs();
  }

  nextDeadlineNs(): number {
    return this.next;
  }

  /** Fire every timer whose deadline has passed. Returns how many fired. */
  runExpired(nowNs = this.clock.nowNs()): number {
    if (nowNs < this.next) return 0;
    let fired = 0;
    // A callback may re-arm its timer (periodic devices) or others; loop until nothing is due.
    for (;;) {
      let due: Timer | null = null;
      for (const t of this.timers) if (t.deadlineNs <= nowNs && (due === null || t.deadlineNs < due.deadlineNs)) due = t;
      if (due === null) break;
      due.deadlineNs = Infinity;
      this.recompute();
      due.callback(nowNs);
      fired++;
      if (fired > 10000) break;
    }
    this.recompute();
    return fired;
  }

  /** @internal */
  recompute(): void {
    let n = Infinity;
    for (const t of this.timers) if (t.deadlineNs < n) n = t.deadlineNs;
    this.next = n;
  }
}

export class Timer {
  deadlineNs = Infinity;

  constructor(
    private readonly queue: TimerQueue,
    readonly name: string,
    readonly callback: (nowNs: number) => void,
  ) {}

  /** Arm (or re-arm) at an absolute guest time in ns. */
  arm(deadlineNs: number): void {
    this.deadlineNs = deadlineNs;
    this.queue.recompute();
  }

  cancel(): void {
    if (this.deadlineNs === Infinity) return;
    this.deadlineNs = Infinity;
    this.queue.recompute();
  }

  get armed(): boolean {
    return this.deadlineNs !== Infinity;
  }
}
