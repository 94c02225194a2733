import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestRam } from '../memory/guest-ram.js';
import { PhysicalMemory } from '../memory/physical-memory.js';
import { buildAcpiTables } from './acpi-tables.js';
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

test('ACPI tables: valid checksums, FADT points at the DSDT with \\_S5', () => {
  const tables = buildAcpiTables(0xe0000);
  const sum = (b: Uint8Array) => b.reduce((a, x) => (a + x) & 0xff, 0);
  for (const [, bytes] of tables.blobs) {
    const sig = new TextDecoder().decode(bytes.subarray(0, 4));
    if (sig !== 'FACS') assert.equal(sum(sig === 'RSD ' ? bytes.subarray(0, 20) : bytes), 0, `${sig} checksum`);
  }
  const dsdt = tables.blobs.find(([, b]) => new TextDecoder().decode(b.subarray(0, 4)) === 'DSDT')![1];
  assert.ok(Buffer.from(dsdt).includes(Buffer.from('_S5_')));
});
