import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestRam } from '../memory/guest-ram.js';
import { PhysicalMemory } from '../memory/physical-memory.js';
import { findMultibootHeader, loadMultiboot } from './multiboot.js';

const MAGIC = 0x1badb002;

/** An ELF32 i386 executable with one PT_LOAD segment (code, then bss) and a Multiboot header in the code. */
function elfKernel(flags = 0x3): Uint8Array {
  const code = new Uint8Array(64);
  const cv = new DataView(code.buffer);
  cv.setUint32(0, MAGIC, true);
  cv.setUint32(4, flags, true);
  cv.setUint32(8, -(MAGIC + flags) >>> 0, true);
  code.fill(0x90, 12);
  const image = new Uint8Array(0x100 + code.length);
  const dv = new DataView(image.buffer);
  dv.setUint32(0, 0x7f454c46, false);
  image.set([1, 1, 1], 4); // 32-bit, little-endian, version 1
  dv.setUint16(16, 2, true); // ET_EXEC
  dv.setUint16(18, 3, true); // EM_386
  dv.setUint32(24, 0x10000c, true); // entry
  dv.setUint32(28, 52, true); // phoff
  dv.setUint16(42, 32, true);
  dv.setUint16(44, 1, true);
  dv.setUint32(52, 1, true); // PT_LOAD
  dv.setUint32(56, 0x100, true); // offset
  dv.setUint32(64, 0x100000, true); // paddr
  dv.setUint32(68, code.length, true); // filesz
  dv.setUint32(72, code.length + 0x1000, true); // memsz: 4 KiB of bss
  image.set(code, 0x100);
  return image;
}

test('Multiboot ELF: segments loaded, bss zeroed, EAX/EBX and the information structure as the spec says', () => {
  const memory = new PhysicalMemory(new GuestRam(32 * 2 ** 20));
  const ram = memory.ram.bytes;
  ram.fill(0xee, 0x100000, 0x102000);
  const image = elfKernel();
  const header = findMultibootHeader(image);
  assert.ok(header);
  const regs = loadMultiboot(memory, { name: 'k', image, header, commandLine: 'a b' });
  assert.equal(regs.gpr[0], 0x2badb002);
  assert.equal(regs.eip, 0x10000c);
  assert.equal(regs.cr0 & 0x80000001, 1); // protected mode, paging off
  assert.equal(regs.eflags & 0x200, 0);
  assert.equal(ram[0x10000c], 0x90);
  assert.equal(ram[0x100040], 0); // bss
  assert.equal(ram[0x101040], 0xee); // past memsz: untouched
  const dv = new DataView(ram.buffer);
  const info = regs.gpr[3];
  assert.equal(dv.getUint32(info, true) & 0x245, 0x245); // memory, cmdline, mmap, loader name
  assert.equal(dv.getUint32(info + 4, true), 640);
  assert.equal(dv.getUint32(info + 8, true), 31 * 1024);
  const cmdline = dv.getUint32(info + 16, true);
  assert.equal(new TextDecoder().decode(ram.subarray(cmdline, cmdline + 4)), 'a b\0');
  const mmapLength = dv.getUint32(info + 44, true), mmap = dv.getUint32(info + 48, true);
  const entries = [];
  for (let p = mmap; p < mmap + mmapLength; p += dv.getUint32(p, true) + 4) {
    entries.push([Number(dv.getBigUint64(p + 4, true)), Number(dv.getBigUint64(p + 12, true)), dv.getUint32(p + 20, true)]);
  }
  assert.deepEqual(entries.at(-1), [0x100000, 31 * 2 ** 20, 1]);
});

test('Multiboot: a.out-kludge addresses, no header, and one-line errors', () => {
  const memory = new PhysicalMemory(new GuestRam(8 * 2 ** 20));
  // Header at file offset 16 = address 0x200010; the file from offset 0 loads at 0x200000, bss up to 0x201000.
  const image = new Uint8Array(64).fill(0xcc);
  const dv = new DataView(image.buffer);
  const flags = 0x10000;
  [MAGIC, flags, -(MAGIC + flags) >>> 0, 0x200010, 0x200000, 0x200040, 0x201000, 0x200030].forEach((v, i) => dv.setUint32(16 + 4 * i, v, true));
  const header = findMultibootHeader(image)!;
  const regs = loadMultiboot(memory, { name: 'k', image, header, commandLine: '' });
  assert.equal(regs.eip, 0x200030);
  assert.equal(memory.ram.bytes[0x200000], 0xcc);
  assert.equal(memory.ram.bytes[0x200040], 0);

  assert.equal(findMultibootHeader(new Uint8Array(9000)), null);
  const bad = elfKernel(0x3);
  bad[0x100 + 8] ^= 1; // checksum
  assert.equal(findMultibootHeader(bad), null);
  const needsModulesInfo = elfKernel(0x8);
  assert.throws(() => loadMultiboot(memory, { name: 'k', image: needsModulesInfo, header: findMultibootHeader(needsModulesInfo)!, commandLine: '' }),
    /^TsvmError: k: Multiboot header requires unsupported features \(flags 0x8\)$/);
  const small = new PhysicalMemory(new GuestRam(2 ** 20));
  const elf = elfKernel();
  assert.throws(() => loadMultiboot(small, { name: 'k', image: elf, header: findMultibootHeader(elf)!, commandLine: '' }), /outside usable RAM/);
  const tinyHeaders = elfKernel();
  new DataView(tinyHeaders.buffer).setUint16(42, 4, true); // e_phentsize 4: the header's fields would lie past it
  assert.throws(() => loadMultiboot(memory, { name: 'k', image: tinyHeaders, header: findMultibootHeader(tinyHeaders)!, commandLine: '' }),
    /^TsvmError: k: bad ELF program header size 4$/);
});
