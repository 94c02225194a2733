import type { VersionedState } from '../../base/state.js';
import { bool, bytes, int, oneOf, stateSchema, u16, u16s, u32, u8 } from '../../base/state-schema.js';
import type { AccessSize, BusDevice } from '../../memory/bus-device.js';
import type { PhysicalMemory } from '../../memory/physical-memory.js';
import type { PortIoBus } from '../../memory/port-io-bus.js';
import { PCI_FUNCTION_FIELDS, PciFunction } from '../pci/pci-function.js';
import { CP437 } from './cp437.js';

/** Version 2 names the registers (version 1 listed them) and adds the retrace toggle and the INTx# pin. */
function vgaState(vramBytes: number) {
  return stateSchema(2, {
    ...PCI_FUNCTION_FIELDS,
    vram: bytes(vramBytes), seq: bytes(8), gc: bytes(16), crtc: bytes(32), attr: bytes(32), dac: bytes(768), vbe: u16s(VBE_REGS),
    seqIndex: int(0, 7), gcIndex: int(0, 15), crtcIndex: int(0, 31), attrIndex: int(0, 63), attrFlip: bool, misc: u8,
    featureControl: int(0, 3), retraceToggle: oneOf(0, 0x09), dacWriteIndex: u8, dacReadIndex: u8, dacComponent: int(0, 2),
    dacState: oneOf(0, 3), dacMask: u8, latch: u32, vbeIndex: u16,
  });
}

/**
 * One picture of the screen: `pixels` holds width*height values 0x00RRGGBB, row after row.
 * `dirty` is false when nothing the picture depends on changed since the previous render() (the same
 * buffer is returned again). The buffer belongs to the device and is overwritten by the next render().
 */
export interface Frame {
  width: number;
  height: number;
  pixels: Uint32Array;
  dirty: boolean;
}

/** What a screen consumer (the VNC server) needs from a display device. */
export interface DisplaySource {
  render(): Frame;
}

export interface StdVgaOptions {
  io: PortIoBus;
  memory: PhysicalMemory;
  /** The VGA BIOS image (e.g. /usr/share/seabios/vgabios-stdvga.bin), served as the PCI expansion ROM. */
  vgabiosRom?: Uint8Array;
  /** Video memory size: a power of two, at least 1 MiB (default 16 MiB, QEMU's vgamem_mb=16). */
  vramBytes?: number;
  id?: string;
}

// Bochs VBE ("DISPI") register indices and bits.
const VBE_ID = 0, VBE_XRES = 1, VBE_YRES = 2, VBE_BPP = 3, VBE_ENABLE = 4, VBE_BANK = 5;
const VBE_VIRT_WIDTH = 6, VBE_VIRT_HEIGHT = 7, VBE_X_OFFSET = 8, VBE_Y_OFFSET = 9, VBE_VIDEO_MEMORY_64K = 10;
const VBE_REGS = 11;
const VBE_ENABLED = 0x01, VBE_GETCAPS = 0x02, VBE_8BIT_DAC = 0x20, VBE_LFB_ENABLED = 0x40, VBE_NOCLEARMEM = 0x80;
const VBE_ID0 = 0xb0c0, VBE_ID5 = 0xb0c5;
const VBE_MAX_XRES = 16000, VBE_MAX_YRES = 12000, VBE_MAX_BPP = 32;

/** Bits 0-3 of a plane mask expanded to one byte per plane of a 32-bit latch word (plane p = byte p). */
const PLANE_MASK = new Uint32Array(16);
for (let i = 0; i < 16; i++) {
  let m = 0;
  for (let p = 0; p < 4; p++) if (i & (1 << p)) m |= 0xff << (8 * p);
  PLANE_MASK[i] = m >>> 0;
}

/** Where each of the 8 character-map-select values puts its font in plane 2 (in plane addresses). */
const FONT_BASE = [0x0000, 0x4000, 0x8000, 0xc000, 0x2000, 0x6000, 0xa000, 0xe000];

/**
 * QEMU's standard VGA (`-vga std`): PCI 1234:1111 with a linear framebuffer (BAR0), the QEMU MMIO register
 * window (BAR2: VGA ports at 0x400, Bochs VBE registers at 0x500, QEMU extended registers at 0x600), the
 * VGA BIOS as expansion ROM, the legacy VGA ports 0x3B0-0x3DF, the Bochs VBE ports 0x1CE/0x1CF and the
 * legacy memory window 0xA0000-0xBFFFF.
 *
 * Video memory model: `vram` is one byte array. VGA plane p of plane address a is vram[a*4 + p], so a
 * planar access touches one 32-bit word (the latches), chain-4 accesses (mode 0x13, VBE banked modes) hit
 * vram[address] directly, and the VBE linear framebuffer is vram itself. In odd/even (text) mode CPU address
 * 2i is plane 0 and 2i+1 plane 1 of plane address i, so character i of the screen is vram[i*4] with its
 * attribute at vram[i*4+1]; fonts live in plane 2 (vram[a*4+2]).
 */
