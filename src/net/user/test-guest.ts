/**
 * For tests: a guest on the other end of a user-mode network, built from frames. It can refuse frames (a full
 * NIC), run DHCP, send ARP/ICMP/UDP, and hold minimal TCP connections (in-order receive with a window the test
 * application opens by reading, no retransmission: the stack's queue toward it never drops TCP).
 */
import type { NetReceiver } from '../net-backend.js';
import type { UserNetwork } from './user-network.js';
import {
  ARP_REPLY,
  ARP_REQUEST,
  BROADCAST_IPV4,
  BROADCAST_MAC,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  type EthernetFrame,
  IPPROTO_ICMP,
  IPPROTO_TCP,
  IPPROTO_UDP,
  type Ipv4Packet,
  TCP_ACK,
  TCP_FIN,
  TCP_PSH,
  TCP_RST,
  TCP_SYN,
  type TcpSegment,
  buildArp,
  buildEthernet,
  buildIpv4,
  buildTcp,
  buildUdp,
  internetChecksum,
  parseArp,
  parseEthernet,
  parseIpv4,
  parseTcp,
  writeU16,
  writeU32,
} from './wire.js';

export const GATEWAY = 0x0a000202;
export const DNS_SERVER = 0x0a000203;
export const FIRST_LEASE = 0x0a00020f;
const GUEST_MSS = 1460;

export interface ReceivedFrame {
  eth: EthernetFrame;
  ip?: Ipv4Packet;
}

export class TestGuest implements NetReceiver {
  readonly mac: Uint8Array;
  ip = FIRST_LEASE;
  /** When false, the guest's NIC has no room: frames are refused (and counted). */
  accepting = true;
  refused = 0;
  private readonly inbox: ReceivedFrame[] = [];
  private readonly rxQueue: Uint8Array[] = [];
  private wake: (() => void) | null = null;
  private readonly sockets = new Map<string, GuestTcp>();
  private readonly listeners = new Map<number, (s: GuestTcp) => void>();
  private nextPort = 40000;

  constructor(readonly net: UserNetwork, macLastByte = 0x56) {
    this.mac = new Uint8Array([0x52, 0x54, 0x00, 0x12, 0x34, macLastByte]);
    net.attach(this);
  }

  receive(frame: Uint8Array): boolean {
    if (!this.accepting) {
      this.refused++;
      return false;
    }
    // Handled later, as a real guest handles its interrupts: answering from inside receive() would recurse
    // through the stack for as long as the window stays open.
    this.rxQueue.push(frame.slice());
    if (this.rxQueue.length === 1) setImmediate(() => this.drainRx());
    return true;
  }

  private drainRx(): void {
    for (const frame of this.rxQueue.splice(0)) {
      const eth = parseEthernet(frame)!;
      const ip = eth.type === ETHERTYPE_IPV4 ? parseIpv4(eth.payload) : undefined;
      if (ip?.proto === IPPROTO_TCP && this.tcpInput(ip)) continue;
      const arp = eth.type === ETHERTYPE_ARP ? parseArp(eth.payload) : undefined;
      if (arp?.op === ARP_REQUEST && arp.targetIp === this.ip) {
        this.sendFrame(arp.senderMac, ETHERTYPE_ARP, buildArp({ op: ARP_REPLY, senderMac: this.mac, senderIp: this.ip, targetMac: arp.senderMac, targetIp: arp.senderIp }));
      }
      this.inbox.push({ eth, ip });
      this.wake?.();
    }
  }

  /** Lets the NIC take frames again and tells the stack. */
  open(): void {
    this.accepting = true;
    this.net.receiveReady();
  }

