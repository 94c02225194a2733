import { type Socket as UdpSocket, createSocket } from 'node:dgram';
import type { GuestLink, HostToGuestAddress } from './guest-link.js';
import { IPPROTO_UDP, buildUdp } from './wire.js';

/** A flow unused this long is closed (its host socket with it). */
export const UDP_IDLE_MS = 60_000;
const MAX_FLOWS = 256;
/** Destinations remembered per flow (to give their answers the address the guest sent to). */
const MAX_PEERS_PER_FLOW = 64;
/** Datagrams waiting in a host socket's send queue above which the guest's next ones are dropped. */
export const MAX_SEND_QUEUE = 64;

interface Flow {
  socket: UdpSocket;
  guestIp: number;
  guestPort: number;
  lastUsed: number;
  /** Host "address:port" → the address and port the guest sent to (where its answers appear to come from). */
  peers: Map<string, { ip: number; port: number }>;
}

/**
 * UDP from the guest carried by host datagram sockets: one socket per guest address and port (so a guest's
 * flow keeps one host port, as NAT does), idle flows closed. As with libslirp, datagrams from anywhere reach the
 * flow's guest port (a TFTP server answers from a new port): from a destination the guest sent to they come from
 * the address the guest used (the DNS address for the resolver), from elsewhere from the host address as the
 * guest sees it.
 */
export class UdpNat {
  private readonly flows = new Map<string, Flow>();

  constructor(private readonly link: GuestLink, private readonly hostToGuest: HostToGuestAddress) {}

  /** A datagram from guestIp:guestPort to peerIp:peerPort, which the host sends to hostAddress:hostPort. */
  send(guestIp: number, guestPort: number, peerIp: number, peerPort: number, hostAddress: string, hostPort: number, data: Uint8Array): void {
    const key = `${guestIp}:${guestPort}`;
    let flow = this.flows.get(key);
    if (!flow) {
      if (this.flows.size >= MAX_FLOWS) return;
      flow = this.open(key, guestIp, guestPort);
    }
    flow.lastUsed = Date.now();
    const hostKey = `${hostAddress}:${hostPort}`;
    if (!flow.peers.has(hostKey)) {
      if (flow.peers.size >= MAX_PEERS_PER_FLOW) flow.peers.delete(flow.peers.keys().next().value!);
      flow.peers.set(hostKey, { ip: peerIp, port: peerPort });
    }
    if (flow.socket.getSendQueueCount() >= MAX_SEND_QUEUE) return;
    flow.socket.send(data, hostPort, hostAddress);
  }

  private open(key: string, guestIp: number, guestPort: number): Flow {
    const socket = createSocket('udp4');
    const flow: Flow = { socket, guestIp, guestPort, lastUsed: Date.now(), peers: new Map() };
    socket.on('message', (message, from) => {
      const peer = flow.peers.get(`${from.address}:${from.port}`) ?? { ip: this.hostToGuest(from.address), port: from.port };
      flow.lastUsed = Date.now();
      this.link.sendIpv4(IPPROTO_UDP, peer.ip, guestIp, buildUdp(peer.ip, guestIp, peer.port, guestPort, message));
    });
    socket.on('error', () => this.closeFlow(key));
    this.flows.set(key, flow);
    return flow;
  }

  private closeFlow(key: string): void {
    const flow = this.flows.get(key);
    if (!flow) return;
    this.flows.delete(key);
    closeUdpSocket(flow.socket);
  }

  /** Closes the flows idle since before `now - UDP_IDLE_MS`. */
  sweep(now: number): void {
    for (const [key, flow] of this.flows) if (now - flow.lastUsed >= UDP_IDLE_MS) this.closeFlow(key);
  }

  close(): void {
    for (const key of [...this.flows.keys()]) this.closeFlow(key);
  }
}

/** Closes a datagram socket that an error may already have closed (closing twice throws). */
export function closeUdpSocket(socket: UdpSocket): void {
  try {
    socket.close();
  } catch {
    // already closed
  }
}