export class StdVga extends PciFunction {
  readonly vram: Uint8Array;
  private readonly vram32: Uint32Array;
  // Legacy VGA registers.
  private readonly seq = new Uint8Array(8);
  private readonly gc = new Uint8Array(16);
  private readonly crtc = new Uint8Array(32);
  private readonly attr = new Uint8Array(32);
  /** 256 DAC entries of red, green, blue (6 bits each, or 8 with the VBE 8-bit DAC). */
  private readonly dac = new Uint8Array(768);
  private seqIndex = 0;
  private gcIndex = 0;
  private crtcIndex = 0;
  private attrIndex = 0;
  /** Attribute controller flip-flop: false = next write to 0x3C0 is an index. */
  private attrFlip = false;
  private misc = 0;
  private featureControl = 0;
  private dacWriteIndex = 0;
  private dacReadIndex = 0;
  /** Which of red/green/blue comes next at 0x3C9. */
  private dacComponent = 0;
  /** 0 = the last index written was the write index, 3 = the read index (as the DAC state register reads). */
  private dacState: 0 | 3 = 0;
  private dacMask = 0xff;
  private latch = 0;
  /** Input status 1 alternates between "in retrace" and "displaying" on every read. */
  private retraceToggle = 0;
  // Bochs VBE.
  private readonly vbe = new Uint16Array(VBE_REGS);
  private vbeIndex = 0;

  private dirty = true;
  private frame: Frame = { width: 0, height: 0, pixels: new Uint32Array(0), dirty: true };
  private readonly palette = new Uint32Array(256);
  private readonly stateSchema: ReturnType<typeof vgaState>;

  constructor(options: StdVgaOptions) {
    const vramBytes = options.vramBytes ?? 16 * 1024 * 1024;
    if (!Number.isInteger(vramBytes) || vramBytes < 0x100000 || vramBytes > 0x10000000 || (vramBytes & (vramBytes - 1)) !== 0) {
      throw new RangeError(`std-vga: video memory must be a power of two between 1 and 256 MiB (got ${vramBytes})`);
    }
    let self!: StdVga;
    const lfb: BusDevice = {
      read: (offset, size) => self.lfbRead(offset, size),
      write: (offset, size, value) => self.lfbWrite(offset, size, value),
    };
    const mmio: BusDevice = {
      read: (offset, size) => self.mmioRead(offset, size),
      write: (offset, size, value) => self.mmioWrite(offset, size, value),
    };
    super(
      options.id ?? 'vga',
      { vendor: 0x1234, device: 0x1111, classCode: 0x030000, revision: 2 },
      [
        { kind: 'mem', size: vramBytes, device: lfb, prefetchable: true, sizes: 1 | 2 | 4 },
        undefined,
        { kind: 'mem', size: 4096, device: mmio, sizes: 1 | 2 | 4 },
      ],
      options.vgabiosRom,
    );
    self = this;
    this.vram = new Uint8Array(vramBytes);
    this.vram32 = new Uint32Array(this.vram.buffer);
    this.stateSchema = vgaState(vramBytes);
    this.resetRegisters();

    const io = options.io;
    io.register(0x3b0, 0x30, { read: (o) => this.portRead(0x3b0 + o), write: (o, _s, v) => this.portWrite(0x3b0 + o, v & 0xff) }, { sizes: 1, name: 'vga' });
    io.register(0x1ce, 3, {
      read: (o) => (o === 0 ? this.vbeIndex : this.vbeRead(this.vbeIndex)),
      write: (o, _s, v) => (o === 0 ? (this.vbeIndex = v & 0xffff) : this.vbeWrite(this.vbeIndex, v & 0xffff)),
    }, { sizes: 1 | 2, name: 'vbe' });
    options.memory.addHole(0xa0000, 0x20000);
    options.memory.mmio.register(0xa0000, 0x20000, {
      read: (o) => this.windowRead(o),
      write: (o, _s, v) => this.windowWrite(o, v & 0xff),
    }, { sizes: 1, name: 'vga-window' });
  }

  private resetRegisters(): void {
    this.seq.fill(0);
    this.gc.fill(0);
    this.crtc.fill(0);
    this.attr.fill(0);
    this.dac.fill(0);
    this.seqIndex = this.gcIndex = this.crtcIndex = this.attrIndex = 0;
    this.attrFlip = false;
    this.misc = this.featureControl = 0;
    this.dacWriteIndex = this.dacReadIndex = this.dacComponent = this.dacState = 0;
    this.dacMask = 0xff;
    this.latch = 0;
    this.vbe.fill(0);
    this.vbe[VBE_ID] = VBE_ID5;
    this.vbe[VBE_VIDEO_MEMORY_64K] = this.vram.length >>> 16;
    this.vbeIndex = 0;
    this.dirty = true;
  }

