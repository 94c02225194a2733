import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { Machine } from '../src/api/machine.js';
import { createImage } from '../src/block/index.js';
import { parseTsvmArgs } from '../src/cli/tsvm-options.js';
import { type CpioEntry, writeCpio } from '../src/guest/cpio.js';
import { KERNEL_FAILURE } from '../src/guest/installer/index.js';
import { defaultGuestOrNull } from './guest-helpers.js';

/**
 * The default guest on virtio devices: an ext4 file system made in the guest on a virtio disk (a qcow2 from
 * tsvm-img create), found by the host in the image; the image boots again read-only and under -snapshot;
 * /dev/hwrng, a shell on the virtio console, the balloon giving memory back to the host; and a guest script
 * that drives the entropy device itself (busybox devmem) with a malformed descriptor chain: the device needs a
 * reset, the VM goes on, and after the reset the device works again, also for Linux's driver.
 */
const BOOT_TIMEOUT_MS = 600_000;
const HAVE = (tool: string) => spawnSync('which', [tool]).status === 0;
const PATTERN = Buffer.from('tsvm-virtio-blk\n'.repeat(200_000));
const RAM_MIB = 256;

/** Debian's i386 mke2fs with its libraries (libe2p is in libext2fs2 on Debian 12), as an initramfs archive to append to the default guest's. */
function e2fsprogsCpio(): Uint8Array {
  const cache = join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'tsvm', 'e2fsprogs-i386');
  const root = join(cache, 'root');
  if (!existsSync(join(root, 'sbin', 'mke2fs'))) {
    mkdirSync(cache, { recursive: true });
    const packages = ['e2fsprogs', 'libext2fs2', 'libcom-err2', 'libblkid1', 'libuuid1', 'libc6'].map((p) => `${p}:i386`);
    const r = spawnSync('apt-get', ['download', '-q', ...packages], { cwd: cache, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`apt-get download failed: ${r.stderr.trim().split('\n').pop()}`);
    for (const deb of readdirSync(cache).filter((f) => f.endsWith('.deb'))) spawnSync('dpkg-deb', ['-x', join(cache, deb), root]);
  }
  const file = (path: string, mode = 0o644): CpioEntry => ({ kind: 'file', path, data: readFileSync(realpathSync(join(root, path))), mode });
  const libs = ['libext2fs.so.2', 'libcom_err.so.2', 'libblkid.so.1', 'libuuid.so.1', 'libe2p.so.2', 'libc.so.6'];
  return writeCpio([
    { kind: 'dir', path: 'sbin' },
    { kind: 'dir', path: 'lib/i386-linux-gnu' },
    file('sbin/mke2fs', 0o755),
    file('lib/ld-linux.so.2', 0o755),
    ...libs.map((l) => file(`lib/i386-linux-gnu/${l}`)),
  ]);
}

/** The guest's console output, collected; waits for lines. */
class Console {
  text = '';
  constructor(readonly stream: Duplex) {
    stream.on('data', (d: Buffer) => (this.text += d.toString('latin1').replace(/\r/g, '')));
  }

  send(script: string): void {
    this.stream.write(script);
  }

