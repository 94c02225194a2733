import { TsvmError } from '../base/errors.js';
import type { CharBackend } from '../devices/char-backend.js';
import { VirtioBalloon } from '../devices/virtio/virtio-balloon.js';
import { VirtioBlk } from '../devices/virtio/virtio-blk.js';
import { VirtioConsole } from '../devices/virtio/virtio-console.js';
import type { VirtioDevice } from '../devices/virtio/virtio-device.js';
import { VirtioRng } from '../devices/virtio/virtio-rng.js';
import type { PhysicalMemory } from '../memory/physical-memory.js';
import type { VirtioDeviceConfig } from './config.js';
import type { OpenedDrive } from './drives.js';

/** What virtio devices are built on: guest memory, the opened drives by id, the character backends by id. */
export interface VirtioResources {
  memory: PhysicalMemory;
  drives: Map<string, OpenedDrive>;
  chardevs: Map<string, CharBackend>;
}

/** The device a `-device virtio-...` (or an if=virtio drive) describes, named by its kind and position. */
export function createVirtioDevice(config: VirtioDeviceConfig, position: number, resources: VirtioResources): VirtioDevice {
  const id = `${config.kind}${position}`;
  switch (config.kind) {
    case 'virtio-blk': {
      const drive = resources.drives.get(config.drive);
      if (!drive) throw new TsvmError(`virtio-blk: drive '${config.drive}' is not open`);
      const d = drive.config;
      return new VirtioBlk({ id, image: drive.image, cache: d.cache ?? 'writeback', discard: d.discard ?? false, serial: d.id ?? '' });
    }
    case 'virtio-rng':
      return new VirtioRng(id);
    case 'virtio-balloon':
      return new VirtioBalloon(id, resources.memory);
    case 'virtio-serial':
      return new VirtioConsole(id, config.ports.map((p) => {
        const backend = resources.chardevs.get(p.chardev);
        if (!backend) throw new TsvmError(`virtio-serial: chardev '${p.chardev}' is not open`);
        return { console: p.console, ...(p.name !== undefined ? { name: p.name } : {}), backend };
      }));
  }
}
