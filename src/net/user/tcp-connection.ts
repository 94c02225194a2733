import type { Socket } from 'node:net';
import { randomInt } from 'node:crypto';
import { ByteQueue } from './byte-queue.js';
import type { GuestLink } from './guest-link.js';
import { IPPROTO_TCP, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, type TcpSegment, buildTcp } from './wire.js';

/** The MSS the stack announces: a 1500-byte MTU less the IPv4 and TCP headers. */
const OWN_MSS = 1460;
/** RFC 1122's default when the guest announces none. */
const DEFAULT_PEER_MSS = 536;
/**
 * The receive window: what the host socket may hold unwritten. Window scaling is not offered, so it is also
 * the most a guest can ever have in flight toward the host.
 */
const RECEIVE_WINDOW = 65535;
/** Host bytes held for the guest (unsent or unacknowledged) above which the host socket is paused. */
const SEND_BUFFER_LIMIT = 256 * 1024;
const INITIAL_RTO_MS = 1000;
const MAX_RTO_MS = 30000;
/** Retransmissions of one segment before the connection is given up (about 3 minutes with backoff). */
const MAX_RETRANSMISSIONS = 10;
const MAX_PERSIST_MS = 5000;

/** The four addresses of a connection as the guest sees them. */
export interface TcpEnds {
  guestIp: number;
  guestPort: number;
  /** The other end as the guest sees it (the gateway for the host's loopback). */
  peerIp: number;
  peerPort: number;
}

/** seq a comes after b, modulo 2^32. */
function after(a: number, b: number): boolean {
  return ((a - b) | 0) > 0;
}

type State = 'connecting' | 'syn-sent' | 'syn-received' | 'established' | 'closed';

/**
 * One TCP connection of the guest, terminated here and carried on by a host socket: a real TCP endpoint toward
 * the guest (handshake, sequence numbers, windows, retransmission, FIN/RST, MSS) and a Node socket toward the
 * host. Flow control both ways: the guest's window and the NIC's room limit what goes to the guest, and the host
 * socket is paused while SEND_BUFFER_LIMIT bytes wait for the guest; the guest's window toward the host is what
 * the host socket has not written yet.
 */
export class TcpConnection {
  private state: State;
  private readonly iss = randomInt(0x100000000);
  /** Oldest unacknowledged sequence number; once established, the sequence number of `pending`'s first byte. */
  private sndUna = this.iss;
  private sndNxt = this.iss;
  /** The highest sequence number sent so far (sndNxt goes back on a retransmission timeout). */
  private sndMax = this.iss;
  private sndWnd = 0;
  private peerMss = DEFAULT_PEER_MSS;
  private rcvNxt = 0;
  private advertisedWindow = 0;
  /** Host bytes not yet acknowledged by the guest, from sndUna on. */
  private readonly pending = new ByteQueue();
  private hostEnded = false;
  private finSent = false;
  private finAcked = false;
  private guestFinReceived = false;
  private rto = INITIAL_RTO_MS;
  private retransmissions = 0;
  private timer: NodeJS.Timeout | null = null;
  private ackPending = false;
  private ackScheduled = false;
  private hostPaused = false;

  /**
   * `syn` is the guest's SYN for a connection the guest opens (the host socket is connecting); without it the
   * connection is a forwarded one the host opened, and the stack sends the SYN.
   */
  constructor(
    private readonly link: GuestLink,
    readonly ends: TcpEnds,
    private readonly socket: Socket,
    syn: TcpSegment | undefined,
    private readonly onClosed: (c: TcpConnection) => void,
  ) {
    socket.on('data', (chunk: Buffer) => this.onHostData(chunk));
    socket.on('end', () => {
      this.hostEnded = true;
      this.output();
    });
    socket.on('drain', () => this.onHostDrain());
    socket.on('error', () => this.abort(true));
    // Closed after both sides ended: what the guest has not acknowledged yet is still here to send.
    socket.on('close', () => {
      if (!(this.hostEnded && this.guestFinReceived)) this.abort(true);
    });
    if (syn) {
      this.state = 'connecting';
      this.acceptSyn(syn);
      socket.once('connect', () => {
        if (this.state !== 'connecting') return;
        this.state = 'syn-received';
        this.sndNxt = this.sndMax = this.iss + 1;
        this.sendHandshake();
      });
    } else {
      this.state = 'syn-sent';
      this.sndNxt = this.sndMax = this.iss + 1;
      this.sendHandshake();
    }
  }

  get closed(): boolean {
    return this.state === 'closed';
  }

