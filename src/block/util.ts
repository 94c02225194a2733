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
  const n = buf.length;
  if (n === 0) return true;
  if (buf[0] !== 0 || buf[n - 1] !== 0) return false;
  const b = Buffer.from(buf.buffer, buf.byteOffset, n);
  for (let p = 0; p < n; p += ZEROES.length) {
    const len = Math.min(ZEROES.length, n - p);
    if (ZEROES.compare(b, p, p + len, 0, len) !== 0) return false; // memcmp
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
