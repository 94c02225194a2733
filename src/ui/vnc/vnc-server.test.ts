import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GuestRam } from '../../memory/guest-ram.js';
import { PhysicalMemory } from '../../memory/physical-memory.js';
import { PortIoBus } from '../../memory/port-io-bus.js';
import type { DisplaySource, Frame } from '../../devices/display/std-vga.js';
import { StdVga } from '../../devices/display/std-vga.js';
import { parseVncAddress, VncServer } from './vnc-server.js';
import { keysymToScancode, scancodeBytes } from './keysym.js';
import { RfbClient } from './testing/rfb-client.js';

/** A display whose picture the test sets directly. */
class FakeDisplay implements DisplaySource {
  frame: Frame;
  constructor(width: number, height: number) {
    this.frame = { width, height, pixels: new Uint32Array(width * height), dirty: true };
  }
  resize(width: number, height: number): void {
    this.frame = { width, height, pixels: new Uint32Array(width * height), dirty: true };
  }
  render(): Frame {
    return this.frame;
  }
}


const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits (up to 3 s) until `cond` holds. */
async function waitFor(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 300 && !cond(); i++) await sleep(10);
}

async function server(display: DisplaySource, keyboard?: (b: number[]) => void): Promise<VncServer> {
  const s = new VncServer({ listen: { kind: 'tcp', host: '127.0.0.1', port: 0 }, display, keyboard, pollMs: 10 });
  await s.listen();
  return s;
}

test('-vnc address syntax', () => {
  assert.deepEqual(parseVncAddress(':0'), { kind: 'tcp', host: undefined, port: 5900 });
  assert.deepEqual(parseVncAddress('127.0.0.1:3'), { kind: 'tcp', host: '127.0.0.1', port: 5903 });
  assert.deepEqual(parseVncAddress('[::1]:1'), { kind: 'tcp', host: '::1', port: 5901 });
  assert.deepEqual(parseVncAddress('unix:/tmp/x.sock'), { kind: 'unix', path: '/tmp/x.sock' });
  assert.throws(() => parseVncAddress('5900'), /expected/);
  assert.throws(() => parseVncAddress(':x'), /bad display/);
  assert.throws(() => parseVncAddress(':0,password=on'), /not supported/);
});

test('keysyms become set-1 scan codes', () => {
  assert.deepEqual(scancodeBytes(keysymToScancode(0x61)!, true), [0x1e]); // a
  assert.deepEqual(scancodeBytes(keysymToScancode(0x41)!, false), [0x9e]); // A released
  assert.deepEqual(scancodeBytes(keysymToScancode(0x21)!, true), [0x02]); // ! is the 1 key
  assert.deepEqual(scancodeBytes(keysymToScancode(0xff0d)!, true), [0x1c]); // Return
  assert.deepEqual(scancodeBytes(keysymToScancode(0xff54)!, true), [0xe0, 0x50]); // Down
  assert.deepEqual(scancodeBytes(keysymToScancode(0xff54)!, false), [0xe0, 0xd0]);
  assert.deepEqual(scancodeBytes(keysymToScancode(0xffc2)!, true), [0x3f]); // F5
  assert.equal(keysymToScancode(0x20ac), undefined); // euro sign: no key
});

test('RFB 3.8 handshake, full and incremental raw updates of a real StdVga equal render()', async () => {
  const io = new PortIoBus();
  const memory = new PhysicalMemory(new GuestRam(1 << 20));
  const vga = new StdVga({ io, memory, vramBytes: 1 << 22 });
  const vbe = (i: number, v: number) => { io.write(0x1ce, 2, i); io.write(0x1cf, 2, v); };
  vbe(1, 64); vbe(2, 48); vbe(3, 32); vbe(4, 0x41);
  for (let i = 0; i < 64 * 48; i++) vga.vram.set([i & 0xff, (i >> 8) & 0xff, 0x80, 0], i * 4);
  const s = await server(vga);
  try {
    const c = await RfbClient.open(s.port!);
    const init = await c.handshake();
    assert.deepEqual([init.width, init.height, init.name], [64, 48, 'tsvm']);
    assert.deepEqual([...init.format.subarray(0, 4)], [32, 24, 0, 1]);
    assert.deepEqual([init.format.readUInt16BE(4), init.format[10], init.format[11], init.format[12]], [255, 16, 8, 0]);
    c.setEncodings([0, -223]);
    c.request(false, 0, 0, 64, 48);
    const [r] = await c.update();
    assert.deepEqual([r.x, r.y, r.w, r.h, r.encoding], [0, 0, 64, 48, 0]);
    const f = vga.render();
    const expected = Buffer.alloc(64 * 48 * 4);
    f.pixels.forEach((p, i) => expected.writeUInt32LE(p, i * 4));
    assert.ok(r.data.equals(expected));

    // Nothing changed: an incremental request stays unanswered.
    c.request(true, 0, 0, 64, 48);
    await sleep(60);
    assert.equal(c.buffered, 0);
    // A change in one pixel sends only its 16x16 tile.
    vga.vram.set([1, 2, 3, 0], (20 * 64 + 40) * 4);
    vga.invalidate();
    const [t] = await c.update();
    assert.deepEqual([t.x, t.y, t.w, t.h], [32, 16, 16, 16]);
    assert.equal(t.data.readUInt32LE(((20 - 16) * 16 + 8) * 4), 0x030201);

    // A mode change is announced with DesktopSize, then the client asks for everything again.
    vbe(4, 0); vbe(1, 80); vbe(2, 40); vbe(4, 0xc1);
    c.request(true, 0, 0, 64, 48);
    const [d] = await c.update();
    assert.deepEqual([d.w, d.h, d.encoding], [80, 40, -223]);
    c.request(false, 0, 0, 80, 40);
    const [full] = await c.update();
    assert.deepEqual([full.w, full.h], [80, 40]);
    c.close();
  } finally {
    await s.close();
  }
});