  /** Waits until `re` matches the output after `from` (an index into it). */
  async wait(re: RegExp, timeoutMs = BOOT_TIMEOUT_MS, from = 0): Promise<RegExpMatchArray> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const m = this.text.slice(from).match(re);
      if (m) return m;
      const failure = KERNEL_FAILURE.exec(this.text);
      if (failure) assert.fail(this.text.slice(Math.max(0, failure.index - 300), failure.index + 1500));
      if (Date.now() > end) assert.fail(`no ${re} in the guest output:\n${this.text.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

async function boot(args: string[], chardevs: string[] = []): Promise<{ vm: Machine; serial: Console; chardevs: Map<string, Console> }> {
  const { config } = parseTsvmArgs(args);
  config.serials = [{ kind: 'api' }];
  for (const id of chardevs) config.chardevs![id] = { kind: 'api' };
  const vm = await Machine.create(config);
  const serial = new Console(vm.console!);
  const consoles = new Map(chardevs.map((id) => [id, new Console(vm.chardev(id)!)]));
  vm.start();
  await serial.wait(/tsvm-guest: ready/);
  return { vm, serial, chardevs: consoles };
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

test('virtio: ext4 on a virtio qcow2 disk, hwrng, virtio console, balloon; the image read-only and under -snapshot; a malformed chain', { timeout: 3 * BOOT_TIMEOUT_MS }, async (t) => {
  const { guest, reason } = await defaultGuestOrNull();
  if (!guest) return t.skip(reason);
  if (!HAVE('debugfs')) return t.skip('debugfs (e2fsprogs) is not installed');
  let extra: Uint8Array;
  try {
    extra = e2fsprogsCpio();
  } catch (e) {
    return t.skip(`Debian's i386 e2fsprogs could not be had: ${(e as Error).message}`);
  }
  const dir = mkdtempSync(join(tmpdir(), 'tsvm-virtio-'));
  try {
    const initrd = join(dir, 'initrd.img');
    writeFileSync(initrd, Buffer.concat([readFileSync(guest.initrd), extra]));
    const disk = join(dir, 'disk.qcow2');
    await createImage(disk, 'qcow2', 64 * 2 ** 20);
    const base = ['-m', String(RAM_MIB), '-kernel', guest.kernel, '-initrd', initrd, '-append', guest.cmdline];

    // Boot 1: make the file system, write, sync, power off; entropy, console and balloon on the way.
    const first = await boot([...base,
      '-drive', `file=${disk},format=qcow2,if=none,id=d0,cache=writeback,discard=unmap`, '-device', 'virtio-blk-pci,drive=d0',
      '-device', 'virtio-rng-pci', '-device', 'virtio-balloon-pci',
      '-device', 'virtio-serial-pci', '-chardev', 'null,id=con', '-device', 'virtconsole,chardev=con'], ['con']);
    const { serial } = first;
    serial.send([
      'mke2fs -q -t ext4 /dev/vda && mount -t ext4 /dev/vda /mnt && echo "mkfs"" ok"',
      `yes tsvm-virtio-blk | head -c ${PATTERN.length} > /mnt/pattern`,
      'dd if=/dev/hwrng of=/mnt/random bs=1024 count=64 2>/dev/null; echo "rng $(sha256sum < /mnt/random)"',
      'sync && umount /mnt && echo "disk"" done"',
      'setsid sh -c "exec sh </dev/hvc0 >/dev/hvc0 2>&1" &',
      '',
    ].join('\n'));
    await serial.wait(/^mkfs ok$/m);
    const rng = (await serial.wait(/^rng ([0-9a-f]{64})/m))[1];
    await serial.wait(/^disk done$/m);
    const con = first.chardevs.get('con')!;
    con.send('echo "console $((6 * 7))"\n');
    await con.wait(/^console 42$/m, 120_000);

    // The balloon: memory the guest touched and freed goes back to the host once inflated.
    serial.send('dd if=/dev/zero of=/tmp/fill bs=1M count=160 2>/dev/null; rm /tmp/fill; echo "fill"" done"\n');
    await serial.wait(/^fill done$/m);
    const before = process.memoryUsage().rss;
    first.vm.setBalloonTarget(64 * 2 ** 20);
    const end = Date.now() + 300_000;
    while (first.vm.balloonInfo().actual > 80 * 2 ** 20) {
      assert.ok(Date.now() < end, `balloon stuck at ${first.vm.balloonInfo().actual}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    const after = process.memoryUsage().rss;
    assert.ok(before - after > 64 * 2 ** 20, `host RSS fell by ${((before - after) / 2 ** 20).toFixed(1)} MiB`);
    await new Promise((r) => setTimeout(r, 2000));
    assert.ok((first.vm.balloonInfo().stats['stat-total-memory'] ?? 0) > 0, 'guest statistics arrived');
    first.vm.setBalloonTarget(RAM_MIB * 2 ** 20);
    serial.send('poweroff -f\n');
    assert.equal((await first.vm.exited).reason, 'poweroff');

    // The host reads what the guest wrote.
    if (HAVE('qemu-img')) {
      const check = spawnSync('qemu-img', ['check', disk], { encoding: 'utf8' });
      assert.equal(check.status, 0, check.stdout + check.stderr);
      const raw = join(dir, 'disk.raw');
      assert.equal(spawnSync('qemu-img', ['convert', '-O', 'raw', disk, raw]).status, 0);
      for (const [name, expected] of [['pattern', sha256(PATTERN)], ['random', rng]]) {
        const out = join(dir, name);
        spawnSync('debugfs', ['-R', `dump /${name} ${out}`, raw]);
        const bytes = readFileSync(out);
        assert.equal(sha256(bytes), expected, `/${name} in the image`);
        if (name === 'random') assert.ok(bytes.length === 65536 && bytes.some((b) => b !== 0));
      }
    }

    // Boot 2: the image under -snapshot, a read-only disk beside it, and the entropy device driven by hand.
    const diskBefore = sha256(readFileSync(disk));
    const ro = join(dir, 'ro.raw');
    writeFileSync(ro, Buffer.alloc(2 ** 20, 0x5a));
    const second = await boot([...base, '-snapshot',
      '-drive', `file=${disk},if=virtio`, '-drive', `file=${ro},format=raw,if=virtio,readonly=on`, '-device', 'virtio-rng-pci']);
    second.serial.send([
      'mount -t ext4 /dev/vda /mnt && echo "pattern $(sha256sum < /mnt/pattern)"',
      'echo scribble > /mnt/new && sync && echo "wrote $(cat /mnt/new)"',
      'dd if=/dev/zero of=/dev/vdb bs=512 count=1 2>&1 | grep -q "Read-only\\|not permitted" && echo "ro"" refused"',
      ...MALFORMED_CHAIN_SCRIPT,
      '',
    ].join('\n'));
    assert.equal((await second.serial.wait(/^pattern ([0-9a-f]{64})/m))[1], sha256(PATTERN));
    await second.serial.wait(/^wrote scribble$/m);
    await second.serial.wait(/^ro refused$/m);
    assert.equal((await second.serial.wait(/^bad-chain status (0x[0-9A-Fa-f]+)/m))[1].toLowerCase(), '0x4f', 'DEVICE_NEEDS_RESET set, the VM goes on');
    const recovered = await second.serial.wait(/^after-reset used (0x[0-9A-Fa-f]+) length (0x[0-9A-Fa-f]+)/m);
    assert.deepEqual([Number(recovered[1]), Number(recovered[2])], [1, 64], 'the device works after the reset');
    await second.serial.wait(/^rebound [0-9a-f]{64}/m);
    second.serial.send('poweroff -f\n');
    assert.equal((await second.vm.exited).reason, 'poweroff');
    assert.equal(sha256(readFileSync(disk)), diskBefore, '-snapshot left the image untouched');
    assert.deepEqual(readFileSync(ro), Buffer.alloc(2 ** 20, 0x5a), 'the read-only disk is untouched');
    assert.deepEqual(readdirSync(tmpdir()).filter((f) => f.startsWith(`tsvm-snapshot-${process.pid}-`)), [], 'no overlay left behind');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * A guest script (busybox devmem) that takes the entropy device from Linux, sets up queue 0 itself with its
 * rings in the first 64 KiB (which Linux leaves unused), makes a descriptor pointing past guest RAM available,
 * and reads the status back; then resets, queues a good buffer, reads the used ring, and gives the device back
 * to Linux, which reads /dev/hwrng through it again.
 */
const MALFORMED_CHAIN_SCRIPT = [
  'D=$(dirname $(grep -l 0x1044 /sys/bus/pci/devices/*/device | head -1)); S=$(basename $D)',
  'C=$(sed -n 5p $D/resource | cut -d" " -f1)',
  'echo $S > /sys/bus/pci/drivers/virtio-pci/unbind',
  'echo 1 > $D/enable',
  "printf '\\006\\004' | dd of=$D/config bs=1 seek=4 conv=notrunc 2>/dev/null", // memory, bus master, INTx disabled
  'r() { devmem $(printf 0x%x $((C + $1))) $2 $3; }',
  'clear() { for a in 0x8000 0x8004 0x8008 0x800c 0x9000 0x9004 0xa000 0xa004 0xa008 0xa00c; do devmem $a 32 0; done; }',
  'setup() { r 0x14 8 0; clear; r 0x14 8 3; r 0x08 32 1; r 0x0c 32 1; r 0x14 8 11; r 0x16 16 0; r 0x18 16 8;' +
    ' r 0x20 32 0x8000; r 0x24 32 0; r 0x28 32 0x9000; r 0x2c 32 0; r 0x30 32 0xa000; r 0x34 32 0; r 0x1c 16 1; r 0x14 8 15; }',
  'buffer() { devmem 0x8000 32 $1; devmem 0x8008 32 64; devmem 0x800c 16 2; devmem 0x9002 16 1; r 0x3000 16 0; sleep 1; }',
  'setup; buffer 0xf0000000; echo "bad-chain status $(r 0x14 8)"',
  'setup; buffer 0xb000; echo "after-reset used $(devmem 0xa002 16) length $(devmem 0xa008 32)"',
  'r 0x14 8 0; echo $S > /sys/bus/pci/drivers/virtio-pci/bind',
  'echo "rebound $(dd if=/dev/hwrng bs=32 count=1 2>/dev/null | sha256sum)"',
];
