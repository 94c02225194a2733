import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { Machine, defaultMachineConfig } from '../src/api/index.js';
import { DEFAULT_BIOS } from '../src/boot/firmware.js';

/** Debian's memtest86+ (package memtest86+): the 32-bit image as a bootable CD. */
const MEMTEST_CD = '/usr/lib/memtest86+/memtest86+ia32.iso';
/** How long memtest runs: long enough for several of its tests (QEMU reaches test 3 in about 10 s). */
const RUN_MS = 120_000;

/**
 * What memtest86+ shows when something went wrong: an exception it did not expect (its handler prints
 * "Unexpected interrupt" and a register dump), or memory errors (the count, and the error report's columns).
 */
const FAILURE = /Unexpected interrupt|Errors:\s*[1-9]|Failing Address|Err-Bits/;

test('memtest86+ boots from CD through SeaBIOS and tests memory for two minutes: no unexpected interrupt, no error', { timeout: RUN_MS + 120_000 }, async (t) => {
  if (!existsSync(MEMTEST_CD) || !existsSync(DEFAULT_BIOS)) return t.skip('needs memtest86+ and seabios');
  const config = defaultMachineConfig();
  config.memoryBytes = 64 * 2 ** 20;
  config.serials = [{ kind: 'none' }];
  config.drives = [{ file: MEMTEST_CD, interface: 'ide', media: 'cdrom', index: 2, readOnly: true }];
  config.boot.order = 'd';
  const vm = await Machine.create(config);
  vm.start();
  try {
    // It shows its screen, then starts testing by itself; every half second the screen must be free of failures.
    const tests = new Set<string>();
    let screen = '';
    const deadline = Date.now() + RUN_MS;
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 500));
      screen = vm.textScreen().join('\n');
      assert.doesNotMatch(screen, FAILURE, `memtest86+ reports a failure:\n${screen}`);
      const current = /Test #\s*(\d+)/.exec(screen)?.[1];
      if (current !== undefined) tests.add(current);
    }
    assert.match(screen, /Memtest86\+ v\d/, `memtest86+ did not start:\n${screen}`);
    assert.match(screen, /Status: (Testing|Pass)/, screen);
    assert.match(screen, /Errors:\s*0\b/, screen);
    assert.ok(tests.size >= 2, `memtest86+ ran tests ${[...tests].join(', ') || 'none'} in ${RUN_MS / 1000} s:\n${screen}`);
  } finally {
    await vm.quit();
  }
});
