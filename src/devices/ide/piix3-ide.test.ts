import { alterState } from '../../base/state-testing.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { type BlockDriver, openImage } from '../../block/index.js';
import { hasQemuImg, hasQemuIo, pattern, qemuImg, qemuIo, tmpDir } from '../../block/test-helpers.js';
import { PRD_TABLE, Port, RAM_SIZE, setupIde } from './ide-test-harness.js';
import { autoTranslation, chsForSize, chsFromPartitionTable, guessDiskGeometry } from './identify.js';

const skipNoQemu = !hasQemuImg || !hasQemuIo ? 'qemu-img/qemu-io not installed' : false;

/** A qcow2 image holding `data` (made with qemu-img convert from a raw file). */
async function qcow2With(t: ReturnType<typeof tmpDir>, data: Uint8Array): Promise<{ path: string; image: BlockDriver }> {
  writeFileSync(t.path('src.raw'), data);
  qemuImg('convert', '-f', 'raw', '-O', 'qcow2', t.path('src.raw'), t.path('disk.qcow2'));
  return { path: t.path('disk.qcow2'), image: await openImage(t.path('disk.qcow2'), { format: 'qcow2' }) };
}

/** Byte arrays equal (reports the first difference instead of every byte). */
function eqBytes(a: Uint8Array, b: Uint8Array, message = 'bytes differ'): void {
  assert.equal(a.length, b.length, `${message}: length`);
  const i = a.findIndex((v, k) => v !== b[k]);
  assert.equal(i, -1, `${message}: first difference at ${i}`);
}

function word(b: Uint8Array, i: number): number {
  return b[2 * i] | (b[2 * i + 1] << 8);
}

function ataString(b: Uint8Array, first: number, count: number): string {
  let s = '';
  for (let i = first; i < first + count; i++) s += String.fromCharCode(b[2 * i + 1], b[2 * i]);
  return s.trim();
}

test('geometry: QEMU\'s standard CHS for a size, and the one an MBR partition table implies', () => {
  assert.deepEqual(chsForSize((64 << 20) / 512), { cylinders: 130, heads: 16, sectors: 63 });
  assert.deepEqual(chsForSize(2 ** 40 / 512), { cylinders: 16383, heads: 16, sectors: 63 });
  assert.deepEqual(chsForSize(100), { cylinders: 2, heads: 16, sectors: 63 });
  const mbr = new Uint8Array(512);
  mbr[510] = 0x55;
  mbr[511] = 0xaa;
  const e = 0x1be;
  mbr[e + 5] = 15; // end head
  mbr[e + 6] = 63; // end sector
  mbr[e + 12] = 0x00;
  mbr[e + 13] = 0x10; // 4096 sectors
  assert.deepEqual(chsFromPartitionTable(mbr, 131072), { cylinders: 130, heads: 16, sectors: 63 });
  mbr[510] = 0;
  assert.equal(chsFromPartitionTable(mbr, 131072), undefined);
  assert.equal(autoTranslation({ cylinders: 1024, heads: 16, sectors: 63 }), 'none');
  assert.equal(autoTranslation({ cylinders: 2080, heads: 16, sectors: 63 }), 'large');
  assert.equal(autoTranslation({ cylinders: 16383, heads: 16, sectors: 63 }), 'lba');
});

test('geometry: guessDiskGeometry reads the MBR; CMOS translation byte for SeaBIOS', async () => {
  const disk = (size: number, mbr?: Uint8Array): BlockDriver => ({
    format: 'raw', virtualSize: size, readOnly: true,
    read: async (o: number, l: number) => (mbr && o === 0 ? mbr.slice(0, l) : new Uint8Array(l)),
    write: () => Promise.reject(new Error('ro')), writeZeroes: () => Promise.resolve(), discard: () => Promise.resolve(),
    flush: () => Promise.resolve(), blockStatus: () => Promise.resolve({ length: 1, allocated: true, zero: false }), close: () => Promise.resolve(),
  });
  const blank = await guessDiskGeometry(disk(1 << 30));
  assert.deepEqual(blank, { cylinders: 2080, heads: 16, sectors: 63, translation: 'large' });
  // A table written with 255 heads x 63 sectors (an LBA-translating BIOS).
  const mbr = new Uint8Array(512);
  mbr.set([0x55, 0xaa], 510);
  mbr.set([254, 63], 0x1be + 5);
  mbr[0x1be + 13] = 0x10;
  assert.deepEqual(await guessDiskGeometry(disk(8 * 2 ** 30, mbr)), { cylinders: 16383, heads: 16, sectors: 63, translation: 'lba' });
  const t = setupIde([{ kind: 'disk', image: disk(1 << 30), geometry: blank }, undefined, { kind: 'cdrom', image: null }, { kind: 'disk', image: disk(8 * 2 ** 30) }]);
  assert.equal(t.ide.cmosDiskTranslation(), (2 << 0) | (1 << 6));
  assert.equal(t.ide.drives()[0]?.translation, 'large');
});

