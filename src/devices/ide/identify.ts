/**
 * IDENTIFY DEVICE / IDENTIFY PACKET DEVICE data and the disk geometry QEMU reports for an image.
 * Word numbers follow ATA/ATAPI-6 (T13/1410D); the values are what QEMU's `-M pc` IDE devices report.
 */
import type { BlockDriver } from '../../block/index.js';

/** Cylinders/heads/sectors-per-track. */
export interface Chs {
  cylinders: number;
  heads: number;
  sectors: number;
}

/** How the BIOS maps its int 13h CHS to the disk's (QEMU passes it to SeaBIOS in CMOS byte 0x39). */
export type BiosTranslation = 'none' | 'lba' | 'large';

/** A disk's CHS and, when known, the BIOS translation QEMU would pick with it. */
export interface DiskGeometry extends Chs {
  translation?: BiosTranslation;
}

/** QEMU's automatic translation for a physical geometry. */
export function autoTranslation(chs: Chs): BiosTranslation {
  if (chs.cylinders <= 1024 && chs.heads <= 16 && chs.sectors <= 63) return 'none';
  return chs.cylinders * chs.heads <= 131072 ? 'large' : 'lba';
}

/** Sectors per DRQ block that READ/WRITE MULTIPLE allow at most (IDENTIFY word 47). */
export const MAX_MULT_SECTORS = 16;

/** A standard physical geometry for a size: 16 heads, 63 sectors, cylinders clamped to 2..16383. */
export function chsForSize(totalSectors: number): Chs {
  const cylinders = Math.min(16383, Math.max(2, Math.floor(totalSectors / (16 * 63))));
  return { cylinders, heads: 16, sectors: 63 };
}

/**
 * The geometry QEMU gives an IDE disk: the logical geometry an MBR's partition table implies when it has
 * 16 heads or fewer, else the standard one for the size. Reads sector 0 (async, so the machine calls it
 * once when it opens the drive and passes the result as `IdeDrive.geometry`).
 */
export async function guessDiskGeometry(image: BlockDriver): Promise<DiskGeometry> {
  const total = Math.floor(image.virtualSize / 512);
  let mbr: Uint8Array | undefined;
  try {
    if (total > 0) mbr = await image.read(0, 512);
  } catch {
    mbr = undefined;
  }
  const fromTable = mbr ? chsFromPartitionTable(mbr, total) : undefined;
  // A partition table made with 16 heads or fewer: that is the geometry, untranslated.
  if (fromTable && fromTable.heads <= 16) return { ...fromTable, translation: 'none' };
  const chs = chsForSize(total);
  // More heads in the table: it was made through a BIOS translation.
  if (fromTable) return { ...chs, translation: chs.cylinders * chs.heads <= 131072 ? 'large' : 'lba' };
  return { ...chs, translation: autoTranslation(chs) };
}

/** The logical CHS a partition table's end addresses imply, or undefined (no table, nothing usable). */
export function chsFromPartitionTable(mbr: Uint8Array, totalSectors: number): Chs | undefined {
  if (mbr.length < 512 || mbr[510] !== 0x55 || mbr[511] !== 0xaa) return undefined;
  for (let i = 0; i < 4; i++) {
    const e = 0x1be + 16 * i;
    const numSectors = (mbr[e + 12] | (mbr[e + 13] << 8) | (mbr[e + 14] << 16) | (mbr[e + 15] << 24)) >>> 0;
    const endHead = mbr[e + 5], endSector = mbr[e + 6] & 63;
    if (numSectors === 0 || endSector === 0) continue;
    const heads = endHead + 1;
    const cylinders = Math.floor(totalSectors / (heads * endSector));
    if (cylinders < 1 || cylinders > 16383) continue;
    return { cylinders, heads, sectors: endSector };
  }
  return undefined;
}

/** Puts an ATA string (two characters per word, first one in the high byte), space padded. */
function putString(words: Uint16Array, first: number, count: number, text: string): void {
  const s = text.padEnd(count * 2, ' ');
  for (let i = 0; i < count; i++) words[first + i] = ((s.charCodeAt(2 * i) & 0xff) << 8) | (s.charCodeAt(2 * i + 1) & 0xff);
}

function toBytes(words: Uint16Array): Uint8Array {
  const out = new Uint8Array(512);
  for (let i = 0; i < 256; i++) {
    out[2 * i] = words[i] & 0xff;
    out[2 * i + 1] = words[i] >> 8;
  }
  return out;
}

/** Words 62/63/88 for the transfer mode SET FEATURES selected (its sector-count value; 0 = PIO default). */
function putDmaModes(w: Uint16Array, xferMode: number): void {
  w[62] = 0x07;
  w[63] = 0x07;
  w[88] = 0x3f;
  const mode = xferMode & 7;
  switch (xferMode >> 3) {
    case 2: w[62] |= 1 << (mode + 8); break; // single-word DMA
    case 4: w[63] |= 1 << (mode + 8); break; // multiword DMA
    case 8: w[88] |= 1 << (mode + 8); break; // Ultra DMA
  }
}

