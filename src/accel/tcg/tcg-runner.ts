import type { IcountConfig } from '../../base/clock.js';
import type { TimerQueue } from '../../devices/timer-queue.js';

/** What the run loop needs of the emulated CPU (src/cpu/x86/cpu.ts X86Cpu provides it). */
export interface EmulatedCpu {
  run(maxInstructions: number): number;
  readonly halted: boolean;
  readonly stopReason: string;
  requestExit(): void;
}

/** Why the runner stopped calling the CPU, reported to the machine. */
export type RunnerEvent = 'triple-fault' | 'exit-request';

/**
 * The emulated CPU's run loop on Node's event loop. It runs the CPU in slices, fires expired guest timers
 * between slices, yields to the event loop every few milliseconds (so console input, sockets and the
 * monitor are served), and when the CPU halts it sleeps until the next timer deadline or until wake() is
 * called (an interrupt arrived): an idle guest costs no host CPU.
 *
 * In the deterministic mode (`icount`, guest time = instructions run) everything the guest sees happens at
 * an instruction count that does not depend on the host: a slice ends at the next timer deadline, so timers
 * fire at exact counts; after a slice that left device requests in flight, the guest waits (in host time)
 * until they have completed, so a completion lands at the end of the slice that started it; a halted CPU
 * skips guest time to the next timer (sleep=off) or waits for it in host time first (sleep=on).
 */
export class TcgRunner {
  /** Instructions per cpu.run() call: timers are checked this often. */
  static readonly SLICE_INSTRUCTIONS = 20_000;
  /** Host milliseconds of guest execution before yielding to the event loop. */
  static readonly YIELD_MS = 10;
  /**
   * The same while a device waits for the host (a disk read): the guest is usually polling for it, and its
   * completion can only arrive when the event loop runs, so yield soon.
   */
  static readonly YIELD_MS_IO_PENDING = 0.2;

  private running = false;
  private sleepTimer: NodeJS.Timeout | null = null;
  private immediate: NodeJS.Immediate | null = null;

  constructor(
    private readonly cpu: EmulatedCpu,
    private readonly timers: TimerQueue,
    /** Called when the CPU stopped for a reason the machine must handle; return true to keep running. */
    private readonly onEvent: (event: RunnerEvent) => boolean,
    /** Whether device requests to the host are in flight. */
    private readonly ioPending: () => boolean = () => false,
    private readonly icount: IcountConfig | null = null,
  ) {}

  get isRunning(): boolean {
    return this.running;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.schedule();
  }

  /** Stops after the current slice; the CPU's state stays consistent (between instructions). */
  pause(): void {
    this.running = false;
    this.cpu.requestExit();
    this.clearScheduled();
  }

  /** An interrupt or other event may have made a halted CPU runnable. */
  wake(): void {
    if (!this.running || this.sleepTimer === null) return;
    this.clearScheduled();
    this.schedule();
  }

  private clearScheduled(): void {
    if (this.sleepTimer) clearTimeout(this.sleepTimer);
    if (this.immediate) clearImmediate(this.immediate);
    this.sleepTimer = null;
    this.immediate = null;
  }

  private schedule(): void {
    this.immediate = setImmediate(() => {
      this.immediate = null;
      this.loop();
    });
  }

  private loop(): void {
    const start = performance.now();
    while (this.running) {
      this.timers.runExpired();
      if (this.icount !== null && this.ioPending()) {
        this.waitForIo();
        return;
      }
      if (this.cpu.halted) {
        const deadline = this.timers.nextDeadlineNs();
        if (this.icount === null || this.icount.sleep || deadline === Infinity) {
          this.sleepUntil(deadline);
          return;
        }
        this.timers.clock.warpTo(deadline);
      } else {
        this.cpu.run(this.icount === null ? TcgRunner.SLICE_INSTRUCTIONS : this.instructionsToNextTimer());
        const reason = this.cpu.stopReason;
        if ((reason === 'triple-fault' || reason === 'exit-request') && !this.onEvent(reason)) {
          this.running = false;
          return;
        }
      }
      if (performance.now() - start >= (this.ioPending() ? TcgRunner.YIELD_MS_IO_PENDING : TcgRunner.YIELD_MS)) break;
    }
    if (this.running) this.schedule();
  }

  /** Deterministic mode: a slice ends at the next timer deadline (at least one instruction, at most a slice). */
  private instructionsToNextTimer(): number {
    const ns = this.timers.nextDeadlineNs() - this.timers.nowNs();
    return Math.max(1, Math.min(TcgRunner.SLICE_INSTRUCTIONS, Math.ceil(ns / this.timers.clock.instructionNs)));
  }

  /** Deterministic mode: no instruction runs while a device request is in flight; poll until all completed. */
  private waitForIo(): void {
    this.immediate = setImmediate(() => {
      this.immediate = null;
      if (!this.running) return;
      if (this.ioPending()) this.waitForIo();
      else this.loop();
    });
  }

  private sleepUntil(deadline: number): void {
    if (deadline === Infinity) {
      // Nothing scheduled: only wake() (an interrupt from I/O) can restart the CPU.
      this.sleepTimer = setTimeout(() => this.afterSleep(deadline), 2 ** 31 - 1);
      return;
    }
    const ms = Math.max(0, (deadline - this.timers.nowNs()) / 1e6);
    this.sleepTimer = setTimeout(() => this.afterSleep(deadline), ms < 1 ? 0 : Math.floor(ms));
  }

  /** `deadline`: the timer slept for; wake() ends the sleep before it (an interrupt), so no time is skipped then. */
  private afterSleep(deadline: number): void {
    this.sleepTimer = null;
    if (this.icount !== null && deadline !== Infinity) this.timers.clock.warpTo(deadline);
    if (this.running) this.loop();
  }
}
