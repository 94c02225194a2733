import { LOCAL_APIC_DEFAULT_BASE } from '../devices/apic/local-apic.js';
import { IO_APIC_DEFAULT_BASE } from '../devices/apic/io-apic.js';
import {
  GPE0_BLK, GPE0_BLK_LEN, PM1A_CNT_BLK, PM1A_CNT_LEN, PM1A_EVT_BLK, PM1A_EVT_LEN, PM_TMR_BLK, PM_TMR_LEN, SCI_IRQ, SLP_TYP_S5,
} from '../devices/acpi/pm-constants.js';

/**
 * The ACPI tables as two relocatable blobs, as QEMU hands them to firmware: the RSDP (which must live in the
 * 0xE0000-0xFFFFF area) and the other tables. Every pointer field holds an offset into `tables` until the
 * blobs are placed, by tsvm itself (direct Linux boot) or by the firmware running the fw_cfg table loader.
 */
export interface AcpiBlobs {
  rsdp: Uint8Array;
  tables: Uint8Array;
  /** 32-bit pointer fields, each to be increased by the address `tables` is placed at. */
  pointers: { blob: 'rsdp' | 'tables'; offset: number }[];
  /** Checksummed ranges: the byte at `offset` makes the sum of [start, start+length) zero. */
  checksums: { blob: 'rsdp' | 'tables'; offset: number; start: number; length: number }[];
}

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

/** The byte that makes `bytes[start..end)` sum to 0 (ACPI and MP tables). */
export function checksum(bytes: Uint8Array, start = 0, end = bytes.length): number {
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

/** An AML package: PkgLength (1 to 3 bytes, counting itself) then the contents. */
function pkg(contents: number[]): number[] {
  const n = contents.length;
  if (n + 1 < 0x40) return [n + 1, ...contents];
  if (n + 2 < 0x1000) return [0x40 | ((n + 2) & 0xf), (n + 2) >> 4, ...contents];
  return [0x80 | ((n + 3) & 0xf), ((n + 3) >> 4) & 0xff, (n + 3) >> 12, ...contents];
}

const nameSeg = (s: string) => [...s].map((c) => c.charCodeAt(0));
export const le16 = (v: number) => [v & 0xff, (v >> 8) & 0xff];
export const le32 = (v: number) => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24];

/** Word address space descriptor (ACPI 6.4.3.5.3): bus numbers (type 2) or I/O ports (type 1). */
function wordAddressSpace(type: number, min: number, max: number): number[] {
  return [0x88, ...le16(13), type, 0x0c, type === 1 ? 3 : 0, ...le16(0), ...le16(min), ...le16(max), ...le16(0), ...le16(max - min + 1)];
}

/** DWord memory range descriptor: read-write, cacheable. */
function dwordMemory(min: number, max: number): number[] {
  return [0x87, ...le16(23), 0, 0x0c, 0x03, ...le32(0), ...le32(min), ...le32(max), ...le32(0), ...le32(max - min + 1)];
}

/** `Name (name, value)`. */
function named(name: string, value: number[]): number[] {
  return [0x08, ...nameSeg(name), ...value];
}

/** `Device (name) { body }`. */
function device(name: string, body: number[]): number[] {
  return [0x5b, 0x82, ...pkg([...nameSeg(name), ...body])];
}

/** A buffer holding resource descriptors and the end tag. */
function resourceTemplate(descriptors: number[]): number[] {
  const bytes = [...descriptors, 0x79, 0x00];
  return [0x11, ...pkg([0x0a, bytes.length, ...bytes])];
}

/** The PCI hole ends where the firmware's fixed devices (IOAPIC, HPET, BIOS) start. */
const PCI_HOLE_END = 0xfebfffff;

/**
 * The DSDT's AML, hand-assembled (it is small):
 *   Name (_S5, Package (4) { SLP_TYP, SLP_TYP, 0, 0 })   -- how the OS powers off
 *   Scope (\_SB) { Device (PCI0) { _HID PNP0A03, _ADR 0, _UID 0, _CRS, Device (ISA) { Device (KBD) { PNP0303 } } } }
 * The PCI root bridge is what makes an ACPI OS scan PCI bus 0; its _CRS gives the windows BARs may use (the
 * I/O ports besides 0xCF8, the VGA window, memory from the end of RAM to the PCI hole's end). Without a _PRT,
 * Linux takes each function's interrupt from its Interrupt Line register, which the firmware (or tsvm, booting
 * Linux directly) sets.
 */
