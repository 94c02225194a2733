import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { TsvmError } from '../base/errors.js';
import { type BlockDriver, Qcow2Image, createImage, openImage } from './index.js';
import { pattern, tmpDir } from './test-helpers.js';

/**
 * Damaged and hostile images: random bytes of the header and of the metadata tables are overwritten; opening,
 * reading and checking must end (no hang) with data or a TsvmError (one line, no crash), and a read-only
 * open must leave the file as it was.
 */
const ROUNDS = 400;
const STEP_TIMEOUT_MS = 10_000;

function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

async function withTimeout<T>(what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no answer in ${STEP_TIMEOUT_MS} ms`)), STEP_TIMEOUT_MS); });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function exercise(path: string): Promise<void> {
  let image: BlockDriver | undefined;
  try {
    image = await openImage(path, { readOnly: true });
    const size = image.virtualSize;
    for (const offset of [0, 65536, Math.max(0, size - 4096), Math.floor(size / 2)]) {
      if (offset < size) await image.read(offset, Math.min(65536, size - offset));
      if (offset < size) await image.blockStatus(offset, Math.min(1 << 20, size - offset));
    }
    if (image instanceof Qcow2Image) await image.check(false);
  } catch (e) {
    if (!(e instanceof TsvmError)) throw new Error(`not a TsvmError: ${(e as Error)?.stack ?? String(e)}`);
    assert.ok(!e.message.includes('\n'), `one line: ${e.message}`);
  } finally {
    await image?.close().catch(() => {});
  }
}

test('damaged qcow2 and qcow headers and tables: an error or data, never a crash, a hang or a write', async () => {
  const t = tmpDir();
  try {
    const sources: string[] = [];
    for (const [name, format, opts] of [['a.qcow2', 'qcow2', {}], ['b.qcow2', 'qcow2', { clusterSize: 4096, refcountBits: 1 }],
      ['c.qcow2', 'qcow2', { compat: '0.10' as const }], ['d.qcow', 'qcow', {}]] as const) {
      const p = t.path(name);
      await createImage(p, format, 8 << 20, opts);
      const img = await openImage(p);
      for (let i = 0; i < 6; i++) await img.write(i * 1_300_000, pattern(70_000, i + 1));
      // (1-bit refcounts cannot count a cluster shared with a snapshot.)
      if (img instanceof Qcow2Image && !('refcountBits' in opts)) await img.createSnapshot('s');
      await img.write(0, pattern(4096, 99));
      await img.close();
      sources.push(p);
    }
    const random = rng(20261125);
    for (let round = 0; round < ROUNDS; round++) {
      const source = readFileSync(sources[round % sources.length]);
      const damaged = Buffer.from(source);
      const edits = 1 + Math.floor(random() * 4);
      for (let e = 0; e < edits; e++) {
        // Mostly the header, sometimes anywhere in the metadata-heavy first 256 KiB.
        const limit = random() < 0.6 ? 128 : Math.min(damaged.length, 256 << 10);
        const at = Math.floor(random() * limit);
        damaged[at] = random() < 0.3 ? 0xff : Math.floor(random() * 256);
      }
      const p = t.path('fuzz.img');
      writeFileSync(p, damaged);
      await withTimeout(`round ${round}`, exercise(p));
      assert.ok(readFileSync(p).equals(damaged), `round ${round}: a read-only open left the file unchanged`);
    }
  } finally {
    t.cleanup();
  }
});
