import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestRam } from '../memory/guest-ram.js';
import { PhysicalMemory } from '../memory/physical-memory.js';
import { acpiLoaderFiles, placeAcpiTables } from './acpi-tables.js';
import { parseBzImage } from './bzimage.js';
import { loadLinux } from './linux-loader.js';
import { fakeBzImage } from './testing/fake-bzimage.js';

test('bzImage header: accepted when well-formed, one-line errors otherwise', () => {
  const k = parseBzImage('k', fakeBzImage());
  assert.equal(k.protocol, 0x020f);
  assert.equal(k.code32Start, 0x100000);
  assert.throws(() => parseBzImage('k', new Uint8Array(100)), /: k: not a Linux kernel image \(file too small\)$/);
  const noMagic = fakeBzImage();
  noMagic[0x202] = 0;
  assert.throws(() => parseBzImage('k', noMagic), /not a Linux bzImage/);
  const truncated = fakeBzImage().subarray(0, 3000);
  assert.throws(() => parseBzImage('k', truncated), /truncated kernel image/);
  const old = fakeBzImage();
  new DataView(old.buffer).setUint16(0x206, 0x0201, true);
  assert.throws(() => parseBzImage('k', old), /too old/);
  const absurd = fakeBzImage();
  absurd[0x1f1] = 200;
  assert.throws(() => parseBzImage('k', absurd), /setup_sects/);
});

test('loader: kernel at 1 MiB, boot_params with e820, command line, initrd at the top, ACPI RSDP', () => {
  const memory = new PhysicalMemory(new GuestRam(64 * 2 ** 20));
  const initrd = new Uint8Array(10000).fill(7);
  const regs = loadLinux(memory, { kernel: parseBzImage('k', fakeBzImage()), initrd, commandLine: 'console=ttyS0 x=1', acpi: true });
  const ram = memory.ram.bytes;
  const dv = new DataView(ram.buffer);
  const bp = regs.gpr[6];
  assert.equal(regs.eip, 0x100000);
  assert.equal(regs.cr0 & 1, 1);
  assert.equal(dv.getUint32(bp + 0x202, true), 0x53726448);
  const cmd = dv.getUint32(bp + 0x228, true);
  assert.equal(new TextDecoder().decode(ram.subarray(cmd, cmd + 17)), 'console=ttyS0 x=1');
  const rd = dv.getUint32(bp + 0x218, true);
  assert.equal(dv.getUint32(bp + 0x21c, true), 10000);
  assert.equal(rd % 4096, 0);
  assert.ok(rd + 10000 <= 64 * 2 ** 20 && rd > 60 * 2 ** 20);
  assert.equal(ram[rd + 9999], 7);
  const entries = ram[bp + 0x1e8];
  const last = bp + 0x2d0 + 20 * (entries - 1);
  assert.equal(Number(dv.getBigUint64(last + 8, true)) + Number(dv.getBigUint64(last, true)), 64 * 2 ** 20);
  const rsdp = Number(dv.getBigUint64(bp + 0x70, true));
  assert.equal(new TextDecoder().decode(ram.subarray(rsdp, rsdp + 8)), 'RSD PTR ');
  assert.throws(() => loadLinux(new PhysicalMemory(new GuestRam(2 ** 20)), { kernel: parseBzImage('k', fakeBzImage()), commandLine: '', acpi: false }), /-m is too small/);
});

/** Follows RSDP → RSDT → FADT → FACS/DSDT and the MADT in a memory image, checking signatures and checksums. */
function checkAcpiInMemory(ram: Uint8Array, rsdp: number): void {
  const dv = new DataView(ram.buffer);
  const text = (a: number, n: number) => new TextDecoder().decode(ram.subarray(a, a + n));
  const sum = (a: number, n: number) => ram.subarray(a, a + n).reduce((x, y) => (x + y) & 0xff, 0);
  assert.equal(text(rsdp, 8), 'RSD PTR ');
  assert.equal(sum(rsdp, 20), 0, 'RSDP checksum');
  const table = (a: number, sig: string) => {
    assert.equal(text(a, 4), sig);
    assert.equal(sum(a, dv.getUint32(a + 4, true)), 0, `${sig} checksum`);
    return a;
  };
  const rsdt = table(dv.getUint32(rsdp + 16, true), 'RSDT');
  const fadt = table(dv.getUint32(rsdt + 36, true), 'FACP');
  const facs = dv.getUint32(fadt + 36, true);
  assert.equal(text(facs, 4), 'FACS');
  assert.equal(facs % 64, 0);
  const dsdt = table(dv.getUint32(fadt + 40, true), 'DSDT');
  assert.ok(Buffer.from(ram.subarray(dsdt, dsdt + dv.getUint32(dsdt + 4, true))).includes(Buffer.from('_S5_')));
  const madt = table(dv.getUint32(rsdt + 40, true), 'APIC');
  assert.equal(dv.getUint32(madt + 36, true), 0xfee00000);
  // Entries: type, length, then the body: the processor, the I/O APIC, IRQ 0 on GSI 2, SCI level.
  const entries: number[][] = [];
  for (let at = madt + 44; at < madt + dv.getUint32(madt + 4, true); at += ram[at + 1]) entries.push([...ram.subarray(at, at + ram[at + 1])]);
  assert.deepEqual(entries[0], [0, 8, 0, 0, 1, 0, 0, 0]);
  assert.deepEqual(entries[1], [1, 12, 0, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0]);
  assert.deepEqual(entries[2], [2, 10, 0, 0, 2, 0, 0, 0, 0, 0]);
  assert.ok(entries.some((e) => e.join() === [2, 10, 0, 9, 9, 0, 0, 0, 0xd, 0].join()), 'SCI override: level, active high');
}

