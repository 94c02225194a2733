import { TsvmError } from '../base/errors.js';

export function checkRange(d: { virtualSize: number }, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 ||
      offset + length > d.virtualSize) {
    throw new TsvmError(`request ${offset}+${length} is outside the disk (size ${d.virtualSize})`);
  }
}

/** A FIFO async mutex. */
export class Mutex {
  private tail: Promise<void> = Promise.resolve();
  private users = 0;

  /** No request holds the mutex or waits for it. */
  get idle(): boolean {
    return this.users === 0;
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    const prev = this.tail;
    let release!: () => void;
    this.tail = new Promise<void>((r) => { release = r; });
    this.users++;
    try {
      await prev;
      return await fn();
    } finally {
      this.users--;
      release();
    }
  }
}

const ZEROES = Buffer.alloc(1 << 16);

export function isZero(buf: Uint8Array): boolean {
  return isZeroRange(buf, 0, buf.length);
}

/** isZero(buf.subarray(start, end)) without creating the subarray (hot loops). */
export function isZeroRange(buf: Uint8Array, start: number, end: number): boolean {
  if (end <= start) return true;
  if (buf[start] !== 0 || buf[end - 1] !== 0) return false;
  for (let p = start; p < end; p += ZEROES.length) {
    const len = Math.min(ZEROES.length, end - p);
    if (ZEROES.compare(buf, p, p + len, 0, len) !== 0) return false; // memcmp
  }
  return true;
}

/**
 * Splits `data` (at disk offset `at`) into runs of zero and non-zero units (blocks of `unit` bytes
 * aligned on the disk; the first and last may be cut short by the ends of `data`), calling
 * `fn(start, end, zero)` for each run in order until it returns false; returns false if it did.
 * Each unit is judged by isZeroRange, whose first- and last-byte test rejects almost every data unit
 * without reading it (a search through the data for a block of zeroes costs more: ~2.5 GB/s on
 * random bytes, where every 256th byte is a zero that starts a comparison).
 */
export function zeroRuns(data: Uint8Array, at: number, unit: number, fn: (start: number, end: number, zero: boolean) => boolean): boolean {
  const len = data.length;
  let p = 0, q = Math.min(len, unit - (at % unit));
  let zero = isZeroRange(data, 0, q);
  while (p < len) {
    for (let e = Math.min(len, q + unit); q < len && isZeroRange(data, q, e) === zero; e = Math.min(len, e + unit)) q = e;
    if (!fn(p, q, zero)) return false;
    // The unit at q (if any) is of the other kind: the next run starts with it.
    p = q;
    q = Math.min(len, q + unit);
    zero = !zero;
  }
  return true;
}

export function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/** Big-endian u64 read as a number (throws beyond 2^53). */
export function getU64(dv: DataView, off: number): number {
  const hi = dv.getUint32(off), lo = dv.getUint32(off + 4);
  if (hi >= 0x200000) throw new TsvmError('64-bit field too large');
  return hi * 0x100000000 + lo;
}

export function setU64(dv: DataView, off: number, v: number): void {
  dv.setUint32(off, Math.floor(v / 0x100000000));
  dv.setUint32(off + 4, v >>> 0);
}

/**
 * Simple LRU map with a size limit. Entries for which `pinned` returns true (dirty cache entries) are
 * never evicted; the map may then exceed its limit until they are unpinned.
 */
export class Lru<K, V> {
  private map = new Map<K, V>();
  constructor(private readonly limit: number, private readonly pinned?: (k: K) => boolean) {}
  get size(): number {
    return this.map.size;
  }
  /** Looks up without touching the LRU order. */
  peek(k: K): V | undefined {
    return this.map.get(k);
  }
  get(k: K): V | undefined {
    const v = this.map.get(k);
    if (v !== undefined) {
      this.map.delete(k);
      this.map.set(k, v);
    }
    return v;
  }
  set(k: K, v: V): void {
    this.map.delete(k);
    this.map.set(k, v);
    if (this.map.size <= this.limit) return;
    for (const key of this.map.keys()) {
      if (key === k || this.pinned?.(key)) continue;
      this.map.delete(key);
      return;
    }
  }
  delete(k: K): void {
    this.map.delete(k);
  }
  clear(): void {
    this.map.clear();
  }
}
