/**
 * `-netdev socket`, in QEMU's wire format so that tsvm and QEMU VMs share one virtual wire: over TCP
 * (`listen=` / `connect=`) each frame goes with a 4-byte big-endian length in front; over UDP (`mcast=`, or
 * `udp=` with `localaddr=`) each datagram is one frame.
 */
import { type Socket as UdpSocket, createSocket } from 'node:dgram';
import { type Server, type Socket, createConnection, createServer } from 'node:net';
import { TsvmError, errorMessage } from '../base/errors.js';
import { debugLog } from '../base/log.js';
import { FrameQueue } from './frame-queue.js';
import type { NetBackend, NetReceiver } from './net-backend.js';

export interface HostPort {
  host: string;
  port: number;
}

export type SocketNetdevConfig =
  | { mode: 'listen'; address: HostPort }
  | { mode: 'connect'; address: HostPort }
  | { mode: 'mcast'; address: HostPort; localAddress?: string }
  | { mode: 'udp'; address: HostPort; localAddress: HostPort };

/** The largest frame accepted from the wire (QEMU's limit for the stream framing, 68 KiB). */
const MAX_FRAME = 69632;
/** Bytes queued towards a slow TCP peer beyond which further frames are dropped (the wire loses them). */
const SEND_BUFFER_LIMIT = 4 * 2 ** 20;
/** Datagrams held for a NIC without room: one ring's worth. */
const UDP_HOLD = 256;

export async function openSocketNetdev(id: string, config: SocketNetdevConfig): Promise<NetBackend> {
  if (config.mode === 'listen' || config.mode === 'connect') {
    const backend = new StreamNetdev(id);
    if (config.mode === 'listen') await backend.listen(config.address);
    else await backend.connect(config.address);
    return backend;
  }
  const backend = new DatagramNetdev(id, config);
  await backend.open();
  return backend;
}

/** TCP with QEMU's length framing; a listener serves one peer at a time. */
class StreamNetdev implements NetBackend {
  private server: Server | null = null;
  private socket: Socket | null = null;
  private readonly queue = new FrameQueue(1);
  /** Bytes received and not yet cut into frames. */
  private pending: Buffer = Buffer.alloc(0);

  constructor(private readonly id: string) {}

  listen(address: HostPort): Promise<void> {
    const server = this.server = createServer({ noDelay: true }, (socket) => {
      if (this.socket) {
        socket.destroy(); // the wire already has its peer
        return;
      }
      this.use(socket);
    });
    return new Promise((resolve, reject) => {
      server.once('error', (e) => reject(new TsvmError(`-netdev ${this.id}: cannot listen on ${address.host || '*'}:${address.port}: ${errorMessage(e)}`)));
      server.listen(address.port, address.host || undefined, () => resolve());
    });
  }

  connect(address: HostPort): Promise<void> {
    return new Promise((resolve, reject) => {
      const socket = createConnection({ host: address.host || 'localhost', port: address.port, noDelay: true });
      socket.once('error', (e) => reject(new TsvmError(`-netdev ${this.id}: cannot connect to ${address.host}:${address.port}: ${errorMessage(e)}`)));
      socket.once('connect', () => {
        socket.removeAllListeners('error');
        this.use(socket);
        resolve();
      });
    });
  }

  private use(socket: Socket): void {
    this.socket = socket;
    this.pending = Buffer.alloc(0);
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
      this.cutFrames();
    });
    socket.on('error', (e) => debugLog('net', `${this.id}: ${errorMessage(e)}`));
    socket.on('close', () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.queue.clear();
    });
  }

  /** Hands whole frames to the NIC until it refuses one; then reading stops until it has room. */
  private cutFrames(): void {
    const socket = this.socket;
    while (socket && !this.queue.holding && this.pending.length >= 4) {
      const length = this.pending.readUInt32BE(0);
      if (length > MAX_FRAME) {
        debugLog('net', `${this.id}: peer sent a ${length}-byte frame; connection closed`);
        socket.destroy();
        return;
      }
      if (this.pending.length < 4 + length) break;
      const frame = new Uint8Array(this.pending.subarray(4, 4 + length));
      this.pending = this.pending.subarray(4 + length);
      this.queue.offer(frame);
    }
    if (!socket) return;
    if (this.queue.holding) socket.pause();
    else if (socket.isPaused()) socket.resume();
  }

  attach(receiver: NetReceiver): void {
    this.queue.receiver = receiver;
  }

  send(frame: Uint8Array): void {
    const socket = this.socket;
    if (!socket || socket.writableLength > SEND_BUFFER_LIMIT) return;
    const out = Buffer.allocUnsafe(4 + frame.length);
    out.writeUInt32BE(frame.length, 0);
    out.set(frame, 4);
    socket.write(out);
  }

  receiveReady(): void {
    if (this.queue.drain()) this.cutFrames();
  }

  async close(): Promise<void> {
    this.socket?.destroy();
    this.socket = null;
    const server = this.server;
    this.server = null;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

/** UDP: a multicast group every member sends to and hears (its own frames too, as on QEMU), or a unicast peer. */
export class DatagramNetdev implements NetBackend {
  private socket: UdpSocket | null = null;
  private readonly queue = new FrameQueue(UDP_HOLD);

  constructor(private readonly id: string, private readonly config: Extract<SocketNetdevConfig, { mode: 'mcast' | 'udp' }>) {}

  open(): Promise<void> {
    const c = this.config;
    const socket = this.socket = createSocket({ type: 'udp4', reuseAddr: true });
    socket.on('message', (frame) => {
      if (frame.length <= MAX_FRAME && !this.queue.offer(new Uint8Array(frame))) debugLog('net', `${this.id}: NIC full, frame dropped`);
    });
    return new Promise((resolve, reject) => {
      socket.once('error', (e) => reject(new TsvmError(`-netdev ${this.id}: ${errorMessage(e)}`)));
      const bound = () => {
        try {
          if (c.mode === 'mcast') {
            socket.addMembership(c.address.host, c.localAddress);
            socket.setMulticastLoopback(true);
            if (c.localAddress) socket.setMulticastInterface(c.localAddress);
          }
        } catch (e) {
          reject(new TsvmError(`-netdev ${this.id}: cannot join ${c.address.host}: ${errorMessage(e)}`));
          return;
        }
        socket.removeAllListeners('error');
        socket.on('error', (e) => debugLog('net', `${this.id}: ${errorMessage(e)}`));
        resolve();
      };
      if (c.mode === 'mcast') socket.bind(c.address.port, bound);
      else socket.bind(c.localAddress.port, c.localAddress.host || undefined, bound);
    });
  }

  /** The local UDP port (the one bound, when `localaddr` asked for port 0). */
  get localPort(): number {
    return this.socket?.address().port ?? 0;
  }

  attach(receiver: NetReceiver): void {
    this.queue.receiver = receiver;
  }

  send(frame: Uint8Array): void {
    this.socket?.send(Buffer.from(frame), this.config.address.port, this.config.address.host);
  }

  receiveReady(): void {
    this.queue.drain();
  }

  async close(): Promise<void> {
    const socket = this.socket;
    this.socket = null;
    if (socket) await new Promise<void>((resolve) => socket.close(() => resolve()));
  }
}
