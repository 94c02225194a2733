import type { Stateful, VersionedState } from './state.js';
import { num, stateSchema } from './state-schema.js';

/** The deterministic mode (QEMU's `-icount shift=N,sleep=on|off`). */
export interface IcountConfig {
  /** Each guest instruction lasts 2^shift ns of guest time. */
  shift: number;
  /**
   * While the CPU is halted: true, wait in host time until the next timer (the guest sees time pass as it
   * would, roughly); false, jump guest time to the next timer at once (faster, and what bisecting wants).
   */
  sleep: boolean;
}

const CLOCK_STATE = stateSchema(1, { nowNs: num() });

/**
 * Guest time. It follows the host's monotonic clock while the machine runs and stands still while it is
 * paused (snapshots, migration), so that timers do not all fire at once on resume.
 *
 * In the deterministic mode (useInstructionCount) it is instead the executed instruction count times
 * 2^shift ns, plus the time skipped while the CPU was halted (warpTo): nothing the guest sees depends on
 * how fast the host runs it, so the same boot repeats instruction for instruction.
 */
export class VirtualClock implements Stateful {
  readonly id = 'clock';
  private offsetNs = 0;
  /** Guest time while paused (null while running): kept as guest time so that a restored value reads back exactly. */
  private pausedGuestNs: number | null = null;
  private executed: (() => number) | null = null;
  private nsPerInstruction = 1;

  /** Host monotonic time in nanoseconds (float). */
  static hostNowNs(): number {
    return performance.now() * 1e6;
  }

  /**
   * Derives guest time from `executed()`, the instructions run so far (the deterministic mode); guest time
   * starts at 0 then (not at the host's clock, which would make every run differ).
   */
  useInstructionCount(executed: () => number, shift: number): void {
    this.executed = executed;
    this.nsPerInstruction = 2 ** shift;
    this.pausedGuestNs = null;
    this.setNowNs(0);
  }

  /** Guest nanoseconds per instruction in the deterministic mode. */
  get instructionNs(): number {
    return this.nsPerInstruction;
  }

  nowNs(): number {
    if (this.executed !== null) return this.executed() * this.nsPerInstruction + this.offsetNs;
    return this.pausedGuestNs ?? VirtualClock.hostNowNs() - this.offsetNs;
  }

  /** Deterministic mode: time passes while the CPU is halted and no instruction runs. */
  warpTo(guestNs: number): void {
    if (this.executed !== null && guestNs > this.nowNs()) this.setNowNs(guestNs);
  }

  pause(): void {
    // Instruction-count time stands still by itself while no instruction runs.
    if (this.pausedGuestNs === null && this.executed === null) this.pausedGuestNs = this.nowNs();
  }

  resume(): void {
    if (this.pausedGuestNs === null) return;
    this.offsetNs = VirtualClock.hostNowNs() - this.pausedGuestNs;
    this.pausedGuestNs = null;
  }

  /** Continue guest time from a saved value (restore, incoming migration). */
  setNowNs(guestNs: number): void {
    if (this.executed !== null) this.offsetNs = guestNs - this.executed() * this.nsPerInstruction;
    else if (this.pausedGuestNs !== null) this.pausedGuestNs = guestNs;
    else this.offsetNs = VirtualClock.hostNowNs() - guestNs;
  }

  /**
   * Guest time is part of the machine's state: devices keep deadlines and start times as guest-clock ns,
   * so the machine restores the clock before them and a restored guest continues at the same guest time.
   */
  saveState(): VersionedState {
    return CLOCK_STATE.save({ nowNs: this.nowNs() });
  }

  checkState(state: VersionedState): void {
    CLOCK_STATE.restore(this.id, state);
  }

  restoreState(state: VersionedState): void {
    this.setNowNs(CLOCK_STATE.restore(this.id, state).nowNs);
  }
}
