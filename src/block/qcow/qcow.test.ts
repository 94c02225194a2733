import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { createImage, openImage } from '../block-driver.js';
import { fill, hasQemuImg, hasQemuIo, pattern, qemuImg, qemuImgStatus, qemuIo, tmpDir } from '../test-helpers.js';

const skip = !hasQemuImg || !hasQemuIo ? 'qemu-img/qemu-io not installed' : false;

function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;
}

test('qcow: created files are byte-identical to qemu-img create -f qcow', { skip }, async () => {
  const t = tmpDir();
  try {
    for (const size of ['6G', '1M', '1000000']) {
      qemuImg('create', '-f', 'qcow', t.path('q.img'), size);
      const bytes = size === '6G' ? 6 * 2 ** 30 : size === '1M' ? 1 << 20 : 1000000;
      await createImage(t.path('m.img'), 'qcow', bytes);
      assert.ok(same(readFileSync(t.path('m.img')), readFileSync(t.path('q.img'))), `size ${size}`);
    }
    writeFileSync(t.path('base.raw'), new Uint8Array(1 << 20));
    qemuImg('create', '-f', 'qcow', '-b', 'base.raw', '-F', 'raw', t.path('qb.img'));
    await createImage(t.path('mb.img'), 'qcow', undefined, { backingFile: 'base.raw', backingFormat: 'raw' });
    assert.ok(same(readFileSync(t.path('mb.img')), readFileSync(t.path('qb.img'))), 'with backing file');
  } finally {
    t.cleanup();
  }
});

test('qcow: reads qemu-io written and qemu-img compressed images', { skip }, async () => {
  const t = tmpDir();
  try {
    const p = t.path('a.img');
    qemuImg('create', '-f', 'qcow', p, '4M');
    qemuIo(p, ['write -P 0x5a 0 64k', 'write -P 0xa5 100000 3000', 'write -P 0x11 3M 1M']);
    const img = await openImage(p, { readOnly: true });
    assert.equal(img.format, 'qcow');
    const expect = new Uint8Array(4 << 20);
    expect.fill(0x5a, 0, 65536);
    expect.fill(0xa5, 100000, 103000);
    expect.fill(0x11, 3 << 20, 4 << 20);
    assert.ok(same(await img.read(0, 4 << 20), expect));
    await img.close();

    const src = new Uint8Array(2 << 20);
    for (let i = 0; i < src.length; i++) src[i] = (i >> 9) & 0xff;
    writeFileSync(t.path('src.raw'), src);
    // qemu-img 7.2 exits 1 after compressing to qcow (the image itself is complete).
    qemuImgStatus('convert', '-c', '-f', 'raw', '-O', 'qcow', t.path('src.raw'), t.path('c.img'));
    const c = await openImage(t.path('c.img'));
    assert.ok(same(await c.read(0, src.length), src));
    await c.write(4000, fill(100, 0xcc)); // rewrite part of a compressed cluster
    src.fill(0xcc, 4000, 4100);
    assert.ok(same(await c.read(0, src.length), src));
    await c.close();
    qemuImg('convert', '-f', 'qcow', '-O', 'raw', t.path('c.img'), t.path('c.raw'));
    assert.ok(same(readFileSync(t.path('c.raw')), src));
  } finally {
    t.cleanup();
  }
});

test('qcow: images written here read back through qemu-io and convert, with a backing file', { skip }, async () => {
  const t = tmpDir();
  try {
    const p = t.path('w.img');
    await createImage(p, 'qcow', 8 << 20);
    const img = await openImage(p);
    await img.write(0, fill(65536, 0x5a));
    await img.write(1 << 20, fill(3000, 0x33));
    await img.write((8 << 20) - 512, fill(512, 0x44));
    await Promise.all([img.write(2 << 20, fill(10000, 1)), img.write(5 << 20, fill(8192, 2))]);
    await img.close();
    qemuIo(p, ['read -P 0x5a 0 64k', 'read -P 0x33 1M 3000', 'read -P 0 1051576 10000', 'read -P 0x44 8388096 512',
      'read -P 1 2M 10000', 'read -P 2 5M 8k'], 'qcow');

    const base = t.path('base.raw');
    const bd = pattern(1 << 20, 8);
    writeFileSync(base, bd);
    const top = t.path('top.img');
    await createImage(top, 'qcow', undefined, { backingFile: 'base.raw', backingFormat: 'raw' });
    const ti = await openImage(top);
    assert.equal(ti.virtualSize, 1 << 20);
    assert.ok(same(await ti.read(0, 1 << 20), bd));
    await ti.write(1000, fill(20, 9));
    bd.fill(9, 1000, 1020);
    assert.ok(same(await ti.read(0, 1 << 20), bd));
    await ti.close();
    qemuImg('convert', '-f', 'qcow', '-O', 'raw', top, t.path('top.raw'));
    assert.ok(same(readFileSync(t.path('top.raw')), bd));
  } finally {
    t.cleanup();
  }
});

test('qcow fuzz: random writes (concurrent) match a model and qemu-img convert', { skip }, async () => {
  const t = tmpDir();
  try {
    for (const backing of [false, true]) {
      const size = 3 << 20;
      const model = backing ? pattern(size, 3) : new Uint8Array(size);
      const p = t.path('f.img');
      if (backing) {
        writeFileSync(t.path('b.raw'), model);
        await createImage(p, 'qcow', undefined, { backingFile: 'b.raw', backingFormat: 'raw' });
      } else {
        await createImage(p, 'qcow', size);
      }
      const img = await openImage(p);
      let x = 12345;
      const r = (n: number) => {
        x = (x * 1103515245 + 12345) >>> 0;
        return (x >>> 8) % n;
      };
      const pending: Promise<void>[] = [];
      for (let i = 0; i < 200; i++) {
        const off = r(size), len = Math.min(size - off, 1 + r(20000));
        if (r(5) === 0) {
          model.fill(0, off, off + len);
          pending.push(img.writeZeroes(off, len));
        } else {
          const d = pattern(len, i + 7);
          model.set(d, off);
          pending.push(img.write(off, d));
        }
        if (pending.length > 3) await Promise.all(pending.splice(0));
      }
      await Promise.all(pending);
      assert.ok(same(await img.read(0, size), model));
      await img.close();
      qemuImg('convert', '-f', 'qcow', '-O', 'raw', p, t.path('o.raw'));
      assert.ok(same(readFileSync(t.path('o.raw')), model), `backing=${backing}`);
    }
  } finally {
    t.cleanup();
  }
});
