import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { createImage, openImage } from '../block-driver.js';
import type { Qcow2CreateOptions } from './create.js';
import { Qcow2Image } from './qcow2.js';
import { hasQemuImg, hasQemuIo, pattern, qemuImg, qemuImgStatus, tmpDir, rng } from '../test-helpers.js';

const skip = !hasQemuImg || !hasQemuIo ? 'qemu-img/qemu-io not installed' : false;

const configs: { name: string; opts: Qcow2CreateOptions; backing?: boolean; size: number }[] = [
  { name: '64k', opts: {}, size: 6 << 20 },
  { name: '512', opts: { clusterSize: 512 }, size: 1 << 20 },
  { name: '4k-rc1-backing', opts: { clusterSize: 4096, refcountBits: 1 }, backing: true, size: 2 << 20 },
  { name: 'extl2-backing', opts: { extendedL2: true, clusterSize: 32768 }, backing: true, size: 4 << 20 },
  { name: 'v2-backing', opts: { compat: '0.10', clusterSize: 4096 }, backing: true, size: 2 << 20 },
  { name: 'rc64', opts: { refcountBits: 64, clusterSize: 8192 }, size: (3 << 20) + 1536 },
];

for (const cfg of configs) {
  test(`qcow2 fuzz (${cfg.name}): random requests match a model and pass qemu-img check`, { skip }, async () => {
    const t = tmpDir();
    try {
      const r = rng(cfg.name.length * 7919 + 1);
      const size = cfg.size;
      const model = new Uint8Array(size);
      const p = t.path('f.qcow2');
      const opts: Qcow2CreateOptions = { ...cfg.opts };
      if (cfg.backing) {
        const base = pattern(size, 42);
        writeFileSync(t.path('base.raw'), base);
        model.set(base);
        opts.backingFile = 'base.raw';
        opts.backingFormat = 'raw';
      }
      await createImage(p, 'qcow2', size, opts);
      let img = (await openImage(p)) as Qcow2Image;
      const cs = img.clusterSize;
      const canSnap = (cfg.opts.refcountBits ?? 16) > 1;
      const pending: Promise<void>[] = [];
      /** What the disk held when each snapshot was taken, to check reverts. */
      const snapshotModels = new Map<string, Uint8Array>();
      for (let i = 0; i < 600; i++) {
        const op = r(100);
        const off = r(size);
        const len = Math.min(size - off, 1 + r(r(4) === 0 ? 4 * cs : 3000));
        if (op < 55) {
          const d = pattern(len, i + 1);
          model.set(d, off);
          pending.push(img.write(off, d));
        } else if (op < 68) {
          model.fill(0, off, off + len);
          pending.push(img.writeZeroes(off, len));
        } else if (op < 76) {
          // discard leaves contents unspecified: only discard whole clusters, then rewrite them as zeroes
          const g = Math.floor(off / cs) * cs, e = Math.min(size, g + cs * (1 + r(3)));
          await Promise.all(pending.splice(0));
          await img.discard(g, e - g);
          await img.writeZeroes(g, e - g);
          model.fill(0, g, e);
        } else if (op < 84) {
          const g = Math.floor(off / cs) * cs, e = Math.min(size, g + cs * (1 + r(2)));
          const d = new Uint8Array(e - g).fill(i & 0xff);
          d.set(pattern(Math.min(100, d.length), i), 0);
          await Promise.all(pending.splice(0));
          await img.writeCompressed(g, d);
          model.set(d, g);
        } else if (op < 88 && canSnap) {
          await Promise.all(pending.splice(0));
          await img.createSnapshot(`s${i}`);
          snapshotModels.set(`s${i}`, model.slice());
          const snaps = img.listSnapshots();
          if (snaps.length > 2) {
            const victim = snaps[r(snaps.length)]!.name;
            await img.deleteSnapshot(victim);
            snapshotModels.delete(victim);
          }
        } else if (op < 90 && snapshotModels.size > 0) {
          // Revert to a snapshot: the disk reads as it did then.
          await Promise.all(pending.splice(0));
          const names = [...snapshotModels.keys()];
          const name = names[r(names.length)]!;
          await img.applySnapshot(name);
          model.set(snapshotModels.get(name)!);
        } else if (op < 92) {
          await Promise.all(pending.splice(0));
          await img.close();
          img = (await openImage(p)) as Qcow2Image;
        } else {
          const got = await img.read(off, len);
          assert.ok(Buffer.compare(Buffer.from(got), Buffer.from(model.subarray(off, off + len))) === 0, `read at step ${i}`);
        }
        if (pending.length > 4) await Promise.all(pending.splice(0));
        if (process.env.FUZZ_DEBUG) {
          await Promise.all(pending.splice(0));
          const got = await img.read(0, size);
          for (let k = 0; k < size; k++) {
            if (got[k] !== model[k]) assert.fail(`step ${i} op ${op} off ${off} len ${len}: first diff at ${k}`);
          }
        }
      }
      await Promise.all(pending.splice(0));
      const all = await img.read(0, size);
      assert.ok(Buffer.compare(Buffer.from(all), Buffer.from(model)) === 0, 'final read');
      const own = await img.check(false);
      assert.deepEqual([own.corruptions, own.leaks], [0, 0]);
      await img.close();
      const chk = qemuImgStatus('check', p);
      assert.equal(chk.status, 0, chk.out);
      qemuImg('convert', '-O', 'raw', p, t.path('out.raw'));
      const out = readFileSync(t.path('out.raw'));
      assert.ok(Buffer.compare(out, Buffer.from(model)) === 0, 'qemu-img convert output');
    } finally {
      t.cleanup();
    }
  });
}
