/** A file of a newc cpio archive (directories, links and devices are listed with empty data). */
export interface CpioMember {
  path: string;
  mode: number;
  data: Uint8Array;
}

/** Reads an uncompressed newc ("070701") archive up to its TRAILER!!! record. */
export function readCpio(archive: Uint8Array): CpioMember[] {
  const decoder = new TextDecoder('latin1');
  const out: CpioMember[] = [];
  const align = (n: number) => (n + 3) & ~3;
  let at = 0;
  while (at + 110 <= archive.length) {
    const header = decoder.decode(archive.subarray(at, at + 110));
    if (!header.startsWith('070701')) throw new Error(`not a newc cpio archive (bad magic at offset ${at})`);
    const field = (i: number) => parseInt(header.slice(6 + 8 * i, 14 + 8 * i), 16);
    const mode = field(1);
    const size = field(6);
    const nameSize = field(11);
    const path = decoder.decode(archive.subarray(at + 110, at + 110 + nameSize - 1));
    const dataAt = align(at + 110 + nameSize);
    if (path === 'TRAILER!!!') break;
    if (dataAt + size > archive.length) throw new Error(`cpio archive truncated in ${path}`);
    out.push({ path, mode, data: archive.subarray(dataAt, dataAt + size) });
    at = align(dataAt + size);
  }
  return out;
}
