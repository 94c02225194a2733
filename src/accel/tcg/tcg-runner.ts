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
      if (this.cpu.halted) {
        this.sleepUntilNextEvent();
        return;
      }
      this.cpu.run(TcgRunner.SLICE_INSTRUCTIONS);
      const reason = this.cpu.stopReason;
      if ((reason === 'triple-fault' || reason === 'exit-request') && !this.onEvent(reason)) {
        this.running = false;
        return;
      }
      if (performance.now() - start >= (this.ioPending() ? TcgRunner.YIELD_MS_IO_PENDING : TcgRunner.YIELD_MS)) break;
    }
    if (this.running) this.schedule();
  }

  private sleepUntilNextEvent(): void {
    const deadline = this.timers.nextDeadlineNs();
    if (deadline === Infinity) {
      // Nothing scheduled: only wake() (an interrupt from I/O) can restart the CPU.
      this.sleepTimer = setTimeout(() => this.afterSleep(), 2 ** 31 - 1);
      return;
    }
    const ms = Math.max(0, (deadline - this.timers.nowNs()) / 1e6);
    this.sleepTimer = setTimeout(() => this.afterSleep(), ms < 1 ? 0 : Math.floor(ms));
  }

  private afterSleep(): void {
    this.sleepTimer = null;
    if (this.running) this.loop();
  }
}