  /** A segment from the guest for this connection. */
  segment(s: TcpSegment): void {
    if (this.state === 'closed') return;
    if (s.flags & TCP_RST) {
      if (this.rstAcceptable(s)) this.abort(false);
      return;
    }
    switch (this.state) {
      case 'connecting':
        return; // a retransmitted SYN: the SYN-ACK follows once the host has connected
      case 'syn-sent':
        if ((s.flags & (TCP_SYN | TCP_ACK)) === (TCP_SYN | TCP_ACK) && s.ack === ((this.iss + 1) >>> 0)) {
          this.acceptSyn(s);
          this.establish(s);
          this.sendFlags(TCP_ACK);
          this.output();
        }
        return;
      case 'syn-received':
        if (s.flags & TCP_SYN) {
          if (s.seq === ((this.rcvNxt - 1) >>> 0)) this.sendHandshake();
          return;
        }
        if (!(s.flags & TCP_ACK) || s.ack !== ((this.iss + 1) >>> 0)) return;
        this.establish(s);
        break;
    }
    if (s.flags & TCP_SYN) {
      this.ackNow();
      return;
    }
    if (!(s.flags & TCP_ACK)) return;
    this.onAck(s);
    if (this.closed) return;
    this.onData(s);
    this.output();
  }

  /** The NIC takes frames again: send what the guest's window allows. */
  resume(): void {
    if (this.state === 'established') this.output();
  }

  /** The guest's MAC became known: a SYN that could not go out for want of it goes now. */
  neighbourKnown(): void {
    if (this.state === 'syn-sent') this.sendHandshake();
  }

  /** Host bytes held for the guest (unsent or unacknowledged). */
  get bufferedBytes(): number {
    return this.pending.length;
  }

  /** Ends the connection at once (the stack closes): the host socket is destroyed, the guest gets a RST. */
  reset(): void {
    this.abort(true);
  }

  private acceptSyn(s: TcpSegment): void {
    this.rcvNxt = (s.seq + 1) >>> 0;
    this.peerMss = Math.max(64, Math.min(s.mss ?? DEFAULT_PEER_MSS, OWN_MSS));
    this.sndWnd = s.window;
  }

  private establish(s: TcpSegment): void {
    this.state = 'established';
    this.sndUna = (this.iss + 1) >>> 0;
    this.sndWnd = s.window;
    this.retransmissions = 0;
    this.rto = INITIAL_RTO_MS;
    this.clearTimer();
    this.socket.resume();
  }

  private rstAcceptable(s: TcpSegment): boolean {
    if (this.state === 'syn-sent') return (s.flags & TCP_ACK) !== 0 && s.ack === ((this.iss + 1) >>> 0);
    const offset = (s.seq - this.rcvNxt) | 0;
    return offset >= 0 && offset <= Math.max(this.advertisedWindow, 1);
  }

  private onAck(s: TcpSegment): void {
    const acked = (s.ack - this.sndUna) | 0;
    if (acked < 0 || after(s.ack, this.sndMax)) return;
    if (after(s.ack, this.sndNxt)) this.sndNxt = s.ack; // what went before a retransmission timeout arrived after all
    if (acked > 0) {
      const dataAcked = Math.min(acked, this.pending.length);
      this.pending.consume(dataAcked);
      if (this.finSent && s.ack === this.sndMax) this.finAcked = true;
      this.sndUna = s.ack;
      this.retransmissions = 0;
      this.rto = INITIAL_RTO_MS;
      this.clearTimer();
      if (this.hostPaused && this.pending.length < SEND_BUFFER_LIMIT / 2) {
        this.hostPaused = false;
        this.socket.resume();
      }
    }
    this.sndWnd = s.window;
    if (this.finAcked && this.guestFinReceived) this.finish();
  }

  private onData(s: TcpSegment): void {
    let data = s.data;
    let fin = (s.flags & TCP_FIN) !== 0;
    if (data.length === 0 && !fin) return;
    const duplicate = (this.rcvNxt - s.seq) | 0;
    if (duplicate < 0 || this.guestFinReceived) {
      this.ackNow(); // out of order (dropped: the guest resends it) or after the FIN
      return;
    }
    if (duplicate > 0) {
      if (duplicate >= data.length + (fin ? 1 : 0)) {
        this.ackNow();
        return;
      }
      data = data.subarray(duplicate);
    }
    const window = this.receiveWindow();
    if (data.length > window) {
      data = data.subarray(0, window);
      fin = false;
      if (data.length === 0) this.ackNow(); // a probe of the closed window: the guest learns it is still closed
    }
    if (data.length > 0) {
      this.socket.write(data);
      this.rcvNxt = (this.rcvNxt + data.length) >>> 0;
      this.scheduleAck();
    }
    if (fin) {
      this.rcvNxt = (this.rcvNxt + 1) >>> 0;
      this.guestFinReceived = true;
      this.socket.end();
      this.ackNow();
      if (this.finAcked) this.finish();
    }
  }

  private onHostData(chunk: Buffer): void {
    if (this.state === 'closed') return;
    this.pending.append(chunk);
    if (this.pending.length >= SEND_BUFFER_LIMIT && !this.hostPaused) {
      this.hostPaused = true;
      this.socket.pause();
    }
    this.output();
  }

  private onHostDrain(): void {
    if (this.state === 'established' && this.receiveWindow() - this.advertisedWindow >= 2 * OWN_MSS) this.ackNow();
  }

