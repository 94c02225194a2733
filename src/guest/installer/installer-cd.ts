import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { TsvmError } from '../../base/errors.js';
import { writeCpio, type CpioEntry } from '../cpio.js';
import { cacheDirectory, ensureDefaultGuest, type GuestInfo, initramfsBase, runTool } from '../default-guest.js';
import { readCpio } from './cpio-read.js';
import { patchBootCode } from './grub-boot-code.js';

/**
 * The installer CD: the stand-in for "an OS installer CD". It boots GRUB (El Torito, made by grub-mkrescue),
 * which boots the default guest's kernel with an installer initramfs (the default guest's busybox and modules). The installer partitions the first hard
 * disk (MBR, one bootable partition from 1 MiB), makes an ext2 filesystem, copies a kernel, an initramfs and
 * grub.cfg onto it, writes GRUB's boot code (boot.img into the MBR, core.img into the gap after it; both
 * prepared on the host) and powers off. The installed system boots GRUB from the disk, then the kernel, whose
 * initramfs prints `tsvm-guest: ready` on the serial port and runs a shell there.
 */

/** Bumped when what goes into the CD changes in a way the hashed inputs below do not show. */
const INSTALLER_LAYOUT_VERSION = 2;
export const GRUB_PC_DIR = '/usr/lib/grub/i386-pc';

/** Lines the installer and the installed system print on the serial port (and the VGA console). */
export const INSTALLER_DONE = 'tsvm-installer: done';
export const INSTALLER_FAILED = 'tsvm-installer: failed';
export const INSTALLED_READY = 'tsvm-guest: ready';
/** A line of /etc/tsvm-release on the installed disk (mounted read-only at /mnt by the installed system). */
export const INSTALLED_RELEASE_MARKER = 'installed-by: tsvm-installer';

/** The kernel command lines: the installer's ends with tty0 (as asked of a CD), the installed one with ttyS0 so
 * that /dev/console, and with it the shell, is the serial port. */
export const INSTALLER_CMDLINE = 'console=ttyS0 console=tty0';
export const INSTALLED_CMDLINE = 'root=/dev/sda1 console=tty0 console=ttyS0';

/** GRUB modules built into the disk's core.img (dependencies come along); nothing is loaded from the disk. */
export const CORE_MODULES = [
  'biosdisk', 'part_msdos', 'ext2', 'normal', 'linux', 'serial', 'terminal', 'echo', 'test', 'configfile',
  'boot', 'minicmd', 'ls', 'cat', 'halt', 'reboot', 'search', 'sleep',
];
export const CORE_PREFIX = '(hd0,msdos1)/boot/grub';

const GRUB_TERMINALS = `serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout_style=menu
set timeout=1
set default=0
`;

const CD_GRUB_CFG = `${GRUB_TERMINALS}
menuentry "Install the tsvm guest onto the first hard disk" {
  echo "Loading the installer..."
  linux /boot/vmlinuz ${INSTALLER_CMDLINE}
  initrd /boot/installer.img
}
`;

const DISK_GRUB_CFG = `${GRUB_TERMINALS}
menuentry "tsvm guest (installed)" {
  echo "Loading the installed system..."
  linux /boot/vmlinuz ${INSTALLED_CMDLINE}
  initrd /boot/initrd.img
}
`;