  /** The first received frame `pick` maps to something (frames before it that it rejects are dropped). */
  async next<T>(pick: (f: ReceivedFrame) => T | undefined, timeoutMs = 5000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      while (this.inbox.length > 0) {
        const got = pick(this.inbox.shift()!);
        if (got !== undefined) return got;
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('test guest: no matching frame in time');
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(t);
          this.wake = null;
          resolve();
        };
      });
    }
  }

  /** Whether nothing arrives that `pick` accepts within `ms`. */
  async nothing<T>(pick: (f: ReceivedFrame) => T | undefined, ms = 300): Promise<boolean> {
    try {
      await this.next(pick, ms);
      return false;
    } catch {
      return true;
    }
  }

  sendFrame(dstMac: Uint8Array, type: number, payload: Uint8Array): void {
    this.net.send(buildEthernet(dstMac, this.mac, type, payload));
  }

  sendIp(proto: number, dst: number, payload: Uint8Array, src = this.ip): void {
    this.sendFrame(dst === BROADCAST_IPV4 ? BROADCAST_MAC : this.net.mac, ETHERTYPE_IPV4, buildIpv4(proto, src, dst, 1, payload));
  }

  sendUdp(srcPort: number, dst: number, dstPort: number, data: Uint8Array, src = this.ip): void {
    this.sendIp(IPPROTO_UDP, dst, buildUdp(src, dst, srcPort, dstPort, data), src);
  }

  sendArpRequest(target: number): void {
    this.sendFrame(BROADCAST_MAC, ETHERTYPE_ARP, buildArp({ op: ARP_REQUEST, senderMac: this.mac, senderIp: this.ip, targetMac: new Uint8Array(6), targetIp: target }));
  }

  sendPing(dst: number, id: number, seq: number, data: Uint8Array): void {
    const p = new Uint8Array(8 + data.length);
    p[0] = 8;
    writeU16(p, 4, id);
    writeU16(p, 6, seq);
    p.set(data, 8);
    writeU16(p, 2, internetChecksum(p, 0, p.length));
    this.sendIp(IPPROTO_ICMP, dst, p);
  }

  /** A DHCP message from this guest (type, requested address, transaction id). */
  dhcpMessage(type: number, xid: number, requested?: number): Uint8Array {
    const m = new Uint8Array(300);
    m[0] = 1;
    m[1] = 1;
    m[2] = 6;
    writeU32(m, 4, xid);
    m.set(this.mac, 28);
    writeU32(m, 236, 0x63825363);
    let i = 240;
    m.set([53, 1, type], i);
    i += 3;
    if (requested !== undefined) {
      m.set([50, 4], i);
      writeU32(m, i + 2, requested);
      i += 6;
    }
    m[i] = 255;
    return m;
  }

  /** Opens a TCP connection from the guest; resolves once established (rejects on a reset). */
  connect(dst: number, dstPort: number, window = 65535): Promise<GuestTcp> {
    const s = new GuestTcp(this, this.nextPort++, dst, dstPort, window);
    this.sockets.set(s.key, s);
    s.sendSyn();
    return s.established;
  }

  /** Accepts TCP connections to a guest port (what a guest server does). */
  listen(port: number, onAccept: (s: GuestTcp) => void): void {
    this.listeners.set(port, onAccept);
  }

  private tcpInput(ip: Ipv4Packet): boolean {
    const seg = parseTcp(ip);
    if (!seg || ip.dst !== this.ip) return false;
    const key = `${seg.dstPort}:${ip.src}:${seg.srcPort}`;
    let s = this.sockets.get(key);
    if (!s && seg.flags === TCP_SYN && this.listeners.has(seg.dstPort)) {
      s = new GuestTcp(this, seg.dstPort, ip.src, seg.srcPort, 65535);
      this.sockets.set(key, s);
      s.acceptSyn(seg);
      this.listeners.get(seg.dstPort)!(s);
      return true;
    }
    if (!s) return false;
    s.input(seg);
    return true;
  }
}

/** A guest-side TCP endpoint, good enough for tests on a lossless link. */
export class GuestTcp {
  readonly key: string;
  readonly established: Promise<GuestTcp>;
  /** Resolves when the peer's FIN arrived. */
  readonly ended: Promise<void>;
  reset = false;
  private resolveEstablished!: (s: GuestTcp) => void;
  private rejectEstablished!: (e: Error) => void;
  private resolveEnded!: () => void;
  private readonly iss = 1000;
  private sndNxt = this.iss;
  private sndUna = this.iss;
  private sndWnd = 0;
  private rcvNxt = 0;
  private readonly unread: Uint8Array[] = [];
  private unreadBytes = 0;
  private readonly outbox: Uint8Array[] = [];
  private finQueued = false;
  private finSent = false;
  /** Bytes received in all, and the largest window ever advertised. */
  receivedBytes = 0;
  onData: (() => void) | null = null;

  constructor(private readonly guest: TestGuest, readonly localPort: number, readonly remoteIp: number, readonly remotePort: number, private readonly capacity: number) {
    this.key = `${localPort}:${remoteIp}:${remotePort}`;
    this.established = new Promise((resolve, reject) => {
      this.resolveEstablished = resolve;
      this.rejectEstablished = reject;
    });
    this.established.catch(() => undefined);
    this.ended = new Promise((resolve) => (this.resolveEnded = resolve));
  }

