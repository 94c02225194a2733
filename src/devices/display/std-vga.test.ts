import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestRam } from '../../memory/guest-ram.js';
import { PhysicalMemory } from '../../memory/physical-memory.js';
import { PortIoBus } from '../../memory/port-io-bus.js';
import { PciBus } from '../pci/pci-bus.js';
import { StdVga } from './std-vga.js';

function machine(vramBytes?: number) {
  const io = new PortIoBus();
  const memory = new PhysicalMemory(new GuestRam(2 * 1024 * 1024));
  const pci = new PciBus(io, memory, () => {});
  const vga = new StdVga({ io, memory, vgabiosRom: new Uint8Array([0x55, 0xaa, 0x40]), vramBytes });
  pci.add(vga, 2);
  const out = (port: number, v: number) => io.write(port, 1, v);
  const outw = (port: number, v: number) => io.write(port, 2, v);
  const inb = (port: number) => io.read(port, 1);
  const cfgWrite = (reg: number, v: number) => {
    io.write(0xcf8, 4, 0x80000000 | (2 << 11) | reg);
    io.write(0xcfc, 4, v);
  };
  const cfgRead = (reg: number) => {
    io.write(0xcf8, 4, 0x80000000 | (2 << 11) | reg);
    return io.read(0xcfc, 4);
  };
  return { io, memory, vga, out, outw, inb, cfgWrite, cfgRead };
}

type M = ReturnType<typeof machine>;

const MODE3 = {
  misc: 0x67,
  seq: [0x03, 0x00, 0x03, 0x00, 0x02],
  crtc: [0x5f, 0x4f, 0x50, 0x82, 0x55, 0x81, 0xbf, 0x1f, 0x00, 0x4f, 0x0d, 0x0e, 0x00, 0x00, 0x00, 0x00,
    0x9c, 0x8e, 0x8f, 0x28, 0x1f, 0x96, 0xb9, 0xa3, 0xff],
  attr: [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f, 0x0c, 0x00, 0x0f, 0x08, 0x00],
  gc: [0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x0e, 0x00, 0xff],
};

const MODE13 = {
  misc: 0x63,
  seq: [0x03, 0x01, 0x0f, 0x00, 0x0e],
  crtc: [0x5f, 0x4f, 0x50, 0x82, 0x54, 0x80, 0xbf, 0x1f, 0x00, 0x41, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x9c, 0x0e, 0x8f, 0x28, 0x40, 0x96, 0xb9, 0xa3, 0xff],
  attr: [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x41, 0x00, 0x0f, 0x00, 0x00],
  gc: [0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x05, 0x0f, 0xff],
};

const MODE12 = {
  misc: 0xe3,
  seq: [0x03, 0x01, 0x0f, 0x00, 0x06],
  crtc: [0x5f, 0x4f, 0x50, 0x82, 0x54, 0x80, 0x0b, 0x3e, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xea, 0x8c, 0xdf, 0x28, 0x00, 0xe7, 0x04, 0xe3, 0xff],
  attr: [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f, 0x01, 0x00, 0x0f, 0x00, 0x00],
  gc: [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x0f, 0xff],
};

/** Programs a standard mode the way a VGA BIOS does: sequencer reset, misc, registers, attribute, screen on. */
function setMode(m: M, mode: typeof MODE3): void {
  m.outw(0x3c4, 0x0100); // synchronous reset
  m.out(0x3c2, mode.misc);
  mode.seq.forEach((v, i) => i > 0 && m.outw(0x3c4, (v << 8) | i));
  m.outw(0x3c4, 0x0300);
  m.outw(0x3d4, 0x0011); // unlock CRTC 0-7
  mode.crtc.forEach((v, i) => m.outw(0x3d4, (v << 8) | i));
  mode.gc.forEach((v, i) => m.outw(0x3ce, (v << 8) | i));
  m.inb(0x3da);
  mode.attr.forEach((v, i) => {
    m.out(0x3c0, i);
    m.out(0x3c0, v);
  });
  m.out(0x3c0, 0x20);
}

/** A standard 16-colour EGA palette in the DAC (entries as the attribute palette of mode 3 selects). */
function loadPalette(m: M): void {
  m.out(0x3c8, 0);
  for (let i = 0; i < 64; i++) {
    const bit = (b: number, hi: number) => ((i >> b) & 1) * 0x2a + ((i >> hi) & 1) * 0x15;
    m.out(0x3c9, bit(2, 5));
    m.out(0x3c9, bit(1, 4));
    m.out(0x3c9, bit(0, 3));
  }
}

