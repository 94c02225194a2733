import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { createImage, openImage, probeFormat } from '../block-driver.js';
import { disableLibcForTesting } from '../libc.js';
import { fill, hasQemuImg, qemuImg, tmpDir, writeSparse } from '../test-helpers.js';

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

/** blockStatus over the whole image, neighbours with the same zero flag merged: [start, length, zero][]. */
async function zeroMap(img: { virtualSize: number; blockStatus(o: number, l: number): Promise<{ length: number; zero: boolean }> }): Promise<[number, number, boolean][]> {
  const out: [number, number, boolean][] = [];
  for (let off = 0; off < img.virtualSize;) {
    const st = await img.blockStatus(off, Math.min(1 << 20, img.virtualSize - off));
    const last = out[out.length - 1];
    if (last && last[2] === st.zero) last[1] += st.length;
    else out.push([off, st.length, st.zero]);
    off += st.length;
  }
  return out;
}

test('raw: holes (lseek SEEK_DATA/SEEK_HOLE) are zero in blockStatus, as qemu-img map reports; without lseek all is data',
  { skip: hasQemuImg ? false : 'qemu-img not installed' }, async () => {
    const t = tmpDir();
    try {
      const p = t.path('s.raw');
      const bytes = writeSparse(p);
      const theirs = (JSON.parse(qemuImg('map', '--output=json', '-f', 'raw', p)) as { start: number; length: number; zero: boolean }[])
        .map((e): [number, number, boolean] => [e.start, e.length, e.zero]);
      for (const readOnly of [true, false]) {
        const img = await openImage(p, { format: 'raw', readOnly });
        assert.deepEqual(await zeroMap(img), theirs, `readOnly ${readOnly}`);
        // Asked from inside a hole or a data extent, and for less than all of it.
        assert.deepEqual(await img.blockStatus(8192, 100), { length: 100, allocated: true, zero: false, offset: 8192 });
        assert.deepEqual(await img.blockStatus(20000, 1 << 20), { length: (1 << 20) - 20000, allocated: true, zero: true, offset: 20000 });
        assert.deepEqual(await img.read(0, img.virtualSize), bytes);
        await img.close();
      }
      disableLibcForTesting(true);
      try {
        const img = await openImage(p, { format: 'raw', readOnly: true });
        assert.deepEqual(await zeroMap(img), [[0, 6 << 20, false]]);
        await img.close();
      } finally {
        disableLibcForTesting(false);
      }
    } finally {
      t.cleanup();
    }
  });
