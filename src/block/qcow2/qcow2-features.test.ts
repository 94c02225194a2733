import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, openSync, writeSync, closeSync, readSync, fstatSync, ftruncateSync } from 'node:fs';
import { createImage, openImage } from '../block-driver.js';
import { Qcow2Image } from './qcow2.js';
import { fill, hasQemuImg, hasQemuIo, pattern, qemuImg, qemuImgStatus, qemuIo, tmpDir } from '../test-helpers.js';

const skip = !hasQemuImg || !hasQemuIo ? 'qemu-img/qemu-io not installed' : false;

function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;
}

test('qcow2: backing chain (qemu-made and self-made), relative names, write-through COW', { skip }, async () => {
  const t = tmpDir();
  try {
    const base = t.path('base.raw');
    const baseData = pattern(4 << 20, 9);
    writeFileSync(base, baseData);
    const mid = t.path('mid.qcow2');
    qemuImg('create', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', mid);
    qemuIo(mid, ['write -P 0x5a 65536 4096']);
    const top = t.path('top.qcow2');
    await createImage(top, 'qcow2', undefined, { backingFile: 'mid.qcow2', backingFormat: 'qcow2' });
    const img = await openImage(top);
    assert.equal(img.virtualSize, 4 << 20);
    const expect = baseData.slice();
    expect.fill(0x5a, 65536, 65536 + 4096);
    assert.ok(same(await img.read(0, 4 << 20), expect));
    await img.write(70000, fill(10, 1)); // partial cluster: COW from the backing chain
    expect.fill(1, 70000, 70010);
    await img.writeZeroes(2 << 20, 65536); // zero cluster hides backing data
    expect.fill(0, 2 << 20, (2 << 20) + 65536);
    await img.discard(3 << 20, 65536);
    expect.fill(0, 3 << 20, (3 << 20) + 65536);
    assert.ok(same(await img.read(0, 4 << 20), expect));
    await img.close();
    assert.equal(qemuImgStatus('check', top).status, 0);
    qemuImg('convert', '-O', 'raw', top, t.path('out.raw'));
    assert.ok(same(readFileSync(t.path('out.raw')), expect));
    // the backing file was not modified
    assert.ok(same(readFileSync(base), baseData));
  } finally {
    t.cleanup();
  }
});

test('qcow2: backing loop is detected', { skip }, async () => {
  const t = tmpDir();
  try {
    qemuImg('create', '-f', 'qcow2', t.path('a.qcow2'), '1M');
    qemuImg('create', '-f', 'qcow2', '-u', '-b', 'a.qcow2', '-F', 'qcow2', t.path('b.qcow2'), '1M');
    qemuImg('rebase', '-u', '-f', 'qcow2', '-b', 'b.qcow2', '-F', 'qcow2', t.path('a.qcow2'));
    await assert.rejects(openImage(t.path('a.qcow2')), /loop/);
  } finally {
    t.cleanup();
  }
});

test('qcow2: compressed clusters (qemu-written read; self-written pass check)', { skip }, async () => {
  const t = tmpDir();
  try {
    const raw = t.path('src.raw');
    const data = new Uint8Array(3 << 20);
    for (let i = 0; i < data.length; i++) data[i] = (i >> 10) & 0xff;
    data.set(pattern(100000, 3), 1 << 20); // incompressible region
    writeFileSync(raw, data);
    for (const cs of ['65536', '4096', '2M']) {
      const q = t.path(`c${cs}.qcow2`);
      qemuImg('convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', `cluster_size=${cs}`, raw, q);
      const img = await openImage(q);
      assert.ok(same(await img.read(0, data.length), data), `qemu-compressed ${cs}`);
      // overwrite part of a compressed cluster (COW from the compressed data)
      await img.write(100, fill(50, 0xee));
      const expect = data.slice();
      expect.fill(0xee, 100, 150);
      assert.ok(same(await img.read(0, data.length), expect));
      await img.close();
      assert.equal(qemuImgStatus('check', q).status, 0);
    }
    const mine = t.path('mine.qcow2');
    await createImage(mine, 'qcow2', data.length, {});
    const img = (await openImage(mine)) as Qcow2Image;
    await img.writeCompressed(0, data);
    await img.writeCompressed(65536, data.subarray(0, 65536)); // overwrite a compressed cluster
    const expect = data.slice();
    expect.set(data.subarray(0, 65536), 65536);
    assert.ok(same(await img.read(0, data.length), expect));
    await img.close();
    const chk = qemuImgStatus('check', mine);
    assert.equal(chk.status, 0, chk.out);
    qemuImg('convert', '-O', 'raw', mine, t.path('mine.raw'));
    assert.ok(same(readFileSync(t.path('mine.raw')), expect));
    assert.match(chk.out, /[1-9][\d.]*% compressed clusters/);
  } finally {
    t.cleanup();
  }
});

test('qcow2: extended L2 subclusters written by qemu-io read back', { skip }, async () => {
  const t = tmpDir();
  try {
    const base = t.path('base.qcow2');
    qemuImg('create', '-f', 'qcow2', base, '2M');
    qemuIo(base, ['write -P 0x33 0 2M']);
    const p = t.path('ext.qcow2');
    qemuImg('create', '-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=64k', '-b', base, '-F', 'qcow2', p);
    // 2 KiB subclusters: partial allocation of clusters
    qemuIo(p, ['write -P 0x44 2048 2048', 'write -z 8192 4096', 'write -P 0x55 70000 100']);
    const img = await openImage(p);
    const expect = fill(2 << 20, 0x33);
    expect.fill(0x44, 2048, 4096);
    expect.fill(0, 8192, 12288);
    expect.fill(0x55, 70000, 70100);
    assert.ok(same(await img.read(0, 2 << 20), expect));
    const st = await img.blockStatus(2048, 4096);
    assert.deepEqual({ a: st.allocated, z: st.zero, l: st.length }, { a: true, z: false, l: 2048 });
    // writing into a partially allocated cluster keeps the other subclusters' contents
    await img.write(20000, fill(10, 0x66));
    expect.fill(0x66, 20000, 20010);
    assert.ok(same(await img.read(0, 2 << 20), expect));
    await img.close();
    assert.equal(qemuImgStatus('check', p).status, 0);
    qemuImg('convert', '-O', 'raw', p, t.path('o.raw'));
    assert.ok(same(readFileSync(t.path('o.raw')), expect));
  } finally {
    t.cleanup();
  }
});

test('qcow2: refcount table growth with small clusters', { skip }, async () => {
  const t = tmpDir();
  try {
    const p = t.path('g.qcow2');
    // 512-byte clusters, 16-bit refcounts: one refcount block covers 128 KiB; one table cluster 8 MiB.
    await createImage(p, 'qcow2', 24 << 20, { clusterSize: 512 });
    const img = await openImage(p);
    const data = pattern(20 << 20, 77);
    for (let off = 0; off < data.length; off += 1 << 20) await img.write(off, data.subarray(off, off + (1 << 20)));
    await img.close();
    const chk = qemuImgStatus('check', p);
    assert.equal(chk.status, 0, chk.out);
    qemuImg('convert', '-O', 'raw', p, t.path('g.raw'));
    const out = readFileSync(t.path('g.raw'));
    assert.ok(same(out.subarray(0, data.length), data));
  } finally {
    t.cleanup();
  }
});

test('qcow2: internal snapshots interoperate with qemu-img snapshot', { skip }, async () => {
  const t = tmpDir();
  try {
    const p = t.path('s.qcow2');
    await createImage(p, 'qcow2', 4 << 20, {});
    let img = (await openImage(p)) as Qcow2Image;
    await img.write(0, fill(200000, 1));
    await img.createSnapshot('one');
    await img.write(65536, fill(1000, 2));
    await img.write(3 << 20, fill(1000, 3));
    await img.close();
    let chk = qemuImgStatus('check', p);
    assert.equal(chk.status, 0, chk.out);
    assert.match(qemuImg('snapshot', '-l', p), /one/);
    qemuImg('snapshot', '-c', 'two', p);
    qemuIo(p, ['write -P 9 0 4k']);
    img = (await openImage(p)) as Qcow2Image;
    assert.deepEqual(img.listSnapshots().map((s) => s.name), ['one', 'two']);
    await img.applySnapshot('one');
    const expect = new Uint8Array(4 << 20);
    expect.fill(1, 0, 200000);
    assert.ok(same(await img.read(0, 4 << 20), expect));
    await img.write(0, fill(10, 7));
    expect.fill(7, 0, 10);
    await img.deleteSnapshot('two');
    await img.close();
    chk = qemuImgStatus('check', p);
    assert.equal(chk.status, 0, chk.out);
    qemuImg('convert', '-O', 'raw', p, t.path('cur.raw'));
    assert.ok(same(readFileSync(t.path('cur.raw')), expect));
    qemuImg('convert', '-O', 'raw', '-l', 'snapshot.name=one', p, t.path('one.raw'));
    const one = new Uint8Array(4 << 20);
    one.fill(1, 0, 200000);
    assert.ok(same(readFileSync(t.path('one.raw')), one));
    assert.doesNotMatch(qemuImg('snapshot', '-l', p), /two/);
  } finally {
    t.cleanup();
  }
});

test('qcow2: resize grows the disk', { skip }, async () => {
  const t = tmpDir();
  try {
    const p = t.path('r.qcow2');
    await createImage(p, 'qcow2', 1 << 20, { clusterSize: 4096 });
    const img = (await openImage(p)) as Qcow2Image;
    await img.write(0, fill(4096, 1));
    await img.resize(64 << 20);
    assert.equal(img.virtualSize, 64 << 20);
    await img.write((64 << 20) - 4096, fill(4096, 2));
    await img.close();
    assert.equal(qemuImgStatus('check', p).status, 0);
    assert.match(qemuImg('info', p), /virtual size: 64 MiB/);
    qemuIo(p, ['read -P 1 0 4k', 'read -P 2 67104768 4k', 'read -P 0 4096 1M']);
  } finally {
    t.cleanup();
  }
});

test('qcow2: check finds leaks and repair fixes them; dirty images are repaired on open', { skip }, async () => {
  const t = tmpDir();
  try {
    const p = t.path('l.qcow2');
    await createImage(p, 'qcow2', 4 << 20, {});
    let img = (await openImage(p)) as Qcow2Image;
    await img.write(0, fill(300000, 5));
    await img.close();
    // Leak: add a cluster at the end of the file and give it refcount 1.
    const fd = openSync(p, 'r+');
    const end = Math.ceil(fstatSync(fd).size / 65536);
    ftruncateSync(fd, (end + 1) * 65536);
    const rb = Buffer.alloc(2);
    rb.writeUInt16BE(1);
    writeSync(fd, rb, 0, 2, 0x20000 + end * 2);
    closeSync(fd);
    assert.equal(qemuImgStatus('check', p).status, 3);
    img = (await openImage(p)) as Qcow2Image;
    let r = await img.check(false);
    assert.equal(r.leaks, 1);
    assert.equal(r.corruptions, 0);
    r = await img.check(true);
    assert.equal(r.leaks, 0);
    assert.equal(r.leaksFixed, 1);
    await img.close();
    assert.equal(qemuImgStatus('check', p).status, 0);
    // Dirty bit set with lazy refcounts by qemu-io (abort leaves it set).
    const d = t.path('d.qcow2');
    qemuImg('create', '-f', 'qcow2', '-o', 'lazy_refcounts=on', d, '4M');
    spawnAbort(d);
    assert.match(qemuImg('info', d), /lazy refcounts: true/);
    const hdr = readFileSync(d).subarray(72, 80);
    assert.equal(hdr[7]! & 1, 1, 'dirty bit set');
    img = (await openImage(d)) as Qcow2Image;
    assert.ok(same(await img.read(0, 65536), fill(65536, 0x42)));
    await img.close();
    assert.equal(readFileSync(d).subarray(72, 80)[7]! & 1, 0, 'dirty bit cleared');
    const chk = qemuImgStatus('check', d);
    assert.equal(chk.status, 0, chk.out);
  } finally {
    t.cleanup();
  }
});

function spawnAbort(path: string): void {
  try {
    qemuIo(path, ['write -P 0x42 0 64k', 'abort']);
  } catch {
    // qemu-io dies from SIGABRT
  }
}

test('qcow2: corrupt bit opens read-only; unknown header extensions survive', { skip }, async () => {
  const t = tmpDir();
  try {
    const p = t.path('c.qcow2');
    qemuImg('create', '-f', 'qcow2', p, '1M');
    const fd = openSync(p, 'r+');
    const b = Buffer.alloc(8);
    readSync(fd, b, 0, 8, 72);
    b[7] = b[7]! | 2;
    writeSync(fd, b, 0, 8, 72);
    closeSync(fd);
    const img = await openImage(p);
    assert.equal(img.readOnly, true);
    await assert.rejects(img.write(0, fill(512, 1)), /read-only/);
    await img.close();

    const u = t.path('u.qcow2');
    await createImage(u, 'qcow2', 1 << 20, {});
    // Insert an unknown extension before the feature table (header length 112, extensions at 112).
    const buf = readFileSync(u);
    const ext = Buffer.alloc(16);
    ext.writeUInt32BE(0x12345678, 0);
    ext.writeUInt32BE(5, 4);
    ext.write('hello', 8);
    const patched = Buffer.concat([buf.subarray(0, 112), ext, buf.subarray(112, 65536 - 16), buf.subarray(65536)]);
    writeFileSync(u, patched);
    const q = (await openImage(u)) as Qcow2Image;
    assert.ok(q.header.extensions.some((e) => e.type === 0x12345678));
    await q.write(0, fill(4096, 3));
    await q.createSnapshot('s');
    await q.close();
    assert.ok(readFileSync(u).subarray(0, 65536).includes(Buffer.from('hello')));
    assert.equal(qemuImgStatus('check', u).status, 0);
  } finally {
    t.cleanup();
  }
});

test('qcow2: snapshots made by qemu-img can be listed, applied and deleted', { skip }, async () => {
  const t = tmpDir();
  try {
    for (const compat of ['1.1', '0.10']) {
      const p = t.path(`qs-${compat}.qcow2`);
      qemuImg('create', '-f', 'qcow2', '-o', `compat=${compat}`, p, '2M');
      qemuIo(p, ['write -P 1 0 128k']);
      qemuImg('snapshot', '-c', 'first', p);
      qemuIo(p, ['write -P 2 64k 128k', 'write -c -P 3 1M 64k']);
      qemuImg('snapshot', '-c', 'second', p);
      qemuIo(p, ['write -P 4 0 4k']);
      const img = (await openImage(p)) as Qcow2Image;
      assert.deepEqual(img.listSnapshots().map((s) => [s.id, s.name]), [['1', 'first'], ['2', 'second']]);
      await img.applySnapshot('second');
      const expect = new Uint8Array(2 << 20);
      expect.fill(1, 0, 65536);
      expect.fill(2, 65536, 3 * 65536);
      expect.fill(3, 1 << 20, (1 << 20) + 65536);
      assert.ok(same(await img.read(0, 2 << 20), expect));
      await img.deleteSnapshot('1');
      await img.write(1 << 20, fill(10, 9)); // COW of a shared compressed cluster
      expect.fill(9, 1 << 20, (1 << 20) + 10);
      await img.close();
      const chk = qemuImgStatus('check', p);
      assert.equal(chk.status, 0, chk.out);
      qemuImg('convert', '-O', 'raw', p, t.path('x.raw'));
      assert.ok(same(readFileSync(t.path('x.raw')), expect));
      qemuImg('snapshot', '-a', 'second', p);
      qemuIo(p, ['read -P 3 1M 64k']);
    }
  } finally {
    t.cleanup();
  }
});

test('qcow2: unknown incompatible features are refused; lazy refcounts option; blockStatus', { skip }, async () => {
  const t = tmpDir();
  try {
    const p = t.path('f.qcow2');
    await createImage(p, 'qcow2', 1 << 20, { lazyRefcounts: true });
    assert.match(qemuImg('info', p), /lazy refcounts: true/);
    let img = await openImage(p);
    await img.write(65536, fill(65536, 1));
    assert.deepEqual(await img.blockStatus(0, 1 << 20), { length: 65536, allocated: false, zero: true });
    const st = await img.blockStatus(65536, 1 << 19);
    assert.equal(st.allocated, true);
    assert.equal(st.zero, false);
    assert.equal(st.length, 65536);
    assert.equal(typeof st.offset, 'number');
    await img.writeZeroes(65536, 65536);
    assert.deepEqual(await img.read(65536, 65536), new Uint8Array(65536));
    await img.close();
    assert.equal(qemuImgStatus('check', p).status, 0);
    const buf = readFileSync(p);
    buf[72 + 7] = buf[72 + 7]! | 0x20; // incompatible bit 5: unknown
    writeFileSync(p, buf);
    await assert.rejects(openImage(p), /unsupported qcow2 feature/);
    // compat 0.10: discard and zero without zero clusters
    const v2 = t.path('v2.qcow2');
    await createImage(v2, 'qcow2', 1 << 20, { compat: '0.10' });
    img = await openImage(v2);
    await img.write(0, fill(1 << 20, 5));
    await img.discard(65536, 65536);
    await img.writeZeroes(3 * 65536, 2 * 65536 + 5);
    const expect = fill(1 << 20, 5);
    expect.fill(0, 65536, 2 * 65536);
    expect.fill(0, 3 * 65536, 5 * 65536 + 5);
    assert.ok(same(await img.read(0, 1 << 20), expect));
    await img.close();
    assert.equal(qemuImgStatus('check', v2).status, 0);
    assert.match(qemuImg('info', v2), /compat: 0.10/);
    qemuImg('convert', '-O', 'raw', v2, t.path('v2.raw'));
    assert.ok(same(readFileSync(t.path('v2.raw')), expect));
  } finally {
    t.cleanup();
  }
});

test('qcow2: check repairs refcounts that are too low and missing refcount blocks', { skip }, async () => {
  const t = tmpDir();
  try {
    const p = t.path('c.qcow2');
    await createImage(p, 'qcow2', 8 << 20, { clusterSize: 4096 });
    let img = (await openImage(p)) as Qcow2Image;
    const data = pattern(8 << 20, 11);
    await img.write(0, data);
    await img.close();
    // Zero the refcount entries of clusters 10..19 (in use): refcount too low = corruption.
    const buf = readFileSync(p);
    buf.fill(0, 2 * 4096 + 20, 2 * 4096 + 40);
    writeFileSync(p, buf);
    assert.equal(qemuImgStatus('check', p).status, 2);
    img = (await openImage(p)) as Qcow2Image;
    let r = await img.check(false);
    assert.ok(r.corruptions >= 10, JSON.stringify(r));
    r = await img.check(true);
    assert.equal(r.corruptions, 0);
    assert.equal(r.leaks, 0);
    await img.write(100, fill(10, 1)); // still writable afterwards
    data.fill(1, 100, 110);
    await img.close();
    let chk = qemuImgStatus('check', p);
    assert.equal(chk.status, 0, chk.out);
    // Drop the first refcount table entry entirely.
    const b2 = readFileSync(p);
    const dv = new DataView(b2.buffer, b2.byteOffset);
    const rtOff = Number(dv.getBigUint64(48));
    dv.setBigUint64(rtOff, 0n);
    writeFileSync(p, b2);
    img = (await openImage(p)) as Qcow2Image;
    r = await img.check(true);
    assert.deepEqual([r.corruptions, r.leaks], [0, 0]);
    assert.ok(same(await img.read(0, 8 << 20), data));
    await img.close();
    chk = qemuImgStatus('check', p);
    assert.equal(chk.status, 0, chk.out);
  } finally {
    t.cleanup();
  }
});

test('qcow2: persistent bitmaps written by qemu-img are accounted for', { skip }, async () => {
  const t = tmpDir();
  try {
    const p = t.path('b.qcow2');
    qemuImg('create', '-f', 'qcow2', p, '4M');
    qemuIo(p, ['write -P 1 0 1M']);
    const add = qemuImgStatus('bitmap', '--add', p, 'b0');
    if (add.status !== 0) return; // qemu-img without bitmap support
    let img = (await openImage(p, { readOnly: true })) as Qcow2Image;
    const r = await img.check(false);
    assert.deepEqual([r.corruptions, r.leaks], [0, 0]);
    await img.close();
    img = (await openImage(p)) as Qcow2Image; // read-write: bitmaps are no longer valid
    await img.write(0, fill(10, 2));
    await img.check(true);
    await img.close();
    const chk = qemuImgStatus('check', p);
    assert.equal(chk.status, 0, chk.out);
    qemuIo(p, ['read -P 2 0 10', 'read -P 1 10 1000']);
  } finally {
    t.cleanup();
  }
});

test('qcow2: rebase (safe and unsafe) keeps qemu-img happy', { skip }, async () => {
  const t = tmpDir();
  try {
    const a = pattern(1 << 20, 1), b = pattern(1 << 20, 2);
    b.set(a.subarray(0, 65536), 0); // first cluster identical in both
    writeFileSync(t.path('a.raw'), a);
    writeFileSync(t.path('b.raw'), b);
    const p = t.path('top.qcow2');
    await createImage(p, 'qcow2', undefined, { backingFile: 'a.raw', backingFormat: 'raw' });
    let img = (await openImage(p)) as Qcow2Image;
    await img.write(65536, fill(100, 9));
    const expect = a.slice();
    expect.fill(9, 65536, 65636);
    await img.rebase('b.raw', 'raw');
    assert.ok(same(await img.read(0, 1 << 20), expect));
    await img.close();
    assert.match(qemuImg('info', p), /backing file: b\.raw/);
    assert.equal(qemuImgStatus('check', p).status, 0);
    qemuImg('convert', '-O', 'raw', p, t.path('o.raw'));
    assert.ok(same(readFileSync(t.path('o.raw')), expect));
    img = (await openImage(p)) as Qcow2Image;
    await img.rebase(undefined); // flatten: copies everything from b.raw that is not zero
    assert.equal(img.info().backingFile, undefined);
    assert.ok(same(await img.read(0, 1 << 20), expect));
    await img.rebase('a.raw', 'raw', true); // unsafe: header only
    await img.close();
    assert.match(qemuImg('info', p), /backing file: a\.raw/);
    assert.equal(qemuImgStatus('check', p).status, 0);
  } finally {
    t.cleanup();
  }
});
