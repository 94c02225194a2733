import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestRam } from '../../memory/guest-ram.js';
import { PhysicalMemory } from '../../memory/physical-memory.js';
import type { NetBackend, NetReceiver } from '../../net/net-backend.js';
import { ethernetCrc, onesSum } from '../../net/offload.js';
import { PCI_COMMAND } from '../pci/pci-function.js';
import { E1000 } from './e1000.js';

const MAC = Uint8Array.of(0x52, 0x54, 0x00, 0xab, 0xcd, 0xef);
const RX_RING = 0x10000, TX_RING = 0x11000, RX_BUFFERS = 0x20000, TX_BUFFERS = 0x40000;

/** A back end that records what the card sends and lets the test deliver frames. */
class TestBackend implements NetBackend {
  receiver: NetReceiver | null = null;
  sent: Uint8Array[] = [];
  ready = 0;
  attach(r: NetReceiver): void { this.receiver = r; }
  send(frame: Uint8Array): void { this.sent.push(frame.slice()); }
  receiveReady(): void { this.ready++; }
  async close(): Promise<void> {}
}

/** A card on 1 MiB of RAM, driven as Linux's e1000 does, with its interrupt line observed. */
function card() {
  const memory = new PhysicalMemory(new GuestRam(1 << 20));
  const backend = new TestBackend();
  const nic = new E1000({ memory, mac: MAC, backend });
  let irq = false;
  nic.bus = { barsChanged: () => {}, setIntx: (_fn, level) => (irq = level) };
  nic.configWrite(PCI_COMMAND, 2, 7);
  const regs = nic.bars[0]!.device;
  const rd = (o: number) => regs.read(o, 4);
  const wr = (o: number, v: number) => regs.write(o, 4, v >>> 0);
  const ram = memory.ram.bytes;
  const dv = new DataView(ram.buffer, ram.byteOffset, ram.byteLength);
  /** Receive ring of `n` descriptors with 2 KiB buffers, all given to the card but one; transmit ring of `n`. */
  const up = (n = 8, rctlExtra = 0) => {
    for (let i = 0; i < n; i++) dv.setUint32(RX_RING + 16 * i, RX_BUFFERS + 2048 * i, true);
    wr(0x2800, RX_RING); wr(0x2804, 0); wr(0x2808, n * 16); wr(0x2810, 0); wr(0x2818, n - 1);
    wr(0x3800, TX_RING); wr(0x3804, 0); wr(0x3808, n * 16); wr(0x3810, 0); wr(0x3818, 0);
    wr(0x0100, (1 << 1) | (1 << 15) | rctlExtra); // EN, BAM
    wr(0x0400, 1 << 1); // EN
    wr(0x00d0, 0x9f); // IMS: TX and RX causes
  };
  /** Puts descriptors (16 bytes each) at the transmit tail and moves the tail past them. */
  const transmit = (descs: Uint8Array[]) => {
    let tail = rd(0x3818);
    const n = rd(0x3808) / 16;
    for (const d of descs) {
      ram.set(d, TX_RING + 16 * tail);
      tail = (tail + 1) % n;
    }
    wr(0x3818, tail);
  };
  return { nic, backend, memory, rd, wr, ram, dv, up, transmit, irq: () => irq };
}

function legacy(addr: number, length: number, cmd: number, cso = 0, css = 0): Uint8Array {
  const d = new Uint8Array(16);
  const v = new DataView(d.buffer);
  v.setUint32(0, addr, true);
  v.setUint16(8, length, true);
  d[10] = cso; d[11] = cmd; d[13] = css;
  return d;
}

/** A frame to the card's address (or broadcast) with `n` bytes of payload. */
function frameTo(dst: Uint8Array, n: number): Uint8Array {
  const f = new Uint8Array(14 + n);
  f.set(dst);
  f.set(Uint8Array.of(2, 0, 0, 0, 0, 1), 6);
  f[12] = 0x08; f[13] = 0x00;
  for (let i = 0; i < n; i++) f[14 + i] = i & 0xff;
  return f;
}

test('e1000: the EEPROM read by Microwire bit-banging holds the MAC and sums to 0xBABA; EERD agrees', () => {
  const { rd, wr } = card();
  const SK = 1, CS = 2, DI = 4, DO = 8, REQ = 0x40, GNT = 0x80;
  wr(0x10, REQ);
  assert.ok(rd(0x10) & GNT, 'grant');
  const readWord = (address: number) => {
    const clock = (v: number) => { wr(0x10, REQ | CS | v); wr(0x10, REQ | CS | v | SK); wr(0x10, REQ | CS | v); };
    wr(0x10, REQ | CS);
    for (const bit of [1, 1, 0]) clock(bit ? DI : 0);
    for (let i = 5; i >= 0; i--) clock((address >> i) & 1 ? DI : 0);
    let word = 0;
    for (let i = 0; i < 16; i++) {
      wr(0x10, REQ | CS | SK);
      word = (word << 1) | (rd(0x10) & DO ? 1 : 0);
      wr(0x10, REQ | CS);
    }
    wr(0x10, REQ);
    return word;
  };
  const words = Array.from({ length: 64 }, (_, i) => readWord(i));
  assert.deepEqual(words.slice(0, 3), [0x5452, 0xab00, 0xefcd]);
  assert.equal(words.reduce((a, b) => a + b, 0) & 0xffff, 0xbaba);
  wr(0x14, (2 << 8) | 1);
  assert.equal(rd(0x14) >>> 16, 0xefcd);
  assert.ok(rd(0x14) & 0x10, 'EERD done');
});

