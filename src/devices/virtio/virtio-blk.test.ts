import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type BlockDriver, createImage, openImage } from '../../block/index.js';
import { pattern, tmpDir } from '../../block/test-helpers.js';
import { type CacheMode, VirtioBlk } from './virtio-blk.js';
import { F_NEXT, F_WRITE, TestVirtioDriver } from './virtio-test-driver.js';

const HEADER = 0x40000, DATA = 0x41000, STATUS = 0x50000;
const T_IN = 0, T_OUT = 1, T_FLUSH = 4, T_GET_ID = 8, T_DISCARD = 11, T_WRITE_ZEROES = 13;
const F_RO = 5, F_DISCARD = 13;

async function blk(options: { readOnly?: boolean; discard?: boolean; cache?: CacheMode; format?: 'raw' | 'qcow2' } = {}) {
  const dir = tmpDir();
  const path = dir.path('disk.img');
  await createImage(path, options.format ?? 'raw', 1 << 20);
  const image: BlockDriver = await openImage(path, { readOnly: options.readOnly ?? false });
  const d = new TestVirtioDriver(new VirtioBlk({ id: 'vblk', image, cache: options.cache ?? 'writeback', discard: options.discard ?? false, serial: 'disk-serial' }));
  d.start({ eventIndex: true, size: 32 });
  return { d, image, close: async () => { await image.close(); dir.cleanup(); } };
}

/** One request: header, then data (readable for writes, writable for reads), then the status byte. */
async function request(d: TestVirtioDriver, type: number, sector: number, data: { length: number; write: boolean; bytes?: Uint8Array }): Promise<number> {
  const header = new Uint8Array(16);
  const dv = new DataView(header.buffer);
  dv.setUint32(0, type, true);
  dv.setUint32(8, sector, true);
  d.memory.writeBytes(HEADER, header);
  if (data.bytes) d.memory.writeBytes(DATA, data.bytes);
  d.memory.writeBytes(STATUS, Uint8Array.of(0xff));
  let n = 0;
  d.descriptor(0, n, HEADER, 16, F_NEXT, n + 1);
  n++;
  if (data.length > 0) {
    d.descriptor(0, n, DATA, data.length, (data.write ? F_WRITE : 0) | F_NEXT, n + 1);
    n++;
  }
  d.descriptor(0, n, STATUS, 1, F_WRITE);
  const before = d.usedIdx(0);
  d.kick(0, 0);
  await d.settle();
  assert.equal(d.usedIdx(0), (before + 1) & 0xffff, 'request completed');
  return d.bytes(STATUS, 1)[0];
}

test('virtio-blk: capacity, write, read back, flush, get-id', async () => {
  const { d, image, close } = await blk({ format: 'qcow2' });
  try {
    assert.equal(d.deviceConfig(0, 4), 2048, 'capacity in sectors');
    const data = pattern(4096, 7);
    assert.equal(await request(d, T_OUT, 8, { length: 4096, write: false, bytes: data }), 0);
    assert.deepEqual(await image.read(8 * 512, 4096), data);
    d.memory.writeBytes(DATA, new Uint8Array(4096));
    assert.equal(await request(d, T_IN, 8, { length: 4096, write: true }), 0);
    assert.deepEqual(d.bytes(DATA, 4096), data);
    assert.equal(d.used(0, 1).length, 4097, 'data and status written');
    assert.equal(await request(d, T_FLUSH, 0, { length: 0, write: false }), 0);
    assert.equal(await request(d, T_GET_ID, 0, { length: 20, write: true }), 0);
    assert.equal(new TextDecoder().decode(d.bytes(DATA, 11)), 'disk-serial');
    // Beyond the end of the disk, and a partial sector: I/O errors.
    assert.equal(await request(d, T_IN, 2047, { length: 1024, write: true }), 1);
    assert.equal(await request(d, T_OUT, 0, { length: 100, write: false, bytes: new Uint8Array(100) }), 1);
    assert.equal(await request(d, 99, 0, { length: 0, write: false }), 2, 'unsupported type');
  } finally {
    await close();
  }
});

test('virtio-blk: many requests in flight complete', async () => {
  const { d, image, close } = await blk({ format: 'qcow2' });
  try {
    const count = 6;
    for (let i = 0; i < count; i++) {
      const header = new Uint8Array(16);
      new DataView(header.buffer).setUint32(0, T_OUT, true);
      new DataView(header.buffer).setUint32(8, i * 128, true);
      d.memory.writeBytes(HEADER + 16 * i, header);
      d.memory.writeBytes(DATA + 0x1000 * i, pattern(4096, i));
      d.descriptor(0, 3 * i, HEADER + 16 * i, 16, F_NEXT, 3 * i + 1);
      d.descriptor(0, 3 * i + 1, DATA + 0x1000 * i, 4096, F_NEXT, 3 * i + 2);
      d.descriptor(0, 3 * i + 2, STATUS + i, 1, F_WRITE);
    }
    for (let i = 0; i < count; i++) d.kick(0, 3 * i);
    assert.ok(d.fn.busy, 'requests in flight');
    await d.settle();
    assert.equal(d.usedIdx(0), count);
    for (let i = 0; i < count; i++) {
      assert.equal(d.bytes(STATUS + i, 1)[0], 0);
      assert.deepEqual(await image.read(i * 128 * 512, 4096), pattern(4096, i));
    }
  } finally {
    await close();
  }
});

test('virtio-blk: read-only drives offer RO and refuse writes', async () => {
  const { d, close } = await blk({ readOnly: true });
  try {
    assert.ok(d.deviceFeatures() & (1n << BigInt(F_RO)));
    assert.equal(await request(d, T_OUT, 0, { length: 512, write: false, bytes: new Uint8Array(512).fill(1) }), 1);
  } finally {
    await close();
  }
});

test('virtio-blk: discard (with discard=unmap) and write-zeroes', async () => {
  const { d, image, close } = await blk({ discard: true, format: 'qcow2' });
  try {
    assert.ok(d.deviceFeatures() & (1n << BigInt(F_DISCARD)));
    await image.write(0, pattern(65536, 3));
    const segment = (sector: number, count: number) => {
      const s = new Uint8Array(16);
      new DataView(s.buffer).setUint32(0, sector, true);
      new DataView(s.buffer).setUint32(8, count, true);
      return s;
    };
    assert.equal(await request(d, T_WRITE_ZEROES, 0, { length: 16, write: false, bytes: segment(8, 8) }), 0);
    assert.deepEqual(await image.read(4096, 4096), new Uint8Array(4096));
    assert.deepEqual(await image.read(0, 4096), pattern(65536, 3).subarray(0, 4096));
    assert.equal(await request(d, T_DISCARD, 0, { length: 16, write: false, bytes: segment(0, 128) }), 0);
  } finally {
    await close();
  }
  const plain = await blk();
  try {
    assert.equal(plain.d.deviceFeatures() & (1n << BigInt(F_DISCARD)), 0n);
  } finally {
    await plain.close();
  }
});

test('virtio-blk: a request without a status byte puts the device in needs-reset', async () => {
  const { d, close } = await blk();
  try {
    d.descriptor(0, 0, HEADER, 16, 0);
    d.kick(0, 0);
    await d.settle();
    assert.equal(d.status & 0x40, 0x40);
    d.start({ eventIndex: true, size: 32 });
    assert.equal(await request(d, T_FLUSH, 0, { length: 0, write: false }), 0);
  } finally {
    await close();
  }
});
