/** A seeded pseudo-random generator (mulberry32): the same seed gives the same programs on every host. */
export class Random {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** A uniform unsigned 32-bit integer. */
  u32(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** An integer in [0, n). */
  below(n: number): number {
    return Math.floor((this.u32() / 2 ** 32) * n);
  }

  /** An integer in [min, max]. */
  between(min: number, max: number): number {
    return min + this.below(max - min + 1);
  }

  chance(p: number): boolean {
    return this.u32() / 2 ** 32 < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)]!;
  }

  /** Picks by weight: `choices` pairs each item with its relative weight. */
  weighted<T>(choices: readonly (readonly [T, number])[]): T {
    let total = 0;
    for (const [, w] of choices) total += w;
    let r = this.below(total);
    for (const [item, w] of choices) {
      if (r < w) return item;
      r -= w;
    }
    return choices[choices.length - 1]![0];
  }

  private static readonly EDGES = [
    0, 1, 2, 3, 0x7f, 0x80, 0x81, 0xfe, 0xff, 0x100, 0x7ffe, 0x7fff, 0x8000, 0x8001, 0xfffe, 0xffff, 0x10000,
    0x7fffffff, 0x80000000, 0x80000001, 0xfffffffe, 0xffffffff, 0xffffff80, 0xffff8000,
  ];

  /** An unsigned 32-bit operand biased to the edges where flags change (0, sign boundaries, all ones). */
  operand(): number {
    switch (this.below(5)) {
      case 0: case 1: return this.pick(Random.EDGES);
      case 2: return this.below(40);
      case 3: return (this.pick(Random.EDGES) + this.between(-3, 3)) >>> 0;
      default: return this.u32();
    }
  }
}
