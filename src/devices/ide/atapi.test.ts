import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { openImage } from '../../block/index.js';
import { pattern, tmpDir } from '../../block/test-helpers.js';
import { Port, setupIde } from './ide-test-harness.js';

const hasXorriso = spawnSync('xorriso', ['-version']).status === 0;

function eqBytes(a: Uint8Array, b: Uint8Array, message = 'bytes differ'): void {
  assert.equal(a.length, b.length, `${message}: length`);
  const i = a.findIndex((v, k) => v !== b[k]);
  assert.equal(i, -1, `${message}: first difference at ${i}`);
}

const be16 = (b: Uint8Array, o: number) => (b[o] << 8) | b[o + 1];
const be32 = (b: Uint8Array, o: number) => ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;

function read10(lba: number, count: number): number[] {
  return [0x28, 0, lba >>> 24, (lba >>> 16) & 0xff, (lba >>> 8) & 0xff, lba & 0xff, 0, count >> 8, count & 0xff, 0, 0, 0];
}
function read12(lba: number, count: number): number[] {
  return [0xa8, 0, lba >>> 24, (lba >>> 16) & 0xff, (lba >>> 8) & 0xff, lba & 0xff, count >>> 24, (count >>> 16) & 0xff, (count >>> 8) & 0xff, count & 0xff, 0, 0];
}

/** Makes an ISO image with xorriso (mkisofs emulation): a few files, one of them 700 KiB of pseudo-random bytes. */
function makeIso(t: ReturnType<typeof tmpDir>): Uint8Array {
  mkdirSync(t.path('root/boot'), { recursive: true });
  writeFileSync(t.path('root/boot/big.bin'), pattern(700 * 1024, 42));
  writeFileSync(t.path('root/readme.txt'), 'hello from tsvm\n');
  const r = spawnSync('xorriso', ['-as', 'mkisofs', '-quiet', '-R', '-J', '-V', 'TSVMTEST', '-o', t.path('t.iso'), t.path('root')], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`xorriso: ${r.stderr}`);
  return new Uint8Array(readFileSync(t.path('t.iso')));
}