  sendSyn(): void {
    this.segment(this.iss, TCP_SYN, new Uint8Array(0), GUEST_MSS);
    this.sndNxt = this.iss + 1;
  }

  acceptSyn(seg: TcpSegment): void {
    this.rcvNxt = (seg.seq + 1) >>> 0;
    this.sndWnd = seg.window;
    this.segment(this.iss, TCP_SYN | TCP_ACK, new Uint8Array(0), GUEST_MSS);
    this.sndNxt = this.iss + 1;
  }

  /** Queues bytes to send; they go as the peer's window allows. */
  write(data: Uint8Array): void {
    for (let i = 0; i < data.length; i += GUEST_MSS) this.outbox.push(data.subarray(i, i + GUEST_MSS));
    this.flush();
  }

  end(): void {
    this.finQueued = true;
    this.flush();
  }

  /** Bytes written but not sent yet (the peer's window is closed). */
  get unsentBytes(): number {
    return this.outbox.reduce((n, b) => n + b.length, 0);
  }

  /** Takes every byte received so far (which opens the window again). */
  read(): Uint8Array {
    const out = Buffer.concat(this.unread);
    this.unread.length = 0;
    const wasClosed = this.window() < GUEST_MSS;
    this.unreadBytes = 0;
    if (wasClosed && out.length > 0) this.segment(this.sndNxt, TCP_ACK, new Uint8Array(0));
    return out;
  }

  private window(): number {
    return Math.max(0, this.capacity - this.unreadBytes);
  }

  input(seg: TcpSegment): void {
    if (seg.flags & TCP_RST) {
      this.reset = true;
      this.rejectEstablished(new Error('connection reset'));
      this.resolveEnded();
      return;
    }
    if ((seg.flags & (TCP_SYN | TCP_ACK)) === (TCP_SYN | TCP_ACK)) {
      this.rcvNxt = (seg.seq + 1) >>> 0;
      this.sndUna = seg.ack;
      this.sndWnd = seg.window;
      this.segment(this.sndNxt, TCP_ACK, new Uint8Array(0));
      this.resolveEstablished(this);
      return;
    }
    if (seg.flags & TCP_ACK) {
      if (((seg.ack - this.sndUna) | 0) >= 0) {
        this.sndUna = seg.ack;
        this.sndWnd = seg.window;
      }
      this.resolveEstablished(this);
    }
    const fin = (seg.flags & TCP_FIN) !== 0;
    if (seg.data.length > 0 || fin) {
      if (seg.seq !== this.rcvNxt || seg.data.length > this.window()) {
        this.segment(this.sndNxt, TCP_ACK, new Uint8Array(0)); // out of order or beyond the window: dropped
        return;
      }
      if (seg.data.length > 0) {
        this.unread.push(seg.data.slice());
        this.unreadBytes += seg.data.length;
        this.receivedBytes += seg.data.length;
        this.rcvNxt = (this.rcvNxt + seg.data.length) >>> 0;
      }
      if (fin) this.rcvNxt = (this.rcvNxt + 1) >>> 0;
      this.segment(this.sndNxt, TCP_ACK, new Uint8Array(0));
      if (fin) this.resolveEnded();
      this.onData?.();
    }
    this.flush();
  }

  private flush(): void {
    while (this.outbox.length > 0 && ((this.sndNxt - this.sndUna) | 0) + this.outbox[0].length <= this.sndWnd) {
      const data = this.outbox.shift()!;
      this.segment(this.sndNxt, TCP_ACK | TCP_PSH, data);
      this.sndNxt = (this.sndNxt + data.length) >>> 0;
    }
    if (this.finQueued && !this.finSent && this.outbox.length === 0) {
      this.finSent = true;
      this.segment(this.sndNxt, TCP_ACK | TCP_FIN, new Uint8Array(0));
      this.sndNxt = (this.sndNxt + 1) >>> 0;
    }
  }

  private segment(seq: number, flags: number, data: Uint8Array, mss?: number): void {
    const g = this.guest;
    const s: TcpSegment = { srcPort: this.localPort, dstPort: this.remotePort, seq, ack: flags & TCP_ACK ? this.rcvNxt : 0, flags, window: this.window(), mss, data };
    g.sendIp(IPPROTO_TCP, this.remoteIp, buildTcp(g.ip, this.remoteIp, s));
  }
}
