import { TsvmError } from '../base/errors.js';

/**
 * QEMU's command-line spelling: single-dash long options (`-m 256`, `-no-reboot`), double-dash accepted too,
 * and option values that are comma-separated `key=value` lists where `,,` stands for a literal comma.
 */

export interface OptionSpec {
  /** Names without dashes; the first is canonical (e.g. ['machine', 'M']). */
  names: string[];
  takesValue: boolean;
  help: string;
}

export interface ParsedOption {
  name: string;
  value: string | null;
}

export function parseQemuArgs(argv: string[], specs: OptionSpec[]): ParsedOption[] {
  const byName = new Map<string, OptionSpec>();
  for (const s of specs) for (const n of s.names) byName.set(n, s);
  const out: ParsedOption[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('-') || arg === '-') throw new TsvmError(`${arg}: unexpected argument (options start with -)`);
    let name = arg.replace(/^--?/, '');
    let inlineValue: string | null = null;
    const eq = name.indexOf('=');
    if (arg.startsWith('--') && eq > 0) {
      inlineValue = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    const spec = byName.get(name);
    if (!spec) throw new TsvmError(`${arg}: invalid option`);
    if (!spec.takesValue) {
      if (inlineValue !== null) throw new TsvmError(`${arg}: option takes no value`);
      out.push({ name: spec.names[0], value: null });
      continue;
    }
    let value = inlineValue;
    if (value === null) {
      if (i + 1 >= argv.length) throw new TsvmError(`${arg}: requires an argument`);
      value = argv[++i];
    }
    out.push({ name: spec.names[0], value });
  }
  return out;
}

/**
 * Splits a QEMU option value such as `file=a,,b.img,format=raw,if=ide` into an ordered list of
 * [key, value] pairs. A leading element without `=` is returned under `implicitKey` (e.g. `-boot d`,
 * `-serial unix:/p,server`); `server` alone means `server=on`.
 */
export function parseKeyValueList(text: string, implicitKey?: string): [string, string][] {
  const parts: string[] = [];
  let cur = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === ',') {
      if (text[i + 1] === ',') {
        cur += ',';
        i++;
        continue;
      }
      parts.push(cur);
      cur = '';
      continue;
    }
    cur += c;
  }
  parts.push(cur);
  const pairs: [string, string][] = [];
  parts.forEach((p, index) => {
    const eq = p.indexOf('=');
    if (eq < 0) {
      if (index === 0 && implicitKey !== undefined) pairs.push([implicitKey, p]);
      else if (p.startsWith('no') && p.length > 2) pairs.push([p.slice(2), 'off']);
      else pairs.push([p, 'on']);
    } else {
      pairs.push([p.slice(0, eq), p.slice(eq + 1)]);
    }
  });
  return pairs;
}

/** QEMU's boolean spellings. */
export function parseOnOff(option: string, key: string, value: string): boolean {
  if (value === 'on' || value === 'yes' || value === 'true') return true;
  if (value === 'off' || value === 'no' || value === 'false') return false;
  throw new TsvmError(`${option}: parameter '${key}' expects 'on' or 'off'`);
}

/**
 * A size with an optional k/M/G/T suffix (powers of 1024). `defaultUnit` applies to a bare number
 * (QEMU's -m takes MiB when no suffix is given).
 */
export function parseSize(text: string, defaultUnit: number): number | null {
  const m = /^(\d+(?:\.\d+)?)([kKmMgGtT]?)[bB]?$/.exec(text.trim());
  if (!m) return null;
  const units: Record<string, number> = { k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };
  const unit = m[2] ? units[m[2].toLowerCase()] : defaultUnit;
  const v = Number(m[1]) * unit;
  return Number.isFinite(v) ? Math.floor(v) : null;
}