/** Loads an 8x16 font into plane 2 as the BIOS does (sequential plane 2 access through 0xA0000). */
function loadFont(m: M, glyph: (ch: number, row: number) => number): void {
  m.outw(0x3c4, 0x0402); // map mask: plane 2
  m.outw(0x3c4, 0x0704); // sequential, no odd/even
  m.outw(0x3ce, 0x0204); // read plane 2
  m.outw(0x3ce, 0x0005); // write mode 0, no odd/even
  m.outw(0x3ce, 0x0406); // A0000 64K, text
  for (let ch = 0; ch < 256; ch++) for (let r = 0; r < 32; r++) m.memory.write(0xa0000 + ch * 32 + r, 1, r < 16 ? glyph(ch, r) : 0);
  m.outw(0x3c4, 0x0302);
  m.outw(0x3c4, 0x0204);
  m.outw(0x3ce, 0x0004);
  m.outw(0x3ce, 0x1005);
  m.outw(0x3ce, 0x0e06);
}

function writeText(m: M, row: number, col: number, text: string, attr = 0x07): void {
  for (let i = 0; i < text.length; i++) {
    m.memory.write(0xb8000 + (row * 80 + col + i) * 2, 2, text.charCodeAt(i) | (attr << 8));
  }
}

test('PCI identity, BARs and the expansion ROM', () => {
  const m = machine();
  assert.equal(m.cfgRead(0x00), 0x11111234);
  assert.equal(m.cfgRead(0x08) >>> 8, 0x030000);
  m.cfgWrite(0x10, 0xffffffff);
  assert.equal(m.cfgRead(0x10), 0xff000008); // 16 MiB, prefetchable memory
  m.cfgWrite(0x18, 0xffffffff);
  assert.equal(m.cfgRead(0x18), 0xfffff000);
  m.cfgWrite(0x30, 0xffffffff);
  assert.equal(m.cfgRead(0x30), 0xfffff801); // 2 KiB ROM window for a 3-byte ROM
});

test('text mode 3: characters written at 0xB8000 show in textScreen() and render()', () => {
  const m = machine();
  setMode(m, MODE3);
  loadPalette(m);
  // Glyph: a full block for 'A', a vertical bar in column 0 for '|', nothing else.
  loadFont(m, (ch, r) => (ch === 0x41 ? 0xff : ch === 0x7c ? 0x80 : r === 100 ? 1 : 0));
  for (let i = 0; i < 80 * 25; i++) m.memory.write(0xb8000 + 2 * i, 2, 0x0720);
  writeText(m, 0, 0, 'GNU GRUB  version 2.06');
  writeText(m, 5, 10, 'A|', 0x1e); // yellow on blue
  m.memory.write(0xb8000 + (24 * 80 + 79) * 2, 1, 0xc4); // box drawing ─
  assert.equal(m.vga.modeDescription(), 'text 80x25');
  const screen = m.vga.textScreen();
  assert.equal(screen.length, 25);
  assert.equal(screen[0], 'GNU GRUB  version 2.06');
  assert.equal(screen[5], '          A|');
  assert.equal(screen[24].at(-1), '─');
  // Reading back through odd/even addressing returns character and attribute.
  assert.equal(m.memory.read(0xb8000 + (5 * 80 + 10) * 2, 2), 0x1e41);

  m.outw(0x3d4, 0x200a); // cursor off
  const f = m.vga.render();
  assert.equal(f.width, 720);
  assert.equal(f.height, 400);
  const at = (x: number, y: number) => f.pixels[y * f.width + x];
  const yellow = 0xffff55, blue = 0x0000aa;
  assert.equal(at(10 * 9 + 3, 5 * 16 + 7), yellow); // inside the 'A' block
  assert.equal(at(10 * 9 + 8, 5 * 16 + 7), blue); // 9th column of a non-line-graphics char: background
  assert.equal(at(11 * 9 + 0, 5 * 16 + 2), yellow); // '|' column 0
  assert.equal(at(11 * 9 + 1, 5 * 16 + 2), blue);
  assert.equal(at(0, 399), 0); // black background elsewhere
  assert.equal(m.vga.render().dirty, false);

  // 8-dot characters (sequencer clocking mode bit 0) give a 640-pixel screen.
  m.outw(0x3c4, 0x0101);
  assert.equal(m.vga.render().width, 640);
});