test('ATA: IDENTIFY, PIO reads (single and multiple), CHS addressing and bus-master DMA read a qcow2 image', { skip: skipNoQemu }, async () => {
  const tmp = tmpDir();
  try {
    const size = 8 << 20;
    const data = pattern(size, 7);
    const { image } = await qcow2With(tmp, data);
    const t = setupIde([{ kind: 'disk', image }, undefined, undefined, undefined]);
    const p = new Port(t, 0);
    p.select(0);
    assert.equal(await p.notBusy() & 0x50, 0x50, 'DRDY and DSC after power-on');
    // IDENTIFY DEVICE.
    const id = await p.pioIn(0xec, 512, 512);
    assert.equal(word(id, 0), 0x0040);
    assert.equal(ataString(id, 27, 20), 'QEMU HARDDISK');
    assert.equal(ataString(id, 10, 10), 'QM00001');
    const sectors = size / 512;
    assert.deepEqual([word(id, 1), word(id, 3), word(id, 6)], [Math.floor(sectors / (16 * 63)), 16, 63]);
    assert.equal(word(id, 60) | (word(id, 61) << 16), sectors);
    assert.equal(word(id, 100) + word(id, 101) * 65536, sectors);
    assert.ok(word(id, 83) & (1 << 10), 'LBA48 supported');
    assert.ok(word(id, 49) & (1 << 8) && word(id, 49) & (1 << 9), 'DMA and LBA');
    assert.equal(word(id, 88) & 0x3f, 0x3f, 'UDMA modes 0-5');
    assert.equal(word(id, 47) & 0xff, 16);

    // READ SECTORS: 3 sectors at LBA 1000, one DRQ block each, an interrupt for each block.
    const edges = t.irqs[0].edges;
    p.select(0);
    p.taskfile(1000, 3, false);
    eqBytes(await p.pioIn(0x20, 3 * 512, 512), data.subarray(1000 * 512, 1003 * 512));
    assert.equal(t.irqs[0].edges - edges, 3);
    // Registers point at the last sector read.
    assert.equal(p.in8(3) | (p.in8(4) << 8) | (p.in8(5) << 16), 1002);

    // READ MULTIPLE after SET MULTIPLE MODE 8: 20 sectors in blocks of 8, 8, 4 (256 sectors per READ SECTORS with count 0).
    p.out8(2, 8);
    p.out8(7, 0xc6);
    assert.equal(await p.notBusy() & 0x01, 0);
    p.taskfile(5000, 20, false);
    eqBytes(await p.pioIn(0xc4, 20 * 512, 8 * 512), data.subarray(5000 * 512, 5020 * 512));
    p.taskfile(300, 0, false);
    eqBytes(await p.pioIn(0x20, 256 * 512, 512), data.subarray(300 * 512, 556 * 512));
    // READ SECTORS EXT.
    p.taskfile(9000, 5, true);
    eqBytes(await p.pioIn(0x24, 5 * 512, 512), data.subarray(9000 * 512, 9005 * 512));

    // CHS: cylinder 2, head 3, sector 4 of 16 heads x 63 sectors.
    const lba = (2 * 16 + 3) * 63 + 3;
    p.out8(6, 0xa0 | 3);
    p.out8(2, 2);
    p.out8(3, 4);
    p.out8(4, 2);
    p.out8(5, 0);
    eqBytes(await p.pioIn(0x20, 1024, 512), data.subarray(lba * 512, (lba + 2) * 512));
    // A CHS sector number of 0 is invalid: aborted.
    p.out8(3, 0);
    p.out8(7, 0x20);
    assert.equal(await p.notBusy(), 0x41);
    assert.equal(p.in8(1), 0x04);

    // READ DMA into two PRD regions, the second one crossing into a new 64 KiB region.
    p.select(0);
    const mem = t.memory.ram.bytes;
    p.prd([[0x20000, 0x1000], [0x30000, 0x10000 - 0x1000 + 0x1000]]);
    p.taskfile(2048, 136, false); // 68 KiB
    const r = await p.dma(() => p.out8(7, 0xc8), true);
    assert.equal(r.status, 0x50);
    assert.equal(r.bm & 0x07, 0x04, 'interrupt, no error, no longer active');
    const expect = data.subarray(2048 * 512, 2048 * 512 + 136 * 512);
    eqBytes(mem.subarray(0x20000, 0x21000), expect.subarray(0, 0x1000));
    eqBytes(mem.subarray(0x30000, 0x30000 + 0x10000), expect.subarray(0x1000));
    // READ DMA EXT of 600 sectors (more than one internal chunk), bus master started before the command.
    p.prd([[0x100000, 0], [0x110000, 0], [0x120000, 0], [0x130000, 0], [0x140000, 600 * 512 - 4 * 0x10000]]);
    p.bmWrite(2, 1, 0x06);
    p.bmWrite(0, 1, 0x09);
    p.taskfile(12345, 600, true);
    p.out8(7, 0x25);
    for (let i = 0; i < 1000 && !(p.bmStatus() & 4); i++) await new Promise((res) => setImmediate(res));
    p.bmWrite(0, 1, 0x08);
    assert.equal(p.status(), 0x50);
    eqBytes(mem.subarray(0x100000, 0x100000 + 600 * 512), data.subarray(12345 * 512, (12345 + 600) * 512));
    // Beyond the end: aborted.
    p.taskfile(sectors - 1, 2, false);
    p.out8(7, 0x20);
    assert.equal(await p.notBusy(), 0x41);
    await t.ide.close();
    await image.close();
  } finally {
    tmp.cleanup();
  }
});

