import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { type BlockDriver, type ImageFormat, createImage, openImage } from '../block-driver.js';
import { convertImage, copyImage } from '../convert.js';
import { disableLibcForTesting } from '../libc.js';
import { Qcow2Image } from '../qcow2/qcow2.js';
import { hasQemuImg, hasQemuIo, pattern, qemuImg, qemuImgStatus, qemuIo, qemuMapShape, tmpDir, writeSparse } from '../test-helpers.js';

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

/** The driver without its synchronous fast paths (readSync, blockStatusSync): copies take the async path. */
function asyncOnly(d: BlockDriver): BlockDriver {
  const hidden = new Set<string | symbol>(['readSync', 'blockStatusSync']);
  return new Proxy(d, {
    get(target, key) {
      if (hidden.has(key)) return undefined;
      const v: unknown = Reflect.get(target, key, target);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

/**
 * Converts `src` (of format `srcFormat`) to each output format in each way, and checks the result against
 * qemu-img convert's: the same contents (qemu-img compare), the same allocation (qemu-img map), and for
 * qcow2 a clean qemu-img check.
 */
async function convertLikeQemu(t: ReturnType<typeof tmpDir>, src: string, srcFormat: ImageFormat): Promise<void> {
  for (const fmt of ['raw', 'qcow2'] as const) {
    const theirs = t.path(`theirs.${fmt}`);
    qemuImg('convert', '-f', srcFormat, '-O', fmt, src, theirs);
    const want = qemuMapShape(theirs, fmt);
    for (const way of ['sync', 'async', 'no-lseek']) {
      const out = t.path(`ours-${way}.${fmt}`);
      if (way === 'no-lseek') disableLibcForTesting(true);
      try {
        const image = await openImage(src, { format: srcFormat, readOnly: true });
        try {
          if (way === 'async') {
            await createImage(out, fmt, image.virtualSize);
            const dst = await openImage(out, { format: fmt, unsafe: true });
            await copyImage(asyncOnly(image), asyncOnly(dst));
            await dst.flush();
            await dst.close();
          } else {
            await convertImage(image, out, fmt, { unsafe: true });
          }
        } finally {
          await image.close();
        }
      } finally {
        disableLibcForTesting(false);
      }
      const what = `${srcFormat} -> ${fmt} (${way})`;
      assert.equal(qemuImgStatus('compare', '-f', srcFormat, '-F', fmt, src, out).status, 0, `${what}: same contents`);
      assert.equal(qemuMapShape(out, fmt), want, `${what}: same allocation as qemu-img convert`);
      if (fmt === 'qcow2') assert.equal(qemuImgStatus('check', out).status, 0, `${what}: qemu-img check`);
    }
  }
}

test('convertImage of a sparse raw file: holes skipped, zero blocks left out, as qemu-img convert (also without lseek, and the async path)', { skip }, async () => {
  const t = tmpDir();
  try {
    writeSparse(t.path('src.raw'));
    await convertLikeQemu(t, t.path('src.raw'), 'raw');
  } finally {
    t.cleanup();
  }
});

test('convertImage of a qcow2 with plain, zero, all-zero, compressed and unallocated clusters and a new L2 table on the way, as qemu-img convert', { skip }, async () => {
  const t = tmpDir();
  try {
    const src = t.path('src.qcow2');
    qemuImg('create', '-f', 'qcow2', src, '1G');
    // 0x5a: plain data; -z: zero clusters; 0: data clusters that read as zeroes; -c: compressed; at 700M:
    // a second L2 table (a fresh destination needs a new one there: the write takes the slow path).
    qemuIo(src, ['write -P 0x5a 0 300k', 'write -z 512k 128k', 'write -P 0 1M 192k', 'write -P 0x11 1088k 64k',
      'write -c -P 0x33 2M 64k', 'write -P 0x44 700M 1M', 'write -P 0x45 1023M 4k']);
    await convertLikeQemu(t, src, 'qcow2');
  } finally {
    t.cleanup();
  }
});

test('copyImage: a failed write in the pipelined copy rejects the copy (after the writes in flight, at most two), and zeroes over a backing file are written', async () => {
  const t = tmpDir();
  try {
    const bytes = writeSparse(t.path('src.raw'));
    const src = await openImage(t.path('src.raw'), { format: 'raw', readOnly: true });
    try {
      await createImage(t.path('dst.raw'), 'raw', src.virtualSize);
      const dst = await openImage(t.path('dst.raw'), { format: 'raw' });
      let writes = 0, inFlight = 0, maxInFlight = 0;
      const failing = new Proxy(dst, {
        get(target, key) {
          if (key === 'write') {
            return async (off: number, data: Uint8Array) => {
              maxInFlight = Math.max(maxInFlight, ++inFlight);
              try {
                if (++writes === 3) throw new Error('disk full');
                await target.write(off, data);
              } finally {
                inFlight--;
              }
            };
          }
          const v: unknown = Reflect.get(target, key, target);
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        },
      });
      await assert.rejects(copyImage(src, failing), /disk full/);
      assert.equal(writes, 3, 'no write after the failed one');
      assert.ok(maxInFlight <= 2, 'at most two writes at a time');
      assert.equal(inFlight, 0);
      // zeroOverBacking: the whole target is overwritten, zero ranges included.
      await dst.write(0, new Uint8Array(dst.virtualSize).fill(0xee));
      await copyImage(src, dst, { zeroOverBacking: true });
      await dst.close();
      assert.ok(Buffer.compare(readFileSync(t.path('dst.raw')), Buffer.from(bytes)) === 0);
    } finally {
      await src.close();
    }
  } finally {
    t.cleanup();
  }
});
