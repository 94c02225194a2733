import { readFileSync } from 'node:fs';
import { TsvmError, errorMessage } from '../base/errors.js';
import type { PhysicalMemory } from '../memory/physical-memory.js';

export const DEFAULT_BIOS = '/usr/share/seabios/bios-256k.bin';
export const DEFAULT_VGA_BIOS = '/usr/share/seabios/vgabios-stdvga.bin';

/** The part of the BIOS image the PC also shows just below 1 MiB (the legacy BIOS segments E and F). */
const LOW_BIOS_BYTES = 128 * 1024;

/** Reads a firmware image, checking what the PC can map (a whole number of 64 KiB, at most 16 MiB). */
export function readFirmware(what: string, path: string, options: { maxBytes: number; multipleOf: number }): Uint8Array {
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(readFileSync(path));
  } catch (e) {
    throw new TsvmError(`could not load ${what} '${path}': ${errorMessage(e).replace(/^[A-Z]+: /, '')}`);
  }
  if (bytes.length === 0 || bytes.length > options.maxBytes || bytes.length % options.multipleOf !== 0) {
    throw new TsvmError(`${what} '${path}' has a size of ${bytes.length} bytes; expected a multiple of ${options.multipleOf / 1024} KiB up to ${options.maxBytes / 2 ** 20} MiB`);
  }
  return bytes;
}

/**
 * The system BIOS: mapped read-only just below 4 GiB (where the CPU's reset vector points) and copied into the
 * RAM below 1 MiB that the PC's shadow registers would show there. Called at power-on and at every reset, since
 * the guest may have changed that RAM.
 */
export class SystemBios {
  constructor(private readonly memory: PhysicalMemory, readonly image: Uint8Array) {
    memory.mapRom(2 ** 32 - image.length, image);
  }

  /** Puts the BIOS's last 128 KiB back at 0xE0000..0xFFFFF. */
  loadShadow(): void {
    const low = this.image.subarray(Math.max(0, this.image.length - LOW_BIOS_BYTES));
    // Through writeBytes, so that the CPU drops code it compiled from what was there before.
    this.memory.writeBytes(0x100000 - low.length, low);
  }
}