test('ATA: writes by PIO (single, multiple) and DMA reach the qcow2 image (checked with qemu-img convert)', { skip: skipNoQemu }, async () => {
  const tmp = tmpDir();
  try {
    const size = 4 << 20;
    const data = pattern(size, 3);
    const { path, image } = await qcow2With(tmp, data);
    const t = setupIde([undefined, undefined, undefined, { kind: 'disk', image }]); // secondary slave
    const p = new Port(t, 1);
    p.select(1);
    await p.notBusy();
    const expected = data.slice();
    // WRITE SECTORS: 3 sectors.
    const w1 = pattern(3 * 512, 100);
    p.taskfile(10, 3, false);
    const edges = t.irqs[1].edges;
    assert.equal(await p.pioOut(0x30, w1, 512), 0x50);
    assert.equal(t.irqs[1].edges - edges, 3, 'an interrupt after each block');
    assert.equal(t.irqs[0].edges, 0, 'nothing on the primary channel');
    expected.set(w1, 10 * 512);
    // WRITE MULTIPLE EXT with 16 sectors per block.
    const w2 = pattern(40 * 512, 200);
    p.taskfile(4000, 40, true);
    assert.equal(await p.pioOut(0x39, w2, 16 * 512), 0x50);
    expected.set(w2, 4000 * 512);
    // WRITE DMA from three regions.
    const w3 = pattern(24 * 512, 300);
    const mem = t.memory.ram.bytes;
    mem.set(w3.subarray(0, 4096), 0x40000);
    mem.set(w3.subarray(4096, 8192), 0x50000);
    mem.set(w3.subarray(8192), 0x60000);
    p.prd([[0x40000, 4096], [0x50000, 4096], [0x60000, 24 * 512 - 8192]]);
    p.taskfile(7000, 24, false);
    const r = await p.dma(() => p.out8(7, 0xca), false);
    assert.equal(r.status, 0x50);
    assert.equal(r.bm & 7, 4);
    expected.set(w3, 7000 * 512);
    // FLUSH CACHE.
    p.out8(7, 0xe7);
    assert.equal(await p.notBusy(), 0x50);
    await t.ide.close();
    await image.close();
    qemuImg('convert', '-f', 'qcow2', '-O', 'raw', path, tmp.path('out.raw'));
    eqBytes(new Uint8Array(readFileSync(tmp.path('out.raw'))), expected);
  } finally {
    tmp.cleanup();
  }
});