test('e1000: MDIC reaches the PHY at address 1 (88E1011 identity, link up); other addresses fail', () => {
  const { rd, wr } = card();
  const mdic = (phy: number, reg: number) => { wr(0x20, (2 << 26) | (phy << 21) | (reg << 16)); return rd(0x20); };
  assert.equal(mdic(1, 2) & 0xffff, 0x0141);
  assert.equal(mdic(1, 3) & 0xffff, 0x0c20);
  assert.ok(mdic(1, 1) & 0x4, 'link');
  assert.ok(mdic(1, 1) & (1 << 28), 'ready');
  assert.ok(mdic(2, 1) & (1 << 30), 'error for another PHY address');
  assert.ok(rd(0x8) & 2, 'STATUS.LU');
});

test('e1000: a legacy transmit descriptor chain becomes one frame; DD, TDH and TXDW follow', () => {
  const { backend, up, transmit, ram, rd, irq } = card();
  up();
  const f = frameTo(Uint8Array.of(1, 2, 3, 4, 5, 6), 100);
  ram.set(f.subarray(0, 50), TX_BUFFERS);
  ram.set(f.subarray(50), TX_BUFFERS + 0x1000);
  transmit([legacy(TX_BUFFERS, 50, 0x02), legacy(TX_BUFFERS + 0x1000, f.length - 50, 0x0b)]);
  assert.equal(backend.sent.length, 1);
  assert.deepEqual(backend.sent[0], f);
  assert.equal(rd(0x3810), 2, 'TDH');
  assert.equal(ram[TX_RING + 16 + 12] & 1, 1, 'DD on the RS descriptor');
  assert.ok(irq(), 'interrupt');
  assert.equal(rd(0xc0) & 3, 3, 'TXDW | TXQE');
  assert.ok(!irq(), 'reading ICR clears it');
});

test('e1000: a received frame lands in the ring buffer with its FCS unless SECRC; RXT0 raised', () => {
  const { backend, up, ram, dv, rd, irq } = card();
  up();
  const f = frameTo(MAC, 100);
  assert.equal(backend.receiver!.receive(f), true);
  assert.equal(dv.getUint16(RX_RING + 8, true), f.length + 4);
  assert.deepEqual(ram.subarray(RX_BUFFERS, RX_BUFFERS + f.length), f);
  assert.equal(dv.getUint32(RX_BUFFERS + f.length, true), ethernetCrc(f));
  assert.equal(ram[RX_RING + 12] & 3, 3, 'DD | EOP');
  assert.equal(rd(0x2810), 1);
  assert.ok(irq());
  assert.ok(rd(0xc0) & 0x80, 'RXT0');
  // Frames for another unicast address are filtered; short frames are padded to 60 bytes.
  assert.equal(backend.receiver!.receive(frameTo(Uint8Array.of(2, 9, 9, 9, 9, 9), 10)), true);
  assert.equal(rd(0x2810), 1, 'filtered');
  backend.receiver!.receive(frameTo(Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff), 10));
  assert.equal(dv.getUint16(RX_RING + 16 + 8, true), 64, 'padded to 60 plus FCS');
});

test('e1000: a frame larger than one buffer spans descriptors; a full ring refuses, and RDT brings receiveReady', () => {
  const { backend, up, dv, rd, wr } = card();
  up(8, (1 << 5) | (1 << 26)); // LPE, SECRC
  const big = frameTo(MAC, 15000);
  assert.equal(backend.receiver!.receive(big), false, 'seven free descriptors are not enough for 15014 bytes');
  assert.equal(backend.ready, 0);
  wr(0x2818, 7); // tail stays: no new room, still tell the back end
  assert.equal(backend.ready, 1);
  const f = frameTo(MAC, 3000);
  assert.equal(backend.receiver!.receive(f), true);
  assert.equal(dv.getUint16(RX_RING + 8, true), 2048);
  assert.equal(dv.getUint16(RX_RING + 16 + 8, true), f.length - 2048);
  assert.equal(dv.getUint8(RX_RING + 12) & 2, 0, 'no EOP on the first');
  assert.equal(dv.getUint8(RX_RING + 16 + 12) & 2, 2, 'EOP on the last');
  assert.equal(rd(0x2810), 2);
});

