/**
 * Guest time. It follows the host's monotonic clock while the machine runs and stands still while it is
 * paused (snapshots, migration), so that timers do not all fire at once on resume.
 */
export class VirtualClock {
  private offsetNs = 0;
  private pausedAtNs: number | null = null;

  /** Host monotonic time in nanoseconds (float). */
  static hostNowNs(): number {
    return performance.now() * 1e6;
  }

  nowNs(): number {
    return (this.pausedAtNs ?? VirtualClock.hostNowNs()) - this.offsetNs;
  }

  pause(): void {
    if (this.pausedAtNs === null) this.pausedAtNs = VirtualClock.hostNowNs();
  }

  resume(): void {
    if (this.pausedAtNs === null) return;
    this.offsetNs += VirtualClock.hostNowNs() - this.pausedAtNs;
    this.pausedAtNs = null;
  }

  /** Continue guest time from a saved value (restore, incoming migration). */
  setNowNs(guestNs: number): void {
    this.offsetNs = (this.pausedAtNs ?? VirtualClock.hostNowNs()) - guestNs;
  }
}
