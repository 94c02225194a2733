import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, readSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { writeCpio } from '../cpio.js';
import { readCpio } from './cpio-read.js';
import { BOOT_CODE_SIZE, CORE_LOAD_SEGMENT, patchBootCode, readBootCode } from './grub-boot-code.js';
import { bootInstalled, createDiskImage, runInstaller, type InstallFlowOptions } from './install-flow.js';
import { buildInstallerCd, CORE_MODULES, CORE_PREFIX, INSTALLED_RELEASE_MARKER, missingInstallerTools } from './installer-cd.js';

const has = (cmd: string) => spawnSync('which', [cmd]).status === 0;
const GRUB_PC = '/usr/lib/grub/i386-pc';

test('readCpio reads what writeCpio writes', () => {
  const data = new Uint8Array([1, 2, 3, 4, 5]);
  const archive = writeCpio([
    { kind: 'dir', path: 'etc' },
    { kind: 'file', path: 'etc/x', data, mode: 0o600 },
    { kind: 'symlink', path: 'sh', target: 'busybox' },
  ]);
  const members = readCpio(archive);
  assert.deepEqual(members.map((m) => m.path), ['etc', 'etc/x', 'sh']);
  assert.deepEqual([...members[1].data], [...data]);
  assert.equal(members[1].mode, 0o100600);
  assert.equal(new TextDecoder().decode(members[2].data), 'busybox');
  assert.throws(() => readCpio(new Uint8Array(200)), /not a newc/);
});

test('patchBootCode fills in what grub-bios-setup would (synthetic images)', () => {
  const boot = new Uint8Array(512).fill(0xcc);
  boot[0x66] = 0xeb;
  boot[0x67] = 0x05;
  const core = new Uint8Array(512 * 10 + 100).fill(0x11);
  const p = patchBootCode(boot, core, 1, 2048);
  assert.equal(p.mbrCode.length, BOOT_CODE_SIZE);
  assert.equal(p.coreSectors, 11);
  assert.equal(p.core.length, 11 * 512);
  const r = readBootCode(p.mbrCode, p.core.subarray(0, 512));
  assert.deepEqual(r, { kernelSector: 1, bootDrive: 0xff, driveCheckSkipped: true, blockStart: 2, blockCount: 10, blockSegment: CORE_LOAD_SEGMENT });
  // The entry before the first one ends the list.
  assert.equal(p.core[0x1f0] | (p.core[0x1f1] << 8), 0);
  // Everything else is untouched; the inputs are not modified.
  assert.equal(p.core[0x100], 0x11);
  assert.equal(p.core[511 * 2], 0x11);
  assert.equal(boot[0x66], 0xeb);
  assert.throws(() => patchBootCode(boot, new Uint8Array(512 * 2048)), /does not fit/);
  assert.throws(() => patchBootCode(new Uint8Array(440), core), /one sector/);
});

