/**
 * A minimal well-formed bzImage for tests: the setup-header fields a loader reads, around a given
 * protected-mode payload (loaded at 1 MiB and entered in 32-bit protected mode).
 */
export function fakeBzImage(payload: Uint8Array = new Uint8Array(4096)): Uint8Array {
  const setupSects = 4;
  const padded = Math.ceil(payload.length / 16) * 16;
  const bytes = new Uint8Array((setupSects + 1) * 512 + padded);
  const dv = new DataView(bytes.buffer);
  bytes[0x1f1] = setupSects;
  dv.setUint32(0x1f4, padded / 16, true);
  dv.setUint16(0x1fe, 0xaa55, true);
  bytes[0x201] = 0x66;
  dv.setUint32(0x202, 0x53726448, true);
  dv.setUint16(0x206, 0x020f, true);
  bytes[0x211] = 0x01;
  dv.setUint32(0x214, 0x100000, true);
  dv.setUint32(0x22c, 0x37ffffff, true);
  dv.setUint32(0x238, 2047, true);
  bytes.set(payload, (setupSects + 1) * 512);
  return bytes;
}
