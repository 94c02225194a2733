import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { TsvmError } from '../base/errors.js';
import { writeCpio, type CpioEntry } from './cpio.js';
import { resolveModules } from './kernel-modules.js';

/** Where the default guest lives, and how to boot it. */
export interface GuestInfo {
  kernel: string;
  initrd: string;
  cmdline: string;
  kernelVersion: string;
  kernelPackage: string;
  busyboxPackage: string;
}

/** The command line the default guest boots with. */
export const DEFAULT_GUEST_CMDLINE = 'console=ttyS0';
/** Bumped when what goes into the guest changes, so that old caches are rebuilt. */
const GUEST_LAYOUT_VERSION = 4;

/** Modules the later devices need (IDE, CD-ROM, virtio, ext4, the e1000); their dependencies come along. */
const GUEST_MODULES = [
  'virtio', 'virtio_ring', 'virtio_pci', 'virtio_blk', 'virtio_net', 'virtio_console', 'virtio_rng',
  'ata_piix', 'sd_mod', 'sr_mod', 'ext4', 'crc32c_generic', 'e1000',
];

/** What udhcpc runs on a lease: address, default route and name servers on the interface. */
const UDHCPC_SCRIPT = `#!/bin/sh
case "$1" in
deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
bound|renew)
  ip addr flush dev "$interface"
  ip addr add "$ip/\${mask:-24}" \${broadcast:+broadcast "$broadcast"} dev "$interface"
  for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
  if [ -n "$dns" ]; then : > /etc/resolv.conf; for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done; fi
  echo "tsvm-guest: $interface has $ip" > /dev/console ;;
esac
`;