export interface DiskIdentity {
  totalSectors: number;
  geometry: Chs;
  serial: string;
  model: string;
  firmware: string;
  multSectors: number;
  xferMode: number;
  writeCache: boolean;
}

/** IDENTIFY DEVICE data of a hard disk (512 bytes, little-endian words). */
export function identifyDisk(d: DiskIdentity): Uint8Array {
  const w = new Uint16Array(256);
  const { cylinders, heads, sectors } = d.geometry;
  w[0] = 0x0040; // fixed device
  w[1] = cylinders;
  w[3] = heads;
  w[4] = 512 * sectors; // bytes per track (obsolete)
  w[5] = 512; // bytes per sector (obsolete)
  w[6] = sectors;
  putString(w, 10, 10, d.serial);
  w[20] = 3; // buffer type: dual ported, read cache
  w[21] = 512; // buffer size in sectors
  w[22] = 4; // ECC bytes
  putString(w, 23, 4, d.firmware);
  putString(w, 27, 20, d.model);
  w[47] = 0x8000 | MAX_MULT_SECTORS;
  w[48] = 1; // 32-bit I/O
  w[49] = (1 << 11) | (1 << 9) | (1 << 8); // IORDY, LBA, DMA
  w[51] = 0x200; // PIO timing
  w[52] = 0x200; // DMA timing
  w[53] = 1 | (1 << 1) | (1 << 2); // words 54-58, 64-70 and 88 valid
  const chs = cylinders * heads * sectors;
  w[54] = cylinders;
  w[55] = heads;
  w[56] = sectors;
  w[57] = chs & 0xffff;
  w[58] = Math.floor(chs / 65536) & 0xffff;
  if (d.multSectors) w[59] = 0x100 | d.multSectors;
  const lba28 = Math.min(d.totalSectors, 0x0fffffff);
  w[60] = lba28 & 0xffff;
  w[61] = Math.floor(lba28 / 65536);
  putDmaModes(w, d.xferMode);
  w[64] = 0x03; // PIO modes 3 and 4
  w[65] = 120; // minimum multiword DMA cycle
  w[66] = 120; // recommended
  w[67] = 120; // minimum PIO cycle without IORDY
  w[68] = 120; // with IORDY
  w[80] = 0xf0; // ATA-4 .. ATA-7
  w[81] = 0x16;
  w[82] = (1 << 14) | (1 << 5); // NOP, write cache
  w[83] = (1 << 14) | (1 << 13) | (1 << 12) | (1 << 10); // FLUSH CACHE EXT, FLUSH CACHE, 48-bit addresses
  w[84] = 1 << 14;
  w[85] = (1 << 14) | (d.writeCache ? 1 << 5 : 0);
  w[86] = (1 << 13) | (1 << 12) | (1 << 10);
  w[87] = 1 << 14;
  w[93] = 1 | (1 << 14) | 0x2000; // hardware reset result, 80-conductor cable
  let n = d.totalSectors;
  for (let i = 0; i < 4; i++) {
    w[100 + i] = n % 65536;
    n = Math.floor(n / 65536);
  }
  return toBytes(w);
}

export interface CdromIdentity {
  serial: string;
  model: string;
  firmware: string;
  xferMode: number;
}

/** IDENTIFY PACKET DEVICE data of a CD/DVD-ROM drive. */
export function identifyPacketDevice(d: CdromIdentity): Uint8Array {
  const w = new Uint16Array(256);
  // ATAPI, CD-ROM device type, removable, DRQ within 50 us of PACKET, 12-byte packets.
  w[0] = (2 << 14) | (5 << 8) | (1 << 7) | (2 << 5);
  putString(w, 10, 10, d.serial);
  w[20] = 3;
  w[21] = 512;
  w[22] = 4;
  putString(w, 23, 4, d.firmware);
  putString(w, 27, 20, d.model);
  w[48] = 1;
  w[49] = (1 << 9) | (1 << 8); // LBA, DMA
  w[53] = 7;
  putDmaModes(w, d.xferMode);
  w[64] = 3;
  w[65] = 0xb4;
  w[66] = 0xb4;
  w[67] = 0x12c;
  w[68] = 0xb4;
  w[71] = 30; // bus release
  w[72] = 30; // service
  w[80] = 0x1e; // ATA/ATAPI-1 .. 4
  w[82] = (1 << 14) | (1 << 9) | (1 << 4); // NOP, DEVICE RESET, PACKET
  w[83] = 1 << 14;
  w[84] = 1 << 14;
  w[85] = (1 << 14) | (1 << 9) | (1 << 4);
  w[87] = 1 << 14;
  w[93] = 1 | (1 << 14) | 0x2000;
  return toBytes(w);
}