function dsdtAml(ramBytes: number): Uint8Array {
  const resources = [
    ...wordAddressSpace(2, 0, 0xff),
    0x47, 0x01, ...le16(0xcf8), ...le16(0xcf8), 0x01, 0x08, // I/O 0xCF8, 8 ports
    ...wordAddressSpace(1, 0x0000, 0x0cf7),
    ...wordAddressSpace(1, 0x0d00, 0xffff),
    ...dwordMemory(0xa0000, 0xbffff),
    ...dwordMemory(ramBytes, PCI_HOLE_END),
  ];
  const keyboard = device('KBD_', [
    ...named('_HID', [0x0c, 0x41, 0xd0, 0x03, 0x03]), // EISA id PNP0303
    ...named('_CRS', resourceTemplate([
      0x47, 0x01, ...le16(0x60), ...le16(0x60), 0x01, 0x01, // I/O 0x60
      0x47, 0x01, ...le16(0x64), ...le16(0x64), 0x01, 0x01, // I/O 0x64
      0x22, ...le16(1 << 1), // IRQ 1
    ])),
  ]);
  // The PIIX3 ISA bridge (00:01.0) holds the legacy devices; SeaBIOS only drives a PS/2 keyboard the DSDT lists.
  const isa = device('ISA_', [...named('_ADR', [0x0c, ...le32(0x00010000)]), ...keyboard]);
  const pci0 = device('PCI0', [
    ...named('_HID', [0x0c, 0x41, 0xd0, 0x0a, 0x03]), // EISA id PNP0A03
    ...named('_ADR', [0x00]),
    ...named('_UID', [0x00]),
    ...named('_CRS', resourceTemplate(resources)),
    ...isa,
  ]);
  return Uint8Array.from([
    0x08, ...nameSeg('_S5_'), 0x12, ...pkg([0x04, 0x0a, SLP_TYP_S5, 0x0a, SLP_TYP_S5, 0x00, 0x00]), // Package of 4
    0x10, ...pkg([0x5c, ...nameSeg('_SB_'), ...pci0]), // ScopeOp \_SB
  ]);
}

/** ISA IRQs the MADT marks level-triggered, active high: the SCI and the PCI interrupts the PIIX3 routes (QEMU's pc). */
export const LEVEL_ISA_IRQS = [5, 9, 10, 11];

/**
 * The MADT ("APIC") as QEMU builds it for the pc machine: the local APIC at 0xFEE00000 with the 8259s present
 * (PCAT_COMPAT), processor 0 with APIC ID 0, the I/O APIC (ID 0) at 0xFEC00000 from GSI 0, interrupt source
 * overrides for IRQ 0 on GSI 2 and for the level-triggered ISA IRQs, and NMI on LINT1 of every processor.
 */
function madt(): Uint8Array {
  const entries = [
    [0, 8, 0, 0, ...le32(1)], // processor local APIC: ACPI processor 0, APIC ID 0, enabled
    [1, 12, 0, 0, ...le32(IO_APIC_DEFAULT_BASE), ...le32(0)], // I/O APIC 0, GSI base 0
    [2, 10, 0, 0, ...le32(2), ...le16(0)], // ISA IRQ 0 -> GSI 2, bus defaults (edge, high)
    ...LEVEL_ISA_IRQS.map((irq) => [2, 10, 0, irq, ...le32(irq), ...le16(0xd)]), // level, active high
    [4, 6, 0xff, ...le16(0), 1], // local APIC NMI: all processors, LINT1
  ].flat();
  return table('APIC', 1, 44 + entries.length, (dv, b) => {
    dv.setUint32(36, LOCAL_APIC_DEFAULT_BASE, true);
    dv.setUint32(40, 1, true); // PCAT_COMPAT: the 8259s are there too
    b.set(entries, 44);
  });
}

/**
 * Builds RSDP, RSDT, FADT (revision 1), FACS, MADT and a DSDT describing the PIIX4 power-management block and
 * the PCI root bridge, for a machine with `ramBytes` of RAM below 4 GiB.
 */
