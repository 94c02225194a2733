import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';

/** A minimal RFB client: reads exact byte counts from the socket. */
export class RfbClient {
  private buf = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  closed = false;
  constructor(readonly socket: Socket) {
    socket.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.waiter?.();
    });
    socket.on('close', () => {
      this.closed = true;
      this.waiter?.();
    });
    socket.on('error', () => {});
  }
  static open(target: number | string): Promise<RfbClient> {
    return new Promise((resolve, reject) => {
      const s = typeof target === 'number' ? connect(target, '127.0.0.1') : connect(target);
      s.once('connect', () => resolve(new RfbClient(s)));
      s.once('error', reject);
    });
  }
  async read(n: number, timeoutMs = 3000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.buf.length < n) {
      if (this.closed) throw new Error('closed');
      if (Date.now() > deadline) throw new Error(`timeout waiting for ${n} bytes (have ${this.buf.length})`);
      await new Promise<void>((r) => {
        this.waiter = r;
        setTimeout(r, 50);
      });
      this.waiter = null;
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }
  get buffered(): number {
    return this.buf.length;
  }
  write(b: Buffer | number[]): void {
    this.socket.write(Buffer.isBuffer(b) ? b : Buffer.from(b));
  }
  /** Handshake as version 3.8; returns width, height, pixel format bytes and name. */
  async handshake(version = 'RFB 003.008\n'): Promise<{ width: number; height: number; format: Buffer; name: string }> {
    assert.equal((await this.read(12)).toString(), 'RFB 003.008\n');
    this.write(Buffer.from(version));
    if (version === 'RFB 003.003\n') {
      assert.equal((await this.read(4)).readUInt32BE(0), 1);
    } else {
      assert.deepEqual([...(await this.read(2))], [1, 1]);
      this.write([1]);
      if (version === 'RFB 003.008\n') assert.equal((await this.read(4)).readUInt32BE(0), 0);
    }
    this.write([1]);
    const init = await this.read(24);
    const name = (await this.read(init.readUInt32BE(20))).toString();
    return { width: init.readUInt16BE(0), height: init.readUInt16BE(2), format: init.subarray(4, 20), name };
  }
  setEncodings(encodings: number[]): void {
    const b = Buffer.alloc(4 + 4 * encodings.length);
    b[0] = 2;
    b.writeUInt16BE(encodings.length, 2);
    encodings.forEach((e, i) => b.writeInt32BE(e, 4 + 4 * i));
    this.write(b);
  }
  request(incremental: boolean, x: number, y: number, w: number, h: number): void {
    const b = Buffer.alloc(10);
    b[0] = 3;
    b[1] = incremental ? 1 : 0;
    b.writeUInt16BE(x, 2);
    b.writeUInt16BE(y, 4);
    b.writeUInt16BE(w, 6);
    b.writeUInt16BE(h, 8);
    this.write(b);
  }
  /** Reads one FramebufferUpdate with raw rectangles of `bytesPP` bytes per pixel. */
  async update(bytesPP = 4): Promise<{ x: number; y: number; w: number; h: number; encoding: number; data: Buffer }[]> {
    const head = await this.read(4);
    assert.equal(head[0], 0, 'FramebufferUpdate');
    const rects = [];
    for (let i = head.readUInt16BE(2); i > 0; i--) {
      const r = await this.read(12);
      const x = r.readUInt16BE(0), y = r.readUInt16BE(2), w = r.readUInt16BE(4), h = r.readUInt16BE(6), encoding = r.readInt32BE(8);
      const data = encoding === 0 ? await this.read(w * h * bytesPP) : Buffer.alloc(0);
      rects.push({ x, y, w, h, encoding, data });
    }
    return rects;
  }
  close(): void {
    this.socket.destroy();
  }
}
