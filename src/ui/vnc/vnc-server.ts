import { existsSync, lstatSync, unlinkSync } from 'node:fs';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { TsvmError } from '../../base/errors.js';
import { debugLog } from '../../base/log.js';
import type { DisplaySource, Frame } from '../../devices/display/std-vga.js';
import { keysymToScancode, scancodeBytes } from './keysym.js';

export type VncAddress = { kind: 'tcp'; host: string | undefined; port: number } | { kind: 'unix'; path: string };

/**
 * QEMU's -vnc argument: `:N` (all interfaces, port 5900+N), `HOST:N`, `[IPV6]:N` or `unix:PATH`.
 * Options after a comma are not supported.
 */
export function parseVncAddress(spec: string): VncAddress {
  const [head, ...options] = spec.split(',');
  if (options.length > 0) throw new TsvmError(`-vnc ${spec}: options (${options.join(',')}) are not supported`);
  if (head.startsWith('unix:')) {
    const path = head.slice(5);
    if (path === '') throw new TsvmError(`-vnc ${spec}: missing socket path`);
    return { kind: 'unix', path };
  }
  const colon = head.lastIndexOf(':');
  if (colon < 0) throw new TsvmError(`-vnc ${spec}: expected [HOST]:DISPLAY or unix:PATH`);
  let host = head.slice(0, colon);
  const display = head.slice(colon + 1);
  if (!/^\d+$/.test(display) || Number(display) > 65535 - 5900) throw new TsvmError(`-vnc ${spec}: bad display number '${display}'`);
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  return { kind: 'tcp', host: host === '' ? undefined : host, port: 5900 + Number(display) };
}

export interface VncServerOptions {
  /** Where to listen: a parsed address or a -vnc string. A TCP port of 0 picks a free port (tests). */
  listen: VncAddress | string;
  /** The screen (e.g. a StdVga). */
  display: DisplaySource;
  /** Key presses and releases as PC scan code set 1 bytes (e.g. `(b) => i8042.keyEvent(b)`). */
  keyboard?: (bytes: number[]) => void;
  /** Desktop name shown by clients. */
  name?: string;
  /** How often pending incremental updates look for changes (ms). */
  pollMs?: number;
}

interface PixelFormat {
  bpp: number;
  bigEndian: boolean;
  trueColour: boolean;
  redMax: number; greenMax: number; blueMax: number;
  redShift: number; greenShift: number; blueShift: number;
}

const DEFAULT_FORMAT: PixelFormat = {
  bpp: 32, bigEndian: false, trueColour: true, redMax: 255, greenMax: 255, blueMax: 255, redShift: 16, greenShift: 8, blueShift: 0,
};

/** A fixed 3-3-2 colour map for clients that ask for colour-mapped pixels. */
const BGR233: PixelFormat = {
  bpp: 8, bigEndian: false, trueColour: true, redMax: 7, greenMax: 7, blueMax: 3, redShift: 0, greenShift: 3, blueShift: 6,
};

const ENC_RAW = 0, ENC_DESKTOP_SIZE = -223;
const TILE = 16;
/** Pixels never equal to a rendered one (those are 0x00RRGGBB): marks "client has not seen this". */
const UNSEEN = 0xffffffff;
const MAX_CUT_TEXT = 1 << 20;
const MAX_BACKLOG = 16 << 20;

type Phase = 'version' | 'security' | 'init' | 'normal' | 'closed';

class Client {
  phase: Phase = 'version';
  minor = 8;
  buffer: Buffer = Buffer.alloc(0);
  format = DEFAULT_FORMAT;
  tables = channelTables(DEFAULT_FORMAT);
  desktopSize = false;
  width = 0;
  height = 0;
  /** What the client shows (0x00RRGGBB, UNSEEN where unknown), width*height. */
  shown: Uint32Array | null = null;
  pending: { incremental: boolean; x: number; y: number; w: number; h: number } | null = null;
  /** Scan codes of keys this client holds down (released when it goes away). */
  readonly held = new Set<number>();

  constructor(readonly socket: Socket) {}
}