  private receiveWindow(): number {
    return Math.max(0, RECEIVE_WINDOW - this.socket.writableLength);
  }

  /** Sends data and the FIN as far as the guest's window and the NIC allow, and keeps the timers right. */
  private output(): void {
    if (this.state !== 'established') return;
    const mss = this.peerMss;
    while (this.link.writable && !this.finSent) {
      const offset = (this.sndNxt - this.sndUna) | 0;
      const available = this.pending.length - offset;
      const n = Math.min(available, this.sndWnd - offset, mss);
      if (n <= 0) break;
      const data = this.pending.read(offset, n);
      this.send(this.sndNxt, TCP_ACK | (n === available ? TCP_PSH : 0), data);
      this.advance(n);
    }
    if (!this.finSent && this.hostEnded && this.link.writable && ((this.sndNxt - this.sndUna) | 0) === this.pending.length) {
      this.send(this.sndNxt, TCP_ACK | TCP_FIN, new Uint8Array(0));
      this.finSent = true;
      this.advance(1);
    }
    const inFlight = this.sndNxt !== this.sndUna;
    if (inFlight && !this.timer) this.armTimer(this.rto, () => this.retransmit());
    else if (!inFlight && !this.timer && this.pending.length > 0 && this.sndWnd === 0) this.armTimer(this.rto, () => this.probeWindow());
  }

  private advance(n: number): void {
    this.sndNxt = (this.sndNxt + n) >>> 0;
    if (after(this.sndNxt, this.sndMax)) this.sndMax = this.sndNxt;
  }

  private retransmit(): void {
    this.timer = null;
    if (++this.retransmissions > MAX_RETRANSMISSIONS) {
      this.abort(true);
      return;
    }
    this.rto = Math.min(this.rto * 2, MAX_RTO_MS);
    if (this.state === 'syn-sent' || this.state === 'syn-received') {
      this.sendHandshake();
      return;
    }
    // Go back to the oldest unacknowledged byte; what the guest already has it acknowledges at once.
    this.sndNxt = this.sndUna;
    if (this.finSent && !this.finAcked) this.finSent = false;
    this.output();
  }

  /** The guest's window is closed: a segment just before the window makes it say whether it opened. */
  private probeWindow(): void {
    this.timer = null;
    if (this.state !== 'established') return;
    this.send((this.sndUna - 1) >>> 0, TCP_ACK, new Uint8Array(0));
    this.rto = Math.min(this.rto * 2, MAX_PERSIST_MS);
    this.output();
    if (!this.timer && this.sndWnd === 0) this.armTimer(this.rto, () => this.probeWindow());
  }

  private sendHandshake(): void {
    const flags = this.state === 'syn-sent' ? TCP_SYN : TCP_SYN | TCP_ACK;
    this.send(this.iss, flags, new Uint8Array(0), OWN_MSS);
    this.clearTimer();
    this.armTimer(this.rto, () => this.retransmit());
  }

  private sendFlags(flags: number): void {
    this.send(this.sndNxt, flags, new Uint8Array(0));
  }

  private ackNow(): void {
    this.sendFlags(TCP_ACK);
  }

  /** Acknowledges received data once the current burst of guest frames is through (one ACK for several segments). */
  private scheduleAck(): void {
    this.ackPending = true;
    if (this.ackScheduled) return;
    this.ackScheduled = true;
    setImmediate(() => {
      this.ackScheduled = false;
      if (this.ackPending && this.state !== 'closed') this.ackNow();
    });
  }

  private send(seq: number, flags: number, data: Uint8Array, mss?: number): void {
    const window = flags & TCP_RST ? 0 : this.receiveWindow();
    if (flags & TCP_ACK) {
      this.ackPending = false;
      this.advertisedWindow = window;
    }
    const e = this.ends;
    const segment = buildTcp(e.peerIp, e.guestIp, { srcPort: e.peerPort, dstPort: e.guestPort, seq, ack: flags & TCP_ACK ? this.rcvNxt : 0, flags, window, mss, data });
    this.link.sendIpv4(IPPROTO_TCP, e.peerIp, e.guestIp, segment);
  }

  private armTimer(ms: number, f: () => void): void {
    this.timer = setTimeout(f, ms);
    this.timer.unref();
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Both directions are closed and acknowledged; the host socket closes once it has written what it holds. */
  private finish(): void {
    this.state = 'closed';
    this.clearTimer();
    this.onClosed(this);
  }

  /** Ends the connection: destroys the host socket, and resets the guest's side unless the guest reset it. */
  private abort(resetGuest: boolean): void {
    if (this.state === 'closed') return;
    if (resetGuest && this.state !== 'connecting') this.send(this.sndNxt, TCP_RST | TCP_ACK, new Uint8Array(0));
    else if (resetGuest) this.send(0, TCP_RST | TCP_ACK, new Uint8Array(0)); // the host refused: the guest's connect fails
    this.finish();
    this.socket.destroy();
  }
}
