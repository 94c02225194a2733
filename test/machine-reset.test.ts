import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Machine, defaultMachineConfig } from '../src/api/index.js';
import { fakeBzImage } from '../src/boot/testing/fake-bzimage.js';
import { HAVE_BINUTILS, assembleFlat } from '../src/cpu/x86/testing/assemble.js';

/** A "kernel" that prints B on COM1 and resets the PC through port 0xCF9. */
function resettingKernel(): string {
  const code = assembleFlat(`
  .code32
  .globl _start
_start:
  movw $0x3f8, %dx
  movb $'B', %al
  outb %al, %dx
  movw $0xcf9, %dx
  movb $0x06, %al
  outb %al, %dx
  hlt
`, 0x100000);
  const path = join(mkdtempSync(join(tmpdir(), 'tsvm-reset-')), 'bzImage');
  writeFileSync(path, fakeBzImage(code));
  return path;
}

const skip = HAVE_BINUTILS ? false : 'GNU binutils (as, ld, objcopy) are not installed';

test('a guest reset reboots the machine (the kernel boots again); -no-reboot ends it instead', { skip }, async () => {
  const kernel = resettingKernel();
  const vm = await Machine.create({ ...defaultMachineConfig(), kernel, serials: [{ kind: 'api' }] });
  let out = '';
  const threeBoots = new Promise<void>((resolve) => vm.console!.on('data', (d: Buffer) => {
    out += d.toString('latin1');
    if (out.length >= 3) resolve();
  }));
  vm.start();
  await threeBoots;
  await vm.quit();
  assert.deepEqual(await vm.exited, { reason: 'quit' });
  assert.match(out, /^BBB/);

  const once = await Machine.create({ ...defaultMachineConfig(), kernel, noReboot: true, serials: [{ kind: 'api' }] });
  let printed = '';
  once.console!.on('data', (d: Buffer) => (printed += d.toString('latin1')));
  once.start();
  assert.deepEqual(await once.exited, { reason: 'reboot' });
  assert.equal(printed, 'B');
});
