import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VirtioRng } from './virtio-rng.js';
import { F_INDIRECT, F_NEXT, F_WRITE, RAM_SIZE, TestVirtioDriver } from './virtio-test-driver.js';

const NEEDS_RESET = 0x40, BUFFER = 0x40000;

function rng(): TestVirtioDriver {
  return new TestVirtioDriver(new VirtioRng('rng'));
}

test('virtio-pci: identity, capabilities and feature negotiation', () => {
  const d = rng();
  assert.equal(d.configRead(0x00, 4), 0x10441af4); // 1af4:1044, modern entropy device
  assert.equal(d.configRead(0x06, 2) & 0x10, 0x10);
  const types: number[] = [];
  for (let at = d.configRead(0x34, 1); at !== 0; at = d.configRead(at + 1, 1)) {
    if (d.configRead(at, 1) === 0x09) types.push(d.configRead(at + 3, 1));
    else assert.equal(d.configRead(at, 1), 0x11); // MSI-X
  }
  assert.deepEqual(types.sort(), [1, 2, 3, 4, 5]);
  const features = d.deviceFeatures();
  assert.ok(features & (1n << 32n), 'VERSION_1 offered');
  // A driver that refuses VERSION_1 does not get FEATURES_OK.
  d.common(0x14, 1, 3);
  d.common(0x08, 4, 1);
  d.common(0x0c, 4, 0);
  d.common(0x14, 1, 3 | 8);
  assert.equal(d.status & 8, 0);
  d.start();
  assert.equal(d.status, 0x0f);
  assert.equal(d.common(0x12, 2), 1, 'num_queues');
});

test('virtio-pci: a request completes with an INTx interrupt; the ISR read lowers it', async () => {
  const d = rng();
  d.start();
  d.descriptor(0, 0, BUFFER, 64, F_WRITE);
  d.kick(0, 0);
  await d.settle();
  assert.equal(d.usedIdx(0), 1);
  assert.deepEqual(d.used(0, 0), { id: 0, length: 64 });
  assert.ok(d.bytes(BUFFER, 64).some((b) => b !== 0), 'entropy written');
  assert.equal(d.intx.at(-1), true);
  assert.equal(d.readIsr(), 1);
  assert.equal(d.intx.at(-1), false);
});

test('virtio-pci: indirect descriptors and the event index', async () => {
  const d = rng();
  d.start({ eventIndex: true });
  const table = 0x30000;
  d.descriptor(0, 0, BUFFER, 16, F_WRITE | F_NEXT, 1, table);
  d.descriptor(0, 1, BUFFER + 0x100, 16, F_WRITE, 0, table);
  d.descriptor(0, 0, table, 32, F_INDIRECT);
  d.kick(0, 0);
  await d.settle();
  assert.deepEqual(d.used(0, 0), { id: 0, length: 32 });
  const interrupts = d.intx.filter(Boolean).length;
  assert.equal(interrupts, 1);
  d.readIsr();
  // used_event 5: the driver wants no interrupt until the used index passes 5.
  d.setUsedEvent(0, 5);
  d.descriptor(0, 2, BUFFER, 8, F_WRITE);
  d.kick(0, 2);
  await d.settle();
  assert.equal(d.usedIdx(0), 2);
  assert.equal(d.intx.filter(Boolean).length, interrupts, 'suppressed by used_event');
});

