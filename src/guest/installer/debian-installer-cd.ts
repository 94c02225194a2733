import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, statSync, writeFileSync, copyFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { TsvmError } from '../../base/errors.js';
import { cacheDirectory, runTool } from '../default-guest.js';
import { GRUB_PC_DIR, missingInstallerTools } from './installer-cd.js';

/**
 * A CD that boots Debian's own installer (debian-installer 12, i386): GRUB (grub-mkrescue) with Debian's
 * installer kernel and initrd from the package debian-installer-12-netboot-i386 (architecture all). Its
 * udev probing of every device, module loading and the bochs-drm framebuffer are a heavier workload than
 * the default guest; booting it repeatedly is how guest memory corruption showed up.
 */

export const DEBIAN_INSTALLER_PACKAGE = 'debian-installer-12-netboot-i386';
const IMAGE_DIR = 'usr/lib/debian-installer/images/12/i386/text/debian-installer/i386';
/** Bumped when what goes into the CD changes. */
const LAYOUT_VERSION = 1;

/**
 * The installer's first screen on the serial console (console=ttyS0): its newt UI's help line, shown under
 * every dialog (with 256 MiB, the first dialog is "Low memory mode").
 */
export const DEBIAN_INSTALLER_FIRST_SCREEN = '<Tab> moves; <Space> selects; <Enter> activates buttons';
/** Kernel lines that mean the boot went wrong. */
export const KERNEL_FAILURE = /BUG: |Oops: |Kernel panic|general protection fault|segfault at|invalid opcode: /;

export interface DebianInstallerCd {
  iso: string;
  /** The package version the kernel and initrd came from. */
  version: string;
}

/** The installer package's version apt would download; throws when apt knows none. */
export function debianInstallerVersion(): string {
  const out = spawnSync('apt-cache', ['policy', DEBIAN_INSTALLER_PACKAGE], { encoding: 'utf8' }).stdout ?? '';
  const version = /Candidate:\s*(\S+)/.exec(out)?.[1];
  if (!version || version === '(none)') throw new TsvmError(`apt knows no ${DEBIAN_INSTALLER_PACKAGE} (apt-get update?)`);
  return version;
}

/**
 * Returns the Debian installer CD, building it into the cache (`$XDG_CACHE_HOME/tsvm/debian-installer-<version>.iso`)
 * when it is not there: apt-get download, dpkg-deb -x, grub-mkrescue. `append` is added to the kernel command line.
 */
export function buildDebianInstallerCd(options: { append?: string; onProgress?: (line: string) => void } = {}): DebianInstallerCd {
  const onProgress = options.onProgress ?? (() => {});
  const missing = missingInstallerTools();
  if (missing.length) throw new TsvmError(`building the Debian installer CD needs ${missing.join(', ')}`);
  const version = debianInstallerVersion();
  const append = options.append ?? 'console=ttyS0';
  const name = `debian-installer-${version}-${Buffer.from(append).toString('hex').slice(0, 24)}-v${LAYOUT_VERSION}.iso`.replace(/[^\w.+-]/g, '_');
  const iso = join(dirname(cacheDirectory()), name);
  if (existsSync(iso) && statSync(iso).size > 0) return { iso, version };

  mkdirSync(dirname(iso), { recursive: true });
  const work = mkdtempSync(join(dirname(iso), '.debian-installer-build-'));
  try {
    onProgress(`downloading ${DEBIAN_INSTALLER_PACKAGE} ${version}`);
    runTool('apt-get', ['download', '-q', `${DEBIAN_INSTALLER_PACKAGE}=${version}`], work);
    const deb = readdirSync(work).find((f) => f.endsWith('.deb'));
    if (!deb) throw new TsvmError(`apt-get download left no ${DEBIAN_INSTALLER_PACKAGE} package`);
    const root = join(work, 'root');
    runTool('dpkg-deb', ['-x', join(work, deb), root]);
    const tree = join(work, 'cd');
    mkdirSync(join(tree, 'boot', 'grub'), { recursive: true });
    for (const f of ['linux', 'initrd.gz']) {
      const from = join(root, IMAGE_DIR, f);
      if (!existsSync(from)) throw new TsvmError(`${DEBIAN_INSTALLER_PACKAGE} has no ${IMAGE_DIR}/${f}`);
      copyFileSync(from, join(tree, 'boot', f));
    }
    writeFileSync(join(tree, 'boot', 'grub', 'grub.cfg'),
      `set timeout=0\nset default=0\nmenuentry "Debian installer" {\n  linux /boot/linux ${append}\n  initrd /boot/initrd.gz\n}\n`);
    onProgress('making the ISO (grub-mkrescue)');
    const out = join(work, 'di.iso');
    runTool('grub-mkrescue', ['-d', GRUB_PC_DIR, '--locales=', '--fonts=', '--themes=', '-o', out, tree]);
    renameSync(out, iso);
    onProgress(`Debian installer CD ready: ${iso}`);
    return { iso, version };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
