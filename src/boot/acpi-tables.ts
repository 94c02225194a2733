import {
  GPE0_BLK, GPE0_BLK_LEN, PM1A_CNT_BLK, PM1A_CNT_LEN, PM1A_EVT_BLK, PM1A_EVT_LEN, PM_TMR_BLK, PM_TMR_LEN, SCI_IRQ, SLP_TYP_S5,
} from '../devices/acpi/pm-constants.js';

/** ACPI tables placed at guest-physical addresses, ready to copy into memory. */
export interface AcpiTables {
  rsdpAddress: number;
  /** [address, bytes] pairs. */
  blobs: [number, Uint8Array][];
}

const OEM_ID = 'TSVM  ';
const OEM_TABLE_ID = 'TSVMPC  ';

function ascii(target: Uint8Array, offset: number, text: string): void {
  for (let i = 0; i < text.length; i++) target[offset + i] = text.charCodeAt(i);
}

function checksum(bytes: Uint8Array, start = 0, end = bytes.length): number {
  let sum = 0;
  for (let i = start; i < end; i++) sum = (sum + bytes[i]) & 0xff;
  return (0x100 - sum) & 0xff;
}

/** A table with the standard 36-byte header; the body is written by `fill`. */
function table(signature: string, revision: number, length: number, fill: (dv: DataView, bytes: Uint8Array) => void): Uint8Array {
  const bytes = new Uint8Array(length);
  const dv = new DataView(bytes.buffer);
  ascii(bytes, 0, signature);
  dv.setUint32(4, length, true);
  bytes[8] = revision;
  ascii(bytes, 10, OEM_ID);
  ascii(bytes, 16, OEM_TABLE_ID);
  dv.setUint32(24, 1, true);
  ascii(bytes, 28, 'TSVM');
  dv.setUint32(32, 1, true);
  fill(dv, bytes);
  bytes[9] = checksum(bytes);
  return bytes;
}

/** The DSDT's AML: `Name (_S5, Package (4) { SLP_TYP, SLP_TYP, 0, 0 })` so the OS knows how to power off. */
function dsdtAml(): Uint8Array {
  return Uint8Array.of(
    0x08, 0x5f, 0x53, 0x35, 0x5f, // NameOp "_S5_"
    0x12, 0x06, 0x04, // PackageOp, PkgLength 6, 4 elements
    0x0a, SLP_TYP_S5, 0x0a, SLP_TYP_S5, 0x00, 0x00, // BytePrefix values, ZeroOp, ZeroOp
  );
}

/**
 * Builds RSDP, RSDT, FADT (revision 1), FACS and a DSDT describing the PIIX4 power-management block, laid
 * out from `base` (16-byte aligned, in the 0xE0000-0xFFFFF area where the OS looks for the RSDP).
 */
export function buildAcpiTables(base: number): AcpiTables {
  const aml = dsdtAml();
  const dsdt = table('DSDT', 1, 36 + aml.length, (_dv, b) => b.set(aml, 36));
  const facs = new Uint8Array(64);
  ascii(facs, 0, 'FACS');
  new DataView(facs.buffer).setUint32(4, 64, true);
  let at = base;
  const place = (length: number) => {
    const a = at;
    at = (at + length + 15) & ~15;
    return a;
  };
  const rsdpAddress = place(20);
  const rsdtAddress = place(40);
  const fadtAddress = place(116);
  const facsAddress = (place(64 + 48) + 63) & ~63; // FACS must be 64-byte aligned
  at = facsAddress + 64;
  const dsdtAddress = place(dsdt.length);
  const fadt = table('FACP', 1, 116, (dv) => {
    dv.setUint32(36, facsAddress, true);
    dv.setUint32(40, dsdtAddress, true);
    dv.setUint16(46, SCI_IRQ, true);
    dv.setUint32(48, 0, true); // no SMI command port: the hardware is always in ACPI mode
    dv.setUint32(56, PM1A_EVT_BLK, true);
    dv.setUint32(64, PM1A_CNT_BLK, true);
    dv.setUint32(76, PM_TMR_BLK, true);
    dv.setUint32(80, GPE0_BLK, true);
    dv.setUint8(88, PM1A_EVT_LEN);
    dv.setUint8(89, PM1A_CNT_LEN);
    dv.setUint8(91, PM_TMR_LEN);
    dv.setUint8(92, GPE0_BLK_LEN);
    dv.setUint16(96, 0xfff, true); // no C2
    dv.setUint16(98, 0xfff, true); // no C3
    dv.setUint8(108, 0x32); // CMOS century register
    dv.setUint32(112, 0x1 | 0x4 | 0x20, true); // WBINVD, PROC_C1, no sleep button
  });
  const rsdt = table('RSDT', 1, 40, (dv) => dv.setUint32(36, fadtAddress, true));
  const rsdp = new Uint8Array(20);
  ascii(rsdp, 0, 'RSD PTR ');
  ascii(rsdp, 9, OEM_ID);
  new DataView(rsdp.buffer).setUint32(16, rsdtAddress, true);
  rsdp[8] = checksum(rsdp);
  return {
    rsdpAddress,
    blobs: [[rsdpAddress, rsdp], [rsdtAddress, rsdt], [fadtAddress, fadt], [facsAddress, facs], [dsdtAddress, dsdt]],
  };
}
