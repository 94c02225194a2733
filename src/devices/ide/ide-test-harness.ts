/** Test helpers: a Piix3Ide on a real port bus and guest RAM, driven the way a guest driver does. */
import { setImmediate as tick } from 'node:timers/promises';
import { GuestRam } from '../../memory/guest-ram.js';
import { PhysicalMemory } from '../../memory/physical-memory.js';
import { PortIoBus } from '../../memory/port-io-bus.js';
import type { IrqLine } from '../device.js';
import { type IdeDrive, Piix3Ide } from './piix3-ide.js';

export class FakeIrq implements IrqLine {
  level = false;
  edges = 0;
  set(level: boolean): void {
    if (level && !this.level) this.edges++;
    this.level = level;
  }
}

export const RAM_SIZE = 4 << 20;
export const PRD_TABLE = 0x1000;

export function setupIde(drives: (IdeDrive | undefined)[]) {
  const io = new PortIoBus();
  const memory = new PhysicalMemory(new GuestRam(RAM_SIZE));
  const irqs: [FakeIrq, FakeIrq] = [new FakeIrq(), new FakeIrq()];
  const ide = new Piix3Ide({ io, memory, irqs, drives });
  // The PCI bus would map BAR4; the tests reach the bus-master block directly.
  ide.configWrite(0x04, 2, 0x05); // I/O + bus master
  const bm = ide.bars[4]!.device;
  return { io, memory, irqs, ide, bm };
}

export type Ide = ReturnType<typeof setupIde>;

export class Port {
  readonly cmd: number;
  readonly ctl: number;
  constructor(readonly t: Ide, readonly channel: number) {
    this.cmd = channel ? 0x170 : 0x1f0;
    this.ctl = channel ? 0x376 : 0x3f6;
  }

  in8(reg: number): number {
    return this.t.io.read(this.cmd + reg, 1);
  }
  out8(reg: number, v: number): void {
    this.t.io.write(this.cmd + reg, 1, v);
  }
  status(): number {
    return this.in8(7);
  }
  alt(): number {
    return this.t.io.read(this.ctl, 1);
  }
  select(unit: number, lbaBits = 0x40): void {
    this.out8(6, 0xa0 | lbaBits | (unit << 4));
  }

  /** Polls the alternate status until BSY clears (lets the event loop run the image I/O). */
  async notBusy(): Promise<number> {
    for (let i = 0; i < 100000; i++) {
      const s = this.alt();
      if (!(s & 0x80)) return s;
      await tick();
    }
    throw new Error('drive stays busy');
  }

  readWords(bytes: number): Uint8Array {
    const out = new Uint8Array(bytes);
    for (let i = 0; i < bytes; i += 2) {
      const w = this.t.io.read(this.cmd, 2);
      out[i] = w & 0xff;
      if (i + 1 < bytes) out[i + 1] = w >> 8;
    }
    return out;
  }

  writeWords(data: Uint8Array): void {
    for (let i = 0; i < data.length; i += 2) this.t.io.write(this.cmd, 2, data[i] | (data[i + 1] << 8));
  }

  /** Task file for an LBA28 or LBA48 command. */
  taskfile(lba: number, count: number, ext: boolean): void {
    if (ext) {
      const high = Math.floor(lba / 2 ** 24);
      this.out8(2, (count >> 8) & 0xff);
      this.out8(3, high & 0xff);
      this.out8(4, (high >> 8) & 0xff);
      this.out8(5, (high >> 16) & 0xff);
      this.out8(2, count & 0xff);
      this.out8(3, lba & 0xff);
      this.out8(4, (lba >>> 8) & 0xff);
      this.out8(5, (lba >>> 16) & 0xff);
    } else {
      this.out8(2, count & 0xff);
      this.out8(3, lba & 0xff);
      this.out8(4, (lba >>> 8) & 0xff);
      this.out8(5, (lba >>> 16) & 0xff);
      this.out8(6, (this.in8(6) & 0xf0) | ((lba >>> 24) & 0x0f));
    }
  }

  /** PIO data-in command: DRQ blocks of `blockBytes` until `total` bytes were read. */
  async pioIn(command: number, total: number, blockBytes: number): Promise<Uint8Array> {
    this.out8(7, command);
    const out = new Uint8Array(total);
    for (let off = 0; off < total; off += blockBytes) {
      await this.notBusy();
      const st = this.status(); // as an interrupt handler does: acknowledges
      if (st & 0x01 || !(st & 0x08)) throw new Error(`status 0x${st.toString(16)} error 0x${this.in8(1).toString(16)} at ${off}`);
      out.set(this.readWords(Math.min(blockBytes, total - off)), off);
    }
    const st = await this.notBusy();
    if (st & 0x09) throw new Error(`status 0x${st.toString(16)} after the data`);
    return out;
  }

