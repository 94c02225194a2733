/** One entry of a cpio archive in the "newc" format (the format of Linux initramfs images). */
export type CpioEntry =
  | { kind: 'file'; path: string; data: Uint8Array; mode?: number }
  | { kind: 'dir'; path: string; mode?: number }
  | { kind: 'symlink'; path: string; target: string }
  | { kind: 'chardev'; path: string; major: number; minor: number; mode?: number };

const S_IFREG = 0o100000, S_IFDIR = 0o040000, S_IFLNK = 0o120000, S_IFCHR = 0o020000;

function hex8(n: number): string {
  return (n >>> 0).toString(16).padStart(8, '0');
}

/** Writes entries as a newc archive with the closing TRAILER!!! record. */
export function writeCpio(entries: CpioEntry[]): Uint8Array {
  const chunks: Uint8Array[] = [];
  let length = 0;
  const encoder = new TextEncoder();
  const pad = () => {
    const n = (4 - (length % 4)) % 4;
    if (n) {
      chunks.push(new Uint8Array(n));
      length += n;
    }
  };
  const add = (name: string, mode: number, data: Uint8Array, rdevMajor = 0, rdevMinor = 0, ino = 0) => {
    const nameBytes = encoder.encode(name + '\0');
    const header =
      '070701' + hex8(ino) + hex8(mode) + hex8(0) + hex8(0) + hex8(1) + hex8(0) + hex8(data.length) +
      hex8(0) + hex8(0) + hex8(rdevMajor) + hex8(rdevMinor) + hex8(nameBytes.length) + hex8(0);
    const h = encoder.encode(header);
    chunks.push(h, nameBytes);
    length += h.length + nameBytes.length;
    pad();
    chunks.push(data);
    length += data.length;
    pad();
  };
  entries.forEach((e, i) => {
    const name = e.path.replace(/^\/+/, '');
    const ino = i + 1;
    switch (e.kind) {
      case 'file': add(name, S_IFREG | (e.mode ?? 0o644), e.data, 0, 0, ino); break;
      case 'dir': add(name, S_IFDIR | (e.mode ?? 0o755), new Uint8Array(0), 0, 0, ino); break;
      case 'symlink': add(name, S_IFLNK | 0o777, encoder.encode(e.target), 0, 0, ino); break;
      case 'chardev': add(name, S_IFCHR | (e.mode ?? 0o600), new Uint8Array(0), e.major, e.minor, ino); break;
    }
  });
  add('TRAILER!!!', 0, new Uint8Array(0));
  const out = new Uint8Array(length);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}