/**
 * An RFB 3.8 server (also speaking 3.3 and 3.7) for one display: no authentication, Raw encoding, the
 * DesktopSize pseudo-encoding when the mode changes, 8/16/32-bit true-colour pixel formats as the client
 * asks, incremental updates of the 16x16 tiles that changed, keyboard input as scan codes, pointer ignored.
 */
export class VncServer {
  private readonly server: Server;
  private readonly clients = new Set<Client>();
  private readonly display: DisplaySource;
  private readonly keyboard: ((bytes: number[]) => void) | undefined;
  private readonly name: Buffer;
  private readonly address: VncAddress;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(options: VncServerOptions) {
    this.address = typeof options.listen === 'string' ? parseVncAddress(options.listen) : options.listen;
    this.display = options.display;
    this.keyboard = options.keyboard;
    this.name = Buffer.from(options.name ?? 'tsvm', 'utf8');
    this.server = createServer((socket) => this.accept(socket));
    this.server.on('error', (e) => debugLog('vnc', `server error: ${e.message}`));
    const pollMs = options.pollMs ?? 30;
    this.timer = setInterval(() => this.poll(), pollMs);
    this.timer.unref();
  }

  /** Starts listening; rejects with a TsvmError when the address cannot be used. */
  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      const fail = (e: Error): void => reject(new TsvmError(`vnc: cannot listen on ${this.describe()}: ${e.message}`));
      this.server.once('error', fail);
      const done = (): void => {
        this.server.off('error', fail);
        resolve();
      };
      if (this.address.kind === 'unix') {
        const path = this.address.path;
        // A socket file left by an earlier run is replaced (as QEMU does); anything else is not touched.
        if (existsSync(path) && lstatSync(path).isSocket()) unlinkSync(path);
        this.server.listen(path, done);
      } else {
        this.server.listen({ host: this.address.host, port: this.address.port }, done);
      }
    });
  }

  /** The TCP port actually listened on (useful with port 0), or undefined for a UNIX socket. */
  get port(): number | undefined {
    const a = this.server.address();
    return a && typeof a === 'object' ? (a as AddressInfo).port : undefined;
  }

  describe(): string {
    return this.address.kind === 'unix' ? `unix:${this.address.path}` : `${this.address.host ?? '*'}:${this.address.port}`;
  }

  get clientCount(): number {
    return this.clients.size;
  }

  /** Stops listening and drops every client. */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    for (const c of [...this.clients]) this.drop(c, 'server closing');
    return new Promise((resolve) => {
      if (!this.server.listening) return resolve();
      this.server.close(() => {
        if (this.address.kind === 'unix') {
          try { unlinkSync(this.address.path); } catch { /* already gone */ }
        }
        resolve();
      });
    });
  }

  private accept(socket: Socket): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    const c = new Client(socket);
    this.clients.add(c);
    socket.setNoDelay?.(true);
    socket.on('data', (data: Buffer) => {
      try {
        c.buffer = c.buffer.length === 0 ? data : Buffer.concat([c.buffer, data]);
        this.process(c);
      } catch (e) {
        this.drop(c, (e as Error).message);
      }
    });
    socket.on('error', (e) => this.drop(c, e.message));
    socket.on('close', () => this.drop(c, 'disconnected'));
    socket.on('drain', () => this.service(c));
    socket.write('RFB 003.008\n');
  }

  private drop(c: Client, why: string): void {
    if (c.phase === 'closed') return;
    c.phase = 'closed';
    debugLog('vnc', `client dropped: ${why}`);
    this.clients.delete(c);
    // Keys still held by this client would otherwise repeat forever in the guest.
    for (const code of c.held) this.keyboard?.(scancodeBytes(code, false));
    c.held.clear();
    c.socket.destroy();
  }

  private send(c: Client, data: Buffer): void {
    if (c.phase !== 'closed') c.socket.write(data);
  }

  /** Consumes as many complete messages from the client's buffer as there are. */
  private process(c: Client): void {
    for (;;) {
      if (c.phase === 'closed') return;
      const used = this.message(c, c.buffer);
      if (used === 0) return;
      c.buffer = c.buffer.subarray(used);
    }
  }

  /** Handles one message at the start of `b`; returns the bytes used, 0 when the message is incomplete. */
  private message(c: Client, b: Buffer): number {
    switch (c.phase) {
      case 'version': {
        if (b.length < 12) return 0;
        const m = /^RFB (\d{3})\.(\d{3})\n$/.exec(b.subarray(0, 12).toString('latin1'));
        if (!m || Number(m[1]) !== 3) throw new Error('bad protocol version');
        const minor = Number(m[2]);
        c.minor = minor >= 8 ? 8 : minor === 7 ? 7 : 3;
        if (c.minor === 3) {
          this.send(c, u32(1)); // the server decides: security type None
          c.phase = 'init';
        } else {
          this.send(c, Buffer.from([1, 1])); // one security type: None
          c.phase = 'security';
        }
        return 12;
      }
      case 'security': {
        if (b.length < 1) return 0;
        if (b[0] !== 1) {
          if (c.minor === 8) {
            const reason = Buffer.from('only security type None is offered');
            this.send(c, Buffer.concat([u32(1), u32(reason.length), reason]));
          }
          throw new Error(`client chose security type ${b[0]}`);
        }
        if (c.minor === 8) this.send(c, u32(0)); // SecurityResult OK
        c.phase = 'init';
        return 1;
      }
      case 'init': {
        if (b.length < 1) return 0;
        // The shared flag is ignored: every client shares the screen.
        const frame = this.display.render();
        this.resizeClient(c, frame.width, frame.height);
        const head = Buffer.alloc(24);
        head.writeUInt16BE(frame.width, 0);
        head.writeUInt16BE(frame.height, 2);
        writePixelFormat(head, 4, DEFAULT_FORMAT);
        head.writeUInt32BE(this.name.length, 20);
        this.send(c, Buffer.concat([head, this.name]));
        c.phase = 'normal';
        return 1;
      }
      case 'normal':
        return this.clientMessage(c, b);
      default:
        return 0;
    }
  }

  private clientMessage(c: Client, b: Buffer): number {
    if (b.length < 1) return 0;
    switch (b[0]) {
      case 0: { // SetPixelFormat
        if (b.length < 20) return 0;
        const f = readPixelFormat(b, 4);
        if (!f.trueColour) {
          this.sendColourMap(c);
          this.setFormat(c, BGR233);
        } else {
          const ok = (f.bpp === 8 || f.bpp === 16 || f.bpp === 32) && [f.redMax, f.greenMax, f.blueMax].every((m) => m > 0 && m < 2 ** f.bpp)
            && [f.redShift, f.greenShift, f.blueShift].every((s) => s < f.bpp);
          if (!ok) throw new Error(`unsupported pixel format (${f.bpp} bpp)`);
          this.setFormat(c, f);
        }
        return 20;
      }
      case 2: { // SetEncodings
        if (b.length < 4) return 0;
        const n = b.readUInt16BE(2);
        if (b.length < 4 + 4 * n) return 0;
        c.desktopSize = false;
        for (let i = 0; i < n; i++) if (b.readInt32BE(4 + 4 * i) === ENC_DESKTOP_SIZE) c.desktopSize = true;
        return 4 + 4 * n;
      }
      case 3: { // FramebufferUpdateRequest
        if (b.length < 10) return 0;
        const incremental = b[1] !== 0;
        const req = { incremental, x: b.readUInt16BE(2), y: b.readUInt16BE(4), w: b.readUInt16BE(6), h: b.readUInt16BE(8) };
        // A non-incremental request replaces a pending incremental one and asks for an answer now.
        if (!incremental || !c.pending || c.pending.incremental) c.pending = req;
        if (!incremental) this.service(c);
        return 10;
      }
      case 4: { // KeyEvent
        if (b.length < 8) return 0;
        this.key(c, b[1] !== 0, b.readUInt32BE(4));
        return 8;
      }
      case 5: // PointerEvent: no pointing device behind it yet
        return b.length < 6 ? 0 : 6;
      case 6: { // ClientCutText
        if (b.length < 8) return 0;
        const n = b.readUInt32BE(4);
        if (n > MAX_CUT_TEXT) throw new Error('cut text too long');
        return b.length < 8 + n ? 0 : 8 + n;
      }
      default:
        throw new Error(`unknown client message type ${b[0]}`);
    }
  }

  private key(c: Client, down: boolean, keysym: number): void {
    const code = keysymToScancode(keysym);
    if (code === undefined || !this.keyboard) return;
    if (down) c.held.add(code);
    else if (!c.held.delete(code)) return; // a release of a key we never saw pressed
    this.keyboard(scancodeBytes(code, down));
  }

  private setFormat(c: Client, f: PixelFormat): void {
    c.format = f;
    c.tables = channelTables(f);
  }

  private sendColourMap(c: Client): void {
    const head = Buffer.alloc(6);
    head[0] = 1; // SetColourMapEntries
    head.writeUInt16BE(0, 2);
    head.writeUInt16BE(256, 4);
    const entries = Buffer.alloc(256 * 6);
    for (let i = 0; i < 256; i++) {
      const r = i & 7, g = (i >> 3) & 7, bl = (i >> 6) & 3;
      entries.writeUInt16BE(Math.round((r * 65535) / 7), i * 6);
      entries.writeUInt16BE(Math.round((g * 65535) / 7), i * 6 + 2);
      entries.writeUInt16BE(Math.round((bl * 65535) / 3), i * 6 + 4);
    }
    this.send(c, Buffer.concat([head, entries]));
  }

  private resizeClient(c: Client, width: number, height: number): void {
    c.width = width;
    c.height = height;
    c.shown = new Uint32Array(width * height).fill(UNSEEN);
  }

  private poll(): void {
    let wanted = false;
    for (const c of this.clients) if (c.pending) wanted = true;
    if (!wanted) return;
    const frame = this.display.render();
    for (const c of [...this.clients]) this.service(c, frame);
  }

  /** Answers the client's pending update request if there is anything to send. */
  private service(c: Client, frame?: Frame): void {
    if (c.phase !== 'normal' || !c.pending || c.socket.writableLength > MAX_BACKLOG) return;
    try {
      const f = frame ?? this.display.render();
      this.update(c, f);
    } catch (e) {
      this.drop(c, (e as Error).message);
    }
  }

  private update(c: Client, f: Frame): void {
    const req = c.pending!;
    if (f.width !== c.width || f.height !== c.height) {
      if (c.desktopSize) {
        this.resizeClient(c, f.width, f.height);
        const msg = Buffer.alloc(16);
        msg[0] = 0;
        msg.writeUInt16BE(1, 2);
        msg.writeUInt16BE(f.width, 8);
        msg.writeUInt16BE(f.height, 10);
        msg.writeInt32BE(ENC_DESKTOP_SIZE, 12);
        c.pending = null;
        this.send(c, msg);
        return;
      }
      // Without DesktopSize the client keeps its size: it sees the top-left part of the screen.
    }
    const shown = c.shown!;
    const x0 = Math.min(req.x, c.width, f.width), y0 = Math.min(req.y, c.height, f.height);
    const x1 = Math.min(req.x + req.w, c.width, f.width), y1 = Math.min(req.y + req.h, c.height, f.height);
    const rects: [number, number, number, number][] = [];
    if (!req.incremental) {
      if (x1 > x0 && y1 > y0) rects.push([x0, y0, x1 - x0, y1 - y0]);
    } else {
      for (let ty = y0; ty < y1; ty += TILE) {
        const th = Math.min(TILE, y1 - ty);
        let runStart = -1;
        for (let tx = x0; tx <= x1; tx += TILE) {
          const tw = Math.min(TILE, x1 - tx);
          const changed = tx < x1 && tileChanged(f, shown, c.width, tx, ty, tw, th);
          if (changed && runStart < 0) runStart = tx;
          if (!changed && runStart >= 0) {
            rects.push([runStart, ty, tx - runStart, th]);
            runStart = -1;
          }
        }
      }
      if (rects.length === 0) return; // nothing new: the request stays pending
    }
    c.pending = null;
    const bytesPP = c.format.bpp >> 3;
    let total = 4;
    for (const [, , w, h] of rects) total += 12 + w * h * bytesPP;
    const out = Buffer.alloc(total);
    out[0] = 0;
    out.writeUInt16BE(rects.length, 2);
    let o = 4;
    for (const [x, y, w, h] of rects) {
      out.writeUInt16BE(x, o);
      out.writeUInt16BE(y, o + 2);
      out.writeUInt16BE(w, o + 4);
      out.writeUInt16BE(h, o + 6);
      out.writeInt32BE(ENC_RAW, o + 8);
      o += 12;
      o = encodeRaw(c, f, x, y, w, h, out, o);
      for (let row = y; row < y + h; row++) {
        const src = f.pixels.subarray(row * f.width + x, row * f.width + x + w);
        shown.set(src, row * c.width + x);
      }
    }
    this.send(c, out);
  }
}