  override reset(): void {
    super.reset();
    this.resetRegisters();
  }

  // ---- Legacy VGA ports ----

  private get colorIo(): boolean {
    return (this.misc & 1) !== 0;
  }

  private portRead(port: number): number {
    // The CRTC and input status answer at 0x3Dx in colour mode and 0x3Bx in monochrome mode only.
    if ((port >= 0x3b0 && port < 0x3c0 && this.colorIo) || (port >= 0x3d0 && !this.colorIo)) return 0xff;
    switch (port) {
      case 0x3c0: return this.attrIndex;
      case 0x3c1: return (this.attrIndex & 0x1f) <= 0x14 ? this.attr[this.attrIndex & 0x1f] : 0;
      case 0x3c2: return 0x00; // input status 0
      case 0x3c4: return this.seqIndex;
      case 0x3c5: return this.seqIndex <= 4 ? this.seq[this.seqIndex] : 0xff;
      case 0x3c6: return this.dacMask;
      case 0x3c7: return this.dacState;
      case 0x3c8: return this.dacWriteIndex;
      case 0x3c9: {
        const v = this.dac[this.dacReadIndex * 3 + this.dacComponent];
        if (++this.dacComponent === 3) {
          this.dacComponent = 0;
          this.dacReadIndex = (this.dacReadIndex + 1) & 0xff;
        }
        return v;
      }
      case 0x3ca: return this.featureControl;
      case 0x3cc: return this.misc;
      case 0x3ce: return this.gcIndex;
      case 0x3cf: return this.gcIndex <= 8 ? this.gc[this.gcIndex] : 0xff;
      case 0x3b4: case 0x3d4: return this.crtcIndex;
      case 0x3b5: case 0x3d5: return this.crtcIndex <= 0x18 ? this.crtc[this.crtcIndex] : 0xff;
      case 0x3ba: case 0x3da: {
        this.attrFlip = false;
        // Bit 0: display disabled (blanking), bit 3: vertical retrace. Alternate so that loops waiting
        // for either edge finish.
        this.retraceToggle ^= 0x09;
        return this.retraceToggle;
      }
      default: return 0xff;
    }
  }

  private portWrite(port: number, v: number): void {
    if ((port >= 0x3b0 && port < 0x3c0 && this.colorIo) || (port >= 0x3d0 && !this.colorIo)) return;
    this.dirty = true;
    switch (port) {
      case 0x3c0:
        if (!this.attrFlip) this.attrIndex = v & 0x3f;
        else if ((this.attrIndex & 0x1f) <= 0x14) {
          const i = this.attrIndex & 0x1f;
          this.attr[i] = i < 16 ? v & 0x3f : v;
        }
        this.attrFlip = !this.attrFlip;
        break;
      case 0x3c2: this.misc = v; break;
      case 0x3c4: this.seqIndex = v & 7; break;
      case 0x3c5: if (this.seqIndex <= 4) this.seq[this.seqIndex] = v; break;
      case 0x3c6: this.dacMask = v; break;
      case 0x3c7: this.dacReadIndex = v; this.dacComponent = 0; this.dacState = 3; break;
      case 0x3c8: this.dacWriteIndex = v; this.dacComponent = 0; this.dacState = 0; break;
      case 0x3c9:
        this.dac[this.dacWriteIndex * 3 + this.dacComponent] = this.dac8bit ? v : v & 0x3f;
        if (++this.dacComponent === 3) {
          this.dacComponent = 0;
          this.dacWriteIndex = (this.dacWriteIndex + 1) & 0xff;
        }
        break;
      case 0x3ce: this.gcIndex = v & 0x0f; break;
      case 0x3cf: if (this.gcIndex <= 8) this.gc[this.gcIndex] = v; break;
      case 0x3b4: case 0x3d4: this.crtcIndex = v & 0x1f; break;
      case 0x3b5: case 0x3d5: {
        const i = this.crtcIndex;
        if (i > 0x18) break;
        // CRTC register 0x11 bit 7 protects registers 0-7, except the line compare bit of the overflow.
        if (this.crtc[0x11] & 0x80 && i <= 7) {
          if (i === 7) this.crtc[7] = (this.crtc[7] & ~0x10) | (v & 0x10);
          break;
        }
        this.crtc[i] = v;
        break;
      }
      case 0x3ba: case 0x3da: this.featureControl = v & 0x03; break;
      default: break;
    }
  }

