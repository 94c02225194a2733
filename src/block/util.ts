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

/** A needle for Buffer.indexOf: a zero block of `unit` bytes contains this many zeroes at its start. */
const ZERO_NEEDLE = Buffer.alloc(4096);

/**
 * Splits `data` (at disk offset `at`) into runs of zero and non-zero units (blocks of `unit` bytes
 * aligned on the disk; the first and last may be cut short by the ends of `data`), calling
 * `fn(start, end, zero)` for each run in order until it returns false; returns false if it did.
 * Stretches without a zero unit are skipped with a native search (Buffer.indexOf for a block of
 * zeroes) rather than unit by unit: cheap for plain data, whatever the unit.
 */
export function zeroRuns(data: Uint8Array, at: number, unit: number, fn: (start: number, end: number, zero: boolean) => boolean): boolean {
  const len = data.length;
  if (len === 0) return true;
  const buf = Buffer.from(data.buffer, data.byteOffset, len);
  const nl = Math.min(unit, ZERO_NEEDLE.length), needle = nl === ZERO_NEEDLE.length ? ZERO_NEEDLE : ZERO_NEEDLE.subarray(0, nl);
  const first = unit - (at % unit);
  const endOf = (s: number) => Math.min(len, s < first ? first : s + unit);
  const lastStart = len <= first ? 0 : first + Math.floor((len - 1 - first) / unit) * unit;
  // No needle starts in [some earlier position, known): a whole unit starting there is not zero.
  let known = -1;
  const find = (q: number) => {
    if (known < q) {
      known = buf.indexOf(needle, q);
      if (known < 0) known = len;
    }
  };
  const zeroAt = (s: number): boolean => {
    const e = endOf(s);
    if (e - s >= nl) {
      find(s);
      if (known > s) return false;
    }
    return isZeroRange(buf, s, e);
  };
  /** The first unit start >= q (itself one, past the first unit) that may be a zero unit. */
  const candidate = (q: number): number => {
    find(q);
    let t = known <= q ? q : first + Math.ceil((known - first) / unit) * unit;
    if (len - lastStart < nl && lastStart >= q && t > lastStart) t = lastStart;
    return Math.min(t, len);
  };
  for (let p = 0; p < len;) {
    const zero = zeroAt(p);
    let q = endOf(p);
    if (zero) {
      while (q < len && zeroAt(q)) q = endOf(q);
    } else {
      while (q < len) {
        q = candidate(q);
        if (q >= len || zeroAt(q)) break;
        q = endOf(q);
      }
    }
    if (!fn(p, q, zero)) return false;
    p = q;
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
