import { randomFill } from 'node:crypto';
import { promisify } from 'node:util';
import type { VersionedState } from '../../base/state.js';
import { stateSchema } from '../../base/state-schema.js';
import { type VirtioDevice, VirtioDeviceBase } from './virtio-device.js';
import type { Virtqueue } from './virtqueue.js';

const fillRandom = promisify(randomFill);
/** Nothing of its own: requests in flight are the transport's to refuse (a save needs a drained machine). */
const RNG_STATE = stateSchema(1, {});
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
    return RNG_STATE.save({});
  }

  checkState(state: VersionedState): void {
    RNG_STATE.restore(this.id, state);
  }

  restoreState(state: VersionedState): void {
    RNG_STATE.restore(this.id, state);
  }
}
