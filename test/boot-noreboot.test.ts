import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { defaultGuestOrNull, runConsole } from './guest-helpers.js';

const tsvm = fileURLToPath(new URL('../src/cli/tsvm.js', import.meta.url));
const BOOT_TIMEOUT_MS = 12 * 60_000;

test('tsvm -no-reboot -no-acpi: a guest reboot ends tsvm with status 0', { timeout: BOOT_TIMEOUT_MS + 60_000 }, async (t) => {
  const { guest, reason } = await defaultGuestOrNull();
  if (!guest) return t.skip(reason);
  const r = await runConsole(process.execPath, [tsvm, '-m', '128', '-no-acpi', '-no-reboot', '-kernel', guest.kernel, '-initrd', guest.initrd,
    '-append', guest.cmdline, '-nographic'], 'reboot -f\n', 'tsvm-guest: ready', BOOT_TIMEOUT_MS);
  assert.equal(r.timedOut, false, `boot did not finish: ${r.output.slice(-800)}`);
  assert.match(r.output, /tsvm-guest: ready/);
  assert.match(r.output, /reboot: Restarting system/);
  assert.equal(r.status, 0);
});
