import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestRam } from '../../memory/guest-ram.js';
import { PhysicalMemory } from '../../memory/physical-memory.js';
import { PortIoBus } from '../../memory/port-io-bus.js';
import { I440fxHostBridge } from './i440fx.js';
import { PciBus } from './pci-bus.js';
import { PciFunction } from './pci-function.js';
import { Piix3IsaBridge } from './piix.js';

function machine() {
  const io = new PortIoBus();
  const memory = new PhysicalMemory(new GuestRam(1 << 20));
  const irqs: [number, boolean][] = [];
  const pci = new PciBus(io, memory, (irq, level) => irqs.push([irq, level]));
  const isa = new Piix3IsaBridge(() => pci.updateIrqs());
  pci.router = isa.route;
  pci.add(new I440fxHostBridge(), 0);
  pci.add(isa, 1);
  const cfg = (devfn: number, offset: number) => 0x80000000 | (devfn << 8) | offset;
  const read = (devfn: number, offset: number, size: 1 | 2 | 4 = 4) => {
    io.write(0xcf8, 4, cfg(devfn, offset & 0xfc));
    return io.read(0xcfc + (offset & 3), size);
  };
  const write = (devfn: number, offset: number, value: number, size: 1 | 2 | 4 = 4) => {
    io.write(0xcf8, 4, cfg(devfn, offset & 0xfc));
    io.write(0xcfc + (offset & 3), size, value);
  };
  return { io, memory, pci, isa, irqs, read, write };
}

test('configuration mechanism #1: ids, empty slots read all-ones, read-only fields stay', () => {
  const { read, write, io } = machine();
  assert.equal(read(0, 0), 0x12378086);
  assert.equal(read(1 << 3, 0), 0x70008086);
  assert.equal(read(1 << 3, 0x0e, 1), 0x80, 'PIIX3 is multi-function');
  assert.equal(read(5 << 3, 0), 0xffffffff);
  write(0, 0, 0);
  assert.equal(read(0, 0), 0x12378086);
  io.write(0xcf8, 4, 0x12345678);
  assert.equal(io.read(0xcf8, 4), 0x12345678 & 0x80fffffc);
});

test('BARs: sizing, mapping when decoding is on, unmapping when moved or disabled', () => {
  const { pci, read, write, io, memory } = machine();
  const ioLog: number[] = [];
  const fn = new PciFunction('test', { vendor: 0x1af4, device: 0x1000, classCode: 0x020000, interruptPin: 1 }, [
    { kind: 'io', size: 32, device: { read: (o) => 0x40 + o, write: (o, _s, v) => ioLog.push(o, v) } },
    { kind: 'mem', size: 4096, device: { read: (o) => o, write: () => {} } },
  ]);
  pci.add(fn, 3);
  const devfn = 3 << 3;
  write(devfn, 0x10, 0xffffffff);
  assert.equal(read(devfn, 0x10), 0xffffffe1, 'I/O BAR of 32 ports');
  write(devfn, 0x14, 0xffffffff);
  assert.equal(read(devfn, 0x14), 0xfffff000, 'memory BAR of 4 KiB');
  write(devfn, 0x10, 0xc000);
  write(devfn, 0x14, 0xfebf0000);
  assert.equal(io.read(0xc004, 1), 0xff, 'not decoded before the command register enables it');
  write(devfn, 0x04, 3, 2);
  assert.equal(io.read(0xc004, 1), 0x44);
  io.write(0xc01f, 1, 9);
  assert.deepEqual(ioLog, [0x1f, 9]);
  assert.equal(memory.read(0xfebf0123, 1), 0x123);
  write(devfn, 0x10, 0xd000);
  assert.equal(io.read(0xc004, 1), 0xff);
  assert.equal(io.read(0xd004, 1), 0x44);
  write(devfn, 0x04, 0, 2);
  assert.equal(io.read(0xd004, 1), 0xff);
});

test('INTx# through the PIIX3 PIRQ routers: disabled by default, shared lines are level ORs', () => {
  const { pci, write, irqs } = machine();
  const a = new PciFunction('a', { vendor: 1, device: 1, classCode: 0, interruptPin: 1 });
  const b = new PciFunction('b', { vendor: 1, device: 2, classCode: 0, interruptPin: 1 });
  pci.add(a, 3); // slot 3, INTA → PIRQD
  pci.add(b, 7); // slot 7, INTA → PIRQD as well
  a.setIrq(true);
  assert.deepEqual(irqs, [], 'PIRQD is disabled at reset');
  write(1 << 3, 0x60, 0x0b0b0a0a); // PIRQA,B → 10; C,D → 11
  assert.deepEqual(irqs, [[11, true]]);
  b.setIrq(true);
  a.setIrq(false);
  assert.deepEqual(irqs, [[11, true]], 'still held by b');
  b.setIrq(false);
  assert.deepEqual(irqs, [[11, true], [11, false]]);
  b.setIrq(true);
  write(7 << 3, 0x04, 0x400, 2); // interrupt disable
  assert.deepEqual(irqs.slice(-2), [[11, true], [11, false]]);
  pci.assignInterruptLines();
  assert.equal(a.config[0x3c], 11);
});
