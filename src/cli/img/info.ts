import { basename, dirname, isAbsolute, join } from 'node:path';
import { type BlockDriver, Qcow2Image, QcowImage, type SnapshotInfo } from '../../block/index.js';
import { diskUsage, openForCommand } from './open.js';
import { humanSize } from './units.js';

/** What `info` reports about one image, in qemu-img's JSON field names and order. */
export type ImageInfo = Record<string, unknown>;

export async function describeImage(file: string, image: BlockDriver): Promise<ImageInfo> {
  const info: ImageInfo = {};
  if (image instanceof Qcow2Image) {
    const q = image.info();
    if (q.snapshots.length > 0) info.snapshots = q.snapshots.map(snapshotJson);
  }
  const backing = backingOf(image);
  if (backing?.format !== undefined) info['backing-filename-format'] = backing.format;
  info['virtual-size'] = image.virtualSize;
  info.filename = file;
  if (image instanceof Qcow2Image) info['cluster-size'] = image.clusterSize;
  if (image instanceof QcowImage) info['cluster-size'] = 2 ** image.header.clusterBits;
  info.format = image.format;
  info['actual-size'] = await diskUsage(file);
  if (image instanceof Qcow2Image) {
    const q = image.info();
    // Version 2 images have no feature bits: QEMU leaves those fields out.
    const data: Record<string, unknown> = { compat: q.compat, 'compression-type': q.compressionType };
    if (q.version >= 3) data['lazy-refcounts'] = q.lazyRefcounts;
    data['refcount-bits'] = q.refcountBits;
    if (q.version >= 3) {
      data.corrupt = q.corrupt;
      data['extended-l2'] = q.extendedL2;
    }
    info['format-specific'] = { type: 'qcow2', data };
  }
  if (backing !== undefined) {
    // Like QEMU: relative to the image's own path, not made absolute.
    info['full-backing-filename'] = isAbsolute(backing.name) ? backing.name : join(dirname(file), backing.name);
    info['backing-filename'] = backing.name;
  }
  info['dirty-flag'] = image instanceof Qcow2Image ? image.info().dirty : false;
  return info;
}

export function backingOf(image: BlockDriver): { name: string; format?: string } | undefined {
  if (image instanceof Qcow2Image) {
    const q = image.info();
    if (q.backingFile === undefined) return undefined;
    return q.backingFormat === undefined ? { name: q.backingFile } : { name: q.backingFile, format: q.backingFormat };
  }
  if (image instanceof QcowImage && image.header.backingFile) return { name: image.header.backingFile };
  return undefined;
}

function snapshotJson(s: SnapshotInfo): Record<string, unknown> {
  const clock = Number(s.vmClockNsec);
  return {
    ...(s.icount !== undefined && { icount: s.icount }),
    'vm-clock-nsec': clock % 1e9,
    name: s.name,
    'date-sec': s.dateSec,
    'date-nsec': s.dateNsec,
    'vm-clock-sec': Math.floor(clock / 1e9),
    id: s.id,
    'vm-state-size': s.vmStateSize,
  };
}

/** qemu-img's snapshot table (info and snapshot -l). */
export function snapshotTable(snapshots: SnapshotInfo[]): string {
  const lines = ['Snapshot list:', 'ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT'];
  for (const s of snapshots) {
    const d = new Date(s.dateSec * 1000);
    const p2 = (n: number) => String(n).padStart(2, '0');
    const date = `${d.getFullYear()}-${p2(d.getMonth() + 1)}-${p2(d.getDate())} ${p2(d.getHours())}:${p2(d.getMinutes())}:${p2(d.getSeconds())}`;
    const ns = Number(s.vmClockNsec);
    const secs = Math.floor(ns / 1e9);
    const clock = `${p2(Math.floor(secs / 3600))}:${p2(Math.floor(secs / 60) % 60)}:${p2(secs % 60)}.${String(Math.floor((ns % 1e9) / 1e6)).padStart(3, '0')}`;
    lines.push(`${s.id.padEnd(9)} ${s.name.padEnd(17)} ${humanSize(s.vmStateSize).padStart(7)} ${date} ${clock} ${(s.icount === undefined ? '' : String(s.icount)).padStart(10)}`);
  }
  return lines.join('\n') + '\n';
}

function humanInfo(info: ImageInfo, image: BlockDriver): string {
  const size = info['virtual-size'] as number;
  const lines = [
    `image: ${String(info.filename)}`,
    `file format: ${String(info.format)}`,
    `virtual size: ${humanSize(size)} (${size} bytes)`,
    `disk size: ${humanSize(info['actual-size'] as number)}`,
  ];
  if (info['cluster-size'] !== undefined) lines.push(`cluster_size: ${String(info['cluster-size'])}`);
  if (info['backing-filename'] !== undefined) {
    const full = info['full-backing-filename'] as string;
    const name = info['backing-filename'] as string;
    lines.push(`backing file: ${name}${full !== name && basename(full) !== name ? ` (actual path: ${full})` : ''}`);
    if (info['backing-filename-format'] !== undefined) lines.push(`backing file format: ${String(info['backing-filename-format'])}`);
  }
  let out = lines.join('\n') + '\n';
  if (image instanceof Qcow2Image && image.info().snapshots.length > 0) out += snapshotTable(image.info().snapshots);
  const specific = info['format-specific'] as { data: Record<string, unknown> } | undefined;
  if (specific) {
    out += 'Format specific information:\n';
    for (const [k, v] of Object.entries(specific.data)) out += `    ${k.replace(/-/g, ' ').replace('extended l2', 'extended l2')}: ${String(v)}\n`;
  }
  return out;
}

export async function infoCommand(file: string, opts: { format?: string; json: boolean; chain: boolean }): Promise<number> {
  const results: string[] = [];
  const infos: ImageInfo[] = [];
  let path: string | undefined = file;
  let format = opts.format;
  while (path !== undefined) {
    const image = await openForCommand(path, format, true);
    try {
      const info = await describeImage(path, image);
      infos.push(info);
      results.push(humanInfo(info, image));
      const backing = opts.chain ? backingOf(image) : undefined;
      path = backing === undefined ? undefined : (info['full-backing-filename'] as string);
      format = backing?.format;
    } finally {
      await image.close();
    }
  }
  if (opts.json) process.stdout.write(JSON.stringify(opts.chain ? infos : infos[0], null, 4) + '\n');
  else process.stdout.write(results.join('\n'));
  return 0;
}
