import { TsvmError, errorMessage } from '../base/errors.js';
import { type BlockDriver, openImage } from '../block/index.js';
import { type DiskGeometry, guessDiskGeometry } from '../devices/ide/identify.js';
import type { DriveConfig } from './config.js';

/** An opened drive at its IDE position (0 primary master ... 3 secondary slave). */
export interface OpenedDrive {
  config: DriveConfig;
  image: BlockDriver;
  /** Disks: the geometry QEMU would give them (it depends on an existing partition table). */
  geometry?: DiskGeometry;
}

export const IDE_POSITIONS = 4;

/**
 * Opens the images of the machine's IDE drives (locked as QEMU locks them) and puts each at its position:
 * the one its index names, else the first free one, as QEMU numbers `-drive if=ide` without `index`.
 */
export async function openIdeDrives(configs: DriveConfig[]): Promise<(OpenedDrive | undefined)[]> {
  const slots: (DriveConfig | undefined)[] = new Array(IDE_POSITIONS).fill(undefined);
  for (const d of configs.filter((c) => c.interface === 'ide' && c.index !== undefined)) {
    if (slots[d.index!]) throw new TsvmError(`drive with bus=${d.index! >> 1}, unit=${d.index! & 1} (index=${d.index}) exists`);
    slots[d.index!] = d;
  }
  for (const d of configs.filter((c) => c.interface === 'ide' && c.index === undefined)) {
    const free = slots.findIndex((s) => s === undefined);
    if (free < 0) throw new TsvmError(`too many IDE drives (at most ${IDE_POSITIONS})`);
    slots[free] = d;
  }
  for (const d of configs) {
    if (d.interface !== 'ide') throw new TsvmError(`-drive file=${d.file}: if=${d.interface} is not supported yet by this version`);
  }
  const opened: (OpenedDrive | undefined)[] = [];
  try {
    for (const config of slots) {
      if (!config) {
        opened.push(undefined);
        continue;
      }
      try {
        const image = await openImage(config.file, { format: config.format, readOnly: config.readOnly, lock: true });
        const drive: OpenedDrive = { config, image };
        opened.push(drive);
        if (config.media === 'disk') drive.geometry = await guessDiskGeometry(image);
      } catch (e) {
        throw new TsvmError(`could not open disk image '${config.file}': ${errorMessage(e).replace(/^cannot open '[^']*': /, '')}`);
      }
    }
  } catch (e) {
    await closeDrives(opened);
    throw e;
  }
  return opened;
}

export async function closeDrives(drives: (OpenedDrive | undefined)[]): Promise<void> {
  await Promise.all(drives.map((d) => d?.image.close()));
}
