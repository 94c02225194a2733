import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { HAVE_QEMU, defaultGuestOrNull, runConsole } from './guest-helpers.js';

test('default guest: QEMU boots it to the ready line and it powers off with tsvm.bench=1', async (t) => {
  if (!HAVE_QEMU) return t.skip('qemu-system-i386 is not installed');
  const { guest, reason } = await defaultGuestOrNull();
  if (!guest) return t.skip(reason);
  const r = spawnSync('qemu-system-i386', ['-accel', 'tcg', '-m', '256', '-kernel', guest.kernel, '-initrd', guest.initrd,
    '-append', `${guest.cmdline} tsvm.bench=1`, '-nographic', '-no-reboot'], { encoding: 'latin1', timeout: 120_000, input: '' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /tsvm-guest: ready/);
  assert.match(r.stdout, /reboot: Power down/);
});

test('default guest: its shell runs commands given on the console', async (t) => {
  if (!HAVE_QEMU) return t.skip('qemu-system-i386 is not installed');
  const { guest, reason } = await defaultGuestOrNull();
  if (!guest) return t.skip(reason);
  // QEMU drops console input that arrives before the guest reads it, so type after the ready line.
  const r = await runConsole('qemu-system-i386', ['-accel', 'tcg', '-m', '200', '-kernel', guest.kernel, '-initrd', guest.initrd,
    '-append', guest.cmdline, '-nographic', '-no-reboot'], 'grep MemTotal /proc/meminfo\npoweroff -f\n', 'tsvm-guest: ready', 120_000);
  assert.equal(r.status, 0, r.output.slice(-500));
  const stdout = r.output;
  const kib = Number(/MemTotal:\s+(\d+) kB/.exec(stdout)?.[1]);
  assert.ok(kib > 150_000 && kib <= 200 * 1024, `MemTotal ${kib} kB for -m 200`);
});
