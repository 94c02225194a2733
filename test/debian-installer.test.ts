import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { DEBIAN_INSTALLER_FIRST_SCREEN, KERNEL_FAILURE, buildDebianInstallerCd, missingInstallerTools } from '../src/guest/installer/index.js';
import { TSVM, repeatCount, runUntil } from './guest-helpers.js';

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
  let iso: string;
  try {
    iso = buildDebianInstallerCd({ onProgress: (l) => process.stderr.write(`# ${l}\n`) }).iso;
  } catch (e) {
    return t.skip(`the Debian installer CD could not be built: ${(e as Error).message}`);
  }
  const dir = mkdtempSync(join(tmpdir(), 'tsvm-di-'));
  try {
    const disk = join(dir, 'hda.img');
    spawnSync(process.execPath, [join(TSVM, '..', '..', '..', 'bin', 'tsvm-img.js'), 'create', '-f', 'qcow2', disk, '2G'], { stdio: 'ignore' });
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