test('patchBootCode agrees with the blocklist grub-mkimage writes for core.img at sector 1', (t) => {
  if (!has('grub-mkimage') || !existsSync(join(GRUB_PC, 'boot.img'))) return t.skip('grub-mkimage / grub-pc-bin not installed');
  const dir = mkdtempSync(join(tmpdir(), 'tsvm-grub-'));
  try {
    const out = join(dir, 'core.img');
    const r = spawnSync('grub-mkimage', ['-O', 'i386-pc', '-d', GRUB_PC, '-o', out, '-p', CORE_PREFIX, ...CORE_MODULES]);
    assert.equal(r.status, 0, String(r.stderr));
    const core = readFileSync(out);
    const patched = patchBootCode(readFileSync(join(GRUB_PC, 'boot.img')), core);
    // grub-mkimage's default blocklist already describes "the rest starts at LBA 2": ours must match it byte for byte.
    assert.deepEqual([...patched.core.subarray(0x1e8, 0x200)], [...core.subarray(0x1e8, 0x200)]);
    assert.ok(patched.coreSectors < 2047, `core.img is ${patched.coreSectors} sectors`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Reads `length` bytes at `offset` of a raw image. */
function readAt(file: string, offset: number, length: number): Uint8Array {
  const fd = openSync(file, 'r');
  try {
    const buf = new Uint8Array(length);
    readSync(fd, buf, 0, length, offset);
    return buf;
  } finally {
    closeSync(fd);
  }
}

test('the installer CD installs onto a qcow disk which then boots (QEMU, TCG)', { timeout: 240_000 }, async (t) => {
  const missing = [...missingInstallerTools(), ...['qemu-system-i386', 'qemu-img'].filter((c) => !has(c))];
  if (missing.length) return t.skip(`missing: ${missing.join(', ')}`);
  let cd;
  try {
    cd = await buildInstallerCd({ onProgress: (l) => process.stderr.write(`# tsvm-guest: ${l}\n`) });
  } catch (e) {
    return t.skip(`the installer CD could not be built: ${(e as Error).message}`);
  }
  const dir = mkdtempSync(join(tmpdir(), 'tsvm-install-'));
  try {
    const disk = join(dir, 'hda.img');
    createDiskImage(disk, { size: '6G', format: 'qcow' });
    const flow: InstallFlowOptions = { machine: ['qemu-system-i386', '-accel', 'tcg'], iso: cd.iso, disk, installTimeoutMs: 100_000, bootTimeoutMs: 90_000 };

    const install = await runInstaller(flow);
    t.diagnostic(`install run: ${install.ms} ms`);
    assert.ok(install.ok, `${install.failure}\n${install.output.slice(-3000)}`);
    assert.match(install.output, /GNU GRUB/);

    const info = spawnSync('qemu-img', ['info', '--output=json', disk], { encoding: 'utf8' });
    assert.equal(JSON.parse(info.stdout).format, 'qcow');

    // The disk layout: GRUB's MBR code, one bootable Linux partition at 1 MiB, core.img in the gap, ext2.
    const raw = join(dir, 'hda.raw');
    assert.equal(spawnSync('qemu-img', ['convert', '-O', 'raw', disk, raw]).status, 0);
    const head = readAt(raw, 0, 2048 * 512);
    assert.equal(head[510] | (head[511] << 8), 0xaa55);
    const pte = head.subarray(0x1be, 0x1ce);
    const dv = new DataView(pte.buffer, pte.byteOffset, 16);
    assert.equal(pte[0], 0x80, 'partition 1 is bootable');
    assert.equal(pte[4], 0x83, 'partition 1 is Linux');
    assert.equal(dv.getUint32(8, true), 2048, 'partition 1 starts at 1 MiB');
    assert.equal(dv.getUint32(12, true), 6 * 2 ** 21 - 2048, 'partition 1 fills the disk');
    const boot = readBootCode(head.subarray(0, 512), head.subarray(512, 1024));
    assert.equal(boot.kernelSector, 1);
    assert.equal(boot.blockStart, 2);
    assert.ok(boot.blockCount > 10);
    assert.deepEqual([...head.subarray(0, BOOT_CODE_SIZE)].slice(0x68), [...readFileSync(join(GRUB_PC, 'boot.img')).subarray(0x68, BOOT_CODE_SIZE)]);
    const sb = readAt(raw, 2048 * 512 + 1024, 1024);
    assert.equal(sb[56] | (sb[57] << 8), 0xef53, 'ext2 superblock magic');
    rmSync(raw);

    const booted = await bootInstalled(flow);
    t.diagnostic(`boot run: ${booted.ms} ms`);
    assert.ok(booted.ok, `${booted.failure}\n${booted.output.slice(-3000)}`);
    assert.match(booted.output, /tsvm-sum-42/);
    assert.ok(booted.output.includes(`${INSTALLED_RELEASE_MARKER} ${cd.hash}`), 'the installed system sees the release file on its disk');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