test('ATA: LBA48 beyond 128 GiB on a sparse qcow2 (PIO and DMA, read and write)', { skip: skipNoQemu }, async () => {
  const tmp = tmpDir();
  try {
    const path = tmp.path('big.qcow2');
    qemuImg('create', '-f', 'qcow2', path, '200G');
    const at = 150 * 2 ** 30;
    qemuIo(path, [`write -P 0x5a ${at} 4k`]);
    const image = await openImage(path, { format: 'qcow2' });
    const t = setupIde([{ kind: 'disk', image }]);
    const p = new Port(t, 0);
    p.select(0);
    const id = await p.pioIn(0xec, 512, 512);
    const total = 200 * 2 ** 30 / 512;
    assert.equal(word(id, 60) | (word(id, 61) << 16), 0x0fffffff, 'LBA28 capacity saturates');
    assert.equal(word(id, 100) + word(id, 101) * 2 ** 16 + word(id, 102) * 2 ** 32, total);
    assert.equal(word(id, 1), 16383);
    const lba = at / 512;
    p.taskfile(lba - 1, 10, true);
    const got = await p.pioIn(0x24, 10 * 512, 512);
    eqBytes(got.subarray(0, 512), new Uint8Array(512));
    eqBytes(got.subarray(512, 512 + 4096), new Uint8Array(4096).fill(0x5a));
    eqBytes(got.subarray(512 + 4096), new Uint8Array(512));
    // The task file holds the 48-bit address of the last sector (HOB bytes read back with HOB set).
    t.io.write(0x3f6, 1, 0x80);
    const high = p.in8(3) | (p.in8(4) << 8) | (p.in8(5) << 16);
    t.io.write(0x3f6, 1, 0x00);
    const low = p.in8(3) | (p.in8(4) << 8) | (p.in8(5) << 16);
    assert.equal(high * 2 ** 24 + low, lba + 8);
    // An LBA28 command cannot reach there; WRITE DMA EXT near the end of the disk can.
    const w = pattern(8 * 512, 9);
    t.memory.ram.bytes.set(w, 0x80000);
    p.prd([[0x80000, w.length]]);
    p.taskfile(total - 8, 8, true);
    assert.equal((await p.dma(() => p.out8(7, 0x35), false)).status, 0x50);
    p.prd([[0x90000, w.length]]);
    p.taskfile(total - 8, 8, true);
    assert.equal((await p.dma(() => p.out8(7, 0x25), true)).status, 0x50);
    eqBytes(t.memory.ram.bytes.subarray(0x90000, 0x90000 + w.length), w);
    await t.ide.close();
    await image.close();
    qemuIo(path, [`read -P 0x5a ${at} 4k`]);
    const out = execFileSync('qemu-io', ['-c', `read -v ${200 * 2 ** 30 - 4096} 16`, path], { encoding: 'utf8' });
    const hex = Array.from(w.subarray(4096, 4112), (b) => b.toString(16).padStart(2, '0')).join(' ');
    assert.ok(out.includes(hex), `qemu-io sees the written bytes: ${out}`);
  } finally {
    tmp.cleanup();
  }
});

