import type { VersionedState } from '../../base/state.js';
import { type Virtqueue, type VirtqElement, VirtqueueError } from './virtqueue.js';

/** Feature bits every transport handles itself (virtio 1.2, 6). */
export const VIRTIO_F_INDIRECT_DESC = 28, VIRTIO_F_EVENT_IDX = 29, VIRTIO_F_VERSION_1 = 32;

/** Device status bits (virtio 1.2, 2.1). */
export const enum VirtioStatus {
  ACKNOWLEDGE = 1,
  DRIVER = 2,
  DRIVER_OK = 4,
  FEATURES_OK = 8,
  DEVICE_NEEDS_RESET = 0x40,
  FAILED = 0x80,
}

/** Feature bit `n` as a bigint mask (features are 64-bit). */
export function featureBit(n: number): bigint {
  return 1n << BigInt(n);
}

/** What a device reaches of its transport. */
export interface VirtioContext {
  /** The device's queues, in order (sizes as the device declared them, set up by the driver). */
  readonly queues: readonly Virtqueue[];
  /** Features the driver accepted (valid once the device is activated). */
  readonly negotiated: bigint;
  /** Used elements were pushed on `queue`: interrupt the driver if it asked for one. */
  notify(queue: Virtqueue): void;
  /** The device configuration changed (e.g. a balloon target): configuration interrupt. */
  configChanged(): void;
  /**
   * The driver broke the protocol (a bad descriptor chain): DEVICE_NEEDS_RESET, a configuration interrupt,
   * and no more queue processing until the driver resets the device.
   */
  needsReset(reason: string): void;
  /** False from needsReset (or a transport reset) until the driver sets DRIVER_OK again. */
  readonly live: boolean;
}

/**
 * A virtio device, apart from any transport. The transport negotiates features, sets up the queues, and calls
 * `activate` when the driver sets DRIVER_OK; then `queueNotified` for each doorbell. `reset` returns the device
 * to its initial state (device reset by the driver, or system reset); requests still in flight at a reset must
 * not touch the queues after it (devices compare a generation number).
 */
export interface VirtioDevice {
  readonly id: string;
  /** Virtio device type (1.2, 5): 1 net, 2 block, 3 console, 4 entropy, 5 balloon, 9 9P. */
  readonly deviceType: number;
  /** PCI class code (base, sub, interface as 24 bits). */
  readonly pciClass: number;
  /** Maximum size of each queue (powers of two); the count is the device's number of queues. */
  readonly queueSizes: readonly number[];
  /** Device-specific feature bits offered (the transport adds VERSION_1, INDIRECT_DESC, EVENT_IDX). */
  readonly features: bigint;
  /** The device-specific configuration space. */
  readonly configSize: number;
  configRead(offset: number, size: 1 | 2 | 4): number;
  configWrite(offset: number, size: 1 | 2 | 4, value: number): void;
  /** The driver set DRIVER_OK: queues are ready. */
  activate(context: VirtioContext): void;
  queueNotified(queue: Virtqueue): void;
  reset(): void;
  /** Requests to the host are in flight (the machine's run loop then polls for their completion often). */
  readonly busy: boolean;
  /** Waits for requests in flight (at exit, before images close). */
  drain(): Promise<void>;
  saveState(): VersionedState;
}

/** Little-endian reads and writes of a device configuration held in a byte array. */
export function readLe(bytes: Uint8Array, offset: number, size: number): number {
  let v = 0;
  for (let i = 0; i < size; i++) v |= (bytes[offset + i] ?? 0) << (8 * i);
  return v >>> 0;
}

export function writeLe(bytes: Uint8Array, offset: number, size: number, value: number): void {
  for (let i = 0; i < size && offset + i < bytes.length; i++) bytes[offset + i] = (value >>> (8 * i)) & 0xff;
}

/**
 * What the devices share: the context from activation, a generation number that a reset bumps (completions of
 * host requests started before a reset are dropped), the requests in flight, and popping with the checks'
 * errors turned into DEVICE_NEEDS_RESET.
 */
export abstract class VirtioDeviceBase {
  protected context: VirtioContext | null = null;
  private generation = 0;
  private readonly inFlight = new Set<Promise<unknown>>();

  get busy(): boolean {
    return this.inFlight.size > 0;
  }

  activate(context: VirtioContext): void {
    this.context = context;
    this.activated();
  }

  /** The driver set DRIVER_OK (the context is set). */
  protected activated(): void {}

  reset(): void {
    this.generation++;
    this.context = null;
    this.resetDevice();
  }

  /** Device-specific state back to initial. */
  protected resetDevice(): void {}

  async drain(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  /**
   * Tracks host work; `complete` gets its result (or error) unless the device was reset meanwhile, and the
   * context it gets is the one live when the work started.
   */
  protected track<T>(work: Promise<T>, complete: (context: VirtioContext, result: T | undefined, error?: unknown) => void): void {
    const generation = this.generation, context = this.context;
    const p = work.then(
      (result) => { if (generation === this.generation && context) complete(context, result); },
      (error: unknown) => { if (generation === this.generation && context) complete(context, undefined, error ?? new Error('failed')); },
    ).finally(() => this.inFlight.delete(p));
    this.inFlight.add(p);
  }

  /**
   * Hands each available chain of `queue` to `handle` while the device is live (and `wanted` says there is
   * something to put in it, for queues of guest buffers waiting for host data); a bad chain: needs reset.
   */
  protected popEach(queue: Virtqueue, handle: (element: VirtqElement, context: VirtioContext) => void, wanted: () => boolean = () => true): void {
    const context = this.context;
    while (context?.live && this.context === context && wanted()) {
      let element: VirtqElement | null;
      try {
        element = queue.pop();
      } catch (e) {
        if (!(e instanceof VirtqueueError)) throw e;
        context.needsReset(e.message);
        return;
      }
      if (!element) return;
      handle(element, context);
    }
  }

  /** Gives an element back used and interrupts the driver if it wants it. */
  protected complete(context: VirtioContext, queue: Virtqueue, element: VirtqElement, written: number): void {
    if (!context.live) return;
    queue.push(element, written);
    context.notify(queue);
  }
}
