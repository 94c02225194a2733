import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Machine, defaultMachineConfig } from '../src/api/index.js';
import { defaultGuestOrNull } from './guest-helpers.js';

/**
 * The deterministic mode (-icount): the same boot gives the same guest, instruction for instruction. The
 * default guest boots to its ready line and powers off, with a disk on the IDE controller (probed by the
 * guest's ata_piix: disk requests whose completions come back through Node's event loop), the PIT, the RTC
 * and the serial port; both runs must print the same bytes (kernel timestamps included) and execute the same
 * number of instructions.
 */
async function bootOnce(kernel: string, initrd: string, disk: string, append: string): Promise<{ output: string; instructions: number }> {
  const vm = await Machine.create({
    ...defaultMachineConfig(),
    memoryBytes: 128 * 2 ** 20,
    kernel, initrd, append,
    serials: [{ kind: 'api' }],
    drives: [{ file: disk, format: 'raw', interface: 'ide', media: 'disk', index: 0, readOnly: false }],
    icount: { shift: 1, sleep: false },
  });
  let output = '';
  vm.console!.on('data', (d: Buffer) => (output += d.toString('latin1')));
  vm.start();
  const timeout = setTimeout(() => void vm.quit(), 240_000);
  const exit = await vm.exited;
  clearTimeout(timeout);
  assert.equal(exit.reason, 'poweroff', output.slice(-1000));
  return { output, instructions: vm.instructionCount };
}

test('-icount: two boots of the default guest print the same bytes and run the same instruction count', async (t) => {
  const { guest, reason } = await defaultGuestOrNull();
  if (!guest) return t.skip(reason);
  const dir = mkdtempSync(join(tmpdir(), 'tsvm-icount-'));
  try {
    const disk = join(dir, 'disk.raw');
    writeFileSync(disk, new Uint8Array(4 * 2 ** 20));
    const append = `${guest.cmdline} tsvm.bench=1`;
    const first = await bootOnce(guest.kernel, guest.initrd, disk, append);
    const second = await bootOnce(guest.kernel, guest.initrd, disk, append);
    assert.match(first.output, /tsvm-guest: ready/);
    assert.match(first.output, /sd 0:0:0:0: \[sda\]/, 'the guest found the disk');
    assert.equal(second.output, first.output);
    assert.equal(second.instructions, first.instructions);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
