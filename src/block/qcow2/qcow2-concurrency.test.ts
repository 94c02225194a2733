import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createImage, openImage } from '../block-driver.js';
import type { Qcow2CreateOptions } from './create.js';
import { Qcow2Image } from './qcow2.js';
import { hasQemuImg, pattern, qemuImgStatus, tmpDir, rng } from '../test-helpers.js';

const skip = !hasQemuImg ? 'qemu-img not installed' : false;

const configs: { name: string; opts: Qcow2CreateOptions; size: number; syncMetadata?: boolean; cacheEntries?: number }[] = [
  { name: '64k', opts: {}, size: 8 << 20 },
  { name: '4k, tiny caches', opts: { clusterSize: 4096 }, size: 12 << 20, cacheEntries: 4 },
  { name: '1k, refcount 8', opts: { clusterSize: 1024, refcountBits: 8 }, size: 2 << 20 },
  { name: '4k syncMetadata', opts: { clusterSize: 4096 }, size: 2 << 20, syncMetadata: true },
];

for (const cfg of configs) {
  test(`qcow2 (${cfg.name}): many overlapping requests in flight apply in call order`, { skip }, async () => {
    const t = tmpDir();
    try {
      const r = rng(cfg.size + cfg.name.length);
      const size = cfg.size;
      const model = new Uint8Array(size);
      const p = t.path('c.qcow2');
      await createImage(p, 'qcow2', size, cfg.opts);
      const open = async () => {
        const img = (await Qcow2Image.open(p, {
          ...(cfg.syncMetadata ? { syncMetadata: true } : {}),
          ...(cfg.cacheEntries ? { cacheEntries: cfg.cacheEntries } : {}),
        }));
        return img;
      };
      let img = await open();
      const cs = img.clusterSize;
      const pending: Promise<void>[] = [];
      for (let i = 0; i < 3000; i++) {
        const op = r(100);
        // Offsets concentrated on a few regions so that requests overlap.
        const region = r(4) * Math.floor(size / 4);
        const off = Math.min(size - 1, region + r(r(2) === 0 ? 8 * cs : Math.floor(size / 4)));
        const len = Math.min(size - off, 1 + r(r(3) === 0 ? 6 * cs : 2 * cs));
        if (op < 50) {
          const d = pattern(len, i + 1);
          model.set(d, off);
          pending.push(img.write(off, d));
        } else if (op < 80) {
          const want = model.slice(off, off + len);
          pending.push(img.read(off, len).then((got) => assert.ok(Buffer.from(got).equals(Buffer.from(want)), `read ${i} ${off}+${len}`)));
        } else if (op < 88) {
          model.fill(0, off, off + len);
          pending.push(img.writeZeroes(off, len));
        } else if (op < 92) {
          // Discarded ranges have unspecified contents: only the whole clusters are dropped.
          const a = Math.ceil(off / cs) * cs, b = Math.floor((off + len) / cs) * cs;
          if (b > a) {
            model.fill(0, a, b);
            pending.push(img.discard(a, b - a));
          }
        } else if (op < 95) {
          pending.push(img.blockStatus(off, len).then((st) => assert.ok(st.length > 0 && st.length <= len)));
        } else if (op < 97) {
          pending.push(img.flush());
        } else if (op < 98) {
          await Promise.all(pending.splice(0));
          await img.close();
          const chk = qemuImgStatus('check', p);
          assert.equal(chk.status, 0, chk.out);
          img = await open();
        }
        if (pending.length > 64) await Promise.all(pending.splice(0, 32));
      }
      await Promise.all(pending);
      assert.ok(Buffer.from(await img.read(0, size)).equals(Buffer.from(model)));
      await img.close();
      const chk = qemuImgStatus('check', p);
      assert.equal(chk.status, 0, chk.out);
      img = await open();
      assert.ok(Buffer.from(await img.read(0, size)).equals(Buffer.from(model)));
      await img.close();
    } finally {
      t.cleanup();
    }
  });
}