function tileChanged(f: Frame, shown: Uint32Array, shownWidth: number, x: number, y: number, w: number, h: number): boolean {
  const p = f.pixels;
  for (let row = y; row < y + h; row++) {
    let a = row * f.width + x, b = row * shownWidth + x;
    for (let i = 0; i < w; i++) if (p[a++] !== shown[b++]) return true;
  }
  return false;
}

interface ChannelTables { r: Uint32Array; g: Uint32Array; b: Uint32Array }

/** Per 8-bit channel value, its bits already scaled and shifted into the client's pixel. */
function channelTables(f: PixelFormat): ChannelTables {
  const make = (max: number, shift: number): Uint32Array => {
    const t = new Uint32Array(256);
    for (let v = 0; v < 256; v++) t[v] = (Math.round((v * max) / 255) * 2 ** shift) >>> 0;
    return t;
  };
  return { r: make(f.redMax, f.redShift), g: make(f.greenMax, f.greenShift), b: make(f.blueMax, f.blueShift) };
}

function encodeRaw(c: Client, f: Frame, x: number, y: number, w: number, h: number, out: Buffer, o: number): number {
  const { r, g, b } = c.tables;
  const p = f.pixels;
  const bpp = c.format.bpp, be = c.format.bigEndian;
  for (let row = y; row < y + h; row++) {
    let a = row * f.width + x;
    for (let i = 0; i < w; i++) {
      const px = p[a++];
      const v = (r[(px >> 16) & 0xff] | g[(px >> 8) & 0xff] | b[px & 0xff]) >>> 0;
      if (bpp === 32) {
        if (be) out.writeUInt32BE(v, o); else out.writeUInt32LE(v, o);
        o += 4;
      } else if (bpp === 16) {
        if (be) out.writeUInt16BE(v & 0xffff, o); else out.writeUInt16LE(v & 0xffff, o);
        o += 2;
      } else {
        out[o++] = v & 0xff;
      }
    }
  }
  return o;
}

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0, 0);
  return b;
}

function writePixelFormat(b: Buffer, o: number, f: PixelFormat): void {
  b[o] = f.bpp;
  b[o + 1] = f.bpp === 32 ? 24 : f.bpp === 16 ? 16 : 8; // depth
  b[o + 2] = f.bigEndian ? 1 : 0;
  b[o + 3] = f.trueColour ? 1 : 0;
  b.writeUInt16BE(f.redMax, o + 4);
  b.writeUInt16BE(f.greenMax, o + 6);
  b.writeUInt16BE(f.blueMax, o + 8);
  b[o + 10] = f.redShift;
  b[o + 11] = f.greenShift;
  b[o + 12] = f.blueShift;
}

function readPixelFormat(b: Buffer, o: number): PixelFormat {
  return {
    bpp: b[o],
    bigEndian: b[o + 2] !== 0,
    trueColour: b[o + 3] !== 0,
    redMax: b.readUInt16BE(o + 4),
    greenMax: b.readUInt16BE(o + 6),
    blueMax: b.readUInt16BE(o + 8),
    redShift: b[o + 10],
    greenShift: b[o + 11],
    blueShift: b[o + 12],
  };
}
