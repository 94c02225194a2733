import { TsvmError } from '../../base/errors.js';
import { type BlockDriver, Qcow2Image, QcowImage } from '../../block/index.js';
import { openForCommand } from './open.js';
import { checkFormat } from './open.js';
import { parseSize } from './units.js';

const CHUNK = 1 << 20;

interface Extent { start: number; length: number; depth: number; present: boolean; zero: boolean; data: boolean; offset?: number; file?: string }

function backingDriver(image: BlockDriver): BlockDriver | undefined {
  return image instanceof Qcow2Image || image instanceof QcowImage ? image.backingDriver : undefined;
}

/** Where each range of the virtual disk comes from, walking down the backing chain like `qemu-img map`. */
async function extentAt(chain: BlockDriver[], files: string[], offset: number, length: number): Promise<Extent> {
  let len = length;
  for (let depth = 0; depth < chain.length; depth++) {
    const st = await chain[depth].blockStatus(offset, len);
    len = st.length;
    const bottom = depth === chain.length - 1;
    if (st.allocated || (bottom && chain[depth].format === 'raw')) {
      const e: Extent = { start: offset, length: len, depth, present: true, zero: st.zero, data: !st.zero };
      // As qemu-img, with the offset of a raw file's holes too (they have one).
      if (st.offset !== undefined) {
        e.offset = st.offset;
        e.file = files[depth];
      }
      return e;
    }
  }
  return { start: offset, length: len, depth: chain.length - 1, present: false, zero: true, data: false };
}

export async function mapCommand(file: string, opts: { format?: string; json: boolean }): Promise<number> {
  const top = await openForCommand(file, opts.format, true);
  const chain = [top];
  for (let b = backingDriver(top); b !== undefined; b = backingDriver(b)) chain.push(b);
  const files = [file, ...chain.slice(1).map((_, i) => `backing-${i + 1}`)];
  try {
    const extents: Extent[] = [];
    for (let off = 0; off < top.virtualSize;) {
      const e = await extentAt(chain, files, off, Math.min(CHUNK * 64, top.virtualSize - off));
      const last = extents[extents.length - 1];
      const contiguous = last !== undefined && last.depth === e.depth && last.present === e.present && last.zero === e.zero &&
        last.data === e.data && (last.offset === undefined ? e.offset === undefined : e.offset === last.offset + last.length);
      if (contiguous) last.length += e.length;
      else extents.push(e);
      off += e.length;
    }
    if (opts.json) {
      const lines = extents.map((e) => `{ "start": ${e.start}, "length": ${e.length}, "depth": ${e.depth}, "present": ${e.present}, ` +
        `"zero": ${e.zero}, "data": ${e.data}${e.offset !== undefined ? `, "offset": ${e.offset}` : ''}}`);
      process.stdout.write(`[${lines.join(',\n')}]\n`);
    } else {
      if (extents.some((e) => e.data && e.offset === undefined)) throw new TsvmError('File contains external, encrypted or compressed clusters.');
      const hex = (n: number) => `0x${n.toString(16)}`.padEnd(16);
      let out = `${'Offset'.padEnd(16)}${'Length'.padEnd(16)}${'Mapped to'.padEnd(16)}File\n`;
      for (const e of extents) if (e.data && e.offset !== undefined) out += `${hex(e.start)}${hex(e.length)}${hex(e.offset)}${e.file}\n`;
      process.stdout.write(out.replace(/^0x0 {13}/gm, '0               '));
    }
  } finally {
    await top.close();
  }
  return 0;
}

/** Exit codes of `qemu-img compare`. */
const SAME = 0, DIFFERENT = 1, ERROR = 2;

export async function compareCommand(a: string, b: string, opts: { formatA?: string; formatB?: string; strict: boolean }): Promise<number> {
  let x: BlockDriver | undefined, y: BlockDriver | undefined;
  try {
    x = await openForCommand(a, opts.formatA, true);
    y = await openForCommand(b, opts.formatB, true);
  } catch (e) {
    await x?.close();
    process.stderr.write(`tsvm-img: ${(e as Error).message}\n`);
    return ERROR;
  }
  try {
    if (opts.strict && x.virtualSize !== y.virtualSize) {
      process.stdout.write('Strict mode: Image size mismatch!\n');
      return DIFFERENT;
    }
    const common = Math.min(x.virtualSize, y.virtualSize);
    for (let off = 0; off < common; off += CHUNK) {
      const n = Math.min(CHUNK, common - off);
      const [p, q] = await Promise.all([x.read(off, n), y.read(off, n)]);
      const i = firstDifference(p, q);
      if (i >= 0) {
        process.stdout.write(`Content mismatch at offset ${off + i}!\n`);
        return DIFFERENT;
      }
    }
    const longer = x.virtualSize > y.virtualSize ? x : y;
    for (let off = common; off < longer.virtualSize; off += CHUNK) {
      const data = await longer.read(off, Math.min(CHUNK, longer.virtualSize - off));
      const i = data.findIndex((v) => v !== 0);
      if (i >= 0) {
        process.stdout.write(`Content mismatch at offset ${off + i}!\n`);
        return DIFFERENT;
      }
    }
    process.stdout.write('Images are identical.\n');
    return SAME;
  } finally {
    await x.close();
    await y.close();
  }
}