  // ---- Bochs VBE ----

  private get vbeEnabled(): boolean {
    return (this.vbe[VBE_ENABLE] & VBE_ENABLED) !== 0;
  }

  private get dac8bit(): boolean {
    return (this.vbe[VBE_ENABLE] & (VBE_ENABLED | VBE_8BIT_DAC)) === (VBE_ENABLED | VBE_8BIT_DAC);
  }

  private vbeRead(index: number): number {
    if (index >= VBE_REGS) return 0;
    if (this.vbe[VBE_ENABLE] & VBE_GETCAPS) {
      if (index === VBE_XRES) return VBE_MAX_XRES;
      if (index === VBE_YRES) return VBE_MAX_YRES;
      if (index === VBE_BPP) return VBE_MAX_BPP;
    }
    return this.vbe[index];
  }

  private vbeBytesPerLine(): number {
    const bpp = this.vbe[VBE_BPP];
    const w = this.vbe[VBE_VIRT_WIDTH];
    return bpp === 4 ? w >> 1 : w * ((bpp + 7) >> 3);
  }

  private vbeWrite(index: number, v: number): void {
    this.dirty = true;
    switch (index) {
      case VBE_ID:
        if (v >= VBE_ID0 && v <= VBE_ID5) this.vbe[VBE_ID] = v;
        break;
      case VBE_XRES:
      case VBE_YRES:
        if (v <= (index === VBE_XRES ? VBE_MAX_XRES : VBE_MAX_YRES)) {
          this.vbe[index] = v;
          if (this.vbeEnabled) this.vbeSetGeometry();
        }
        break;
      case VBE_BPP:
        if (v === 0) v = 8;
        if (v === 4 || v === 8 || v === 15 || v === 16 || v === 24 || v === 32) {
          this.vbe[VBE_BPP] = v;
          if (this.vbeEnabled) this.vbeSetGeometry();
        }
        break;
      case VBE_BANK:
        if (v < this.vram.length >>> 16) this.vbe[VBE_BANK] = v;
        break;
      case VBE_ENABLE: {
        const was = this.vbeEnabled;
        this.vbe[VBE_ENABLE] = v;
        if (v & VBE_ENABLED && !was) {
          if (this.vbe[VBE_BPP] === 0) this.vbe[VBE_BPP] = 8;
          this.vbeSetGeometry();
          this.vbe[VBE_BANK] = 0;
          if (!(v & VBE_NOCLEARMEM)) {
            const bytes = this.vbeBytesPerLine() * this.vbe[VBE_YRES];
            this.vram.fill(0, 0, Math.min(bytes, this.vram.length));
          }
          // Put the legacy side into a matching graphics mode, as the Bochs adapter does: graphics,
          // 64 KiB window at 0xA0000, chain-4 and all planes (for the banked window).
          this.gc[6] = (this.gc[6] & ~0x0c) | 0x05;
          this.seq[4] |= 0x08;
          this.seq[2] |= 0x0f;
        } else if (!(v & VBE_ENABLED)) {
          this.vbe[VBE_BANK] = 0;
        }
        break;
      }
      case VBE_VIRT_WIDTH:
        if (v >= this.vbe[VBE_XRES] && v <= VBE_MAX_XRES) {
          this.vbe[VBE_VIRT_WIDTH] = v;
          this.vbeFitVirtualHeight();
        }
        break;
      case VBE_VIRT_HEIGHT:
        // Derived from the memory size; the guest cannot set it.
        break;
      case VBE_X_OFFSET:
      case VBE_Y_OFFSET:
        this.vbe[index] = v;
        break;
      default:
        break;
    }
  }

  private vbeSetGeometry(): void {
    this.vbe[VBE_VIRT_WIDTH] = this.vbe[VBE_XRES];
    this.vbe[VBE_X_OFFSET] = 0;
    this.vbe[VBE_Y_OFFSET] = 0;
    this.vbeFitVirtualHeight();
  }

  private vbeFitVirtualHeight(): void {
    const line = this.vbeBytesPerLine();
    this.vbe[VBE_VIRT_HEIGHT] = line > 0 ? Math.min(0xffff, Math.floor(this.vram.length / line)) : 0;
  }

  // ---- Video memory ----

  private lfbRead(offset: number, size: AccessSize): number {
    const m = this.vram;
    if (offset + size > m.length) return 0xffffffff >>> (32 - 8 * size);
    if (size === 1) return m[offset];
    if (size === 2) return m[offset] | (m[offset + 1] << 8);
    return (m[offset] | (m[offset + 1] << 8) | (m[offset + 2] << 16) | (m[offset + 3] << 24)) >>> 0;
  }

