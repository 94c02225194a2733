import { unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { TsvmError, errorMessage } from '../base/errors.js';
import { type BlockDriver, createImage, openImage, probeFormat } from '../block/index.js';
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
export async function openIdeDrives(configs: DriveConfig[], snapshot = false): Promise<(OpenedDrive | undefined)[]> {
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
  const opened: (OpenedDrive | undefined)[] = [];
  try {
    for (const config of slots) {
      if (!config) {
        opened.push(undefined);
        continue;
      }
      const drive: OpenedDrive = { config, image: await openDriveImage(config, snapshot) };
      opened.push(drive);
      if (config.media === 'disk') drive.geometry = await guessDiskGeometry(drive.image);
    }
  } catch (e) {
    await closeDrives(opened);
    throw e;
  }
  return opened;
}

/** Opens the drives virtio-blk devices use (if=virtio and if=none), by id. */
export async function openVirtioDrives(configs: DriveConfig[], snapshot = false): Promise<Map<string, OpenedDrive>> {
  const opened = new Map<string, OpenedDrive>();
  try {
    for (const config of configs) {
      if (config.interface === 'ide' || config.id === undefined) continue;
      opened.set(config.id, { config, image: await openDriveImage(config, snapshot) });
    }
  } catch (e) {
    await closeDrives([...opened.values()]);
    throw e;
  }
  return opened;
}

/**
 * One drive's image, locked as QEMU locks it, with its cache mode. With -snapshot (and not read-only), the
 * guest gets a temporary qcow2 overlay on top of the image, unlinked as soon as it is open: it is gone at exit
 * however tsvm ends, and the image is only read.
 */
async function openDriveImage(config: DriveConfig, snapshot: boolean): Promise<BlockDriver> {
  const unsafe = config.cache === 'unsafe';
  try {
    if (!snapshot || config.readOnly) return await openImage(config.file, { format: config.format, readOnly: config.readOnly, lock: true, unsafe });
    const backing = resolve(config.file);
    const backingFormat = config.format ?? (await probeFormat(backing));
    const overlay = join(tmpdir(), `tsvm-snapshot-${process.pid}-${Math.random().toString(36).slice(2)}.qcow2`);
    await createImage(overlay, 'qcow2', undefined, { backingFile: backing, backingFormat });
    try {
      return await openImage(overlay, { format: 'qcow2', lock: true, unsafe: true });
    } finally {
      unlinkSync(overlay);
    }
  } catch (e) {
    throw new TsvmError(`could not open disk image '${config.file}': ${errorMessage(e).replace(/^cannot open '[^']*': /, '')}`);
  }
}

export async function closeDrives(drives: Iterable<OpenedDrive | undefined>): Promise<void> {
  await Promise.all([...drives].map((d) => d?.image.close()));
}
