import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createImage, openImage } from '../block-driver.js';
import { fill, hasQemuImg, hasQemuIo, pattern, qemuImg, qemuImgStatus, qemuIo, tmpDir } from '../test-helpers.js';

const skip = !hasQemuImg || !hasQemuIo ? 'qemu-img/qemu-io not installed' : false;

/** Asserts qemu-img check passes and convert -O raw yields `expected`. */
function assertQemuAgrees(path: string, rawOut: string, expected: Uint8Array): void {
  const chk = qemuImgStatus('check', path);
  assert.equal(chk.status, 0, chk.out);
  qemuImg('convert', '-O', 'raw', path, rawOut);
  const got = readFileSync(rawOut);
  assert.equal(got.length, expected.length);
  assert.ok(Buffer.compare(got, Buffer.from(expected)) === 0, 'converted image differs');
}

test('qcow2: reads images written by qemu-io', { skip }, async () => {
  const t = tmpDir();
  try {
    for (const opts of ['cluster_size=65536', 'cluster_size=512', 'cluster_size=2M', 'compat=0.10',
      'refcount_bits=1', 'refcount_bits=64', 'extended_l2=on,cluster_size=65536']) {
      const p = t.path(`q-${opts.replace(/[=,]/g, '_')}.qcow2`);
      qemuImg('create', '-f', 'qcow2', '-o', opts, p, '8M');
      qemuIo(p, ['write -P 0x5a 0 64k', 'write -P 0xa5 100000 3000', 'write -z 4M 128k', 'write -P 0x11 7340032 1M',
        'write -P 0x22 5000 512']);
      const img = await openImage(p, { readOnly: true });
      assert.equal(img.format, 'qcow2');
      assert.equal(img.virtualSize, 8 << 20);
      const all = await img.read(0, 8 << 20);
      const expect = new Uint8Array(8 << 20);
      expect.fill(0x5a, 0, 65536);
      expect.fill(0xa5, 100000, 103000);
      expect.fill(0x11, 7340032, 7340032 + (1 << 20));
      expect.fill(0x22, 5000, 5512);
      assert.ok(Buffer.compare(Buffer.from(all), Buffer.from(expect)) === 0, `mismatch for ${opts}`);
      await img.close();
    }
  } finally {
    t.cleanup();
  }
});

test('qcow2: images created and written pass qemu-img check and convert', { skip }, async () => {
  const t = tmpDir();
  try {
    for (const opts of [{}, { clusterSize: 512 }, { clusterSize: 2 << 20 }, { compat: '0.10' as const },
      { refcountBits: 1 }, { refcountBits: 2 }, { refcountBits: 8 }, { refcountBits: 64 }, { extendedL2: true },
      { clusterSize: 4096, refcountBits: 1 }]) {
      const p = t.path('w.qcow2');
      const size = 12 << 20;
      await createImage(p, 'qcow2', size, opts);
      assert.equal(qemuImgStatus('check', p).status, 0, `fresh image ${JSON.stringify(opts)}`);
      const img = await openImage(p);
      const expect = new Uint8Array(size);
      const put = async (off: number, data: Uint8Array) => {
        await img.write(off, data);
        expect.set(data, off);
      };
      await put(0, pattern(70000, 1));
      await put(1 << 20, pattern(3 << 20, 2));
      await put(123, fill(1000, 0x77));
      await put(size - 4096, pattern(4096, 3));
      await put((1 << 20) + 5000, fill(200000, 0x33));
      // concurrent writes
      await Promise.all([put(6 << 20, pattern(65536, 4)), put(8 << 20, pattern(300000, 5)), put(9 << 20, pattern(1, 6))]);
      await img.writeZeroes(1 << 20, 65536 * 3);
      expect.fill(0, 1 << 20, (1 << 20) + 65536 * 3);
      await img.writeZeroes(10, 20);
      expect.fill(0, 10, 30);
      const back = await img.read(0, size);
      assert.ok(Buffer.compare(Buffer.from(back), Buffer.from(expect)) === 0, `readback ${JSON.stringify(opts)}`);
      await img.close();
      assertQemuAgrees(p, t.path('w.raw'), expect);
    }
  } finally {
    t.cleanup();
  }
});