test('text cursor and start address', () => {
  const m = machine();
  setMode(m, MODE3);
  loadPalette(m);
  loadFont(m, () => 0);
  for (let i = 0; i < 80 * 50; i++) m.memory.write(0xb8000 + 2 * i, 2, 0x0720);
  m.outw(0x3d4, 0x0e0a); // cursor lines 14-15
  m.outw(0x3d4, 0x0f0b);
  m.outw(0x3d4, 0x000e); // cursor at row 1 col 2 (offset 82)
  m.outw(0x3d4, 0x520f);
  const f = m.vga.render();
  assert.equal(f.pixels[(16 + 14) * 720 + 2 * 9 + 3], 0xaaaaaa);
  assert.equal(f.pixels[(16 + 13) * 720 + 2 * 9 + 3], 0);
  // Scrolling with the start address: line 1 becomes the first line.
  writeText(m, 1, 0, 'second line');
  m.outw(0x3d4, 0x000c);
  m.outw(0x3d4, 0x500d);
  assert.equal(m.vga.textScreen()[0], 'second line');
});

test('mode 0x13: chain-4 bytes are pixels through the DAC', () => {
  const m = machine();
  setMode(m, MODE13);
  m.out(0x3c8, 5);
  m.out(0x3c9, 63); m.out(0x3c9, 32); m.out(0x3c9, 0);
  m.memory.write(0xa0000 + 10 * 320 + 20, 1, 5);
  m.memory.write(0xa0000 + 199 * 320 + 316, 4, 0x05050505);
  const f = m.vga.render();
  assert.deepEqual([f.width, f.height], [320, 200]);
  assert.equal(f.pixels[10 * 320 + 20], 0xff8200);
  assert.equal(f.pixels[199 * 320 + 319], 0xff8200);
  assert.equal(f.pixels[0], 0);
  assert.equal(m.memory.read(0xa0000 + 10 * 320 + 20, 1), 5);
  // DAC read-back.
  m.out(0x3c7, 5);
  assert.deepEqual([m.inb(0x3c9), m.inb(0x3c9), m.inb(0x3c9)], [63, 32, 0]);
  assert.equal(m.vga.textScreen().length, 0);
});

test('mode 0x12: planar write modes, latches and read modes', () => {
  const m = machine();
  setMode(m, MODE12);
  loadPalette(m);
  // Write mode 2: colour 0x0c (light red) into the leftmost 4 pixels of byte 0.
  m.outw(0x3ce, 0x0205);
  m.outw(0x3ce, 0xf008); // bit mask: pixels 0-3
  m.memory.read(0xa0000, 1); // load latches
  m.memory.write(0xa0000, 1, 0x0c);
  // Write mode 0 with set/reset: colour 1 in pixels 4-7 of byte 0.
  m.outw(0x3ce, 0x0005);
  m.outw(0x3ce, 0x0100); // set/reset = 1
  m.outw(0x3ce, 0x0f01); // enable set/reset on all planes
  m.outw(0x3ce, 0x0f08);
  m.memory.read(0xa0000, 1);
  m.memory.write(0xa0000, 1, 0x00);
  m.outw(0x3ce, 0x0001);
  m.outw(0x3ce, 0xff08);
  // Read mode 0 per plane.
  const planes = [0, 1, 2, 3].map((p) => {
    m.outw(0x3ce, (p << 8) | 4);
    return m.memory.read(0xa0000, 1);
  });
  assert.deepEqual(planes, [0x0f, 0x00, 0xf0, 0xf0]);
  // Read mode 1: which pixels have colour 0x0c?
  m.outw(0x3ce, 0x0805);
  m.outw(0x3ce, 0x0c02);
  assert.equal(m.memory.read(0xa0000, 1), 0xf0);
  m.outw(0x3ce, 0x0005);
  // Write mode 1 copies the latches: byte 0 → byte 80 (the next line).
  m.outw(0x3ce, 0x0105);
  m.memory.read(0xa0000, 1);
  m.memory.write(0xa0000 + 80, 1, 0);
  m.outw(0x3ce, 0x0005);
  const f = m.vga.render();
  assert.deepEqual([f.width, f.height], [640, 480]);
  const row = (y: number) => Array.from(f.pixels.subarray(y * 640, y * 640 + 8));
  const lr = 0xff5555, bl = 0x0000aa;
  assert.deepEqual(row(0), [lr, lr, lr, lr, bl, bl, bl, bl]);
  assert.deepEqual(row(1), [lr, lr, lr, lr, bl, bl, bl, bl]);
  assert.equal(f.pixels[2 * 640], 0);
  // Write mode 3 with rotate and logical XOR.
  m.outw(0x3ce, 0x0305);
  m.outw(0x3ce, 0x0f00); // colour 15
  m.outw(0x3ce, 0xff08);
  m.outw(0x3ce, 0x0003); // no rotate, replace
  m.memory.read(0xa0000 + 160, 1);
  m.memory.write(0xa0000 + 160, 1, 0x81);
  m.outw(0x3ce, 0x0005);
  const g = m.vga.render();
  assert.equal(g.pixels[2 * 640], 0xffffff);
  assert.equal(g.pixels[2 * 640 + 1], 0);
  assert.equal(g.pixels[2 * 640 + 7], 0xffffff);
});

