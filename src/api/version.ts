import { readFileSync } from 'node:fs';

/** The package version, read once from package.json (two levels above dist/src/api or src/api). */
function readVersion(): string {
  for (const rel of ['../../../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'tsvm' && pkg.version) return pkg.version;
    } catch {
      // Try the next layout.
    }
  }
  return 'unknown';
}

export const TSVM_VERSION = readVersion();
