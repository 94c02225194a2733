import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildInstallerCd, bootInstalled, createDiskImage, missingInstallerTools, runInstallFlow } from '../src/guest/installer/index.js';
import { HAVE_QEMU, TSVM } from './guest-helpers.js';

const TSVM_IMG = fileURLToPath(new URL('../bin/tsvm-img.js', import.meta.url));
const tsvm = [process.execPath, TSVM];

/** The classic flow on tsvm: a fresh qcow disk made by tsvm-img, the installer CD, then the disk alone. */
async function installAndBoot(t: { skip(reason?: string): void }, acpi: boolean, check: (disk: string) => Promise<void>): Promise<void> {
  const missing = missingInstallerTools();
  if (missing.length > 0) return t.skip(`missing ${missing.join(', ')}`);
  const { iso } = await buildInstallerCd({});
  const dir = mkdtempSync(join(tmpdir(), 'tsvm-install-'));
  try {
    const disk = join(dir, 'hda.img');
    createDiskImage(disk, { size: '6G', format: 'qcow', img: [process.execPath, TSVM_IMG] });
    const r = await runInstallFlow({ machine: tsvm, iso, disk, acpi, installTimeoutMs: 300_000, bootTimeoutMs: 300_000 });
    assert.ok(r.install.ok, `installation: ${r.install.failure}\n${r.install.output.slice(-3000)}`);
    assert.ok(r.boot?.ok, `installed system: ${r.boot?.failure}\n${r.boot?.output.slice(-3000)}`);
    assert.match(r.boot!.output, /tsvm-sum-42/);
    assert.match(r.boot!.output, /GNU GRUB/, 'the installed system came up through GRUB from the disk');
    await check(disk);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('install from CD with -no-acpi onto `tsvm-img create -f qcow hda.img 6G`, boot it with -boot c; qemu-img and QEMU agree', async (t) => {
  await installAndBoot(t, false, async (disk) => {
    if (!HAVE_QEMU) return t.skip('QEMU is not installed: the qemu-img and QEMU checks did not run');
    const info = spawnSync('qemu-img', ['info', '--output=json', disk], { encoding: 'utf8' });
    assert.equal(info.status, 0, info.stderr);
    assert.equal(JSON.parse(info.stdout).format, 'qcow');
    assert.equal(JSON.parse(info.stdout)['virtual-size'], 6 * 2 ** 30);
    const raw = `${disk}.raw`;
    const convert = spawnSync('qemu-img', ['convert', '-f', 'qcow', '-O', 'raw', disk, raw], { encoding: 'utf8' });
    assert.equal(convert.status, 0, convert.stderr);
    rmSync(raw);
    const qemu = await bootInstalled({ machine: ['qemu-system-i386', '-accel', 'tcg'], iso: '', disk, bootTimeoutMs: 120_000 });
    assert.ok(qemu.ok, `QEMU booting the disk tsvm installed: ${qemu.failure}\n${qemu.output.slice(-2000)}`);
  });
});

test('the same installation and boot with ACPI', async (t) => {
  await installAndBoot(t, true, async () => {});
});
