import { getServers } from 'node:dns';
import { type Socket, connect } from 'node:net';
import { debugLog } from '../../base/log.js';
import type { NetBackend, NetReceiver } from '../net-backend.js';
import { DHCP_CLIENT_PORT, DHCP_SERVER_PORT, DhcpServer } from './dhcp-server.js';
import type { GuestLink } from './guest-link.js';
import { HostForwarder } from './host-forwarder.js';
import { TcpConnection, type TcpEnds } from './tcp-connection.js';
import { UdpNat } from './udp-nat.js';
import { type DnsUpstream, type HostForward, type UserNetOptions, netmaskOf } from './user-net-options.js';
import {
  ARP_REPLY,
  ARP_REQUEST,
  BROADCAST_IPV4,
  BROADCAST_MAC,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  IPPROTO_ICMP,
  IPPROTO_TCP,
  IPPROTO_UDP,
  type Ipv4Packet,
  TCP_ACK,
  TCP_FIN,
  TCP_RST,
  TCP_SYN,
  type TcpSegment,
  buildArp,
  buildEthernet,
  buildIpv4,
  buildTcp,
  buildUdp,
  formatIpv4Address,
  icmpEchoReply,
  parseArp,
  parseEthernet,
  parseIpv4,
  parseIpv4Address,
  parseTcp,
  parseUdp,
} from './wire.js';

/** Frames held for the NIC while it has no room; beyond this, datagrams toward the guest are dropped. */
const MAX_QUEUED_FRAMES = 256;
const MAX_TCP_CONNECTIONS = 1024;
/** Guest MACs remembered (the guest and any other machine on its side of the wire). */
const MAX_NEIGHBOURS = 64;
const SWEEP_INTERVAL_MS = 5000;
const DNS_PORT = 53;

/** The host's resolver: its first IPv4 name server (from /etc/resolv.conf on Linux), or the loopback. */
export function hostDnsUpstream(): DnsUpstream {
  for (const server of getServers()) {
    const m = /^(\d+\.\d+\.\d+\.\d+)(?::(\d+))?$/.exec(server);
    if (m) return { address: m[1], port: m[2] ? Number(m[2]) : DNS_PORT };
  }
  return { address: '127.0.0.1', port: DNS_PORT };
}