const INIT_SCRIPT = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /sbin /usr/bin /usr/sbin /run
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /etc/modules-load); do insmod /lib/modules/$m.ko 2>/dev/null; done
ip link set lo up
# With a network card, DHCP (a short first try, then in the background until a lease comes).
if [ -e /sys/class/net/eth0 ]; then udhcpc -i eth0 -s /etc/udhcpc.script -t 2 -T 1 -b -q >/dev/null 2>&1; fi
echo "tsvm-guest: ready"
if grep -q 'tsvm.bench=1' /proc/cmdline; then poweroff -f; fi
export PS1='tsvm# '
exec setsid cttyhack sh
`;

export function cacheDirectory(): string {
  const base = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(base, 'tsvm', 'guest');
}

/** Runs a build tool; its failure is one line: the command and the last line it printed. */
export function runTool(cmd: string, args: string[], cwd?: string): string {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8' });
  if (r.error) throw new TsvmError(`${cmd} could not run: ${r.error.message}`);
  if (r.status !== 0) throw new TsvmError(`${cmd} ${args.join(' ')} failed: ${(r.stderr || r.stdout || '').trim().split('\n').pop()}`);
  return r.stdout;
}

/** The versioned kernel package the linux-image-686 meta package points to. */
function resolveKernelPackage(): string {
  const out = runTool('apt-cache', ['depends', 'linux-image-686:i386']);
  const m = /linux-image-\d[^\s:]*-686(?!-)/.exec(out);
  if (!m) throw new TsvmError('could not resolve linux-image-686 to a kernel package (is the i386 architecture enabled in apt?)');
  return m[0];
}

function ensureI386Architecture(onProgress: (line: string) => void): void {
  const foreign = runTool('dpkg', ['--print-foreign-architectures']);
  const known = spawnSync('apt-cache', ['show', 'busybox-static:i386'], { encoding: 'utf8' }).status === 0;
  if (foreign.split('\n').includes('i386') && known) return;
  if (process.getuid?.() !== 0) throw new TsvmError('building the default guest needs the i386 architecture in apt: run as root once, or dpkg --add-architecture i386 && apt-get update');
  onProgress('enabling the i386 architecture in apt');
  runTool('dpkg', ['--add-architecture', 'i386']);
  // The i386 security index may fail while the main archive works: ignore the exit status.
  spawnSync('apt-get', ['update', '-q'], { stdio: 'ignore' });
}

function guestDirFor(kernelPackage: string): string {
  return join(cacheDirectory(), `${kernelPackage}-v${GUEST_LAYOUT_VERSION}`);
}

/** The cached guest if it is complete, without building anything. */
export function findDefaultGuest(): GuestInfo | null {
  const root = cacheDirectory();
  if (!existsSync(root)) return null;
  for (const d of readdirSync(root).sort().reverse()) {
    if (!d.endsWith(`-v${GUEST_LAYOUT_VERSION}`)) continue;
    const infoPath = join(root, d, 'info.json');
    if (existsSync(infoPath)) {
      const info = JSON.parse(readFileSync(infoPath, 'utf8')) as GuestInfo;
      if (existsSync(info.kernel) && existsSync(info.initrd)) return info;
    }
  }
  return null;
}

/** Returns the default guest, building it (download, unpack, initramfs) when it is not cached yet. */
export async function ensureDefaultGuest(options: { onProgress?: (line: string) => void; rebuild?: boolean } = {}): Promise<GuestInfo> {
  const onProgress = options.onProgress ?? (() => {});
  if (!options.rebuild) {
    const cached = findDefaultGuest();
    if (cached) return cached;
  }
  return buildDefaultGuest(onProgress);
}

function buildDefaultGuest(onProgress: (line: string) => void): GuestInfo {
  ensureI386Architecture(onProgress);
  const kernelPackage = resolveKernelPackage();
  const dir = guestDirFor(kernelPackage);
  mkdirSync(cacheDirectory(), { recursive: true });
  const work = mkdtempSync(join(cacheDirectory(), '.build-'));
  try {
    onProgress(`downloading ${kernelPackage} and busybox-static (i386)`);
    runTool('apt-get', ['download', '-q', `${kernelPackage}:i386`, 'busybox-static:i386'], work);
    const debs = readdirSync(work).filter((f) => f.endsWith('.deb'));
    const root = join(work, 'root');
    mkdirSync(root);
    for (const deb of debs) {
      onProgress(`unpacking ${deb}`);
      runTool('dpkg-deb', ['-x', join(work, deb), root]);
    }
    const version = readdirSync(join(root, 'lib', 'modules'))[0];
    const busyboxVersion = debs.find((d) => d.startsWith('busybox'))?.split('_')[1]?.replace('%3a', ':') ?? '';
    onProgress(`writing the initramfs (kernel ${version})`);
    const modules = resolveModules(join(root, 'lib', 'modules', version), GUEST_MODULES);
    const entries = [
      ...initramfsBase(readFileSync(join(root, 'bin', 'busybox')), modules.map((m) => ({ name: m.name, data: readFileSync(m.path) }))),
      { kind: 'file', path: 'init', data: new TextEncoder().encode(INIT_SCRIPT), mode: 0o755 } as CpioEntry,
      { kind: 'file', path: 'etc/udhcpc.script', data: new TextEncoder().encode(UDHCPC_SCRIPT), mode: 0o755 } as CpioEntry,
    ];
    const out = join(work, 'out');
    mkdirSync(out);
    execFileSync('cp', [join(root, 'boot', `vmlinuz-${version}`), join(out, 'vmlinuz')]);
    writeFileSync(join(out, 'initrd.img'), writeCpio(entries));
    const info: GuestInfo = {
      kernel: join(dir, 'vmlinuz'),
      initrd: join(dir, 'initrd.img'),
      cmdline: DEFAULT_GUEST_CMDLINE,
      kernelVersion: version,
      kernelPackage,
      busyboxPackage: `busybox-static ${busyboxVersion}`,
    };
    writeFileSync(join(out, 'info.json'), JSON.stringify(info, null, 2) + '\n');
    rmSync(dir, { recursive: true, force: true });
    renameSync(out, dir);
    onProgress(`default guest ready in ${dir}`);
    return info;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * What every initramfs tsvm builds starts from: the directories, /dev/console, busybox as /bin/sh, and kernel
 * modules under lib/modules with their load order in etc/modules-load. The caller adds `init`.
 */
export function initramfsBase(busybox: Uint8Array, modules: { name: string; data: Uint8Array }[]): CpioEntry[] {
  const entries: CpioEntry[] = [
    ...['bin', 'dev'].map((path): CpioEntry => ({ kind: 'dir', path })),
    { kind: 'chardev', path: 'dev/console', major: 5, minor: 1 },
    ...['etc', 'lib', 'lib/modules', 'proc', 'sys', 'mnt', 'root'].map((path): CpioEntry => ({ kind: 'dir', path })),
    { kind: 'file', path: 'bin/busybox', data: busybox, mode: 0o755 },
    { kind: 'symlink', path: 'bin/sh', target: 'busybox' },
    { kind: 'file', path: 'etc/modules-load', data: new TextEncoder().encode(modules.map((m) => m.name).join('\n') + '\n') },
  ];
  for (const m of modules) entries.push({ kind: 'file', path: `lib/modules/${m.name}.ko`, data: m.data });
  return entries;
}
