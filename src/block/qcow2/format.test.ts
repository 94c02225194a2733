import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  EXT_FEATURE_NAMES, compressedRange, encodeCompressed, encodeFullHeader, featureNameTable, parseHeader,
  type Qcow2Header,
} from './format.js';

test('qcow2 format: compressed descriptors round-trip for every cluster size', () => {
  for (let cb = 9; cb <= 21; cb++) {
    for (const [off, len] of [[0x12345, 700], [1 << 30, 1], [(1 << 20) + 511, 2], [7 * 512, 512 * 3]] as const) {
      if (len > 2 ** cb) continue; // compressed data is never larger than a cluster
      const d = encodeCompressed(off, len, cb);
      const hi = Number(d >> 32n), lo = Number(d & 0xffffffffn);
      assert.equal(hi >>> 30, 1, 'compressed flag only');
      const r = compressedRange(hi, lo, cb);
      assert.equal(r.offset, off);
      assert.ok(r.offset + r.length >= off + len, 'covers the data');
      assert.equal((r.offset + r.length) % 512, 0, 'ends on a sector boundary');
      assert.ok(r.offset + r.length - (off + len) < 512);
    }
  }
});

test('qcow2 format: header with extensions and backing file round-trips', () => {
  const h: Qcow2Header = {
    raw: new Uint8Array(112), version: 3, backingFileOffset: 0, backingFileSize: 0, clusterBits: 16, size: 1 << 30,
    cryptMethod: 0, l1Size: 2, l1TableOffset: 3 << 16, refcountTableOffset: 1 << 16, refcountTableClusters: 1,
    nbSnapshots: 0, snapshotsOffset: 0, incompatible: 0n, compatible: 1n, autoclear: 0n, refcountOrder: 4,
    headerLength: 112, compressionType: 0,
    extensions: [{ type: EXT_FEATURE_NAMES, data: featureNameTable() }, { type: 0x1234, data: new Uint8Array([1, 2, 3]) }],
    backingFile: 'base image.raw', backingFormat: 'raw',
  };
  const buf = new Uint8Array(65536);
  buf.set(encodeFullHeader(h, 65536));
  const p = parseHeader(buf);
  assert.equal(p.size, 1 << 30);
  assert.equal(p.backingFile, 'base image.raw');
  assert.equal(p.backingFormat, 'raw');
  assert.equal(p.compatible, 1n);
  assert.deepEqual(p.extensions.map((e) => e.type), [0xe2792aca, EXT_FEATURE_NAMES, 0x1234]);
  assert.deepEqual([...p.extensions[2]!.data], [1, 2, 3]);
  assert.throws(() => encodeFullHeader(h, 512), /does not fit/);
  assert.throws(() => parseHeader(new Uint8Array(100)), /not a qcow2 image/);
});