const BAD_CHAINS: [string, (d: TestVirtioDriver) => void][] = [
  ['a buffer beyond guest RAM', (d) => d.descriptor(0, 0, RAM_SIZE - 8, 64, F_WRITE)],
  ['a buffer at a 64-bit address', (d) => d.descriptor(0, 0, 2 ** 40, 64, F_WRITE)],
  ['a loop', (d) => { d.descriptor(0, 0, BUFFER, 8, F_WRITE | F_NEXT, 1); d.descriptor(0, 1, BUFFER, 8, F_WRITE | F_NEXT, 0); }],
  ['a next index beyond the queue', (d) => d.descriptor(0, 0, BUFFER, 8, F_WRITE | F_NEXT, 200)],
  ['a nested indirect table', (d) => { d.descriptor(0, 0, 0x30000, 16, F_INDIRECT, 0, 0x30000); d.descriptor(0, 0, 0x30000, 16, F_INDIRECT); }],
  ['an indirect table of odd size', (d) => d.descriptor(0, 0, 0x30000, 20, F_INDIRECT)],
  ['a readable buffer after a writable one', (d) => { d.descriptor(0, 0, BUFFER, 8, F_WRITE | F_NEXT, 1); d.descriptor(0, 1, BUFFER, 8, 0); }],
  ['a chain over 4 GiB', (d) => {
    // An indirect table of 4100 descriptors, each all of RAM.
    for (let i = 0; i < 4100; i++) d.descriptor(0, i, 0, RAM_SIZE, F_WRITE | (i < 4099 ? F_NEXT : 0), i + 1, 0x80000);
    d.descriptor(0, 0, 0x80000, 16 * 4100, F_INDIRECT);
  }],
];

for (const [what, write] of BAD_CHAINS) {
  test(`virtio-pci: ${what} sets DEVICE_NEEDS_RESET; the device works again after a reset`, async () => {
    const d = rng();
    d.start();
    write(d);
    d.kick(0, 0);
    await d.settle();
    assert.equal(d.status & NEEDS_RESET, NEEDS_RESET);
    assert.equal(d.usedIdx(0), 0, 'nothing used');
    assert.equal(d.readIsr() & 2, 2, 'configuration interrupt');
    // Further notifications are ignored until the reset.
    d.descriptor(0, 1, BUFFER, 8, F_WRITE);
    d.kick(0, 1);
    await d.settle();
    assert.equal(d.usedIdx(0), 0);
    d.start();
    assert.equal(d.status, 0x0f);
    d.descriptor(0, 0, BUFFER, 32, F_WRITE);
    d.kick(0, 0);
    await d.settle();
    assert.deepEqual(d.used(0, 0), { id: 0, length: 32 });
  });
}

test('virtio-pci: a queue whose rings are outside RAM needs a reset at enable', () => {
  const d = rng();
  d.common(0x14, 1, 0);
  d.start();
  d.common(0x14, 1, 0);
  d.common(0x14, 1, 3);
  d.common(0x08, 4, 1);
  d.common(0x0c, 4, 1);
  d.common(0x14, 1, 11);
  d.common(0x16, 2, 0);
  d.common(0x20, 4, RAM_SIZE);
  d.common(0x1c, 2, 1);
  assert.equal(d.status & NEEDS_RESET, NEEDS_RESET);
});

test('virtio-pci: MSI-X vectors, masking and pending bits', async () => {
  const d = rng();
  d.start();
  const cap = 0x40;
  assert.equal(d.configRead(cap, 1), 0x11);
  assert.equal(d.configRead(cap + 2, 2) & 0x7ff, 1, 'two vectors: config and one queue');
  d.configWrite(cap + 2, 2, 0x8000); // enable
  d.common(0x16, 2, 0);
  d.common(0x1a, 2, 1);
  assert.equal(d.common(0x1a, 2), 1);
  d.common(0x1a, 2, 7);
  assert.equal(d.common(0x1a, 2), 0xffff, 'a vector beyond the table is refused');
  d.common(0x1a, 2, 1);
  // Entry 1: address, data, masked.
  d.memory.write(0xc0010000 + 16, 4, 0xfee00000);
  d.memory.write(0xc0010000 + 24, 4, 0x41);
  d.descriptor(0, 0, BUFFER, 8, F_WRITE);
  d.kick(0, 0);
  await d.settle();
  assert.equal(d.msis.length, 0, 'masked');
  assert.equal(d.memory.read(0xc0010800, 4), 2, 'pending bit of vector 1');
  assert.equal(d.intx.filter(Boolean).length, 0, 'no INTx while MSI-X is on');
  d.memory.write(0xc0010000 + 28, 4, 0);
  assert.deepEqual(d.msis, [{ address: 0xfee00000, data: 0x41 }]);
  assert.equal(d.memory.read(0xc0010800, 4), 0);
});
