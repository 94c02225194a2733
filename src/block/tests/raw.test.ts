import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { createImage, openImage, probeFormat } from '../block-driver.js';
import { fill, hasQemuImg, qemuImg, tmpDir } from '../test-helpers.js';

test('raw: create, write, read, zero, probe', async () => {
  const t = tmpDir();
  try {
    const p = t.path('d.raw');
    await createImage(p, 'raw', 1 << 20);
    assert.equal(statSync(p).size, 1 << 20);
    assert.equal(await probeFormat(p), 'raw');
    const img = await openImage(p);
    await img.write(4096, fill(100, 7));
    await img.writeZeroes(4100, 10);
    const r = await img.read(4090, 30);
    const expect = new Uint8Array(30);
    expect.fill(7, 6, 10);
    expect.fill(7, 20, 30);
    assert.deepEqual(r, expect);
    await assert.rejects(img.read((1 << 20) - 1, 2), /outside/);
    await img.close();
    const ro = await openImage(p, { readOnly: true });
    await assert.rejects(ro.write(0, fill(1, 1)), /read-only/);
    await ro.close();
    assert.equal(readFileSync(p)[4096], 7);
  } finally {
    t.cleanup();
  }
});

test('raw: qemu-img sees the same bytes', { skip: hasQemuImg ? false : 'qemu-img not installed' }, async () => {
  const t = tmpDir();
  try {
    const p = t.path('d.raw');
    await createImage(p, 'raw', 2 << 20);
    const img = await openImage(p);
    await img.write(65536, fill(65536, 0x5a));
    await img.close();
    assert.match(qemuImg('info', '-f', 'raw', p), /virtual size: 2 MiB/);
    qemuImg('convert', '-f', 'raw', '-O', 'qcow2', p, t.path('d.qcow2'));
    const q = await openImage(t.path('d.qcow2'));
    assert.deepEqual(await q.read(65536, 65536), fill(65536, 0x5a));
    await q.close();
  } finally {
    t.cleanup();
  }
});
