import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { defaultGuestOrNull, runConsole } from './guest-helpers.js';

const tsvm = fileURLToPath(new URL('../src/cli/tsvm.js', import.meta.url));
/** The emulated CPU boots the default guest in a few minutes on these machines; allow for a slow CI host. */
const BOOT_TIMEOUT_MS = 12 * 60_000;

test('tsvm boots the default guest; typed-ahead input reaches its shell; MemTotal matches -m; poweroff exits 0', { timeout: BOOT_TIMEOUT_MS + 60_000 }, async (t) => {
  const { guest, reason } = await defaultGuestOrNull();
  if (!guest) return t.skip(reason);
  // The commands are written at once, long before the guest reads: none of it may be lost.
  const r = await runConsole(process.execPath, [tsvm, '-m', '200', '-kernel', guest.kernel, '-initrd', guest.initrd, '-append', guest.cmdline, '-nographic'],
    'grep MemTotal /proc/meminfo\npoweroff -f\n', '', BOOT_TIMEOUT_MS);
  assert.equal(r.timedOut, false, `boot did not finish: ${r.output.slice(-800)}`);
  assert.match(r.output, /tsvm-guest: ready/);
  const kib = Number(/MemTotal:\s+(\d+) kB/.exec(r.output)?.[1]);
  assert.ok(kib > 150_000 && kib <= 200 * 1024, `MemTotal ${kib} kB for -m 200`);
  assert.match(r.output, /reboot: Power down/);
  assert.equal(r.status, 0);
});
