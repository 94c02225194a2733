/** Access widths in bytes. */
export type AccessSize = 1 | 2 | 4;

/**
 * A device on a port-I/O or MMIO bus. It sees only the offset inside the range it was registered at,
 * never its base address, so the machine decides where it lives.
 */
export interface BusDevice {
  read(offset: number, size: AccessSize): number;
  write(offset: number, size: AccessSize, value: number): void;
}

export interface BusRangeOptions {
  /** Widths the device implements (bit mask of 1, 2, 4); other widths are split into byte accesses. */
  sizes?: number;
  /** Name for diagnostics. */
  name?: string;
}

export interface BusRange {
  readonly base: number;
  readonly length: number;
  readonly device: BusDevice;
  readonly sizes: number;
  readonly name: string;
}

export const ALL_SIZES = 1 | 2 | 4;
export const ALL_ONES = [0, 0xff, 0xffff, 0, 0xffffffff] as const;

/** Reads `size` bytes from a range whose device only takes byte accesses, little-endian. */
export function splitRead(range: BusRange, offset: number, size: AccessSize): number {
  let value = 0;
  for (let i = 0; i < size; i++) value |= (range.device.read(offset + i, 1) & 0xff) << (8 * i);
  return value >>> 0;
}

export function splitWrite(range: BusRange, offset: number, size: AccessSize, value: number): void {
  for (let i = 0; i < size; i++) range.device.write(offset + i, 1, (value >>> (8 * i)) & 0xff);
}
