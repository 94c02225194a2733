import { type Socket as UdpSocket, createSocket } from 'node:dgram';
import { type AddressInfo, type Server, type Socket, createServer } from 'node:net';
import { TsvmError, errorMessage } from '../../base/errors.js';
import type { GuestLink, HostToGuestAddress } from './guest-link.js';
import type { HostForward } from './user-net-options.js';
import { MAX_SEND_QUEUE, UDP_IDLE_MS, closeUdpSocket } from './udp-nat.js';
import { IPPROTO_UDP, buildUdp, formatIpv4Address } from './wire.js';

/** Host peers of forwarded UDP ports remembered at once (each until it is idle for UDP_IDLE_MS). */
const MAX_UDP_PEERS = 256;

interface UdpPeer {
  listener: UdpSocket;
  hostAddress: string;
  hostPort: number;
  lastUsed: number;
}

/** What the forwarder needs from its stack. */
export interface ForwardTarget {
  link: GuestLink;
  hostToGuest: HostToGuestAddress;
  /** The guest address of rules that name none (the first DHCP address). */
  defaultGuestAddress: number;
  /** Hands a connection accepted on a forwarded port to the stack (which connects it to the guest or drops it). */
  openTcpToGuest(socket: Socket, guestIp: number, guestPort: number, peerIp: number, peerPort: number): void;
}

function ruleText(r: HostForward): string {
  const guest = r.guestAddr === undefined ? '' : formatIpv4Address(r.guestAddr);
  return `${r.proto}:${r.hostAddr}:${r.hostPort}-${guest}:${r.guestPort}`;
}

/**
 * `hostfwd` rules: host listeners whose TCP connections and UDP datagrams go to a guest port. A forwarded UDP
 * peer is remembered so that the guest's answers (from the guest port to the peer's guest-side address) go
 * back out through the listener.
 */
export class HostForwarder {
  private readonly servers: Server[] = [];
  private readonly udpListeners: UdpSocket[] = [];
  /** "guestIp:guestPort:peerIp:peerPort" → the host peer behind that guest-side address. */
  private readonly udpPeers = new Map<string, UdpPeer>();

  constructor(private readonly target: ForwardTarget) {}

  /** Starts listening for a rule; resolves to the host port bound (the one picked when the rule says 0). */
  async add(rule: HostForward): Promise<number> {
    const validPort = (p: number, min: number) => Number.isInteger(p) && p >= min && p <= 65535;
    if (!validPort(rule.hostPort, 0) || !validPort(rule.guestPort, 1)) throw new TsvmError(`host forwarding rule '${ruleText(rule)}': ports are 1-65535 (0 for the host port picks one)`);
    const guestIp = rule.guestAddr ?? this.target.defaultGuestAddress;
    const host = rule.hostAddr || '0.0.0.0';
    try {
      return rule.proto === 'tcp' ? await this.listenTcp(host, rule.hostPort, guestIp, rule.guestPort) : await this.listenUdp(host, rule.hostPort, guestIp, rule.guestPort);
    } catch (e) {
      throw new TsvmError(`could not set up host forwarding rule '${ruleText(rule)}': ${errorMessage(e)}`);
    }
  }

  private listenTcp(host: string, port: number, guestIp: number, guestPort: number): Promise<number> {
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => {
      const peerIp = this.target.hostToGuest(socket.remoteAddress ?? '');
      this.target.openTcpToGuest(socket, guestIp, guestPort, peerIp, socket.remotePort ?? 0);
    });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        this.servers.push(server);
        resolve((server.address() as AddressInfo).port);
      });
    });
  }

  private listenUdp(host: string, port: number, guestIp: number, guestPort: number): Promise<number> {
    const listener = createSocket('udp4');
    listener.on('message', (message, from) => {
      const peerIp = this.target.hostToGuest(from.address);
      const key = `${guestIp}:${guestPort}:${peerIp}:${from.port}`;
      const known = this.udpPeers.get(key);
      if (known) known.lastUsed = Date.now();
      else if (this.udpPeers.size < MAX_UDP_PEERS) this.udpPeers.set(key, { listener, hostAddress: from.address, hostPort: from.port, lastUsed: Date.now() });
      else return;
      this.target.link.sendIpv4(IPPROTO_UDP, peerIp, guestIp, buildUdp(peerIp, guestIp, from.port, guestPort, message));
    });
    return new Promise((resolve, reject) => {
      listener.once('error', reject);
      listener.bind(port, host, () => {
        listener.off('error', reject);
        listener.on('error', () => undefined); // a send to a vanished peer; the next datagram tries again
        this.udpListeners.push(listener);
        resolve(listener.address().port);
      });
    });
  }

  /** A datagram from the guest; true when it answers a forwarded UDP peer (and went to it). */
  udpFromGuest(guestIp: number, guestPort: number, peerIp: number, peerPort: number, data: Uint8Array): boolean {
    const peer = this.udpPeers.get(`${guestIp}:${guestPort}:${peerIp}:${peerPort}`);
    if (!peer) return false;
    peer.lastUsed = Date.now();
    if (peer.listener.getSendQueueCount() < MAX_SEND_QUEUE) peer.listener.send(data, peer.hostPort, peer.hostAddress);
    return true;
  }

  sweep(now: number): void {
    for (const [key, peer] of this.udpPeers) if (now - peer.lastUsed >= UDP_IDLE_MS) this.udpPeers.delete(key);
  }

  async close(): Promise<void> {
    this.udpPeers.clear();
    for (const listener of this.udpListeners.splice(0)) closeUdpSocket(listener);
    await Promise.all(this.servers.splice(0).map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}