export function buildAcpi(ramBytes: number): AcpiBlobs {
  const aml = dsdtAml(ramBytes);
  const pointers: AcpiBlobs['pointers'] = [];
  const checksums: AcpiBlobs['checksums'] = [];
  // Layout of the tables blob: FACS first (it must be 64-byte aligned and the blob is placed so), then the rest.
  const facsOffset = 0;
  const dsdtOffset = 64;
  const dsdt = table('DSDT', 1, 36 + aml.length, (_dv, b) => b.set(aml, 36));
  const fadtOffset = align16(dsdtOffset + dsdt.length);
  const apic = madt();
  const madtOffset = align16(fadtOffset + 116);
  const rsdtOffset = align16(madtOffset + apic.length);
  const tables = new Uint8Array(rsdtOffset + 44);
  const facs = tables.subarray(facsOffset, facsOffset + 64);
  ascii(facs, 0, 'FACS');
  new DataView(tables.buffer).setUint32(facsOffset + 4, 64, true);
  tables.set(dsdt, dsdtOffset);
  const fadt = table('FACP', 1, 116, (dv) => {
    dv.setUint32(36, facsOffset, true);
    dv.setUint32(40, dsdtOffset, true);
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
  tables.set(fadt, fadtOffset);
  pointers.push({ blob: 'tables', offset: fadtOffset + 36 }, { blob: 'tables', offset: fadtOffset + 40 });
  tables.set(apic, madtOffset);
  const rsdt = table('RSDT', 1, 44, (dv) => {
    dv.setUint32(36, fadtOffset, true);
    dv.setUint32(40, madtOffset, true);
  });
  tables.set(rsdt, rsdtOffset);
  pointers.push({ blob: 'tables', offset: rsdtOffset + 36 }, { blob: 'tables', offset: rsdtOffset + 40 });
  for (const [start, length] of [[dsdtOffset, dsdt.length], [fadtOffset, fadt.length], [madtOffset, apic.length], [rsdtOffset, rsdt.length]]) {
    checksums.push({ blob: 'tables', offset: start + 9, start, length });
  }
  const rsdp = new Uint8Array(20);
  ascii(rsdp, 0, 'RSD PTR ');
  ascii(rsdp, 9, OEM_ID);
  new DataView(rsdp.buffer).setUint32(16, rsdtOffset, true);
  pointers.push({ blob: 'rsdp', offset: 16 });
  checksums.push({ blob: 'rsdp', offset: 8, start: 0, length: 20 });
  return { rsdp, tables, pointers, checksums };
}

/** Places the tables at `base` (64-byte aligned, in 0xE0000-0xFFFFF where the OS looks for the RSDP). */
export function placeAcpiTables(base: number, ramBytes: number): AcpiTables {
  const { rsdp, tables, pointers, checksums } = buildAcpi(ramBytes);
  const tablesAddress = base + 64;
  const blob = (name: 'rsdp' | 'tables') => (name === 'rsdp' ? rsdp : tables);
  for (const p of pointers) {
    const dv = new DataView(blob(p.blob).buffer, blob(p.blob).byteOffset);
    dv.setUint32(p.offset, dv.getUint32(p.offset, true) + tablesAddress, true);
  }
  for (const c of checksums) {
    const b = blob(c.blob);
    b[c.offset] = 0;
    b[c.offset] = checksum(b, c.start, c.start + c.length);
  }
  return { rsdpAddress: base, blobs: [[base, rsdp], [tablesAddress, tables]] };
}

const LOADER_ALLOCATE = 1, LOADER_ADD_POINTER = 2, LOADER_ADD_CHECKSUM = 3;
const LOADER_ZONE_HIGH = 1, LOADER_ZONE_FSEG = 2;
const LOADER_FILE_BYTES = 56;

/**
 * The fw_cfg files QEMU gives SeaBIOS for ACPI: the two blobs and `etc/table-loader`, a script of 128-byte
 * commands (allocate each blob, patch pointers with where the other blob landed, fix checksums).
 */
export function acpiLoaderFiles(ramBytes: number): Record<string, Uint8Array> {
  const { rsdp, tables, pointers, checksums } = buildAcpi(ramBytes);
  const names = { rsdp: 'etc/acpi/rsdp', tables: 'etc/acpi/tables' } as const;
  const commands: Uint8Array[] = [];
  const command = (type: number, fill: (dv: DataView, bytes: Uint8Array) => void) => {
    const c = new Uint8Array(128);
    const dv = new DataView(c.buffer);
    dv.setUint32(0, type, true);
    fill(dv, c);
    commands.push(c);
  };
  command(LOADER_ALLOCATE, (dv, c) => { ascii(c, 4, names.rsdp); dv.setUint32(4 + LOADER_FILE_BYTES, 16, true); c[8 + LOADER_FILE_BYTES] = LOADER_ZONE_FSEG; });
  command(LOADER_ALLOCATE, (dv, c) => { ascii(c, 4, names.tables); dv.setUint32(4 + LOADER_FILE_BYTES, 64, true); c[8 + LOADER_FILE_BYTES] = LOADER_ZONE_HIGH; });
  for (const p of pointers) {
    command(LOADER_ADD_POINTER, (dv, c) => {
      ascii(c, 4, names[p.blob]);
      ascii(c, 4 + LOADER_FILE_BYTES, names.tables);
      dv.setUint32(4 + 2 * LOADER_FILE_BYTES, p.offset, true);
      c[8 + 2 * LOADER_FILE_BYTES] = 4;
    });
  }
  for (const k of checksums) {
    const b = k.blob === 'rsdp' ? rsdp : tables;
    b[k.offset] = 0;
    command(LOADER_ADD_CHECKSUM, (dv, c) => {
      ascii(c, 4, names[k.blob]);
      dv.setUint32(4 + LOADER_FILE_BYTES, k.offset, true);
      dv.setUint32(8 + LOADER_FILE_BYTES, k.start, true);
      dv.setUint32(12 + LOADER_FILE_BYTES, k.length, true);
    });
  }
  const loader = new Uint8Array(128 * commands.length);
  commands.forEach((c, i) => loader.set(c, 128 * i));
  return { [names.rsdp]: rsdp, [names.tables]: tables, 'etc/table-loader': loader };
}

function align16(n: number): number {
  return (n + 15) & ~15;
}
