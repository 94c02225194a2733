/** The qcow2 internal snapshot table (docs/interop/qcow2.txt, "Snapshots"). */
import { TsvmError } from '../../base/errors.js';
import { getU64, setU64 } from '../util.js';
import { alignTo8 } from './format.js';

export interface SnapshotEntry {
  l1TableOffset: number;
  l1Size: number;
  id: string;
  name: string;
  dateSec: number;
  dateNsec: number;
  vmClockNsec: bigint;
  vmStateSize: number;
  /** Virtual disk size when the snapshot was taken (from extra data, if present). */
  diskSize?: number;
  /** Raw extra data; unknown fields are preserved. */
  extra: Uint8Array;
}

export function parseSnapshotTable(buf: Uint8Array, count: number): SnapshotEntry[] {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out: SnapshotEntry[] = [];
  let p = 0;
  const dec = new TextDecoder();
  for (let i = 0; i < count; i++) {
    if (p + 40 > buf.length) throw new TsvmError('qcow2 snapshot table truncated');
    const idLen = dv.getUint16(p + 12), nameLen = dv.getUint16(p + 14), extraLen = dv.getUint32(p + 36);
    const end = p + 40 + extraLen + idLen + nameLen;
    if (end > buf.length) throw new TsvmError('qcow2 snapshot table truncated');
    const extra = buf.slice(p + 40, p + 40 + extraLen);
    const edv = new DataView(extra.buffer);
    const e: SnapshotEntry = {
      l1TableOffset: getU64(dv, p),
      l1Size: dv.getUint32(p + 8),
      dateSec: dv.getUint32(p + 16),
      dateNsec: dv.getUint32(p + 20),
      vmClockNsec: dv.getBigUint64(p + 24),
      vmStateSize: extraLen >= 8 ? getU64(edv, 0) : dv.getUint32(p + 32),
      extra,
      id: dec.decode(buf.subarray(p + 40 + extraLen, p + 40 + extraLen + idLen)),
      name: dec.decode(buf.subarray(p + 40 + extraLen + idLen, end)),
    };
    if (extraLen >= 16) e.diskSize = getU64(edv, 8);
    out.push(e);
    p = alignTo8(end);
  }
  return out;
}

/** Bytes taken by the table (for refcounting its clusters). */
export function snapshotTableSize(entries: SnapshotEntry[]): number {
  let n = 0;
  const enc = new TextEncoder();
  for (const e of entries) n += alignTo8(40 + e.extra.length + enc.encode(e.id).length + enc.encode(e.name).length);
  return n;
}

export function encodeSnapshotTable(entries: SnapshotEntry[]): Uint8Array {
  const enc = new TextEncoder();
  const out = new Uint8Array(snapshotTableSize(entries));
  const dv = new DataView(out.buffer);
  let p = 0;
  for (const e of entries) {
    const id = enc.encode(e.id), name = enc.encode(e.name);
    setU64(dv, p, e.l1TableOffset);
    dv.setUint32(p + 8, e.l1Size);
    dv.setUint16(p + 12, id.length);
    dv.setUint16(p + 14, name.length);
    dv.setUint32(p + 16, e.dateSec);
    dv.setUint32(p + 20, e.dateNsec);
    dv.setBigUint64(p + 24, e.vmClockNsec);
    dv.setUint32(p + 32, Math.min(e.vmStateSize, 0xffffffff));
    dv.setUint32(p + 36, e.extra.length);
    out.set(e.extra, p + 40);
    out.set(id, p + 40 + e.extra.length);
    out.set(name, p + 40 + e.extra.length + id.length);
    p = alignTo8(p + 40 + e.extra.length + id.length + name.length);
  }
  return out;
}

/** Extra data as qemu-img 7.2 writes it: vm_state_size_large, disk_size, icount (0: not recorded by a replay). */
export function makeExtra(vmStateSize: number, diskSize: number): Uint8Array {
  const extra = new Uint8Array(24);
  const dv = new DataView(extra.buffer);
  setU64(dv, 0, vmStateSize);
  setU64(dv, 8, diskSize);
  dv.setBigInt64(16, 0n);
  return extra;
}