  async pioOut(command: number, data: Uint8Array, blockBytes: number): Promise<number> {
    this.out8(7, command);
    for (let off = 0; off < data.length; off += blockBytes) {
      await this.notBusy();
      const st = this.status();
      if (st & 0x01 || !(st & 0x08)) throw new Error(`status 0x${st.toString(16)} at ${off}`);
      this.writeWords(data.subarray(off, off + blockBytes));
    }
    return this.notBusy();
  }

  bmWrite(offset: number, size: 1 | 4, v: number): void {
    const base = this.channel * 8 + offset;
    for (let i = 0; i < size; i++) this.t.bm.write(base + i, 1, (v >>> (8 * i)) & 0xff);
  }
  bmStatus(): number {
    return this.t.bm.read(this.channel * 8 + 2, 1);
  }

  /** Writes a PRD table at PRD_TABLE: [address, bytes] regions, the last marked end of table. */
  prd(regions: [number, number][]): void {
    const dv = new DataView(this.t.memory.ram.bytes.buffer);
    // A descriptor moves at most 64 KiB (count 0): split larger regions.
    const split: [number, number][] = [];
    for (const [addr, len] of regions) for (let o = 0; o < len || (len === 0 && o === 0); o += 0x10000) split.push([addr + o, len === 0 ? 0 : Math.min(0x10000, len - o)]);
    regions = split;
    regions.forEach(([addr, len], i) => {
      dv.setUint32(PRD_TABLE + 8 * i, addr, true);
      dv.setUint32(PRD_TABLE + 8 * i + 4, (len & 0xffff) | (i === regions.length - 1 ? 0x80000000 : 0), true);
    });
    this.bmWrite(4, 4, PRD_TABLE);
  }

  /** Runs a DMA command (the command is issued first, then the bus master started, as Linux does). */
  async dma(issue: () => void, toMemory: boolean): Promise<{ status: number; bm: number }> {
    this.bmWrite(2, 1, 0x06); // clear interrupt and error
    this.bmWrite(0, 1, toMemory ? 0x08 : 0);
    issue();
    this.bmWrite(0, 1, (toMemory ? 0x08 : 0) | 1);
    for (let i = 0; i < 100000 && !(this.bmStatus() & 0x04); i++) await tick();
    const bm = this.bmStatus();
    this.bmWrite(0, 1, toMemory ? 0x08 : 0);
    return { status: this.status(), bm };
  }

  /** Sends an ATAPI packet for a DMA transfer (the caller runs the bus master). */
  packetDma(cdb: number[]): void {
    this.out8(1, 1);
    this.out8(7, 0xa0);
    if (!(this.alt() & 0x08)) throw new Error('no packet DRQ');
    const bytes = new Uint8Array(12);
    bytes.set(cdb);
    this.writeWords(bytes);
  }

  /** Sends an ATAPI packet; returns the data (PIO, DRQ blocks as the device sizes them) and the final status. */
  async packet(cdb: number[], opts: { bcl?: number; dma?: boolean } = {}): Promise<{ data: Uint8Array; status: number; error: number; blocks: number[] }> {
    const bcl = opts.bcl ?? 0xfffe;
    this.out8(1, opts.dma ? 1 : 0);
    this.out8(4, bcl & 0xff);
    this.out8(5, bcl >> 8);
    this.out8(7, 0xa0);
    let st = await this.notBusy();
    if (!(st & 0x08) || (this.in8(2) & 3) !== 1) throw new Error(`no packet DRQ: status 0x${st.toString(16)}`);
    const bytes = new Uint8Array(12);
    bytes.set(cdb);
    this.writeWords(bytes);
    const chunks: Uint8Array[] = [];
    const blocks: number[] = [];
    for (;;) {
      st = await this.notBusy();
      if (!(st & 0x08)) break;
      const n = this.in8(4) | (this.in8(5) << 8);
      if ((this.in8(2) & 3) !== 2) throw new Error('bad interrupt reason for data');
      blocks.push(n);
      chunks.push(this.readWords(n));
    }
    const data = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
    let o = 0;
    for (const c of chunks) {
      data.set(c, o);
      o += c.length;
    }
    return { data, status: this.status(), error: this.in8(1), blocks };
  }
}
