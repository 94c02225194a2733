import type { VersionedState } from '../../base/state.js';
import type { PhysicalMemory } from '../../memory/physical-memory.js';
import { type VirtioContext, type VirtioDevice, VirtioDeviceBase, featureBit, readLe, writeLe } from './virtio-device.js';
import type { Virtqueue, VirtqElement } from './virtqueue.js';

const VIRTIO_BALLOON_F_STATS_VQ = 1;
const PAGE = 4096;
const INFLATE = 0, DEFLATE = 1, STATS = 2;
/** Statistics tags (virtio 1.2, 5.5.6.3), as QMP's guest-stats names them. */
const STAT_NAMES = [
  'stat-swap-in', 'stat-swap-out', 'stat-major-faults', 'stat-minor-faults', 'stat-free-memory',
  'stat-total-memory', 'stat-available-memory', 'stat-disk-caches', 'stat-htlb-pgalloc', 'stat-htlb-pgfail',
];
const STAT_ENTRY = 10;

/** What the monitor shows of the balloon. */
export interface BalloonInfo {
  /** Guest memory not in the balloon, in bytes (QMP's `actual`). */
  actual: number;
  /** The last statistics the guest sent (bytes for memory sizes), by QMP name; empty before the first. */
  stats: Record<string, number>;
  /** When the guest last sent statistics (ms since the epoch), or 0. */
  lastUpdate: number;
}

/**
 * virtio-balloon (virtio 1.2, 5.5): the host sets a target, the guest inflates (hands pages over, which go back
 * to the host) or deflates (takes them back) and reports how many pages it holds; statistics through the stats
 * queue, whose buffer the device keeps and returns when it wants fresh numbers.
 */
export class VirtioBalloon extends VirtioDeviceBase implements VirtioDevice {
  readonly deviceType = 5;
  readonly pciClass = 0x00ff00;
  readonly queueSizes = [128, 128, 128];
  readonly features = featureBit(VIRTIO_BALLOON_F_STATS_VQ);
  readonly configSize = 8;
  /** Pages the host wants in the balloon, and pages the guest says are in it. */
  private targetPages = 0;
  private actualPages = 0;
  private stats: Record<string, number> = {};
  private lastUpdate = 0;
  /** The stats buffer the guest queued, held until the host asks for new numbers. */
  private statsElement: VirtqElement | null = null;

  constructor(readonly id: string, private readonly memory: PhysicalMemory) {
    super();
  }

  configRead(offset: number, size: 1 | 2 | 4): number {
    const bytes = new Uint8Array(8);
    writeLe(bytes, 0, 4, this.targetPages);
    writeLe(bytes, 4, 4, this.actualPages);
    return readLe(bytes, offset, size);
  }

  configWrite(offset: number, size: 1 | 2 | 4, value: number): void {
    if (offset === 4 && size === 4) this.actualPages = Math.min(value >>> 0, this.memory.ramSize / PAGE);
  }

  /** Asks the guest to leave it `bytes` of memory (QMP's `balloon`): the rest goes into the balloon. */
  setTarget(bytes: number): void {
    const ram = this.memory.ramSize;
    this.targetPages = Math.floor((ram - Math.min(Math.max(bytes, 0), ram)) / PAGE);
    this.context?.configChanged();
  }

  info(): BalloonInfo {
    return { actual: this.memory.ramSize - this.actualPages * PAGE, stats: { ...this.stats }, lastUpdate: this.lastUpdate };
  }

  /** Returns the held stats buffer, so that the guest fills in fresh statistics. */
  requestStats(): void {
    const context = this.context, queue = context?.queues[STATS];
    if (!context || !queue || !this.statsElement) return;
    const element = this.statsElement;
    this.statsElement = null;
    this.complete(context, queue, element, 0);
  }

  queueNotified(queue: Virtqueue): void {
    this.popEach(queue, (element, context) => {
      if (queue.index === STATS) return this.receiveStats(queue, element);
      const pfns = queue.gather(element, 0, element.readableBytes - (element.readableBytes % 4));
      if (queue.index === INFLATE) this.release(pfns);
      this.complete(context, queue, element, 0);
    });
  }

  /** Gives the pages back to the host, a contiguous run at a time. */
  private release(pfns: Uint8Array): void {
    const list: number[] = [];
    for (let i = 0; i < pfns.length; i += 4) list.push(readLe(pfns, i, 4));
    list.sort((a, b) => a - b);
    for (let i = 0; i < list.length;) {
      let j = i + 1;
      while (j < list.length && list[j] <= list[j - 1] + 1) j++;
      this.memory.discardRam(list[i] * PAGE, (list[j - 1] - list[i] + 1) * PAGE);
      i = j;
    }
  }

  private receiveStats(queue: Virtqueue, element: VirtqElement): void {
    const bytes = queue.gather(element, 0, element.readableBytes - (element.readableBytes % STAT_ENTRY));
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    for (let at = 0; at < bytes.length; at += STAT_ENTRY) {
      const name = STAT_NAMES[dv.getUint16(at, true)];
      if (name) this.stats[name] = Number(dv.getBigUint64(at + 2, true));
    }
    this.lastUpdate = Date.now();
    this.statsElement = element;
  }

  protected override activated(): void {
    const context = this.context as VirtioContext;
    // The guest queues its first stats buffer at start; take it now.
    if (context.queues[STATS]?.enabled) this.queueNotified(context.queues[STATS]);
  }

  protected override resetDevice(): void {
    this.actualPages = 0;
    this.statsElement = null;
  }

  saveState(): VersionedState {
    return { version: 1, fields: { targetPages: this.targetPages, actualPages: this.actualPages } };
  }
}