test('e1000: TCP segmentation offload cuts 3000 bytes into MSS-sized frames with correct IP and TCP checksums', () => {
  const { backend, up, transmit, ram } = card();
  up();
  const payload = 3000, mss = 1000, hdr = 14 + 20 + 20;
  const p = new Uint8Array(hdr + payload);
  const v = new DataView(p.buffer);
  p.set(Uint8Array.of(1, 2, 3, 4, 5, 6, ...MAC, 0x08, 0x00));
  p[14] = 0x45; v.setUint16(18, 0x1234); p[22] = 64; p[23] = 6;
  p.set([10, 0, 0, 1, 10, 0, 0, 2], 26);
  v.setUint16(34, 5555); v.setUint16(36, 80); v.setUint32(38, 1000); p[46] = 0x50; p[47] = 0x18 | 0x01; // PSH FIN
  for (let i = 0; i < payload; i++) p[hdr + i] = (i * 7) & 0xff;
  // Linux's seed: the pseudo-header sum without the length.
  const seed = onesSum(p, 26, 34, 6);
  v.setUint16(50, (seed & 0xffff) + Math.floor(seed / 0x10000));
  ram.set(p, TX_BUFFERS);
  const ctx = new Uint8Array(16);
  const c = new DataView(ctx.buffer);
  ctx[0] = 14; ctx[1] = 24; c.setUint16(2, 33, true); ctx[4] = 34; ctx[5] = 50;
  c.setUint32(8, payload | (0x25 << 24) | (0x7 << 24), true); // DEXT, TSE, IP, TCP; type 0
  ctx[13] = hdr; c.setUint16(14, mss, true);
  const data = new Uint8Array(16);
  const d = new DataView(data.buffer);
  d.setUint32(0, TX_BUFFERS, true);
  d.setUint32(8, p.length | (1 << 20) | ((0x20 | 0x04 | 0x08 | 0x01) << 24), true); // DEXT TSE RS EOP, type 1
  data[13] = 3; // IXSM, TXSM
  transmit([ctx, data]);
  assert.equal(backend.sent.length, 3);
  backend.sent.forEach((s, i) => {
    const sv = new DataView(s.buffer);
    assert.equal(s.length, hdr + mss);
    assert.equal(sv.getUint16(16), 20 + 20 + mss, 'IP total length');
    assert.equal(sv.getUint16(18), 0x1234 + i, 'IP id');
    assert.equal(sv.getUint32(38), 1000 + i * mss, 'TCP sequence');
    assert.equal(s[47] & 0x09, i === 2 ? 0x09 : 0, 'PSH and FIN only last');
    let ipSum = onesSum(s, 14, 34);
    while (ipSum > 0xffff) ipSum = (ipSum & 0xffff) + (ipSum >>> 16);
    assert.equal(ipSum, 0xffff, 'IP header checksum');
    let tcpSum = onesSum(s, 34, s.length, onesSum(s, 26, 34, 6 + s.length - 34));
    while (tcpSum > 0xffff) tcpSum = (tcpSum & 0xffff) + (tcpSum >>> 16);
    assert.equal(tcpSum, 0xffff, 'TCP checksum');
    assert.deepEqual(s.subarray(hdr), p.subarray(hdr + i * mss, hdr + (i + 1) * mss));
  });
});

test('e1000: malformed rings and descriptors reset the card, never throw; it works again once set up', () => {
  const { backend, up, transmit, wr, rd, ram, dv } = card();
  up();
  wr(0x3818, 100); // tail beyond the ring
  assert.equal(rd(0x100), 0, 'reset: RCTL cleared');
  up();
  transmit([legacy(0xfffff000, 0x2000, 0x0b)]); // buffer beyond RAM
  assert.equal(backend.sent.length, 0);
  up();
  wr(0x2800, 0xfff00); wr(0x2808, 0x10000); // ring beyond RAM
  assert.equal(backend.receiver!.receive(frameTo(MAC, 60)), true);
  up();
  dv.setUint32(RX_RING, 0x7fffff00, true); // receive buffer beyond RAM
  assert.equal(backend.receiver!.receive(frameTo(MAC, 60)), true);
  // Random descriptors and register writes.
  let seed = 12345;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0);
  for (let round = 0; round < 300; round++) {
    up();
    const descs = Array.from({ length: 5 }, () => Uint8Array.from({ length: 16 }, () => rand() & 0xff));
    for (const d of descs) if (rand() & 1) new DataView(d.buffer).setUint32(0, TX_BUFFERS + (rand() & 0xffff), true);
    transmit(descs);
    wr(rand() & 0x1fffc, rand());
    backend.receiver!.receive(Uint8Array.from({ length: rand() % 2000 }, () => rand() & 0xff));
  }
  up();
  backend.sent = [];
  const f = frameTo(Uint8Array.of(1, 2, 3, 4, 5, 6), 64);
  ram.set(f, TX_BUFFERS);
  transmit([legacy(TX_BUFFERS, f.length, 0x0b)]);
  assert.deepEqual(backend.sent, [f]);
});