  private lfbWrite(offset: number, size: AccessSize, value: number): void {
    const m = this.vram;
    if (offset + size > m.length) return;
    this.dirty = true;
    m[offset] = value;
    if (size >= 2) m[offset + 1] = value >>> 8;
    if (size === 4) {
      m[offset + 2] = value >>> 16;
      m[offset + 3] = value >>> 24;
    }
  }

  /** CPU offset in the 128 KiB window → offset in the selected memory map, or -1 when it is not decoded. */
  private windowOffset(offset: number): number {
    switch ((this.gc[6] >> 2) & 3) {
      case 0: return offset;
      case 1: return offset < 0x10000 ? offset : -1;
      case 2: return offset >= 0x10000 && offset < 0x18000 ? offset - 0x10000 : -1;
      default: return offset >= 0x18000 ? offset - 0x18000 : -1;
    }
  }

  private windowRead(offset: number): number {
    if (this.vbeEnabled && this.vbe[VBE_BPP] !== 4) {
      if (offset >= 0x10000) return 0xff;
      const a = (this.vbe[VBE_BANK] << 16) + offset;
      return a < this.vram.length ? this.vram[a] : 0xff;
    }
    const a = this.windowOffset(offset);
    if (a < 0) return 0xff;
    if (this.seq[4] & 0x08) return this.vram[a]; // chain-4
    if (this.gc[5] & 0x10) {
      // Odd/even: A0 picks plane 0/1 (or 2/3 with read map select bit 1), the plane address is A >> 1.
      const plane = (this.gc[4] & 2) | (a & 1);
      return this.vram[((a >> 1) << 2) | plane];
    }
    const latch = (this.latch = this.vram32[a]);
    if (!(this.gc[5] & 0x08)) return (latch >>> (8 * (this.gc[4] & 3))) & 0xff;
    // Read mode 1: colour compare. A bit is 1 where every plane in "colour don't care" matches the colour.
    let diff = (latch ^ PLANE_MASK[this.gc[2] & 15]) & PLANE_MASK[this.gc[7] & 15];
    diff |= diff >>> 16;
    diff |= diff >>> 8;
    return ~diff & 0xff;
  }

  private windowWrite(offset: number, v: number): void {
    this.dirty = true;
    if (this.vbeEnabled && this.vbe[VBE_BPP] !== 4) {
      if (offset >= 0x10000) return;
      const a = (this.vbe[VBE_BANK] << 16) + offset;
      if (a < this.vram.length) this.vram[a] = v;
      return;
    }
    const a = this.windowOffset(offset);
    if (a < 0) return;
    const mapMask = this.seq[2] & 15;
    if (this.seq[4] & 0x08) {
      if (mapMask & (1 << (a & 3))) this.vram[a] = v;
      return;
    }
    if (this.gc[5] & 0x10) {
      // Odd/even: even addresses reach planes 0 and 2, odd ones 1 and 3 (as the map mask allows).
      const planes = mapMask & (a & 1 ? 0x0a : 0x05);
      const base = (a >> 1) << 2;
      for (let p = 0; p < 4; p++) if (planes & (1 << p)) this.vram[base | p] = v;
      return;
    }
    const gc = this.gc;
    const latch = this.latch;
    let value: number;
    let bitMask = gc[8];
    const rotate = gc[3] & 7;
    switch (gc[5] & 3) {
      case 0: {
        const r = ((v >> rotate) | (v << (8 - rotate))) & 0xff;
        const enable = PLANE_MASK[gc[1] & 15];
        value = ((r * 0x01010101) & ~enable) | (PLANE_MASK[gc[0] & 15] & enable);
        break;
      }
      case 1:
        value = latch;
        bitMask = -1;
        break;
      case 2:
        value = PLANE_MASK[v & 15];
        break;
      default: {
        const r = ((v >> rotate) | (v << (8 - rotate))) & 0xff;
        bitMask &= r;
        value = PLANE_MASK[gc[0] & 15];
        break;
      }
    }
    if ((gc[5] & 3) !== 1) {
      switch ((gc[3] >> 3) & 3) {
        case 1: value &= latch; break;
        case 2: value |= latch; break;
        case 3: value ^= latch; break;
        default: break;
      }
      const bm = (bitMask & 0xff) * 0x01010101;
      value = (value & bm) | (latch & ~bm);
    }
    const wm = PLANE_MASK[mapMask];
    this.vram32[a] = ((this.vram32[a] & ~wm) | (value & wm)) >>> 0;
  }

  // ---- BAR2: QEMU's MMIO register window ----

