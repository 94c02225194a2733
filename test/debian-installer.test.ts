import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEBIAN_INSTALLER_FIRST_SCREEN, KERNEL_FAILURE, buildDebianInstallerCd, createDiskImage, debianInstallerVersion, missingInstallerTools } from '../src/guest/installer/index.js';
import { TSVM, repeatCount, runUntil } from './guest-helpers.js';

const TSVM_IMG = fileURLToPath(new URL('../bin/tsvm-img.js', import.meta.url));

/**
 * Debian's installer (its own kernel and initrd, from debian-installer-12-netboot-i386, booted by GRUB from a
 * CD) boots to its first screen again and again: udev probing every device (IDE disk and CD-ROM, bochs-drm on
 * the VGA, serial, i8042) once corrupted guest memory in most boots (a slab freelist, then an oops).
 * TSVM_DI_BOOTS sets how many boots (3 by default; `npm run test:long` runs more).
 */
const BOOTS = repeatCount('TSVM_DI_BOOTS', 3);

test(`Debian's installer boots to its first screen ${BOOTS} time(s) in a row with no kernel oops`, { timeout: BOOTS * 960_000 }, async (t) => {
  const missing = missingInstallerTools();
  if (missing.length) return t.skip(`needs ${missing.join(', ')}`);
  try {
    debianInstallerVersion();
  } catch (e) {
    return t.skip((e as Error).message);
  }
  // Only a package apt cannot offer skips the test: a failing build fails it.
  const iso = buildDebianInstallerCd({ onProgress: (l) => process.stderr.write(`# ${l}\n`) }).iso;
  const dir = mkdtempSync(join(tmpdir(), 'tsvm-di-'));
  try {
    const disk = join(dir, 'hda.img');
    createDiskImage(disk, { format: 'qcow2', size: '2G', img: [process.execPath, TSVM_IMG] });
    for (let boot = 1; boot <= BOOTS; boot++) {
      const r = await runUntil(process.execPath, ['--v8-pool-size=1', TSVM, '-no-acpi', '-m', '256', '-cdrom', iso, '-hda', disk, '-boot', 'd', '-nographic'],
        (text) => text.includes(DEBIAN_INSTALLER_FIRST_SCREEN) || KERNEL_FAILURE.test(text), 900_000);
      const output = r.output;
      const failure = KERNEL_FAILURE.exec(output);
      const at = failure ? output.slice(Math.max(0, failure.index - 200), failure.index + 1500) : output.slice(-1500);
      assert.equal(failure, null, `boot ${boot}: the kernel failed:\n${at}`);
      assert.ok(output.includes(DEBIAN_INSTALLER_FIRST_SCREEN), `boot ${boot}: no first screen after 15 minutes:\n${at}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
