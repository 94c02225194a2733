import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_BIOS } from '../src/boot/firmware.js';
import { runUntil, TSVM } from './guest-helpers.js';

const HAVE_SEABIOS = existsSync(DEFAULT_BIOS);

test('SeaBIOS runs on the pc machine: fw_cfg, e820, PCI, ACPI tables from the table loader, boot attempts', async (t) => {
  if (!HAVE_SEABIOS) return t.skip('Debian seabios is not installed');
  const dir = mkdtempSync(join(tmpdir(), 'tsvm-bios-'));
  try {
    const log = join(dir, 'seabios.log');
    const r = await runUntil(process.execPath, [TSVM, '-bios', DEFAULT_BIOS, '-m', '96', '-nographic', '-serial', 'none',
      '-global', 'isa-debugcon.iobase=0x402', '-debugcon', `file:${log}`], () => readFileSync(log, 'latin1').includes('No bootable device'), 60_000);
    assert.ok(!r.timedOut, `SeaBIOS did not reach "No bootable device":\n${readFileSync(log, 'latin1').slice(-2000)}`);
    const out = readFileSync(log, 'latin1');
    assert.match(out, /Running on QEMU \(i440fx\)/);
    assert.match(out, /QEMU fw_cfg DMA interface supported/);
    assert.match(out, /qemu\/e820: addr 0x0000000000000000 len 0x0000000006000000 \[RAM\]/);
    assert.match(out, /PCI: init bdf=00:01\.3 id=8086:7113/);
    assert.match(out, /ACPI: parse DSDT/);
    // SeaBIOS found the local APIC (CPUID, its ID and version): its MP table lists the processor.
    assert.doesNotMatch(out, /No apic/);
    assert.match(out, /Found 1 cpu\(s\) max supported 1 cpu\(s\)/);
    assert.match(out, /Copying MPTABLE/);
    // Boot order from -boot's default (c, d, n) reached the firmware through CMOS.
    assert.match(out, /Booting from Hard Disk/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a missing or malformed BIOS image is one line and exit 1', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tsvm-bios-'));
  try {
    const bad = join(dir, 'bad.bin');
    writeFileSync(bad, new Uint8Array(1000));
    for (const [file, message] of [[join(dir, 'none.bin'), /could not load BIOS .*none\.bin/], [bad, /BIOS .*bad\.bin' has a size of 1000 bytes/]] as const) {
      const r = spawnSync(process.execPath, [TSVM, '-bios', file, '-nographic'], { encoding: 'utf8', input: '' });
      assert.equal(r.status, 1);
      assert.match(r.stderr, message);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