/** Shared start of both init scripts: busybox applets, pseudo filesystems, a `say` that reaches every console. */
const INIT_PRELUDE = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /mnt /sbin /usr/bin /usr/sbin /run
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
CONSOLES=
for a in $(cat /proc/cmdline); do
  case "$a" in console=*) c=\${a#console=}; CONSOLES="$CONSOLES /dev/\${c%%,*}";; esac
done
[ -n "$CONSOLES" ] || CONSOLES=/dev/console
say() { for c in $CONSOLES; do echo "$*" >"$c" 2>/dev/null; done; }
wait_block() { i=0; while [ ! -b "$1" ]; do i=$((i+1)); [ $i -gt "$2" ] && return 1; usleep 100000; done; return 0; }
for m in $(cat /etc/modules-load); do insmod /lib/modules/$m.ko 2>>/tmp/modules.log; done
`;

const INSTALLER_INIT = `${INIT_PRELUDE}
LOG=/tmp/install.log
DISK=/dev/sda
PART=/dev/sda1
note() { say "tsvm-installer: $*"; }
fail() {
  say "${INSTALLER_FAILED}: $*"
  tail -n 15 $LOG 2>/dev/null | while read -r l; do say "tsvm-installer:   $l"; done
  exec setsid sh -c 'exec sh </dev/ttyS0 >/dev/ttyS0 2>&1'
}
step() { echo "+ $*" >>$LOG; "$@" >>$LOG 2>&1; }

note "starting on kernel $(uname -r)"
wait_block $DISK 300 || fail "no hard disk ($DISK) found"
note "partitioning $DISK ($(($(cat /sys/block/sda/size) / 2048)) MiB): MBR, one bootable partition from 1 MiB"
step dd if=/dev/zero of=$DISK bs=512 count=2048 conv=fsync || fail "cannot write to $DISK"
printf 'o\\nn\\np\\n1\\n2048\\n\\na\\n1\\nw\\n' | step fdisk -u $DISK
wait_block $PART 100 || fail "the new partition $PART did not appear"
[ "$(cat /sys/block/sda/sda1/start)" = 2048 ] || fail "$PART does not start at sector 2048"
note "making an ext2 filesystem on $PART"
step mke2fs -F -i 262144 -L tsvm-root $PART || fail "mke2fs $PART"
step mount -t ext2 $PART /mnt || fail "cannot mount $PART"
note "copying the system"
step mkdir -p /mnt/boot/grub /mnt/etc || fail "mkdir"
step cp /payload/vmlinuz /payload/initrd.img /mnt/boot/ || fail "copying the kernel and initramfs"
step cp /payload/grub.cfg /mnt/boot/grub/grub.cfg || fail "copying grub.cfg"
step cp /payload/tsvm-release /mnt/etc/tsvm-release || fail "copying tsvm-release"
step umount /mnt || fail "cannot unmount $PART"
note "installing GRUB: boot.img into the MBR, core.img into sectors 1-$(($(stat -c %s /payload/core.img) / 512))"
step dd if=/payload/mbr-code.img of=$DISK bs=440 count=1 conv=notrunc,fsync || fail "writing the MBR"
step dd if=/payload/core.img of=$DISK bs=512 seek=1 conv=notrunc,fsync || fail "writing core.img"
sync
step blockdev --flushbufs $DISK
say "${INSTALLER_DONE}"
sync
poweroff -f
`;

const INSTALLED_INIT = `${INIT_PRELUDE}
wait_block /dev/sda1 100 && mount -t ext2 -o ro /dev/sda1 /mnt 2>/dev/null
say "${INSTALLED_READY}"
export PS1='tsvm# '
exec setsid cttyhack sh
`;

export interface InstallerCd {
  /** The ISO image (in the cache). */
  iso: string;
  /** The hash of everything that went into it (part of the file name). */
  hash: string;
  /** The default guest it was made from. */
  guest: GuestInfo;
}

export interface BuildInstallerOptions {
  onProgress?: (line: string) => void;
  /** Build again even when the ISO is cached. */
  rebuild?: boolean;
}

/** Host programs and files the build needs; empty when all are there. */
export function missingInstallerTools(): string[] {
  const missing: string[] = [];
  for (const tool of ['grub-mkrescue', 'grub-mkimage', 'xorriso']) {
    if (spawnSync('which', [tool]).status !== 0) missing.push(`${tool}${tool === 'xorriso' ? '' : ' (grub-common)'}`);
  }
  for (const f of ['boot.img', 'kernel.img', 'cdboot.img', 'ext2.mod']) {
    if (!existsSync(join(GRUB_PC_DIR, f))) {
      missing.push(`${GRUB_PC_DIR}/${f} (grub-pc-bin)`);
      break;
    }
  }
  return missing;
}

/** The ISO's path for a hash. */
function isoPathFor(hash: string): string {
  return join(dirname(cacheDirectory()), `installer-${hash}.iso`);
}

/** The default guest's kernel, and the modules of its initramfs in their load order (IDE, sd, ext4 and crc32c among them). */
interface KernelFiles {
  kernel: Uint8Array;
  busybox: Uint8Array;
  modules: { name: string; data: Uint8Array }[];
}

function defaultGuestFiles(guest: GuestInfo): KernelFiles {
  const entries = readCpio(readFileSync(guest.initrd));
  const file = (path: string) => {
    const e = entries.find((x) => x.path === path);
    if (!e) throw new TsvmError(`the default guest's initramfs has no ${path} (rebuild it: tsvm-guest build --rebuild)`);
    return e.data;
  };
  const order = new TextDecoder().decode(file('etc/modules-load')).split('\n').filter((m) => m !== '');
  return { kernel: readFileSync(guest.kernel), busybox: file('bin/busybox'), modules: order.map((name) => ({ name, data: file(`lib/modules/${name}.ko`) })) };
}