test('VBE: 800x600x32 linear framebuffer through BAR0', () => {
  const m = machine();
  const vbe = (index: number, value?: number) => {
    m.outw(0x1ce, index);
    if (value === undefined) return m.io.read(0x1cf, 2);
    m.outw(0x1cf, value);
    return 0;
  };
  vbe(0, 0xb0c5);
  assert.equal(vbe(0), 0xb0c5);
  assert.equal(vbe(10), 256); // 16 MiB in 64 KiB units
  vbe(4, 0x02); // GETCAPS
  assert.deepEqual([vbe(1), vbe(2), vbe(3)], [16000, 12000, 32]);
  vbe(4, 0);
  vbe(1, 800);
  vbe(2, 600);
  vbe(3, 32);
  vbe(4, 0x41); // enabled + LFB
  assert.equal(vbe(6), 800);
  assert.equal(vbe(7), Math.floor((16 << 20) / 3200));
  assert.equal(m.vga.modeDescription(), 'vbe 800x600x32');
  // Map BAR0 at 0xE0000000 and enable memory decoding.
  m.cfgWrite(0x10, 0xe0000000);
  m.cfgWrite(0x04, 0x0003);
  m.memory.write(0xe0000000 + (10 * 800 + 20) * 4, 4, 0x00123456);
  m.memory.write(0xe0000000 + (599 * 800 + 799) * 4, 4, 0x00abcdef);
  let f = m.vga.render();
  assert.deepEqual([f.width, f.height], [800, 600]);
  assert.equal(f.pixels[10 * 800 + 20], 0x123456);
  assert.equal(f.pixels[599 * 800 + 799], 0xabcdef);
  assert.equal(f.pixels[0], 0);
  assert.equal(m.memory.read(0xe0000000 + (10 * 800 + 20) * 4, 4), 0x00123456);
  // The banked window at 0xA0000 reaches the same memory.
  vbe(5, 1); // bank 1 = offset 64 KiB
  m.memory.write(0xa0000 + 4, 4, 0x00ff0000);
  f = m.vga.render();
  assert.equal(f.pixels[(0x10000 + 4) / 4], 0xff0000);
  // Panning with the Y offset.
  vbe(9, 10);
  f = m.vga.render();
  assert.equal(f.pixels[20], 0x123456);
  // 16 bpp.
  vbe(4, 0);
  vbe(3, 16);
  vbe(1, 640);
  vbe(2, 480);
  vbe(4, 0xc1); // enabled, LFB, don't clear
  m.memory.write(0xe0000000, 2, 0xf800);
  m.memory.write(0xe0000002, 2, 0x07e0);
  f = m.vga.render();
  assert.deepEqual([f.width, f.height, f.pixels[0], f.pixels[1]], [640, 480, 0xff0000, 0x00ff00]);
  // 8 bpp uses the DAC, 8 bits wide when asked.
  vbe(4, 0);
  vbe(3, 8);
  vbe(4, 0xe1);
  m.out(0x3c8, 7);
  m.out(0x3c9, 0x80); m.out(0x3c9, 0x40); m.out(0x3c9, 0xff);
  m.memory.write(0xe0000000, 1, 7);
  assert.equal(m.vga.render().pixels[0], 0x8040ff);
  // Disabling returns to VGA.
  vbe(4, 0);
  assert.notEqual(m.vga.modeDescription().slice(0, 3), 'vbe');
});

test('input status toggles retrace and resets the attribute flip-flop', () => {
  const m = machine();
  m.out(0x3c2, 0x01);
  const a = m.inb(0x3da), b = m.inb(0x3da);
  assert.notEqual(a & 8, b & 8);
  m.out(0x3c0, 0x10); // index
  m.inb(0x3da); // reset: the next write is an index again
  m.out(0x3c0, 0x12);
  m.out(0x3c0, 0x0f);
  m.out(0x3c0, 0x12);
  assert.equal(m.inb(0x3c1), 0x0f);
  // Monochrome port addresses are not decoded in colour mode.
  assert.equal(m.inb(0x3b5), 0xff);
});