  private mmioRead(offset: number, size: AccessSize): number {
    if (offset >= 0x400 && offset < 0x420) {
      let v = 0;
      for (let i = 0; i < size; i++) v |= this.portRead(0x3c0 + offset - 0x400 + i) << (8 * i);
      return v >>> 0;
    }
    if (offset >= 0x500 && offset < 0x500 + 2 * VBE_REGS) return this.vbeRead((offset - 0x500) >> 1);
    if (offset === 0x600) return 8; // size of the QEMU extended register block
    if (offset === 0x604) return 0x1e1e1e1e; // framebuffer endianness: little
    return 0;
  }

  private mmioWrite(offset: number, size: AccessSize, value: number): void {
    if (offset >= 0x400 && offset < 0x420) {
      for (let i = 0; i < size; i++) this.portWrite(0x3c0 + offset - 0x400 + i, (value >>> (8 * i)) & 0xff);
    } else if (offset >= 0x500 && offset < 0x500 + 2 * VBE_REGS) {
      this.vbeWrite((offset - 0x500) >> 1, value & 0xffff);
    }
  }

  // ---- Rendering ----

  private get textMode(): boolean {
    return !this.vbeEnabled && (this.gc[6] & 1) === 0;
  }

  private updatePalette(): void {
    const shift8 = this.dac8bit;
    const d = this.dac;
    for (let i = 0; i < 256; i++) {
      let r = d[i * 3], g = d[i * 3 + 1], b = d[i * 3 + 2];
      if (!shift8) {
        r = (r << 2) | (r >> 4);
        g = (g << 2) | (g >> 4);
        b = (b << 2) | (b >> 4);
      }
      this.palette[i] = (r << 16) | (g << 8) | b;
    }
  }

  /** The DAC index for a 4-bit attribute colour (through the attribute palette and colour select). */
  private attrColor(c: number): number {
    const a = this.attr;
    let v = a[c & 15];
    if (a[0x10] & 0x80) v = (v & 0x0f) | ((a[0x14] & 0x03) << 4);
    v = (v & 0x3f) | ((a[0x14] & 0x0c) << 4);
    return v & this.dacMask;
  }

  private verticalDisplayLines(): number {
    const c = this.crtc;
    return (c[0x12] | ((c[7] & 0x02) << 7) | ((c[7] & 0x40) << 3)) + 1;
  }

  private startAddress(): number {
    return (this.crtc[0x0c] << 8) | this.crtc[0x0d];
  }

  private setFrameSize(width: number, height: number): Uint32Array {
    if (this.frame.width !== width || this.frame.height !== height) {
      this.frame = { width, height, pixels: new Uint32Array(width * height), dirty: true };
    }
    return this.frame.pixels;
  }

  /** Forces the next render() to redraw (after video memory changed behind the device's back, e.g. `vram.set`). */
  invalidate(): void {
    this.dirty = true;
  }

  /** The current screen. Cheap when nothing changed (returns the previous picture with dirty = false). */
  render(): Frame {
    if (!this.dirty && this.frame.width > 0) {
      this.frame.dirty = false;
      return this.frame;
    }
    this.dirty = false;
    this.updatePalette();
    if (this.vbeEnabled) this.renderVbe();
    else if (this.textMode) this.renderText();
    else this.renderGraphics();
    this.frame.dirty = true;
    return this.frame;
  }

  /** An empty (black) picture, for a display that is off or not programmed yet. */
  private renderBlank(width = 640, height = 480): void {
    this.setFrameSize(width, height).fill(0);
  }

  private textGeometry(): { cols: number; rows: number; cellW: number; cellH: number; lineAddrs: number } | null {
    const c = this.crtc;
    const cols = c[1] + 1;
    const cellH = (c[9] & 0x1f) + 1;
    let lines = this.verticalDisplayLines();
    if (c[9] & 0x80) lines >>= 1;
    const rows = Math.floor(lines / cellH);
    const cellW = this.seq[1] & 1 ? 8 : 9;
    const lineAddrs = c[0x13] * 2;
    if (cols < 2 || rows < 1 || cols > 256 || rows > 256) return null;
    return { cols, rows, cellW, cellH, lineAddrs };
  }