function grubVersion(): string {
  return runTool('grub-mkimage', ['--version']).trim();
}

function inputsHash(guest: GuestInfo): string {
  const h = createHash('sha256');
  h.update(`tsvm-installer v${INSTALLER_LAYOUT_VERSION}\n${grubVersion()}\n${CORE_MODULES.join(',')}\n${CORE_PREFIX}\n${guest.kernelPackage}\n`);
  for (const text of [CD_GRUB_CFG, DISK_GRUB_CFG, INSTALLER_INIT, INSTALLED_INIT]) h.update(text);
  for (const f of [guest.kernel, guest.initrd, join(GRUB_PC_DIR, 'boot.img'), join(GRUB_PC_DIR, 'kernel.img')]) h.update(readFileSync(f));
  return h.digest('hex').slice(0, 16);
}

/**
 * Returns the installer CD, building it into the cache (`$XDG_CACHE_HOME/tsvm/installer-<hash>.iso`) when it is
 * not there yet; builds the default guest first when needed.
 */
export async function buildInstallerCd(options: BuildInstallerOptions = {}): Promise<InstallerCd> {
  const onProgress = options.onProgress ?? (() => {});
  const missing = missingInstallerTools();
  if (missing.length) throw new TsvmError(`building the installer CD needs ${missing.join(', ')} (apt-get install grub-pc-bin grub-common xorriso mtools)`);
  const guest = await ensureDefaultGuest({ onProgress });
  const hash = inputsHash(guest);
  const iso = isoPathFor(hash);
  if (!options.rebuild && existsSync(iso) && statSync(iso).size > 0) return { iso, hash, guest };

  mkdirSync(dirname(iso), { recursive: true });
  const work = mkdtempSync(join(dirname(iso), '.installer-build-'));
  try {
    const enc = new TextEncoder();
    onProgress('making GRUB core.img for the disk (grub-mkimage)');
    const coreFile = join(work, 'core.img');
    runTool('grub-mkimage', ['-O', 'i386-pc', '-d', GRUB_PC_DIR, '-o', coreFile, '-p', CORE_PREFIX, ...CORE_MODULES]);
    const boot = patchBootCode(readFileSync(join(GRUB_PC_DIR, 'boot.img')), readFileSync(coreFile));

    const kernel = defaultGuestFiles(guest);
    onProgress('writing the installed system initramfs');
    const base = initramfsBase(kernel.busybox, kernel.modules);
    const installed = writeCpio([...base, { kind: 'file', path: 'init', data: enc.encode(INSTALLED_INIT), mode: 0o755 }]);
    const release = releaseText(hash, guest);

    onProgress('writing the installer initramfs');
    const payload = (name: string, data: Uint8Array): CpioEntry => ({ kind: 'file', path: `payload/${name}`, data });
    const installer = writeCpio([
      ...base,
      { kind: 'file', path: 'init', data: enc.encode(INSTALLER_INIT), mode: 0o755 },
      { kind: 'dir', path: 'payload' },
      payload('vmlinuz', kernel.kernel),
      payload('initrd.img', installed),
      payload('grub.cfg', enc.encode(DISK_GRUB_CFG)),
      payload('mbr-code.img', boot.mbrCode),
      payload('core.img', boot.core),
      payload('tsvm-release', enc.encode(release)),
    ]);

    const tree = join(work, 'cd');
    mkdirSync(join(tree, 'boot', 'grub'), { recursive: true });
    writeFileSync(join(tree, 'boot', 'vmlinuz'), kernel.kernel);
    writeFileSync(join(tree, 'boot', 'installer.img'), installer);
    writeFileSync(join(tree, 'boot', 'grub', 'grub.cfg'), CD_GRUB_CFG);
    writeFileSync(join(tree, 'tsvm-release'), release);

    onProgress('making the ISO (grub-mkrescue, BIOS El Torito)');
    const out = join(work, 'installer.iso');
    runTool('grub-mkrescue', ['-d', GRUB_PC_DIR, '--locales=', '--fonts=', '--themes=', '--product-name=tsvm-installer',
      '-o', out, tree, '--', '-volid', 'TSVM_INSTALLER']);
    renameSync(out, iso);
    onProgress(`installer CD ready: ${iso}`);
    return { iso, hash, guest };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** /etc/tsvm-release of the installed system (also on the CD). */
function releaseText(hash: string, guest: GuestInfo): string {
  return `tsvm guest\n${INSTALLED_RELEASE_MARKER} ${hash}\nkernel: ${guest.kernelVersion}\n${guest.busyboxPackage}\n`;
}
