/**
 * GRUB's i386-pc boot code for a hard disk, prepared on the host so that an installer only has to `dd` it:
 * what `grub-bios-setup` does for an MBR disk with core.img embedded in the gap after the MBR.
 *
 * Layout (GRUB 2, include/grub/i386/pc/boot.h and grub-core/boot/i386/pc/diskboot.S):
 * - boot.img (one sector, goes into the MBR): at 0x5C the 64-bit LBA of core.img's first sector, at 0x64 the
 *   boot drive (0xFF: take the one the BIOS passes in DL), at 0x66 a 2-byte jump that skips the "is DL a hard
 *   disk?" check (replaced by two NOPs for hard disks, to work around BIOSes passing a wrong DL). Bytes from
 *   0x1B8 on (disk signature, partition table, 0x55AA) belong to the disk and are never written.
 * - core.img: its first sector is diskboot.img, whose last 12 bytes are a blocklist entry (LBA of the rest
 *   (u64), sector count (u16), load segment (u16)); the entries before it must end with a zero count.
 */

/** Offsets inside boot.img. */
export const BOOT_KERNEL_SECTOR = 0x5c;
export const BOOT_DRIVE = 0x64;
export const BOOT_DRIVE_CHECK = 0x66;
/** How much of boot.img goes into the MBR: everything before the disk signature. */
export const BOOT_CODE_SIZE = 0x1b8;
/** Where core.img's first blocklist entry ends (the end of diskboot's sector) and how big an entry is. */
const BLOCKLIST_END = 0x200;
const BLOCKLIST_ENTRY = 12;
/** Where diskboot loads the rest of core.img (GRUB_BOOT_I386_PC_KERNEL_SEG + 0x20). */
export const CORE_LOAD_SEGMENT = 0x820;
const SECTOR = 512;

export interface PatchedBootCode {
  /** The first BOOT_CODE_SIZE bytes for the MBR (the partition table is left alone). */
  mbrCode: Uint8Array;
  /** core.img with its blocklist pointing at the sectors it is written to, padded to whole sectors. */
  core: Uint8Array;
  /** The LBA core.img is written at. */
  coreSector: number;
  /** core.img's size in sectors. */
  coreSectors: number;
}

function u64le(view: DataView, at: number, value: number): void {
  view.setUint32(at, value >>> 0, true);
  view.setUint32(at + 4, Math.floor(value / 2 ** 32), true);
}

/**
 * Patches boot.img and core.img for a hard disk whose core.img is stored contiguously from `coreSector`
 * (1: right after the MBR) and must end before `limitSector` (the first partition's start).
 */
export function patchBootCode(bootImg: Uint8Array, coreImg: Uint8Array, coreSector = 1, limitSector = 2048): PatchedBootCode {
  if (bootImg.length !== SECTOR) throw new Error(`boot.img must be one sector, not ${bootImg.length} bytes`);
  if (coreImg.length <= SECTOR) throw new Error('core.img is too small');
  const coreSectors = Math.ceil(coreImg.length / SECTOR);
  if (coreSector < 1 || coreSector + coreSectors > limitSector) {
    throw new Error(`core.img (${coreSectors} sectors at ${coreSector}) does not fit before sector ${limitSector}`);
  }
  const boot = bootImg.slice();
  const bv = new DataView(boot.buffer, boot.byteOffset, boot.byteLength);
  u64le(bv, BOOT_KERNEL_SECTOR, coreSector);
  boot[BOOT_DRIVE] = 0xff;
  boot[BOOT_DRIVE_CHECK] = 0x90;
  boot[BOOT_DRIVE_CHECK + 1] = 0x90;

  const core = new Uint8Array(coreSectors * SECTOR);
  core.set(coreImg);
  const cv = new DataView(core.buffer, core.byteOffset, core.byteLength);
  // The rest of core.img is one contiguous run; the entry before it (if diskboot has room for more) ends the list.
  const entry = BLOCKLIST_END - BLOCKLIST_ENTRY;
  u64le(cv, entry, coreSector + 1);
  cv.setUint16(entry + 8, coreSectors - 1, true);
  cv.setUint16(entry + 10, CORE_LOAD_SEGMENT, true);
  const terminator = entry - BLOCKLIST_ENTRY;
  cv.setUint16(terminator + 8, 0, true);
  return { mbrCode: boot.subarray(0, BOOT_CODE_SIZE), core, coreSector, coreSectors };
}

/** Reads back what patchBootCode wrote, for checks: core.img's LBA from the MBR and the blocklist of core.img. */
export function readBootCode(mbr: Uint8Array, coreFirstSector: Uint8Array): { kernelSector: number; bootDrive: number; driveCheckSkipped: boolean; blockStart: number; blockCount: number; blockSegment: number } {
  const mv = new DataView(mbr.buffer, mbr.byteOffset, mbr.byteLength);
  const cv = new DataView(coreFirstSector.buffer, coreFirstSector.byteOffset, coreFirstSector.byteLength);
  const entry = BLOCKLIST_END - BLOCKLIST_ENTRY;
  return {
    kernelSector: mv.getUint32(BOOT_KERNEL_SECTOR, true) + mv.getUint32(BOOT_KERNEL_SECTOR + 4, true) * 2 ** 32,
    bootDrive: mbr[BOOT_DRIVE],
    driveCheckSkipped: mbr[BOOT_DRIVE_CHECK] === 0x90 && mbr[BOOT_DRIVE_CHECK + 1] === 0x90,
    blockStart: cv.getUint32(entry, true) + cv.getUint32(entry + 4, true) * 2 ** 32,
    blockCount: cv.getUint16(entry + 8, true),
    blockSegment: cv.getUint16(entry + 10, true),
  };
}