function sameMac(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < 6; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * User-mode networking (QEMU's `-netdev user`): the guest's whole network is this object. It answers ARP for
 * the gateway and DNS addresses, serves DHCP, answers pings of the gateway, forwards DNS queries to the host's
 * resolver, and carries the guest's TCP connections and UDP flows on host sockets; `hostfwd` listeners bring
 * host connections in. Every stack is independent: several machines in one process each have their own.
 */
export class UserNetwork implements NetBackend, GuestLink {
  /** The MAC of every address the stack answers for (libslirp's 52:55:0a:00:02:02). */
  readonly mac = new Uint8Array([0x52, 0x55, 0x0a, 0x00, 0x02, 0x02]);
  private receiver: NetReceiver | null = null;
  /** Frames the NIC refused or that wait behind one it refused. */
  private readonly queue: Uint8Array[] = [];
  private blocked = false;
  private flushing = false;
  private closed = false;
  private ipId = 0;
  /** Guest frames whose handling threw (a bug: parsing never throws on bad input); the fuzz test wants 0. */
  private failedFrames = 0;
  private readonly netmask: number;
  private readonly neighbours = new Map<number, Uint8Array>();
  private readonly tcp = new Map<string, TcpConnection>();
  private readonly dhcp: DhcpServer;
  private readonly udp: UdpNat;
  private readonly forwarder: HostForwarder;
  private readonly dnsUpstream: DnsUpstream;
  private readonly sweeper: NodeJS.Timeout;

  private constructor(private readonly options: UserNetOptions) {
    this.netmask = netmaskOf(options.prefixLength);
    this.dhcp = new DhcpServer(options);
    this.udp = new UdpNat(this, (address) => this.hostToGuest(address));
    this.dnsUpstream = options.dnsUpstream ?? hostDnsUpstream();
    this.forwarder = new HostForwarder({
      link: this,
      hostToGuest: (address) => this.hostToGuest(address),
      defaultGuestAddress: options.dhcpStart,
      openTcpToGuest: (socket, guestIp, guestPort, peerIp, peerPort) => this.openTcpToGuest(socket, { guestIp, guestPort, peerIp, peerPort }),
    });
    this.sweeper = setInterval(() => {
      const now = Date.now();
      this.udp.sweep(now);
      this.forwarder.sweep(now);
    }, SWEEP_INTERVAL_MS);
    this.sweeper.unref();
  }

  /** A stack with its `hostfwd` listeners bound (a rule that cannot be set up is a one-line error). */
  static async open(options: UserNetOptions): Promise<UserNetwork> {
    const net = new UserNetwork(options);
    try {
      for (const rule of options.hostForwards) await net.forwarder.add(rule);
    } catch (e) {
      await net.close();
      throw e;
    }
    return net;
  }

  /** Adds a forwarded port at run time; resolves to the host port bound (picked by the host when hostPort is 0). */
  addHostForward(rule: HostForward): Promise<number> {
    return this.forwarder.add(rule);
  }

  /** What the stack holds now: frames waiting for the NIC, TCP connections and the host bytes they hold. */
  stats(): { queuedFrames: number; tcpConnections: number; tcpBufferedBytes: number; failedFrames: number } {
    let tcpBufferedBytes = 0;
    for (const c of this.tcp.values()) tcpBufferedBytes += c.bufferedBytes;
    return { queuedFrames: this.queue.length, tcpConnections: this.tcp.size, tcpBufferedBytes, failedFrames: this.failedFrames };
  }

  attach(receiver: NetReceiver): void {
    this.receiver = receiver;
  }

  get writable(): boolean {
    return this.receiver !== null && !this.blocked && !this.closed;
  }

  send(frame: Uint8Array): void {
    if (this.closed) return;
    // Hostile input is parsed with every length checked; a host socket call that still throws (a bug) must not
    // take the machine down with it.
    try {
      this.input(frame.slice());
    } catch (e) {
      this.failedFrames++;
      debugLog('net', `user-mode network: frame dropped: ${e instanceof Error ? e.stack : String(e)}`);
    }
  }

  receiveReady(): void {
    if (this.flushing || !this.receiver) return;
    this.flushing = true;
    this.blocked = false;
    while (this.queue.length > 0) {
      if (!this.receiver.receive(this.queue[0])) {
        this.blocked = true;
        break;
      }
      this.queue.shift();
    }
    // Each connection sends what its window allows; one that fills the NIC goes last next time.
    for (const [key, connection] of this.tcp) {
      if (this.blocked) break;
      connection.resume();
      if (this.blocked && this.tcp.delete(key)) this.tcp.set(key, connection);
    }
    this.flushing = false;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweeper);
    for (const connection of [...this.tcp.values()]) connection.reset();
    this.tcp.clear();
    this.udp.close();
    this.queue.length = 0;
    await this.forwarder.close();
  }

  sendIpv4(proto: number, src: number, dst: number, payload: Uint8Array, dstMac?: Uint8Array): boolean {
    const mac = dstMac ?? (dst === BROADCAST_IPV4 ? BROADCAST_MAC : this.neighbours.get(dst));
    if (!mac) {
      this.sendFrame(buildEthernet(BROADCAST_MAC, this.mac, ETHERTYPE_ARP, buildArp({ op: ARP_REQUEST, senderMac: this.mac, senderIp: this.options.host, targetMac: new Uint8Array(6), targetIp: dst })));
      return false;
    }
    this.ipId = (this.ipId + 1) & 0xffff;
    return this.sendFrame(buildEthernet(mac, this.mac, ETHERTYPE_IPV4, buildIpv4(proto, src, dst, this.ipId, payload)));
  }

  private sendFrame(frame: Uint8Array): boolean {
    if (!this.receiver || this.closed) return false;
    if (this.blocked || this.queue.length > 0) {
      if (this.queue.length >= MAX_QUEUED_FRAMES) return false;
      this.queue.push(frame);
      return true;
    }
    if (!this.receiver.receive(frame)) {
      this.blocked = true;
      this.queue.push(frame);
    }
    return true;
  }

  private input(frame: Uint8Array): void {
    const eth = parseEthernet(frame);
    if (!eth || !(sameMac(eth.dst, this.mac) || sameMac(eth.dst, BROADCAST_MAC))) return;
    if (eth.type === ETHERTYPE_ARP) this.arpInput(eth.payload, eth.src);
    else if (eth.type === ETHERTYPE_IPV4) {
      const ip = parseIpv4(eth.payload);
      if (!ip) return;
      if (this.isGuestAddress(ip.src)) this.learn(ip.src, eth.src);
      if (ip.proto === IPPROTO_ICMP) this.icmpInput(ip);
      else if (ip.proto === IPPROTO_UDP) this.udpInput(ip, eth.src);
      else if (ip.proto === IPPROTO_TCP) this.tcpInput(ip);
    }
  }

  /** An address in the virtual network that is not the stack's own, the network's or its broadcast address. */
  private isGuestAddress(a: number): boolean {
    const o = this.options;
    return ((a & this.netmask) >>> 0) === o.network && a !== o.network && ((a | ~this.netmask) >>> 0) !== a && a !== o.host && a !== o.dns;
  }

  private isOwnAddress(a: number): boolean {
    return a === this.options.host || a === this.options.dns;
  }

  private learn(ip: number, mac: Uint8Array): void {
    if (mac[0] & 1) return; // never a multicast or broadcast source
    if (!this.neighbours.has(ip) && this.neighbours.size >= MAX_NEIGHBOURS) this.neighbours.delete(this.neighbours.keys().next().value!);
    this.neighbours.set(ip, mac.slice());
  }

  private arpInput(payload: Uint8Array, srcMac: Uint8Array): void {
    const arp = parseArp(payload);
    if (!arp || !sameMac(arp.senderMac, srcMac)) return;
    if (this.isGuestAddress(arp.senderIp)) this.learn(arp.senderIp, arp.senderMac);
    if (arp.op === ARP_REQUEST && this.isOwnAddress(arp.targetIp)) {
      const reply = buildArp({ op: ARP_REPLY, senderMac: this.mac, senderIp: arp.targetIp, targetMac: arp.senderMac, targetIp: arp.senderIp });
      this.sendFrame(buildEthernet(arp.senderMac, this.mac, ETHERTYPE_ARP, reply));
    }
    if (arp.op === ARP_REPLY && this.isGuestAddress(arp.senderIp)) {
      for (const c of this.tcp.values()) if (c.ends.guestIp === arp.senderIp) c.neighbourKnown();
    }
  }

  private icmpInput(ip: Ipv4Packet): void {
    if (!this.isOwnAddress(ip.dst) || !this.isGuestAddress(ip.src)) return;
    const reply = icmpEchoReply(ip.payload);
    if (reply) this.sendIpv4(IPPROTO_ICMP, ip.dst, ip.src, reply);
  }

  private udpInput(ip: Ipv4Packet, srcMac: Uint8Array): void {
    const udp = parseUdp(ip);
    if (!udp) return;
    if (udp.dstPort === DHCP_SERVER_PORT && (ip.dst === BROADCAST_IPV4 || ip.dst === this.options.host)) {
      const reply = this.dhcp.handle(udp.data);
      if (reply) {
        if (this.isGuestAddress(reply.yiaddr)) this.learn(reply.yiaddr, reply.clientMac);
        const datagram = buildUdp(this.options.host, reply.dst, DHCP_SERVER_PORT, DHCP_CLIENT_PORT, reply.message);
        this.sendIpv4(IPPROTO_UDP, this.options.host, reply.dst, datagram, reply.broadcast ? BROADCAST_MAC : srcMac);
      }
      return;
    }
    if (!this.isGuestAddress(ip.src) || udp.srcPort === 0 || udp.dstPort === 0) return;
    if (this.forwarder.udpFromGuest(ip.src, udp.srcPort, ip.dst, udp.dstPort, udp.data)) return;
    if (this.options.restrict || ip.ttl === 0) return;
    const target = this.hostTarget(ip.dst, udp.dstPort);
    if (target) this.udp.send(ip.src, udp.srcPort, ip.dst, udp.dstPort, target.address, target.port, udp.data);
  }

  /**
   * Where a guest connection or datagram to dst:port goes on the host: the gateway is the host's loopback, the
   * DNS address's port 53 the resolver, addresses outside the virtual network themselves; nothing else.
   */
  private hostTarget(dst: number, port: number): DnsUpstream | undefined {
    const o = this.options;
    if (dst === o.host) return { address: '127.0.0.1', port };
    if (dst === o.dns) return port === DNS_PORT ? this.dnsUpstream : undefined;
    const first = dst >>> 24;
    if (((dst & this.netmask) >>> 0) === o.network || first === 0 || first === 127 || first >= 224) return undefined;
    return { address: formatIpv4Address(dst), port };
  }

  private hostToGuest(address: string): number {
    const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
    const a = parseIpv4Address(v4);
    return a === undefined || a >>> 24 === 127 ? this.options.host : a;
  }

  private tcpInput(ip: Ipv4Packet): void {
    const segment = parseTcp(ip);
    if (!segment || !this.isGuestAddress(ip.src)) return;
    const key = `${ip.src}:${segment.srcPort}:${ip.dst}:${segment.dstPort}`;
    const existing = this.tcp.get(key);
    if (existing) {
      existing.segment(segment);
      return;
    }
    if (segment.flags & TCP_RST) return;
    const target = (segment.flags & (TCP_SYN | TCP_ACK | TCP_FIN)) === TCP_SYN && !this.options.restrict && ip.ttl !== 0 ? this.hostTarget(ip.dst, segment.dstPort) : undefined;
    if (!target || target.port === 0 || segment.srcPort === 0 || this.tcp.size >= MAX_TCP_CONNECTIONS) {
      this.resetUnknown(ip, segment);
      return;
    }
    const socket = connect({ host: target.address, port: target.port, allowHalfOpen: true });
    this.addConnection(key, socket, { guestIp: ip.src, guestPort: segment.srcPort, peerIp: ip.dst, peerPort: segment.dstPort }, segment);
  }

  private openTcpToGuest(socket: Socket, ends: TcpEnds): void {
    const key = `${ends.guestIp}:${ends.guestPort}:${ends.peerIp}:${ends.peerPort}`;
    if (this.closed || this.tcp.has(key) || this.tcp.size >= MAX_TCP_CONNECTIONS || ends.peerPort === 0) {
      socket.destroy();
      return;
    }
    this.addConnection(key, socket, ends, undefined);
  }

  private addConnection(key: string, socket: Socket, ends: TcpEnds, syn: TcpSegment | undefined): void {
    const connection = new TcpConnection(this, ends, socket, syn, (c) => {
      if (this.tcp.get(key) === c) this.tcp.delete(key);
    });
    if (!connection.closed) this.tcp.set(key, connection);
  }

  /** RFC 793's reset for a segment that belongs to no connection. */
  private resetUnknown(ip: Ipv4Packet, s: TcpSegment): void {
    const length = s.data.length + (s.flags & TCP_SYN ? 1 : 0) + (s.flags & TCP_FIN ? 1 : 0);
    const reply: TcpSegment =
      s.flags & TCP_ACK
        ? { srcPort: s.dstPort, dstPort: s.srcPort, seq: s.ack, ack: 0, flags: TCP_RST, window: 0, data: new Uint8Array(0) }
        : { srcPort: s.dstPort, dstPort: s.srcPort, seq: 0, ack: (s.seq + length) >>> 0, flags: TCP_RST | TCP_ACK, window: 0, data: new Uint8Array(0) };
    this.sendIpv4(IPPROTO_TCP, ip.dst, ip.src, buildTcp(ip.dst, ip.src, reply));
  }
}
