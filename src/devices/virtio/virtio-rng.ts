import { randomFill } from 'node:crypto';
import { promisify } from 'node:util';
import type { VersionedState } from '../../base/state.js';
import { type VirtioDevice, VirtioDeviceBase } from './virtio-device.js';
import type { Virtqueue } from './virtqueue.js';

const fillRandom = promisify(randomFill);
/** Bytes given per request at most (the driver asks again for more). */
const MAX_REQUEST = 64 * 1024;

/** virtio-rng (virtio 1.2, 5.4): each writable buffer the driver queues is filled with host entropy. */
export class VirtioRng extends VirtioDeviceBase implements VirtioDevice {
  readonly deviceType = 4;
  readonly pciClass = 0x00ff00;
  readonly queueSizes = [64];
  readonly features = 0n;
  readonly configSize = 0;

  constructor(readonly id: string) {
    super();
  }

  configRead(): number {
    return 0;
  }

  configWrite(): void {}

  queueNotified(queue: Virtqueue): void {
    this.popEach(queue, (element) => {
      const buf = new Uint8Array(Math.min(element.writableBytes, MAX_REQUEST));
      this.track(fillRandom(buf), (context) => this.complete(context, queue, element, queue.scatter(element, 0, buf)));
    });
  }

  saveState(): VersionedState {
    return { version: 1, fields: {} };
  }
}