test('DMA: a PRD outside RAM sets the bus-master error bit and an ATA error, and writes nothing', { skip: skipNoQemu }, async () => {
  const tmp = tmpDir();
  try {
    const { image } = await qcow2With(tmp, pattern(1 << 20, 5));
    const t = setupIde([{ kind: 'disk', image }]);
    const p = new Port(t, 0);
    p.select(0);
    await p.notBusy();
    // The region runs past the end of RAM.
    p.prd([[RAM_SIZE - 0x800, 0x1000]]);
    const before = t.memory.ram.bytes.slice();
    p.taskfile(0, 8, false);
    const r = await p.dma(() => p.out8(7, 0xc8), true);
    assert.equal(r.bm & 0x07, 0x06, 'error + interrupt, not active');
    assert.equal(r.status & 0x01, 0x01);
    assert.equal(p.in8(1), 0x04);
    const after = t.memory.ram.bytes;
    // Only the PRD table itself (written by the test) may differ: nothing at all changed.
    assert.ok(Buffer.compare(Buffer.from(before), Buffer.from(after)) === 0, 'RAM unchanged');
    // The PRD table itself outside RAM.
    p.bmWrite(4, 4, 0xfff00000);
    p.bmWrite(2, 1, 0x06);
    p.bmWrite(0, 1, 0x08);
    p.taskfile(0, 8, false);
    p.out8(7, 0xc8);
    p.bmWrite(0, 1, 0x09);
    for (let i = 0; i < 1000 && !(p.bmStatus() & 4); i++) await new Promise((res) => setImmediate(res));
    assert.equal(p.bmStatus() & 0x07, 0x06);
    assert.ok(Buffer.compare(Buffer.from(before), Buffer.from(t.memory.ram.bytes)) === 0);
    // Bus mastering disabled in the PCI command register: an error too.
    t.ide.configWrite(0x04, 2, 0x01);
    p.prd([[0x20000, 4096]]);
    p.taskfile(0, 8, false);
    const r2 = await p.dma(() => p.out8(7, 0xc8), true);
    assert.equal(r2.bm & 0x06, 0x06);
    assert.ok(Buffer.compare(Buffer.from(before.subarray(0x20000, 0x21000)), Buffer.from(t.memory.ram.bytes.subarray(0x20000, 0x21000))) === 0);
    // A PRD table shorter than the transfer: no longer active, interrupt, ATA error.
    t.ide.configWrite(0x04, 2, 0x05);
    p.prd([[0x20000, 1024]]);
    p.taskfile(0, 8, false);
    const r3 = await p.dma(() => p.out8(7, 0xc8), true);
    assert.equal(r3.bm & 0x07, 0x04);
    assert.equal(r3.status & 0x01, 0x01);
    assert.equal(PRD_TABLE, 0x1000);
    await t.ide.close();
    await image.close();
  } finally {
    tmp.cleanup();
  }
});

test('ATA protocol: signatures after SRST, nIEN, absent slave, IDENTIFY PACKET aborted on disks, SET FEATURES, I/O errors', async () => {
  const failing: BlockDriver = {
    format: 'raw', virtualSize: 1 << 20, readOnly: false,
    read: () => Promise.reject(new Error('boom')), write: () => Promise.reject(new Error('boom')),
    writeZeroes: () => Promise.resolve(), discard: () => Promise.resolve(), flush: () => Promise.resolve(),
    blockStatus: () => Promise.resolve({ length: 1, allocated: true, zero: false }), close: () => Promise.resolve(),
  };
  const t = setupIde([{ kind: 'disk', image: failing }, { kind: 'cdrom', image: null }]);
  const p = new Port(t, 0);
  // Taskfile readback, as SeaBIOS probes it.
  p.select(0, 0);
  p.out8(2, 0x55);
  p.out8(3, 0xaa);
  assert.deepEqual([p.in8(2), p.in8(3), p.in8(6)], [0x55, 0xaa, 0xa0]);
  // Software reset: BSY while SRST is set, then the signatures.
  t.io.write(0x3f6, 1, 0x06);
  assert.equal(p.alt() & 0x80, 0x80);
  t.io.write(0x3f6, 1, 0x02);
  assert.equal(p.alt(), 0x50);
  assert.deepEqual([p.in8(1), p.in8(2), p.in8(3), p.in8(4), p.in8(5)], [1, 1, 1, 0, 0]);
  p.out8(6, 0xb0);
  assert.equal(p.in8(6), 0xb0);
  assert.equal(p.alt(), 0x00, 'ATAPI leaves DRDY clear after reset');
  assert.deepEqual([p.in8(4), p.in8(5)], [0x14, 0xeb]);
  // IDENTIFY DEVICE on the CD-ROM: aborted with the signature; IDENTIFY PACKET DEVICE works.
  p.out8(4, 0);
  p.out8(7, 0xec);
  assert.equal(p.alt() & 0x01, 1);
  assert.deepEqual([p.in8(1), p.in8(4), p.in8(5)], [0x04, 0x14, 0xeb]);
  const idp = await p.pioIn(0xa1, 512, 512);
  assert.equal(word(idp, 0), 0x85c0);
  assert.equal(ataString(idp, 27, 20), 'QEMU DVD-ROM');
  // Disk commands on ATAPI are aborted with the signature.
  p.out8(4, 0x12);
  p.out8(7, 0x20);
  assert.equal(p.status() & 0x01, 1);
  assert.deepEqual([p.in8(4), p.in8(5)], [0x14, 0xeb]);
  // IDENTIFY PACKET DEVICE on the disk: aborted, an interrupt unless nIEN.
  p.select(0);
  t.io.write(0x3f6, 1, 0x00);
  const e0 = t.irqs[0].edges;
  p.out8(7, 0xa1);
  assert.equal(p.alt(), 0x41);
  assert.equal(p.in8(1), 0x04);
  assert.equal(t.irqs[0].edges, e0 + 1);
  assert.equal(t.irqs[0].level, true);
  p.status();
  assert.equal(t.irqs[0].level, false, 'reading the status acknowledges');
  t.io.write(0x3f6, 1, 0x02); // nIEN
  p.out8(7, 0xa1);
  assert.equal(t.irqs[0].edges, e0 + 1, 'nIEN masks the interrupt');
  p.status();
  t.io.write(0x3f6, 1, 0x00);
  // SET FEATURES: transfer mode UDMA 2 shows in IDENTIFY word 88; an unknown feature aborts.
  p.out8(1, 0x03);
  p.out8(2, 0x42);
  p.out8(7, 0xef);
  assert.equal(p.status(), 0x50);
  const id = await p.pioIn(0xec, 512, 512);
  assert.equal(word(id, 88), 0x3f | (1 << 10));
  p.out8(1, 0x77);
  p.out8(7, 0xef);
  assert.equal(p.status(), 0x41);
  // SET MULTIPLE MODE with a count that is not a power of two aborts.
  p.out8(2, 3);
  p.out8(7, 0xc6);
  assert.equal(p.status(), 0x41);
  // Read and write errors of the image become ATA errors.
  p.taskfile(0, 1, false);
  p.out8(7, 0x20);
  assert.equal(await p.notBusy(), 0x41);
  assert.equal(p.in8(1) & 0x40, 0x40);
  p.taskfile(0, 1, false);
  p.out8(7, 0x30);
  await p.notBusy();
  p.writeWords(new Uint8Array(512));
  assert.equal(await p.notBusy(), 0x41);
  // The secondary channel is empty: its registers float to 0.
  const s = new Port(t, 1);
  s.out8(2, 0x55);
  assert.deepEqual([s.in8(2), s.status(), s.in8(6)], [0, 0, 0]);
  // An absent slave on the primary: status 0, commands ignored.
  const t2 = setupIde([{ kind: 'disk', image: failing }]);
  const q = new Port(t2, 0);
  q.select(1);
  assert.equal(q.status(), 0);
  q.out8(7, 0xec);
  assert.equal(q.alt(), 0);
  q.select(0);
  assert.equal(q.alt(), 0x50);
});

