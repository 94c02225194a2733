import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Machine, defaultMachineConfig } from '../src/api/index.js';
import { buildInstallerCd, createDiskImage, missingInstallerTools, runInstaller } from '../src/guest/installer/index.js';
import { nodeScriptCommand } from './boot-peers.js';
import { QemuScreen } from './qemu-screen.js';

/**
 * Firmware boot benchmark, tsvm against `qemu-system-i386 -accel tcg -M pc` from one run: power-on through
 * SeaBIOS and the VGA BIOS, El Torito boot of Debian's GRUB rescue CD, to GRUB's menu on the VGA text screen;
 * and the project's installer CD (-no-acpi -cdrom -hda -boot d) to its first line and to the end of the
 * installation onto a fresh qcow disk.
 */
const GRUB_RESCUE_CD = '/usr/lib/grub-rescue/grub-rescue-cdrom.iso';
const GRUB_MENU = /GNU GRUB\s+version/;
const TIMEOUT_MS = 120_000;

if (!existsSync(GRUB_RESCUE_CD) || spawnSync('qemu-system-i386', ['--version']).status !== 0) {
  console.log('\nFirmware boot: skipped (needs grub-rescue-pc and qemu-system-x86)');
} else {
  const rows: [string, number | null, number | null][] = [];
  const qemu = new QemuScreen(['-accel', 'tcg', '-M', 'pc', '-m', '256', '-cdrom', GRUB_RESCUE_CD, '-boot', 'd']);
  const qemuSeconds = await qemu.waitForScreen(GRUB_MENU, TIMEOUT_MS).finally(() => qemu.close());
  const tsvmSeconds = await tsvmToScreen(GRUB_MENU);
  rows.push(['BIOS power-on to the GRUB menu (grub-rescue-cdrom.iso, -cdrom -boot d)', tsvmSeconds, qemuSeconds]);
  if (missingInstallerTools().length === 0) {
    const { iso } = await buildInstallerCd({});
    const tsvm = await timeInstaller(nodeScriptCommand(fileURLToPath(new URL('../src/cli/tsvm.js', import.meta.url))), iso);
    const qemu = await timeInstaller(['qemu-system-i386', '-accel', 'tcg', '-M', 'pc'], iso);
    rows.push(['installer CD to its ready line (tsvm-installer: starting)', tsvm.ready, qemu.ready]);
    rows.push(['installer CD to the end of the installation (tsvm-installer: done)', tsvm.done, qemu.done]);
  }
  const s = (v: number | null) => (v === null ? 'timeout' : `${v.toFixed(2)} s`);
  console.log('\nFirmware boot: tsvm against qemu-system-i386 -accel tcg -M pc, -m 256\n');
  console.log('| from power-on | tsvm | QEMU | tsvm / QEMU |');
  console.log('|---|---|---|---|');
  for (const [name, ours, theirs] of rows) {
    console.log(`| ${name} | ${s(ours)} | ${s(theirs)} | ${ours !== null && theirs !== null ? (ours / theirs).toFixed(2) + 'x' : 'n/a'} |`);
  }
}

/** Seconds from start to the installer's first line and to its last, on a fresh 6 GiB qcow disk. */
async function timeInstaller(machine: string[], iso: string): Promise<{ ready: number | null; done: number | null }> {
  const dir = mkdtempSync(join(tmpdir(), 'tsvm-bench-install-'));
  try {
    const disk = join(dir, 'hda.img');
    createDiskImage(disk, { size: '6G', format: 'qcow' });
    const t0 = performance.now();
    let ready: number | null = null;
    let output = '';
    const run = await runInstaller({
      machine, iso, disk, installTimeoutMs: TIMEOUT_MS * 5,
      onOutput: (_phase, text) => {
        output += text;
        if (ready === null && output.includes('tsvm-installer: starting')) ready = (performance.now() - t0) / 1000;
      },
    });
    return { ready, done: run.ok ? run.ms / 1000 : null };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function tsvmToScreen(pattern: RegExp): Promise<number | null> {
  const t0 = performance.now();
  const config = defaultMachineConfig();
  config.memoryBytes = 256 * 2 ** 20;
  config.serials = [{ kind: 'none' }];
  config.drives = [{ file: GRUB_RESCUE_CD, interface: 'ide', media: 'cdrom', index: 2, readOnly: true }];
  config.boot.order = 'd';
  const vm = await Machine.create(config);
  vm.start();
  try {
    while (performance.now() - t0 < TIMEOUT_MS) {
      if (pattern.test(vm.textScreen().join('\n'))) return (performance.now() - t0) / 1000;
      await new Promise((r) => setTimeout(r, 20));
    }
    return null;
  } finally {
    await vm.quit();
  }
}
