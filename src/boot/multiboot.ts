import { TsvmError } from '../base/errors.js';
import type { PhysicalMemory } from '../memory/physical-memory.js';
import { CS, FLAT_CODE32_ATTRIBUTES, FLAT_DATA32_ATTRIBUTES, type X86Registers } from '../cpu/x86/registers.js';

/**
 * Multiboot (version 1) kernels, as QEMU's -kernel boots them: an ELF32 image (or an a.out-kludge image) with
 * a Multiboot header in its first 8 KiB. The kernel starts in flat 32-bit protected mode, paging and
 * interrupts off, EAX = 0x2BADB002 and EBX = the Multiboot information structure (memory sizes, memory map,
 * command line, boot loader name).
 */

const HEADER_MAGIC = 0x1badb002;
const BOOTLOADER_MAGIC = 0x2badb002;
const HEADER_SEARCH_BYTES = 8192;
/** Header flags: bits 0-15 are requirements a loader must meet or refuse; bit 16 gives the load addresses. */
const FLAG_PAGE_ALIGN_MODULES = 1 << 0;
const FLAG_MEMORY_INFO = 1 << 1;
const FLAG_VIDEO_MODE = 1 << 2;
const FLAG_AOUT_KLUDGE = 1 << 16;
/** Information structure flags. */
const INFO_MEMORY = 1 << 0, INFO_CMDLINE = 1 << 2, INFO_MMAP = 1 << 6, INFO_LOADER_NAME = 1 << 9;

/** Guest-physical layout of what the loader writes besides the kernel (below the EBDA, like QEMU). */
const GDT_ADDRESS = 0x8000;
const INFO_ADDRESS = 0x9000;
/** Kernels may load below 1 MiB only between the loader's data and the EBDA. */
const LOADER_DATA_START = 0xa000;
const LOADER_DATA_END = 0x9fc00;
const LOADER_NAME = 'tsvm';

export interface MultibootHeader {
  /** Byte offset of the header in the image. */
  offset: number;
  flags: number;
  /** With the a.out kludge (flag 16): where the image goes and where it starts. */
  headerAddress: number;
  loadAddress: number;
  loadEndAddress: number;
  bssEndAddress: number;
  entryAddress: number;
}

/** The image's Multiboot header, or null when it has none (then it is not a Multiboot kernel). */
export function findMultibootHeader(image: Uint8Array): MultibootHeader | null {
  const dv = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const end = Math.min(image.length, HEADER_SEARCH_BYTES) - 12;
  for (let offset = 0; offset <= end; offset += 4) {
    if (dv.getUint32(offset, true) !== HEADER_MAGIC) continue;
    const flags = dv.getUint32(offset + 4, true);
    if (((HEADER_MAGIC + flags + dv.getUint32(offset + 8, true)) >>> 0) !== 0) continue;
    const field = (i: number) => (offset + 12 + 4 * i + 4 <= image.length ? dv.getUint32(offset + 12 + 4 * i, true) : 0);
    return {
      offset, flags,
      headerAddress: field(0), loadAddress: field(1), loadEndAddress: field(2), bssEndAddress: field(3), entryAddress: field(4),
    };
  }
  return null;
}

export interface MultibootOptions {
  name: string;
  image: Uint8Array;
  header: MultibootHeader;
  commandLine: string;
}