function firstDifference(p: Uint8Array, q: Uint8Array): number {
  if (Buffer.compare(p, q) === 0) return -1;
  for (let i = 0; i < p.length; i++) if (p[i] !== q[i]) return i;
  return -1;
}

/** qcow2's metadata for a fully allocated image (QEMU's qcow2 size calculation, from the format's layout). */
function qcow2FullSize(virtualSize: number, clusterSize: number, refcountBits: number, extendedL2: boolean): number {
  const l2EntrySize = extendedL2 ? 16 : 8;
  const aligned = Math.ceil(virtualSize / clusterSize) * clusterSize;
  let meta = clusterSize; // header
  const l2Entries = roundUp(aligned / clusterSize, clusterSize / l2EntrySize);
  meta += l2Entries * l2EntrySize;
  const l1Entries = roundUp((l2Entries * l2EntrySize) / clusterSize, clusterSize / 8);
  meta += l1Entries * 8;
  meta += refcountMetadataSize((meta + aligned) / clusterSize, clusterSize, refcountBits);
  return meta + aligned;
}

/** Refcount blocks and table clusters needed to count `clusters` clusters and themselves (a fixed point). */
function refcountMetadataSize(clusters: number, clusterSize: number, refcountBits: number): number {
  const perTableCluster = clusterSize / 8;
  const perBlock = (clusterSize * 8) / refcountBits;
  let table = 0, blocks = 0, n = 0, last: number;
  do {
    last = n;
    blocks = Math.ceil((clusters + table + blocks) / perBlock);
    table = Math.ceil(blocks / perTableCluster);
    n = clusters + blocks + table;
  } while (n !== last);
  return (blocks + table) * clusterSize;
}

const roundUp = (n: number, m: number) => Math.ceil(n / m) * m;

export async function measureCommand(file: string | undefined, opts: { format?: string; outFormat?: string; size?: string; options?: string; json: boolean }): Promise<number> {
  const outFormat = checkFormat(opts.outFormat ?? 'raw', file ?? 'measure')!;
  if ((file === undefined) === (opts.size === undefined)) throw new TsvmError('Either --size N or one filename must be specified.');
  let virtualSize: number;
  let dataBytes = 0;
  let clusterSize = 65536, refcountBits = 16, extendedL2 = false;
  if (opts.options) {
    for (const part of opts.options.split(',')) {
      const [k, v] = part.split('=');
      if (k === 'cluster_size') clusterSize = parseSize(v);
      else if (k === 'refcount_bits') refcountBits = Number(v);
      else if (k === 'extended_l2') extendedL2 = v === 'on';
    }
  }
  let bitmaps = false;
  if (file !== undefined) {
    const image = await openForCommand(file, opts.format, true);
    try {
      virtualSize = image.virtualSize;
      bitmaps = image.format === 'qcow2';
      for (let off = 0; off < virtualSize;) {
        const st = await image.blockStatus(off, Math.min(CHUNK * 64, virtualSize - off));
        let n = st.length;
        if (!st.zero) {
          // As qemu-img: a data stretch counts to the end of its cluster, and the scan goes on from there.
          n = roundUp(off + n, clusterSize) - off;
          dataBytes += (off % clusterSize) + n;
        }
        off += n;
      }
    } finally {
      await image.close();
    }
  } else {
    virtualSize = parseSize(opts.size!);
  }
  let required: number, full: number;
  if (outFormat === 'qcow2') {
    const aligned = roundUp(virtualSize, clusterSize);
    full = qcow2FullSize(virtualSize, clusterSize, refcountBits, extendedL2);
    required = full - aligned + Math.min(dataBytes, aligned);
  } else if (outFormat === 'raw') {
    // qemu-img counts a raw output as fully allocated, whatever the input.
    full = required = virtualSize;
  } else {
    throw new TsvmError(`Format driver '${outFormat}' does not support size measurement`);
  }
  // Bitmap sizes only for a qcow2 input into a qcow2 output (the formats that have bitmaps).
  bitmaps &&= outFormat === 'qcow2';
  if (opts.json) process.stdout.write(JSON.stringify({ ...(bitmaps && { 'bitmaps': 0 }), 'required': required, 'fully-allocated': full }, null, 4) + '\n');
  else process.stdout.write(`required size: ${required}\nfully allocated size: ${full}\n${bitmaps ? 'bitmaps size: 0\n' : ''}`);
  return 0;
}
