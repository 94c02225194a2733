import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { openImage } from '../block-driver.js';
import { convertImage } from '../convert.js';
import { Qcow2Image } from '../qcow2/qcow2.js';
import { hasQemuImg, hasQemuIo, pattern, qemuImg, qemuImgStatus, qemuIo, tmpDir } from '../test-helpers.js';

const skip = !hasQemuImg || !hasQemuIo ? 'qemu-img/qemu-io not installed' : false;

test('convertImage: qcow2 chain -> raw / qcow2 (compressed) / qcow', { skip }, async () => {
  const t = tmpDir();
  try {
    const data = new Uint8Array(3 << 20);
    data.set(pattern(100000, 1), 5000);
    for (let i = 2 << 20; i < (3 << 20) - 1000; i++) data[i] = (i >> 8) & 0xff;
    writeFileSync(t.path('base.raw'), data);
    qemuImg('create', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', t.path('top.qcow2'));
    qemuIo(t.path('top.qcow2'), ['write -P 7 1M 64k']);
    data.fill(7, 1 << 20, (1 << 20) + 65536);
    const src = await openImage(t.path('top.qcow2'), { readOnly: true });
    await convertImage(src, t.path('o.raw'), 'raw');
    assert.ok(Buffer.compare(readFileSync(t.path('o.raw')), Buffer.from(data)) === 0);
    await convertImage(src, t.path('o.qcow2'), 'qcow2', { compress: true });
    await convertImage(src, t.path('o.qcow'), 'qcow');
    await src.close();
    const chk = qemuImgStatus('check', t.path('o.qcow2'));
    assert.equal(chk.status, 0, chk.out);
    assert.match(chk.out, /[1-9][\d.]*% compressed/);
    for (const [f, fmt] of [['o.qcow2', 'qcow2'], ['o.qcow', 'qcow']] as const) {
      qemuImg('convert', '-f', fmt, '-O', 'raw', t.path(f), t.path('back.raw'));
      assert.ok(Buffer.compare(readFileSync(t.path('back.raw')), Buffer.from(data)) === 0, f);
    }
    const q = (await openImage(t.path('o.qcow2'))) as Qcow2Image;
    assert.equal(q.info().clusterSize, 65536);
    await q.close();
  } finally {
    t.cleanup();
  }
});
