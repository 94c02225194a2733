import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestRam } from '../../memory/guest-ram.js';
import { PhysicalMemory } from '../../memory/physical-memory.js';
import { PortIoBus } from '../../memory/port-io-bus.js';
import { FwCfg, FwCfgKey } from './fw-cfg.js';

function setup() {
  const io = new PortIoBus();
  const memory = new PhysicalMemory(new GuestRam(1 << 20));
  const fw = new FwCfg(io, memory);
  const readItem = (key: number, length: number) => {
    io.write(0x510, 2, key);
    return Array.from({ length }, () => io.read(0x511, 1));
  };
  /** Writes a DMA descriptor at `at` and starts it; returns the control word the device wrote back. */
  const dma = (at: number, control: number, length: number, address: number) => {
    const dv = new DataView(memory.ram.bytes.buffer);
    dv.setUint32(at, control);
    dv.setUint32(at + 4, length);
    dv.setBigUint64(at + 8, BigInt(address));
    const swap = (v: number) => new DataView(Uint32Array.of(v).buffer).getUint32(0, false);
    io.write(0x514, 4, swap(0));
    io.write(0x518, 4, swap(at));
    return dv.getUint32(at);
  };
  return { io, memory, fw, readItem, dma };
}

test('fw_cfg: signature, features, DMA signature, numbers little-endian, past-the-end reads are zeros', () => {
  const { io, fw, readItem } = setup();
  assert.equal(String.fromCharCode(...readItem(FwCfgKey.SIGNATURE, 4)), 'QEMU');
  assert.deepEqual(readItem(FwCfgKey.ID, 4), [3, 0, 0, 0]);
  const sig = [io.read(0x514, 4), io.read(0x518, 4)].flatMap((v) => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24]);
  assert.equal(String.fromCharCode(...sig), 'QEMU CFG');
  fw.setU64(FwCfgKey.RAM_SIZE, 256 * 2 ** 20);
  assert.deepEqual(readItem(FwCfgKey.RAM_SIZE, 10), [0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0]);
});

test('fw_cfg: file directory sorted by name, files read by selector and by DMA; bad DMA is an error, never a write elsewhere', () => {
  const { memory, fw, readItem, dma } = setup();
  fw.addFile('etc/zeta', Uint8Array.of(1, 2, 3));
  fw.addFile('etc/alpha', new TextEncoder().encode('hello'));
  const dir = Uint8Array.from(readItem(FwCfgKey.FILE_DIR, 4 + 2 * 64));
  const dv = new DataView(dir.buffer);
  assert.equal(dv.getUint32(0), 2);
  const entry = (i: number) => ({ size: dv.getUint32(4 + 64 * i), key: dv.getUint16(8 + 64 * i), name: new TextDecoder().decode(dir.subarray(12 + 64 * i, 68 + 64 * i)).replace(/\0+$/, '') });
  assert.deepEqual(entry(0), { size: 5, key: FwCfgKey.FILE_FIRST + 1, name: 'etc/alpha' });
  assert.deepEqual(entry(1), { size: 3, key: FwCfgKey.FILE_FIRST, name: 'etc/zeta' });
  const select = (key: number) => (key << 16) | 0x08;
  assert.equal(dma(0x1000, select(entry(0).key) | 0x02, 8, 0x2000), 0);
  assert.equal(new TextDecoder().decode(memory.ram.bytes.subarray(0x2000, 0x2008)), 'hello\0\0\0');
  // Skip then read continues from the position.
  assert.equal(dma(0x1000, select(entry(0).key) | 0x04, 2, 0), 0);
  assert.equal(dma(0x1000, 0x02, 3, 0x3000), 0);
  assert.equal(new TextDecoder().decode(memory.ram.bytes.subarray(0x3000, 0x3003)), 'llo');
  // Writes are refused; a target outside RAM fails without touching RAM.
  assert.equal(dma(0x1000, select(entry(1).key) | 0x10, 3, 0x4000) & 1, 1);
  const before = memory.ram.bytes.slice();
  assert.equal(dma(0x1000, select(entry(1).key) | 0x02, 3, 0xfffff), 1);
  before.set(memory.ram.bytes.subarray(0x1000, 0x1010), 0x1000); // only the descriptor changed
  assert.deepEqual(memory.ram.bytes, before);
});