test('state: saved in the middle of a PIO read and restored into a new controller, the transfer continues', { skip: skipNoQemu }, async () => {
  const tmp = tmpDir();
  try {
    const data = pattern(1 << 20, 11);
    const { image } = await qcow2With(tmp, data);
    const a = setupIde([{ kind: 'disk', image }]);
    const p = new Port(a, 0);
    p.select(0);
    p.taskfile(100, 4, false);
    p.out8(7, 0x20);
    await p.notBusy();
    const first = p.readWords(512);
    const state = a.ide.saveState();
    const b = setupIde([{ kind: 'disk', image }]);
    b.ide.restoreState(structuredClone(state));
    const q = new Port(b, 0);
    const rest = new Uint8Array(3 * 512);
    for (let i = 0; i < 3; i++) {
      const st = await q.notBusy();
      assert.equal(st & 0x08, 0x08);
      rest.set(q.readWords(512), i * 512);
    }
    eqBytes(first, data.subarray(100 * 512, 101 * 512));
    eqBytes(rest, data.subarray(101 * 512, 104 * 512));
    assert.equal(await q.notBusy(), 0x50);
    // Hostile state is refused.
    const bad = alterState(state, ['channels', 0, 'units', 0, 'pos'], 1e9);
    assert.throws(() => b.ide.restoreState(bad), /piix3-ide: state field channels\[0\]\.units\[0\]\.pos: expected an integer 0\.\.131072, got 1000000000/);
    // PCI identity.
    assert.equal(b.ide.configRead(0, 4), 0x70108086);
    assert.equal(b.ide.configRead(0x08, 4) >>> 8, 0x010180);
    await a.ide.close();
    await b.ide.close();
    await image.close();
  } finally {
    tmp.cleanup();
  }
});
