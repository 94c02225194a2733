import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PortIoBus } from './port-io-bus.js';

test('port bus dispatches by offset, splits unsupported widths, answers all-ones when unclaimed', () => {
  const bus = new PortIoBus();
  const regs = new Uint8Array(4);
  bus.register(0x100, 4, {
    read: (off) => regs[off],
    write: (off, _size, v) => { regs[off] = v; },
  }, { sizes: 1, name: 'regs' });
  bus.write(0x100, 4, 0x44332211);
  assert.deepEqual([...regs], [0x11, 0x22, 0x33, 0x44]);
  assert.equal(bus.read(0x101, 2), 0x3322);
  assert.equal(bus.read(0x200, 1), 0xff);
  assert.equal(bus.read(0x200, 2), 0xffff);
  assert.equal(bus.read(0x200, 4), 0xffffffff);
  assert.throws(() => bus.register(0x103, 2, { read: () => 0, write: () => {} }));
});