  private renderText(): void {
    const g = this.textGeometry();
    if (!g || this.seq[1] & 0x20) return this.renderBlank(g ? g.cols * g.cellW : 720, g ? g.rows * g.cellH : 400);
    const { cols, rows, cellW, cellH, lineAddrs } = g;
    const width = cols * cellW, height = rows * cellH;
    const out = this.setFrameSize(width, height);
    const vram = this.vram, pal = this.palette;
    const planeWords = this.vram.length >>> 2;
    const start = this.startAddress();
    const mapSel = this.seq[3];
    const fontA = FONT_BASE[((mapSel >> 3) & 4) | ((mapSel >> 2) & 3)];
    const fontB = FONT_BASE[((mapSel >> 2) & 4) | (mapSel & 3)];
    const blinkAttr = (this.attr[0x10] & 0x08) !== 0;
    const lineGraphics = (this.attr[0x10] & 0x04) !== 0;
    const cursorOn = (this.crtc[0x0a] & 0x20) === 0;
    const cursorStart = this.crtc[0x0a] & 0x1f, cursorEnd = this.crtc[0x0b] & 0x1f;
    const cursorAddr = ((this.crtc[0x0e] << 8) | this.crtc[0x0f]);
    for (let row = 0; row < rows; row++) {
      for (let col = 0; col < cols; col++) {
        const addr = (start + row * lineAddrs + col) % planeWords;
        const ch = vram[addr * 4], at = vram[addr * 4 + 1];
        const fg = pal[this.attrColor(at & 15)];
        const bg = pal[this.attrColor(blinkAttr ? (at >> 4) & 7 : at >> 4)];
        const font = (at & 0x08 ? fontA : fontB) + ch * 32;
        const cursorHere = cursorOn && addr === cursorAddr;
        let o = row * cellH * width + col * cellW;
        for (let y = 0; y < cellH; y++, o += width) {
          let bits = y < 32 ? vram[((font + y) % planeWords) * 4 + 2] : 0;
          if (cursorHere && y >= cursorStart && y <= cursorEnd) bits = 0xff;
          for (let x = 0; x < 8; x++) out[o + x] = bits & (0x80 >> x) ? fg : bg;
          if (cellW === 9) out[o + 8] = lineGraphics && ch >= 0xc0 && ch <= 0xdf && bits & 1 ? fg : bg;
        }
      }
    }
  }

  private renderGraphics(): void {
    const c = this.crtc;
    if (this.seq[1] & 0x20) return this.renderBlank();
    const dots = (c[1] + 1) * 8;
    const scan = ((c[9] & 0x1f) + 1) * (c[9] & 0x80 ? 2 : 1);
    const height = Math.floor(this.verticalDisplayLines() / scan);
    const shift = (this.gc[5] >> 5) & 3;
    const width = shift >= 2 ? dots >> 1 : this.seq[1] & 0x08 ? dots >> 1 : dots;
    if (width < 8 || height < 1 || width > 4096 || height > 4096) return this.renderBlank();
    const out = this.setFrameSize(width, height);
    const vram = this.vram, pal = this.palette, n = vram.length;
    const lineBytes = c[0x13] * 8;
    const start = this.startAddress() * 4;
    if (shift >= 2) {
      // 256 colours (mode 0x13): one byte per pixel, consecutive in memory.
      const mask = this.dacMask;
      for (let y = 0; y < height; y++) {
        const row = start + y * lineBytes;
        for (let x = 0; x < width; x++) out[y * width + x] = pal[vram[(row + x) % n] & mask];
      }
      return;
    }
    // 16 colours, planar: each plane address holds 8 pixels, one bit per plane.
    const enable = this.attr[0x12] & 15;
    const colors = new Uint32Array(16);
    for (let i = 0; i < 16; i++) colors[i] = pal[this.attrColor(i & enable)];
    for (let y = 0; y < height; y++) {
      const row = start + y * lineBytes;
      for (let px = 0; px < width; px++) {
        const a = (row + (px >> 3) * 4) % n;
        let ci: number;
        if (shift === 1) {
          // Shift-register interleave (CGA modes 4/5): 2 bits per pixel, 4 pixels from plane 0, then 4 from plane 1.
          ci = (vram[a + ((px >> 2) & 1)] >> (6 - 2 * (px & 3))) & 3;
        } else {
          const bit = 7 - (px & 7);
          ci = ((vram[a] >> bit) & 1) | (((vram[a + 1] >> bit) & 1) << 1) | (((vram[a + 2] >> bit) & 1) << 2) | (((vram[a + 3] >> bit) & 1) << 3);
        }
        out[y * width + px] = colors[ci];
      }
    }
  }