test('16-bit pixel format, keyboard, other protocol versions, several clients and garbage', async () => {
  const display = new FakeDisplay(32, 16);
  display.frame.pixels.fill(0xff0000);
  const keys: number[][] = [];
  const s = await server(display, (b) => keys.push(b));
  try {
    const a = await RfbClient.open(s.port!);
    await a.handshake('RFB 003.003\n');
    const b = await RfbClient.open(s.port!);
    await b.handshake('RFB 003.007\n');
    // Client a: 16 bpp RGB565 big-endian.
    const pf = Buffer.alloc(20);
    pf[0] = 0;
    pf[4] = 16; pf[5] = 16; pf[6] = 1; pf[7] = 1;
    pf.writeUInt16BE(31, 8); pf.writeUInt16BE(63, 10); pf.writeUInt16BE(31, 12);
    pf[14] = 11; pf[15] = 5; pf[16] = 0;
    a.write(pf);
    a.request(false, 0, 0, 32, 16);
    const [r] = await a.update(2);
    assert.equal(r.data.length, 32 * 16 * 2);
    assert.equal(r.data.readUInt16BE(0), 0xf800);

    // Keys from client b.
    b.write([4, 1, 0, 0, 0, 0, 0, 0x61]); // a down
    b.write([4, 0, 0, 0, 0, 0, 0, 0x61]); // a up
    b.write([4, 1, 0, 0, 0, 0, 0xff, 0x52]); // Up down, then b disconnects holding it
    b.write([5, 0, 0, 1, 0, 1]); // pointer: ignored
    b.write([6, 0, 0, 0, 0, 0, 0, 2, 0x68, 0x69]); // cut text
    await waitFor(() => keys.length === 3);
    b.close();
    await waitFor(() => keys.length === 4 && s.clientCount === 1);
    assert.deepEqual(keys, [[0x1e], [0x9e], [0xe0, 0x48], [0xe0, 0xc8]]);
    assert.equal(s.clientCount, 1);

    // Garbage: a bad version string and an unknown message type are dropped; the server carries on.
    const g = await RfbClient.open(s.port!);
    await g.read(12);
    g.write(Buffer.from('HELLO WORLD!'));
    await waitFor(() => g.closed);
    assert.equal(g.closed, true);
    const h = await RfbClient.open(s.port!);
    await h.handshake();
    h.write([99, 1, 2, 3]);
    await waitFor(() => h.closed);
    assert.equal(h.closed, true);
    const e = await RfbClient.open(s.port!);
    e.close(); // goes away in the middle of the handshake
    await waitFor(() => s.clientCount === 1);

    // Client a still works.
    display.frame.pixels[5] = 0x00ff00;
    a.request(true, 0, 0, 32, 16);
    const [u] = await a.update(2);
    assert.deepEqual([u.x, u.y, u.w, u.h], [0, 0, 16, 16]);
    assert.equal(u.data.readUInt16BE(10), 0x07e0);
    assert.equal(s.clientCount, 1);
    a.close();
  } finally {
    await s.close();
  }
});

test('UNIX socket', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tsvm-vnc-'));
  const path = join(dir, 'vnc.sock');
  const s = new VncServer({ listen: `unix:${path}`, display: new FakeDisplay(8, 8) });
  await s.listen();
  try {
    const c = await RfbClient.open(path);
    const init = await c.handshake();
    assert.deepEqual([init.width, init.height], [8, 8]);
    c.close();
  } finally {
    await s.close();
    assert.equal(existsSync(path), false);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('vncsnapshot takes a picture of the screen', async (t) => {
  if (spawnSync('vncsnapshot', ['-h'], { stdio: 'ignore' }).error) return t.skip('vncsnapshot is not installed');
  const io = new PortIoBus();
  const memory = new PhysicalMemory(new GuestRam(1 << 20));
  const vga = new StdVga({ io, memory, vramBytes: 1 << 20 });
  const vbe = (i: number, v: number) => { io.write(0x1ce, 2, i); io.write(0x1cf, 2, v); };
  vbe(1, 320); vbe(2, 200); vbe(3, 32); vbe(4, 0x41);
  for (let y = 0; y < 200; y++) for (let x = 0; x < 320; x++) vga.vram.set([x < 160 ? 255 : 0, 0, y < 100 ? 255 : 0, 0], (y * 320 + x) * 4);
  const s = await server(vga);
  const dir = mkdtempSync(join(tmpdir(), 'tsvm-vnc-'));
  try {
    const out = join(dir, 'shot.jpg');
    const { spawn } = await import('node:child_process');
    const code = await new Promise<number | null>((resolve) => {
      const p = spawn('vncsnapshot', ['-quiet', '-allowblank', `127.0.0.1::${s.port}`, out], { stdio: 'ignore' });
      const timer = setTimeout(() => p.kill(), 10000);
      p.on('exit', (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    assert.equal(code, 0);
    const jpg = readFileSync(out);
    assert.deepEqual([...jpg.subarray(0, 2)], [0xff, 0xd8]);
    // The JPEG's SOF0 frame header carries the size.
    let o = 2;
    while (o < jpg.length && !(jpg[o] === 0xff && (jpg[o + 1] === 0xc0 || jpg[o + 1] === 0xc2))) o += 2 + jpg.readUInt16BE(o + 2);
    assert.deepEqual([jpg.readUInt16BE(o + 7), jpg.readUInt16BE(o + 5)], [320, 200]);
  } finally {
    await s.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