test('MP tables for direct boot: floating pointer and configuration table with valid checksums, the processor enabled', () => {
  const memory = new PhysicalMemory(new GuestRam(16 * 2 ** 20));
  loadLinux(memory, {
    kernel: parseBzImage('k', fakeBzImage()), commandLine: '', acpi: false,
    mpTable: { cpuSignature: 0x633, cpuFeatures: 0x200, pciInterrupts: [{ device: 1, pin: 1, irq: 10 }], levelIsaIrqs: [9, 10] },
  });
  const ram = memory.ram.bytes;
  const dv = new DataView(ram.buffer);
  const sum = (a: number, n: number) => ram.subarray(a, a + n).reduce((x, y) => (x + y) & 0xff, 0);
  let mp = -1;
  for (let a = 0xf0000; a < 0x100000; a += 16) if (new TextDecoder().decode(ram.subarray(a, a + 4)) === '_MP_') mp = a;
  assert.ok(mp > 0, 'floating pointer in the F segment');
  assert.equal(sum(mp, 16), 0);
  const table = dv.getUint32(mp + 4, true);
  assert.equal(new TextDecoder().decode(ram.subarray(table, table + 4)), 'PCMP');
  assert.equal(sum(table, dv.getUint16(table + 4, true)), 0);
  assert.equal(dv.getUint32(table + 36, true), 0xfee00000);
  const count = dv.getUint16(table + 34, true);
  const sizes = [20, 8, 8, 8, 8];
  const types: number[][] = [];
  for (let at = table + 44, i = 0; i < count; i++, at += sizes[ram[at]]) types.push([...ram.subarray(at, at + sizes[ram[at]])]);
  assert.equal(types[0].slice(0, 4).join(), [0, 0, 0x14, 3].join(), 'processor: APIC ID 0, version 0x14, enabled, BSP');
  assert.ok(types.some((e) => e.join() === [2, 0, 0x11, 1, 0, 0, 0xc0, 0xfe].join()), 'I/O APIC');
  assert.ok(types.some((e) => e.join() === [3, 0, 0, 0, 1, 0, 0, 2].join()), 'ISA IRQ 0 on pin 2');
  assert.ok(types.some((e) => e.join() === [3, 0, 0xd, 0, 1, 9, 0, 9].join()), 'ISA IRQ 9 level, active high');
  assert.ok(types.some((e) => e.join() === [3, 0, 0, 0, 0, 4, 0, 10].join()), 'PCI 00:01 INTA# on pin 10');
  assert.ok(types.some((e) => e.join() === [4, 3, 0, 0, 1, 0, 0xff, 0].join()), 'ExtINT on LINT0');
});

test('ACPI tables placed for direct boot: valid checksums, FADT points at the DSDT with \\_S5', () => {
  const ram = new Uint8Array(2 ** 20);
  const tables = placeAcpiTables(0xe0000, 2 ** 20);
  for (const [address, bytes] of tables.blobs) ram.set(bytes, address);
  checkAcpiInMemory(ram, tables.rsdpAddress);
});

test('ACPI table loader script: run as SeaBIOS runs it, the same valid tables', () => {
  const files = acpiLoaderFiles(2 ** 20);
  const ram = new Uint8Array(2 ** 20);
  const placed = new Map<string, number>();
  let high = 0x80000, fseg = 0xf0000;
  const loader = files['etc/table-loader'];
  const dv = new DataView(loader.buffer, loader.byteOffset);
  const name = (at: number) => new TextDecoder().decode(loader.subarray(at, at + 56)).replace(/\0+$/, '');
  const ramView = new DataView(ram.buffer);
  for (let at = 0; at < loader.length; at += 128) {
    const type = dv.getUint32(at, true);
    if (type === 1) {
      const file = name(at + 4), alignment = dv.getUint32(at + 60, true), zone = loader[at + 64];
      const bytes = files[file];
      let address = zone === 2 ? fseg : high;
      address = Math.ceil(address / alignment) * alignment;
      ram.set(bytes, address);
      placed.set(file, address);
      if (zone === 2) fseg = address + bytes.length;
      else high = address + bytes.length;
    } else if (type === 2) {
      const dest = placed.get(name(at + 4))!, src = placed.get(name(at + 60))!, offset = dv.getUint32(at + 116, true);
      assert.equal(loader[at + 120], 4);
      ramView.setUint32(dest + offset, ramView.getUint32(dest + offset, true) + src, true);
    } else if (type === 3) {
      const base = placed.get(name(at + 4))!;
      const offset = dv.getUint32(at + 60, true), start = dv.getUint32(at + 64, true), length = dv.getUint32(at + 68, true);
      const sum = ram.subarray(base + start, base + start + length).reduce((x, y) => (x + y) & 0xff, 0);
      ram[base + offset] = (ram[base + offset] - sum) & 0xff;
    } else {
      assert.fail(`unknown loader command ${type}`);
    }
  }
  checkAcpiInMemory(ram, placed.get('etc/acpi/rsdp')!);
});
