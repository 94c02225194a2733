import { TsvmError } from '../../base/errors.js';

const SUFFIXES = 'KMGTPE';

/**
 * A size as qemu-img reads it: bytes, or a number with a binary suffix (k/K, M, G, T, P, E; also with a
 * trailing B), fractions allowed ("1.5G").
 */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)([kKMGTPE]?)(?:i?B)?$|^(\d+)[bB]$/.exec(text.trim());
  if (!m) throw new TsvmError(`Invalid image size specified. You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.`);
  if (m[3] !== undefined) return Number(m[3]);
  const unit = m[2] === '' ? 1 : 1024 ** (SUFFIXES.indexOf(m[2].toUpperCase()) + 1);
  const value = Math.floor(Number(m[1]) * unit);
  if (!Number.isSafeInteger(value)) throw new TsvmError('Image size must be less than 8 EiB!');
  return value;
}

/** qemu's size_to_str: three significant digits and a binary unit, switching units at 1000. */
export function humanSize(bytes: number): string {
  const units = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'];
  const scaled = bytes / (1000 / 1024);
  const exponent = scaled > 0 ? Math.floor(Math.log2(scaled)) + 1 : 0;
  const i = Math.max(0, Math.trunc((exponent - 1) / 10));
  return `${Number((bytes / 2 ** (i * 10)).toPrecision(3))} ${units[i]}B`;
}

/** `-o key=value,key2=value2` (commas inside values doubled, as in QEMU). */
export function parseOptionList(text: string): Map<string, string> {
  const out = new Map<string, string>();
  const parts = text.replace(/,,/g, '\u0000').split(',');
  for (const part of parts) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const key = (eq < 0 ? part : part.slice(0, eq)).replace(/\u0000/g, ',');
    const value = eq < 0 ? 'on' : part.slice(eq + 1).replace(/\u0000/g, ',');
    out.set(key, value);
  }
  return out;
}

export function parseOnOff(key: string, value: string): boolean {
  if (value === 'on' || value === 'true') return true;
  if (value === 'off' || value === 'false') return false;
  throw new TsvmError(`Parameter '${key}' expects 'on' or 'off'`);
}
