import { TsvmError } from '../base/errors.js';
import type { PhysicalMemory } from '../memory/physical-memory.js';
import { CS, FLAT_CODE32_ATTRIBUTES, FLAT_DATA32_ATTRIBUTES, type X86Registers } from '../cpu/x86/registers.js';
import { placeAcpiTables } from './acpi-tables.js';
import type { BzImage } from './bzimage.js';
import { type MpTableOptions, buildMpTable } from './mp-table.js';

/** Guest-physical layout of a direct Linux boot. */
const GDT_ADDRESS = 0x5000;
const BOOT_PARAMS_ADDRESS = 0x7000;
const CMDLINE_ADDRESS = 0x20000;
const KERNEL_ADDRESS = 0x100000;
const ACPI_TABLES_ADDRESS = 0xe0000;
/** The MP tables, in the BIOS area where the OS searches for their floating pointer. */
const MP_TABLE_ADDRESS = 0xf0000;
const E820_RAM = 1, E820_RESERVED = 2;
/** type_of_loader: "undefined" boot loader. */
const LOADER_TYPE = 0xff;

export interface LinuxBootOptions {
  kernel: BzImage;
  initrd?: Uint8Array;
  commandLine: string;
  acpi: boolean;
  /** The MultiProcessor tables to place (as SeaBIOS places them on QEMU), read by an OS booted without ACPI. */
  mpTable?: MpTableOptions;
}

/**
 * Loads a bzImage for the 32-bit boot protocol entry: kernel at 1 MiB, boot_params (zero page) with the setup
 * header, command line, e820 map and initrd; a flat GDT; optionally ACPI and MP tables. Returns the registers the
 * CPU starts with (protected mode, paging off, interrupts off, ESI = boot_params).
 */
export function loadLinux(memory: PhysicalMemory, options: LinuxBootOptions): X86Registers {
  const { kernel } = options;
  const ramSize = memory.ramSize;
  const ram = memory.ram.bytes;
  const kernelBytes = kernel.protectedModeKernel;
  const kernelNeeds = Math.max(kernelBytes.length, kernel.initSize);
  if (KERNEL_ADDRESS + kernelNeeds > ramSize) {
    throw new TsvmError(`kernel needs ${Math.ceil((KERNEL_ADDRESS + kernelNeeds) / 2 ** 20)} MiB of RAM; -m is too small`);
  }
  const cmdline = new TextEncoder().encode(options.commandLine);
  const cmdlineMax = kernel.commandLineSize || 255;
  if (cmdline.length > cmdlineMax) throw new TsvmError(`kernel command line too long (${cmdline.length} > ${cmdlineMax} bytes)`);

  ram.fill(0, 0, KERNEL_ADDRESS);
  ram.set(kernelBytes, KERNEL_ADDRESS);
  ram.set(cmdline, CMDLINE_ADDRESS);
  ram[CMDLINE_ADDRESS + cmdline.length] = 0;

  const bp = new Uint8Array(4096);
  const dv = new DataView(bp.buffer);
  bp.set(kernel.setupHeader, 0x1f1);
  bp[0x210] = LOADER_TYPE;
  bp[0x211] = kernel.loadFlags | 0x80; // CAN_USE_HEAP
  dv.setUint16(0x224, 0xfe00, true); // heap_end_ptr
  dv.setUint32(0x228, CMDLINE_ADDRESS, true);

  if (options.initrd) {
    const max = Math.min(kernel.initrdAddressMax || 0x37ffffff, ramSize - 1);
    const address = Math.floor((max + 1 - options.initrd.length) / 4096) * 4096;
    const kernelEnd = KERNEL_ADDRESS + kernelNeeds;
    if (address < kernelEnd) throw new TsvmError(`initrd does not fit in RAM next to the kernel; -m is too small`);
    ram.set(options.initrd, address);
    dv.setUint32(0x218, address, true);
    dv.setUint32(0x21c, options.initrd.length, true);
  }

  const e820: [number, number, number][] = [
    [0, 0x9fc00, E820_RAM],
    [0x9fc00, 0x400, E820_RESERVED],
    [ACPI_TABLES_ADDRESS, 0x100000 - ACPI_TABLES_ADDRESS, E820_RESERVED],
    [0x100000, ramSize - 0x100000, E820_RAM],
  ];
  bp[0x1e8] = e820.length;
  e820.forEach(([addr, size, type], i) => {
    const o = 0x2d0 + 20 * i;
    dv.setBigUint64(o, BigInt(addr), true);
    dv.setBigUint64(o + 8, BigInt(size), true);
    dv.setUint32(o + 16, type, true);
  });
  if (options.acpi) {
    const tables = placeAcpiTables(ACPI_TABLES_ADDRESS, ramSize);
    for (const [address, bytes] of tables.blobs) ram.set(bytes, address);
    dv.setBigUint64(0x070, BigInt(tables.rsdpAddress), true); // acpi_rsdp_addr
  }
  if (options.mpTable) ram.set(buildMpTable(MP_TABLE_ADDRESS, options.mpTable), MP_TABLE_ADDRESS);
  ram.set(bp, BOOT_PARAMS_ADDRESS);

  // GDT: null, null, __BOOT_CS (0x10), __BOOT_DS (0x18).
  const gdt = new DataView(ram.buffer, ram.byteOffset + GDT_ADDRESS, 32);
  gdt.setBigUint64(0x10, 0x00cf9a000000ffffn, true);
  gdt.setBigUint64(0x18, 0x00cf93000000ffffn, true);

  const flat = (selector: number, attributes: number) => ({ selector, base: 0, limit: 0xffffffff, attributes });
  const segments = [];
  for (let i = 0; i < 6; i++) segments.push(i === CS ? flat(0x10, FLAT_CODE32_ATTRIBUTES) : flat(0x18, FLAT_DATA32_ATTRIBUTES));
  return {
    gpr: [0, 0, 0, 0, 0, 0, BOOT_PARAMS_ADDRESS, 0],
    eip: kernel.code32Start || KERNEL_ADDRESS,
    eflags: 0x2,
    segments,
    ldtr: { selector: 0, base: 0, limit: 0xffff, attributes: 0x82 },
    tr: { selector: 0, base: 0, limit: 0xffff, attributes: 0x8b },
    gdtr: { base: GDT_ADDRESS, limit: 0x1f },
    idtr: { base: 0, limit: 0 },
    cr0: 0x60000011,
    cr2: 0,
    cr3: 0,
    cr4: 0,
  };
}
