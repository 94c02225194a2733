import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseKeyValueList, parseSize } from './qemu-args.js';
import { parseTsvmArgs } from './tsvm-options.js';

test('QEMU spelling: options, key=value lists with escaped commas, sizes', () => {
  const inv = parseTsvmArgs(['-M', 'pc', '-m', '1G', '-kernel', 'k', '-append', 'console=ttyS0', '-nographic', '-no-reboot',
    '-serial', 'unix:/tmp/s,,x,server,nowait', '-serial', 'file:/tmp/log', '-accel', 'tcg', '-name', 'vm1', '-S']);
  assert.equal(inv.action, 'run');
  assert.equal(inv.config.memoryBytes, 2 ** 30);
  assert.equal(inv.config.noReboot, true);
  assert.equal(inv.config.startPaused, true);
  assert.deepEqual(inv.config.serials, [{ kind: 'unix', path: '/tmp/s,x', server: true, wait: false }, { kind: 'file', path: '/tmp/log' }]);
  assert.equal(inv.useDefaultGuest, false);
  assert.deepEqual(parseKeyValueList('file=a,,b,format=raw,readonly'), [['file', 'a,b'], ['format', 'raw'], ['readonly', 'on']]);
  assert.equal(parseSize('256', 2 ** 20), 256 * 2 ** 20);
  assert.equal(parseSize('2k', 1), 2048);
  assert.equal(parseSize('x', 1), null);
  assert.equal(parseTsvmArgs([]).useDefaultGuest, true);
  assert.equal(parseTsvmArgs(['-h']).action, 'help');
});

test('bad options are one-line errors naming the option', () => {
  const cases: [string[], RegExp][] = [
    [['-bogus'], /^-bogus: invalid option$/],
    [['-m'], /^-m: requires an argument$/],
    [['-m', 'lots'], /^-m lots: invalid memory size$/],
    [['-m', '0'], /^-m 0: invalid memory size$/],
    [['-m', '100G'], /^-m 100G: at most/],
    [['-smp', '2'], /^-smp 2: only 1 CPU/],
    [['-M', 'q35'], /^-machine q35: unsupported machine type/],
    [['-accel', 'hax'], /^-accel hax: invalid accelerator/],
    [['-serial', 'tcp:1'], /^-serial tcp:1: unsupported character device/],
    [['-initrd', 'x'], /^-initrd requires -kernel$/],
  ];
  for (const [argv, message] of cases) {
    assert.throws(() => parseTsvmArgs(argv), (e: Error) => message.test(e.message) && !e.message.includes('\n'), argv.join(' '));
  }
});

test('-device isa-debug-exit: QEMU defaults and properties; other devices are refused', () => {
  assert.deepEqual(parseTsvmArgs(['-kernel', 'k', '-device', 'isa-debug-exit']).config.debugExit, { iobase: 0x501, iosize: 2 });
  assert.deepEqual(parseTsvmArgs(['-kernel', 'k', '-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04']).config.debugExit, { iobase: 0xf4, iosize: 4 });
  assert.throws(() => parseTsvmArgs(['-device', 'ne2k_pci']), /^TsvmError: -device ne2k_pci: unsupported device \(supported: isa-debug-exit, e1000, virtio-blk-pci/);
  assert.throws(() => parseTsvmArgs(['-device', 'isa-debug-exit,iosize=8']), /bad or unknown property 'iosize'/);
});

test('-icount and -rtc base as in QEMU', () => {
  assert.deepEqual(parseTsvmArgs(['-icount', 'shift=3,sleep=off']).config.icount, { shift: 3, sleep: false });
  assert.deepEqual(parseTsvmArgs(['-icount', '5']).config.icount, { shift: 5, sleep: true });
  assert.equal(parseTsvmArgs([]).config.icount, undefined);
  assert.equal(parseTsvmArgs(['-rtc', 'base=2020-02-03T04:05:06']).config.rtcBase, Date.UTC(2020, 1, 3, 4, 5, 6) / 1000);
  assert.equal(parseTsvmArgs(['-rtc', 'base=utc,clock=host']).config.rtcBase, undefined);
  for (const [args, message] of [
    [['-icount', 'shift=auto'], /^-icount shift=auto: shift must be a number from 0 to 10$/],
    [['-icount', 'shift=1,align=on'], /^-icount shift=1,align=on: unknown parameter 'align'/],
    [['-icount', 'sleep=maybe'], /^-icount/],
    [['-rtc', 'base=yesterday'], /^-rtc base=yesterday: base must be utc or YYYY-MM-DD/],
    [['-rtc', 'base=2020-13-45T99:00:00'], /^-rtc base=2020-13-45T99:00:00: base must be utc or YYYY-MM-DD/],
  ] as [string[], RegExp][]) {
    assert.throws(() => parseTsvmArgs(args), { message });
  }
});