test('ATAPI: an ISO made by xorriso read through READ(10)/(12) by PIO and DMA equals the file; capacity and TOC', { skip: hasXorriso ? false : 'xorriso not installed' }, async () => {
  const tmp = tmpDir();
  try {
    const iso = makeIso(tmp);
    const image = await openImage(tmp.path('t.iso'), { format: 'raw', readOnly: true });
    const t = setupIde([undefined, undefined, { kind: 'cdrom', image }]);
    const p = new Port(t, 1);
    p.select(0, 0);
    const sectors = iso.length / 2048;

    // TEST UNIT READY, INQUIRY, READ CAPACITY.
    let r = await p.packet([0x00]);
    assert.equal(r.status, 0x50);
    assert.equal(p.in8(2) & 3, 3, 'I/O and C/D set at completion');
    r = await p.packet([0x12, 0, 0, 0, 36, 0]);
    assert.equal(r.data.length, 36);
    assert.equal(r.data[0], 0x05);
    assert.equal(r.data[1], 0x80);
    assert.equal(new TextDecoder().decode(r.data.subarray(8, 16)).trim(), 'QEMU');
    r = await p.packet([0x25]);
    assert.equal(be32(r.data, 0), sectors - 1);
    assert.equal(be32(r.data, 4), 2048);

    // The primary volume descriptor, by PIO with a 2048-byte limit (as SeaBIOS asks).
    r = await p.packet(read10(16, 1), { bcl: 2048 });
    eqBytes(r.data, iso.subarray(16 * 2048, 17 * 2048));
    assert.equal(new TextDecoder().decode(r.data.subarray(1, 6)), 'CD001');
    // 100 sectors with the largest limit: DRQ blocks of whole sectors within it.
    const lba = 20, count = Math.min(100, sectors - 20);
    r = await p.packet(read10(lba, count), { bcl: 0xfffe });
    eqBytes(r.data, iso.subarray(lba * 2048, (lba + count) * 2048));
    assert.ok(r.blocks.every((n) => n <= 0xfffe && n % 2048 === 0), `blocks ${r.blocks.join(',')}`);
    assert.ok(r.blocks.length < count, 'several sectors per DRQ block');
    // An odd limit is rounded down to even; blocks then split sectors.
    r = await p.packet(read10(lba, 2), { bcl: 1001 });
    eqBytes(r.data, iso.subarray(lba * 2048, (lba + 2) * 2048));
    assert.ok(r.blocks.every((n) => n <= 1000), `blocks ${r.blocks.join(',')}`);
    // READ(12) of the whole disc by PIO.
    r = await p.packet(read12(0, sectors), { bcl: 0x8000 });
    eqBytes(r.data, iso);

    // READ(12) by DMA into two regions.
    const n = Math.min(150, sectors);
    p.prd([[0x100000, 0x10000], [0x200000, n * 2048 - 0x10000]]);
    const d = await p.dma(() => {
      void p.packetDma(read12(0, n));
    }, true);
    assert.equal(d.bm & 7, 4);
    assert.equal(d.status, 0x50);
    const mem = t.memory.ram.bytes;
    eqBytes(mem.subarray(0x100000, 0x110000), iso.subarray(0, 0x10000));
    eqBytes(mem.subarray(0x200000, 0x200000 + n * 2048 - 0x10000), iso.subarray(0x10000, n * 2048));
    // A reply by DMA (INQUIRY).
    p.prd([[0x300000, 36]]);
    const d2 = await p.dma(() => void p.packetDma([0x12, 0, 0, 0, 36, 0]), true);
    assert.equal(d2.status, 0x50);
    assert.equal(mem[0x300000], 0x05);

    // READ TOC format 0 (LBA, then MSF), format 1, format 2 (raw, MSF).
    r = await p.packet([0x43, 0, 0, 0, 0, 0, 0, 0, 100, 0, 0, 0]);
    assert.equal(be16(r.data, 0), 18);
    assert.deepEqual([r.data[2], r.data[3]], [1, 1]);
    assert.deepEqual([r.data[5], r.data[6], be32(r.data, 8)], [0x14, 1, 0]);
    assert.deepEqual([r.data[13], r.data[14], be32(r.data, 16)], [0x14, 0xaa, sectors]);
    r = await p.packet([0x43, 2, 0, 0, 0, 0, 0, 0, 100, 0, 0, 0]);
    const f = sectors + 150;
    assert.deepEqual([...r.data.subarray(8, 12)], [0, 0, 2, 0], 'track 1 at 00:02:00');
    assert.deepEqual([...r.data.subarray(16, 20)], [0, Math.floor(f / 4500), Math.floor(f / 75) % 60, f % 75]);
    r = await p.packet([0x43, 0, 1, 0, 0, 0, 0, 0, 12, 0, 0, 0]);
    assert.equal(be16(r.data, 0), 10);
    assert.deepEqual([r.data[2], r.data[3], r.data[6], be32(r.data, 8)], [1, 1, 1, 0]);
    r = await p.packet([0x43, 2, 2, 0, 0, 0, 0, 0, 200, 0, 0, 0]);
    assert.equal(be16(r.data, 0), 2 + 4 * 11);
    const points = [0, 1, 2, 3].map((i) => r.data[4 + 11 * i + 3]);
    assert.deepEqual(points, [0xa0, 0xa1, 0xa2, 1]);
    assert.deepEqual([...r.data.subarray(4 + 22 + 8, 4 + 22 + 11)], [Math.floor(f / 4500), Math.floor(f / 75) % 60, f % 75]);
    // Allocation length truncates; a track number past the last one is an invalid field.
    r = await p.packet([0x43, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0]);
    assert.equal(r.data.length, 4);
    r = await p.packet([0x43, 0, 0, 0, 0, 0, 5, 0, 100, 0, 0, 0]);
    assert.equal(r.status & 1, 1);
    assert.equal(r.error >> 4, 5);

    // Reading past the end: ILLEGAL REQUEST, LBA out of range (REQUEST SENSE tells).
    r = await p.packet(read10(sectors - 1, 2));
    assert.equal(r.status, 0x41);
    assert.equal(r.error, 0x50);
    r = await p.packet([0x03, 0, 0, 0, 18, 0]);
    assert.deepEqual([r.data[0] & 0x7f, r.data[2], r.data[12]], [0x70, 5, 0x21]);
    await t.ide.close();
    await image.close();
  } finally {
    tmp.cleanup();
  }
});

