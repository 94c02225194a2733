import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

/** A kernel module file and the modules it depends on (from its .modinfo "depends=" entry). */
interface ModuleInfo {
  name: string;
  path: string;
  depends: string[];
}

/** Reads a key of a .ko file's modinfo section (NUL-separated "key=value" strings). */
function modinfo(bytes: Buffer, key: string): string | null {
  const needle = Buffer.from(`\0${key}=`);
  const at = bytes.indexOf(needle);
  if (at < 0) return null;
  const start = at + needle.length;
  const end = bytes.indexOf(0, start);
  return bytes.subarray(start, end < 0 ? bytes.length : end).toString('latin1');
}

function scan(dir: string, out: Map<string, string>): void {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) scan(p, out);
    else if (e.name.endsWith('.ko')) out.set(e.name.slice(0, -3).replace(/-/g, '_'), p);
  }
}

/**
 * Resolves `wanted` module names (modules built into the kernel are skipped) to .ko files in load order:
 * every module after the modules it depends on.
 */
export function resolveModules(modulesDir: string, wanted: string[]): { name: string; path: string }[] {
  const files = new Map<string, string>();
  scan(join(modulesDir, 'kernel'), files);
  const builtin = new Set(
    readFileSync(join(modulesDir, 'modules.builtin'), 'utf8')
      .split('\n')
      .map((l) => l.split('/').pop()?.replace(/\.ko$/, '').replace(/-/g, '_') ?? '')
      .filter(Boolean),
  );
  const infos = new Map<string, ModuleInfo>();
  const order: ModuleInfo[] = [];
  const visit = (raw: string, chain: string[]) => {
    const name = raw.replace(/-/g, '_');
    if (builtin.has(name) || infos.has(name)) return;
    const path = files.get(name);
    if (!path) throw new Error(`kernel module ${raw} not found`);
    if (chain.includes(name)) return;
    const deps = (modinfo(readFileSync(path), 'depends') ?? '').split(',').filter(Boolean);
    const info: ModuleInfo = { name, path, depends: deps };
    for (const d of deps) visit(d, [...chain, name]);
    infos.set(name, info);
    order.push(info);
  };
  for (const w of wanted) visit(w, []);
  return order.map(({ name, path }) => ({ name, path }));
}