  private renderVbe(): void {
    const v = this.vbe;
    const width = v[VBE_XRES], height = v[VBE_YRES], bpp = v[VBE_BPP];
    if (width === 0 || height === 0) return this.renderBlank();
    const out = this.setFrameSize(width, height);
    const m = this.vram, n = m.length, pal = this.palette;
    const line = this.vbeBytesPerLine();
    const bytesPP = (bpp + 7) >> 3;
    const start = v[VBE_Y_OFFSET] * line + (bpp === 4 ? v[VBE_X_OFFSET] >> 1 : v[VBE_X_OFFSET] * bytesPP);
    for (let y = 0; y < height; y++) {
      let a = start + y * line;
      let o = y * width;
      if (bpp === 32 && a + width * 4 <= n) {
        for (let x = 0; x < width; x++, a += 4) out[o++] = m[a] | (m[a + 1] << 8) | (m[a + 2] << 16);
        continue;
      }
      for (let x = 0; x < width; x++) {
        let px = 0;
        switch (bpp) {
          case 4: {
            const b = a + (x >> 1) < n ? m[a + (x >> 1)] : 0;
            px = pal[x & 1 ? b & 15 : b >> 4];
            break;
          }
          case 8: px = a < n ? pal[m[a]] : 0; a += 1; break;
          case 15: case 16: {
            const w = a + 1 < n ? m[a] | (m[a + 1] << 8) : 0;
            a += 2;
            if (bpp === 15) px = expand5((w >> 10) & 31) << 16 | expand5((w >> 5) & 31) << 8 | expand5(w & 31);
            else px = expand5((w >> 11) & 31) << 16 | expand6((w >> 5) & 63) << 8 | expand5(w & 31);
            break;
          }
          case 24: px = a + 2 < n ? m[a] | (m[a + 1] << 8) | (m[a + 2] << 16) : 0; a += 3; break;
          default: px = a + 3 < n ? m[a] | (m[a + 1] << 8) | (m[a + 2] << 16) : 0; a += 4; break;
        }
        out[o++] = px;
      }
    }
  }

  /**
   * The text screen as lines (trailing spaces removed), characters mapped from code page 437 to Unicode;
   * empty when the adapter is not in a text mode.
   */
  textScreen(): string[] {
    if (!this.textMode) return [];
    const g = this.textGeometry();
    if (!g) return [];
    const planeWords = this.vram.length >>> 2;
    const start = this.startAddress();
    const lines: string[] = [];
    for (let row = 0; row < g.rows; row++) {
      let s = '';
      for (let col = 0; col < g.cols; col++) s += CP437[this.vram[((start + row * g.lineAddrs + col) % planeWords) * 4]];
      lines.push(s.trimEnd());
    }
    return lines;
  }

  /** A short description of the current mode, for diagnostics ("text 80x25", "vbe 800x600x32", ...). */
  modeDescription(): string {
    if (this.vbeEnabled) return `vbe ${this.vbe[VBE_XRES]}x${this.vbe[VBE_YRES]}x${this.vbe[VBE_BPP]}`;
    if (this.textMode) {
      const g = this.textGeometry();
      return g ? `text ${g.cols}x${g.rows}` : 'text (not programmed)';
    }
    return ((this.gc[5] >> 5) & 3) >= 2 ? 'graphics 256-colour' : 'graphics 16-colour';
  }

  // ---- State ----

  override saveState(): VersionedState {
    return this.stateSchema.save({
      ...this.pciState(),
      vram: this.vram, seq: this.seq, gc: this.gc, crtc: this.crtc, attr: this.attr, dac: this.dac, vbe: this.vbe,
      seqIndex: this.seqIndex, gcIndex: this.gcIndex, crtcIndex: this.crtcIndex, attrIndex: this.attrIndex, attrFlip: this.attrFlip,
      misc: this.misc, featureControl: this.featureControl, retraceToggle: this.retraceToggle ? 0x09 : 0,
      dacWriteIndex: this.dacWriteIndex, dacReadIndex: this.dacReadIndex, dacComponent: this.dacComponent, dacState: this.dacState,
      dacMask: this.dacMask, latch: this.latch >>> 0, vbeIndex: this.vbeIndex,
    });
  }

  override checkState(state: VersionedState): void {
    this.stateSchema.restore(this.id, state);
  }

  override restoreState(state: VersionedState): void {
    const s = this.stateSchema.restore(this.id, state);
    this.loadPciState(s);
    this.vram.set(s.vram);
    this.seq.set(s.seq);
    this.gc.set(s.gc);
    this.crtc.set(s.crtc);
    this.attr.set(s.attr);
    this.dac.set(s.dac);
    this.vbe.set(s.vbe);
    ({
      seqIndex: this.seqIndex, gcIndex: this.gcIndex, crtcIndex: this.crtcIndex, attrIndex: this.attrIndex, attrFlip: this.attrFlip,
      misc: this.misc, featureControl: this.featureControl, retraceToggle: this.retraceToggle, dacWriteIndex: this.dacWriteIndex,
      dacReadIndex: this.dacReadIndex, dacComponent: this.dacComponent, dacState: this.dacState, dacMask: this.dacMask,
      latch: this.latch, vbeIndex: this.vbeIndex,
    } = s);
    // The video memory size is the device's, not the state's.
    this.vbe[VBE_VIDEO_MEMORY_64K] = this.vram.length >>> 16;
    this.dirty = true;
  }
}

function expand5(v: number): number {
  return (v << 3) | (v >> 2);
}

function expand6(v: number): number {
  return (v << 2) | (v >> 4);
}