/** Loads a Multiboot kernel and its information structure; returns the registers the CPU starts with. */
export function loadMultiboot(memory: PhysicalMemory, options: MultibootOptions): X86Registers {
  const { name, image, header } = options;
  const unsupported = header.flags & 0xffff & ~(FLAG_PAGE_ALIGN_MODULES | FLAG_MEMORY_INFO | FLAG_VIDEO_MODE);
  if (unsupported) throw new TsvmError(`${name}: Multiboot header requires unsupported features (flags 0x${unsupported.toString(16)})`);
  const ram = memory.ram.bytes;
  const place = (address: number, bytes: Uint8Array, zeroedTo: number) => {
    const clearOfLoaderData = address >= 0x100000 || (address >= LOADER_DATA_START && zeroedTo <= LOADER_DATA_END);
    if (!clearOfLoaderData || zeroedTo > memory.ramSize || zeroedTo < address + bytes.length) {
      throw new TsvmError(`${name}: kernel segment at 0x${address.toString(16)}-0x${zeroedTo.toString(16)} is outside usable RAM (-m too small?)`);
    }
    ram.set(bytes, address);
    ram.fill(0, address + bytes.length, zeroedTo);
  };
  ram.fill(0, 0, LOADER_DATA_START);
  const entry = header.flags & FLAG_AOUT_KLUDGE ? loadAoutKludge(name, image, header, place) : loadElf(name, image, place);

  // The information structure, then the command line, loader name and memory map after it.
  const info = new DataView(ram.buffer, ram.byteOffset + INFO_ADDRESS, 0x1000);
  const text = new TextEncoder();
  let next = INFO_ADDRESS + 0x80;
  const putString = (s: string) => {
    const bytes = text.encode(s);
    if (next + bytes.length + 1 > INFO_ADDRESS + 0x800) throw new TsvmError(`${name}: kernel command line too long`);
    ram.set(bytes, next);
    ram[next + bytes.length] = 0;
    const address = next;
    next = (next + bytes.length + 4) & ~3;
    return address;
  };
  const lowerKib = 640, upperKib = Math.floor(Math.min(memory.ramSize, 0xffffffff) / 1024) - 1024;
  info.setUint32(4, lowerKib, true);
  info.setUint32(8, upperKib, true);
  info.setUint32(16, putString(options.commandLine), true);
  info.setUint32(64, putString(LOADER_NAME), true);
  // Memory map: each entry is size (of the rest, 20), base, length (64-bit each), type (1 = RAM, 2 = reserved).
  const mmap: [number, number, number][] = [
    [0, lowerKib * 1024, 1],
    [0xf0000, 0x10000, 2],
    [0x100000, memory.ramSize - 0x100000, 1],
  ];
  const mmapAddress = next;
  for (const [base, length, type] of mmap) {
    const entryView = new DataView(ram.buffer, ram.byteOffset + next, 24);
    entryView.setUint32(0, 20, true);
    entryView.setBigUint64(4, BigInt(base), true);
    entryView.setBigUint64(12, BigInt(length), true);
    entryView.setUint32(20, type, true);
    next += 24;
  }
  info.setUint32(44, next - mmapAddress, true);
  info.setUint32(48, mmapAddress, true);
  info.setUint32(0, INFO_MEMORY | INFO_CMDLINE | INFO_MMAP | INFO_LOADER_NAME, true);

  // A flat GDT the kernel may keep using (Multiboot says it must load its own): null, code 0x08, data 0x10.
  const gdt = new DataView(ram.buffer, ram.byteOffset + GDT_ADDRESS, 24);
  gdt.setBigUint64(0x08, 0x00cf9a000000ffffn, true);
  gdt.setBigUint64(0x10, 0x00cf93000000ffffn, true);
  const flat = (selector: number, attributes: number) => ({ selector, base: 0, limit: 0xffffffff, attributes });
  const segments = [];
  for (let i = 0; i < 6; i++) segments.push(i === CS ? flat(0x08, FLAT_CODE32_ATTRIBUTES) : flat(0x10, FLAT_DATA32_ATTRIBUTES));
  return {
    gpr: [BOOTLOADER_MAGIC, 0, 0, INFO_ADDRESS, 0, 0, 0, 0],
    eip: entry,
    eflags: 0x2,
    segments,
    ldtr: { selector: 0, base: 0, limit: 0xffff, attributes: 0x82 },
    tr: { selector: 0, base: 0, limit: 0xffff, attributes: 0x8b },
    gdtr: { base: GDT_ADDRESS, limit: 0x17 },
    idtr: { base: 0, limit: 0x3ff },
    cr0: 0x00000011, // PE, ET; caches on, as the firmware of a Multiboot loader leaves them
    cr2: 0,
    cr3: 0,
    cr4: 0,
  };
}

type Place = (address: number, bytes: Uint8Array, zeroedTo: number) => void;

/** Loads the PT_LOAD segments of an ELF32 i386 executable at their physical addresses; returns the entry point. */
function loadElf(name: string, image: Uint8Array, place: Place): number {
  const dv = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const isElf32 = image.length >= 52 && dv.getUint32(0, false) === 0x7f454c46 && image[4] === 1 && image[5] === 1;
  if (!isElf32 || dv.getUint16(18, true) !== 3 /* EM_386 */) {
    throw new TsvmError(`${name}: Multiboot kernel is neither a 32-bit x86 ELF nor has load addresses in its header`);
  }
  const phoff = dv.getUint32(28, true), phentsize = dv.getUint16(42, true), phnum = dv.getUint16(44, true);
  // An ELF32 program header is 32 bytes; a smaller entry size would read the last one past the file.
  if (phnum > 0 && phentsize < 32) throw new TsvmError(`${name}: bad ELF program header size ${phentsize}`);
  if (phoff + phnum * phentsize > image.length) throw new TsvmError(`${name}: truncated ELF program headers`);
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (dv.getUint32(ph, true) !== 1 /* PT_LOAD */) continue;
    const offset = dv.getUint32(ph + 4, true), paddr = dv.getUint32(ph + 12, true);
    const fileSize = dv.getUint32(ph + 16, true), memSize = dv.getUint32(ph + 20, true);
    if (offset + fileSize > image.length) throw new TsvmError(`${name}: truncated ELF segment`);
    place(paddr, image.subarray(offset, offset + fileSize), paddr + Math.max(memSize, fileSize));
  }
  return dv.getUint32(24, true);
}

/** Loads an image by the header's addresses: the file from the header's position maps to header_addr. */
function loadAoutKludge(name: string, image: Uint8Array, h: MultibootHeader, place: Place): number {
  const fileStart = h.offset - (h.headerAddress - h.loadAddress);
  const loadEnd = h.loadEndAddress || h.loadAddress + (image.length - fileStart);
  if (fileStart < 0 || loadEnd < h.loadAddress || fileStart + (loadEnd - h.loadAddress) > image.length) {
    throw new TsvmError(`${name}: inconsistent Multiboot load addresses`);
  }
  place(h.loadAddress, image.subarray(fileStart, fileStart + (loadEnd - h.loadAddress)), Math.max(h.bssEndAddress, loadEnd));
  return h.entryAddress;
}
