import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KERNEL_FAILURE } from '../src/guest/installer/index.js';
import { TSVM, defaultGuestOrNull, repeatCount, runConsole } from './guest-helpers.js';

/**
 * The default guest under the devices Debian's installer uses: the IDE CD-ROM and disk read by DMA again and
 * again (their bytes checked against the host's), the disk written and read back, processes forked by the
 * hundred, while the serial console prints. Nothing may corrupt guest memory: every checksum must match the
 * host's and the kernel must not oops. TSVM_STRESS_ROUNDS sets the rounds (3).
 */
const ROUNDS = repeatCount('TSVM_STRESS_ROUNDS', 3);
const CD_BYTES = 8 * 2 ** 20;
/** Boot plus rounds, generously: guest time follows the host's, slow on a loaded machine. */
const TIMEOUT_MS = 300_000 + ROUNDS * 120_000;

test(`stress: the default guest reads the CD-ROM and disk by DMA and forks ${ROUNDS} rounds with every checksum right`, { timeout: TIMEOUT_MS + 60_000 }, async (t) => {
  const { guest, reason } = await defaultGuestOrNull();
  if (!guest) return t.skip(reason);
  const dir = mkdtempSync(join(tmpdir(), 'tsvm-stress-'));
  try {
    const disk = join(dir, 'disk.raw');
    const pattern = Buffer.alloc(4 * 2 ** 20);
    for (let i = 0; i < pattern.length; i += 4) pattern.writeUInt32LE((i * 2654435761) >>> 0, i);
    writeFileSync(disk, Buffer.concat([pattern, Buffer.alloc(pattern.length)])); // the pattern, then room for its copy
    // The CD: 8 MiB of another pattern (the drive reads any file as 2048-byte sectors).
    const iso = join(dir, 'cd.img');
    const cdBytes = Buffer.alloc(CD_BYTES);
    for (let i = 0; i < cdBytes.length; i += 4) cdBytes.writeUInt32LE((i * 40503 + 0x9e3779b9) >>> 0, i);
    writeFileSync(iso, cdBytes);
    const cdSum = createHash('md5').update(cdBytes).digest('hex');
    const diskSum = createHash('md5').update(pattern).digest('hex');
    const script = [
      'i=0',
      `while [ $i -lt ${ROUNDS} ]; do`,
      `  echo "cd $(dd if=/dev/sr0 bs=64k count=${CD_BYTES / 65536} 2>/dev/null | md5sum)"`,
      '  echo "disk $(dd if=/dev/sda bs=64k count=64 2>/dev/null | md5sum)"',
      '  dd if=/dev/sda of=/dev/sda bs=64k count=64 seek=64 conv=fsync 2>/dev/null',
      '  echo 3 > /proc/sys/vm/drop_caches',
      '  echo "copy $(dd if=/dev/sda bs=64k count=64 skip=64 2>/dev/null | md5sum)"',
      '  j=0; while [ $j -lt 200 ]; do (echo $j >/dev/null) & j=$((j+1)); done; wait',
      '  i=$((i+1))',
      'done',
      // The markers are split in the script so that the console's echo of the typed lines cannot match them.
      'dmesg | grep -E "BUG|Oops|panic|corrupt" || echo "dmesg"" clean"',
      'echo stress""-done',
      'poweroff -f',
      '',
    ].join('\n');
    const r = await runConsole(process.execPath, ['--v8-pool-size=1', TSVM, '-m', '256', '-kernel', guest.kernel, '-initrd', guest.initrd,
      '-append', guest.cmdline, '-cdrom', iso, '-drive', `file=${disk},format=raw,if=ide,index=0`, '-nographic', '-no-reboot'],
    script, 'tsvm-guest: ready', TIMEOUT_MS);
    const out = r.output.replace(/\r/g, '');
    const failure = KERNEL_FAILURE.exec(out);
    assert.equal(failure, null, failure ? out.slice(Math.max(0, failure.index - 300), failure.index + 1500) : '');
    assert.match(out, /^stress-done$/m, out.slice(-2000));
    assert.match(out, /^dmesg clean$/m, out.slice(-2000));
    const sums = (kind: string) => [...out.matchAll(new RegExp(`^${kind} ([0-9a-f]{32})`, 'gm'))].map((m) => m[1]);
    assert.deepEqual(sums('cd'), new Array(ROUNDS).fill(cdSum), 'the CD-ROM read back as on the host');
    assert.deepEqual(sums('disk'), new Array(ROUNDS).fill(diskSum), 'the disk read back as written by the host');
    assert.deepEqual(sums('copy'), new Array(ROUNDS).fill(diskSum), 'the disk copy read back as the original');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