test('ATAPI: configuration, mode page 2A, events, mechanism status, disc information, locking, eject and media change', async () => {
  const disc = pattern(200 * 2048, 1);
  const cd = (data: Uint8Array) => ({
    format: 'raw' as const, virtualSize: data.length, readOnly: true,
    read: async (o: number, l: number) => data.slice(o, o + l),
    write: () => Promise.reject(new Error('read-only')), writeZeroes: () => Promise.reject(new Error('ro')),
    discard: () => Promise.resolve(), flush: () => Promise.resolve(),
    blockStatus: () => Promise.resolve({ length: 1, allocated: true, zero: false }), close: () => Promise.resolve(),
  });
  const t = setupIde([undefined, { kind: 'cdrom', image: cd(disc) }]);
  const p = new Port(t, 0);
  p.select(1, 0);
  // GET CONFIGURATION: CD-ROM profile current.
  let r = await p.packet([0x46, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 0, 0, 0]);
  assert.equal(be16(r.data, 6), 0x0008);
  assert.equal(be32(r.data, 0), r.data.length - 4);
  assert.equal(be16(r.data, 8), 0x0000, 'profile list first');
  // Only one feature (RT=2, core).
  r = await p.packet([0x46, 2, 0, 1, 0, 0, 0, 0x01, 0x00, 0, 0, 0]);
  assert.equal(r.data.length, 8 + 12);
  assert.equal(be16(r.data, 8), 1);
  assert.equal(be32(r.data, 12), 2, 'ATAPI interface');
  // MODE SENSE(10) capabilities page.
  r = await p.packet([0x5a, 0, 0x2a, 0, 0, 0, 0, 0, 128, 0, 0, 0]);
  assert.equal(be16(r.data, 0), r.data.length - 2);
  assert.equal(r.data[8], 0x2a);
  assert.equal(r.data[9], 20);
  assert.equal(r.data[14] & 0x08, 0x08, 'eject supported');
  // Saved values are not supported; unknown pages are an invalid field.
  r = await p.packet([0x5a, 0, 0xea, 0, 0, 0, 0, 0, 128, 0, 0, 0]);
  assert.equal(r.error >> 4, 5);
  // GET EVENT STATUS NOTIFICATION (polled, media class): no event, medium present.
  r = await p.packet([0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8, 0, 0, 0]);
  assert.deepEqual([...r.data], [0, 6, 4, 0x10, 0, 2, 0, 0]);
  // MECHANISM STATUS, READ DISC INFORMATION, SET CD SPEED, SEEK.
  r = await p.packet([0xbd, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0]);
  assert.equal(r.data.length, 8);
  r = await p.packet([0x51, 0, 0, 0, 0, 0, 0, 0, 34, 0, 0, 0]);
  assert.equal(be16(r.data, 0), 32);
  assert.equal(r.data[2], 0x0e);
  r = await p.packet([0xbb, 0, 0xff, 0xff]);
  assert.equal(r.status, 0x50);
  // PREVENT MEDIUM REMOVAL, then eject is refused; the host cannot change the medium either.
  r = await p.packet([0x1e, 0, 0, 0, 1, 0]);
  assert.equal(r.status, 0x50);
  r = await p.packet([0x1b, 0, 0, 0, 0x02, 0]);
  assert.equal(r.status & 1, 1);
  r = await p.packet([0x03, 0, 0, 0, 18, 0]);
  assert.deepEqual([r.data[2], r.data[12], r.data[13]], [2, 0x53, 2]);
  assert.equal(t.ide.changeMedium(1, null), false);
  // ALLOW, eject: the tray opens, no medium; load closes it again.
  await p.packet([0x1e, 0, 0, 0, 0, 0]);
  r = await p.packet([0x1b, 0, 0, 0, 0x02, 0]);
  assert.equal(r.status, 0x50);
  r = await p.packet([0x00]);
  assert.equal(r.error, 0x20);
  r = await p.packet([0x03, 0, 0, 0, 18, 0]);
  assert.deepEqual([r.data[2], r.data[12]], [2, 0x3a]);
  assert.equal(t.ide.drives()[1]?.trayOpen, true);
  r = await p.packet([0x1b, 0, 0, 0, 0x03, 0]);
  r = await p.packet([0x00]);
  assert.equal(r.status, 0x50);

  // A new medium: unit attention for the next command, REQUEST SENSE reports it, then it is gone.
  const disc2 = pattern(50 * 2048, 2);
  assert.equal(t.ide.changeMedium(1, cd(disc2)), true);
  r = await p.packet([0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8, 0, 0, 0]);
  assert.equal(r.data[4], 2, 'new media event (allowed during unit attention)');
  r = await p.packet([0x00]);
  assert.equal(r.status, 0x41);
  assert.equal(r.error, 0x60);
  r = await p.packet([0x03, 0, 0, 0, 18, 0]);
  assert.deepEqual([r.data[2], r.data[12]], [6, 0x28]);
  r = await p.packet([0x00]);
  assert.equal(r.status, 0x50);
  r = await p.packet([0x25]);
  assert.equal(be32(r.data, 0), 49);
  r = await p.packet(read10(49, 1), { bcl: 2048 });
  eqBytes(r.data, disc2.subarray(49 * 2048));

  // Empty tray: NOT READY, MEDIUM NOT PRESENT; GET CONFIGURATION has no current profile.
  t.ide.changeMedium(1, null);
  await p.packet([0x03, 0, 0, 0, 18, 0]);
  r = await p.packet([0x00]);
  r = await p.packet([0x25]);
  assert.equal(r.error, 0x20);
  r = await p.packet([0x46, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 0, 0, 0]);
  assert.equal(be16(r.data, 6), 0);
  // Unknown opcode: ILLEGAL REQUEST, invalid command operation code.
  r = await p.packet([0xff]);
  assert.equal(r.error, 0x50);
  r = await p.packet([0x03, 0, 0, 0, 18, 0]);
  assert.equal(r.data[12], 0x20);
  // DEVICE RESET is accepted even in the middle of a packet and restores the signature.
  p.out8(7, 0xa0);
  assert.equal(p.alt() & 0x08, 0x08);
  p.out8(7, 0x08);
  assert.equal(p.alt(), 0);
  assert.deepEqual([p.in8(4), p.in8(5)], [0x14, 0xeb]);
  assert.deepEqual(t.ide.drives().map((d) => d?.kind), [undefined, 'cdrom', undefined, undefined]);
});