test('state save and restore', () => {
  const m = machine(1 << 20);
  setMode(m, MODE3);
  loadFont(m, () => 0x18);
  writeText(m, 3, 4, 'hello');
  const state = m.vga.saveState();
  const n = machine(1 << 20);
  n.vga.restoreState(state);
  assert.equal(n.vga.textScreen()[3], '    hello');
  assert.deepEqual(n.vga.render().pixels, m.vga.render().pixels);
  assert.throws(() => n.vga.restoreState({ version: 2, fields: { ...state.fields, vram: new Uint8Array(5) } }), /vga: state field vram: expected bytes\[1048576\], got Uint8Array\(5\)/);
  assert.throws(() => n.vga.restoreState({ version: 3, fields: state.fields }), /vga: state version 3 is not supported/);
});

test('the real VGA BIOS (SeaBIOS vgabios-stdvga) sets mode 3 and prints through int 10h', async (t) => {
  const { existsSync, readFileSync } = await import('node:fs');
  const { BareMachine } = await import('../../cpu/x86/testing/bare-machine.js');
  const { HAVE_BINUTILS, assembleFlat } = await import('../../cpu/x86/testing/assemble.js');
  const romPath = '/usr/share/seabios/vgabios-stdvga.bin';
  if (!existsSync(romPath) || !HAVE_BINUTILS) return t.skip('needs SeaBIOS VGA BIOS and binutils');
  const rom = new Uint8Array(readFileSync(romPath));
  const m = new BareMachine(2 * 2 ** 20);
  const pci = new PciBus(m.io, m.memory, () => {});
  const vga = new StdVga({ io: m.io, memory: m.memory, vgabiosRom: rom });
  pci.add(vga, 2);
  // Firmware's part: BAR0 assigned, decoding on, the ROM shadowed at 0xC0000, every vector at an IRET.
  vga.configWrite(0x10, 4, 0xfd000000);
  vga.configWrite(0x04, 2, 0x0003);
  m.load(0xc0000, rom);
  m.load(0x600, new Uint8Array([0xcf]));
  for (let v = 0; v < 256; v++) m.memory.write(v * 4, 4, 0x00000600);
  const code = assembleFlat(`
    .code16
    mov $0x0010, %ax        # PCI 00:02.0
    lcall $0xc000, $0x0003  # option ROM init
    mov $0x0003, %ax
    int $0x10
    mov $msg, %si
  1: lodsb
    test %al, %al
    jz 2f
    mov $0x0e, %ah
    mov $0x0007, %bx
    int $0x10
    jmp 1b
  2: cli
    hlt
    mov $0x4f00, %ax      # VBE controller info
    mov $0x1000, %di
    int $0x10
    mov %ax, 0x0f00
    mov $0x4f02, %ax        # 800x600x32 with linear framebuffer?
    mov $0x4115, %bx
    int $0x10
    mov %ax, 0x0f02
    cli
    hlt
  msg: .asciz "Hello from the VGA BIOS\\r\\nGNU GRUB  version 2.06"
  `, 0x7c00);
  m.load(0x7c00, code);
  m.startReal(0, 0x7c00);
  assert.equal(m.runUntilHalt(200_000_000), 'halt');
  assert.equal(vga.modeDescription(), 'text 80x25');
  const screen = vga.textScreen();
  assert.deepEqual(screen.slice(0, 3), ['Hello from the VGA BIOS', 'GNU GRUB  version 2.06', '']);
  const f = vga.render();
  assert.deepEqual([f.width, f.height], [720, 400]);
  // The BIOS loaded its 8x16 font: 'H' at the top left has light grey pixels, the background is black.
  const cell = Array.from({ length: 16 * 9 }, (_, i) => f.pixels[Math.floor(i / 9) * 720 + (i % 9)]);
  assert.ok(cell.includes(0xaaaaaa) && cell.includes(0));
  if (process.env.TSVM_VGA_DUMP) {
    const { writeFileSync } = await import('node:fs');
    writeFileSync(process.env.TSVM_VGA_DUMP, Buffer.concat([Buffer.from(`P6 ${f.width} ${f.height} 255\n`), Buffer.from(Array.from(f.pixels).flatMap((p) => [p >> 16, (p >> 8) & 255, p & 255]))]));
  }
  m.cpu.halted = false;
  assert.equal(m.runUntilHalt(200_000_000), 'halt');
  assert.equal(m.memory.read(0x0f00, 2), 0x004f);
  assert.equal(String.fromCharCode(...m.memory.ram.bytes.subarray(0x1000, 0x1004)), 'VESA');
  // Mode 0x115 is 800x600x24 in VESA's list; QEMU's VGA BIOS makes it 32 bpp (whatever it chose, it is 800x600).
  assert.equal(m.memory.read(0x0f02, 2), 0x004f);
  assert.match(vga.modeDescription(), /^vbe 800x600x(24|32)$/);
});
