/**
 * The wire formats user-mode networking speaks: Ethernet II, ARP, IPv4 and the UDP/TCP/ICMP headers, parsed
 * from hostile guest frames (every length checked against the frame before use) and built for the guest.
 * IPv4 addresses are unsigned 32-bit numbers.
 */
import { onesSum } from '../offload.js';

export const ETH_HEADER_BYTES = 14;
export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
const IPV4_HEADER_BYTES = 20;
export const UDP_HEADER_BYTES = 8;
export const BROADCAST_MAC = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
export const BROADCAST_IPV4 = 0xffffffff;

/** A dotted quad ("10.0.2.2"), or undefined when the text is anything else. */
export function parseIpv4Address(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let value = 0;
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part)) return undefined;
    const byte = Number(part);
    if (byte > 255) return undefined;
    value = value * 256 + byte;
  }
  return value;
}

export function formatIpv4Address(address: number): string {
  return `${address >>> 24}.${(address >>> 16) & 0xff}.${(address >>> 8) & 0xff}.${address & 0xff}`;
}

export function readU16(b: Uint8Array, offset: number): number {
  return (b[offset] << 8) | b[offset + 1];
}

export function readU32(b: Uint8Array, offset: number): number {
  return ((b[offset] << 24) | (b[offset + 1] << 16) | (b[offset + 2] << 8) | b[offset + 3]) >>> 0;
}

export function writeU16(b: Uint8Array, offset: number, value: number): void {
  b[offset] = value >>> 8;
  b[offset + 1] = value;
}

export function writeU32(b: Uint8Array, offset: number, value: number): void {
  b[offset] = value >>> 24;
  b[offset + 1] = value >>> 16;
  b[offset + 2] = value >>> 8;
  b[offset + 3] = value;
}

function foldChecksum(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return ~sum & 0xffff;
}

/** The Internet checksum of a byte range (0 when the range already holds a correct checksum). */
export function internetChecksum(b: Uint8Array, offset: number, length: number): number {
  return foldChecksum(onesSum(b, offset, offset + length));
}

/** The TCP/UDP checksum over the IPv4 pseudo-header and the segment (0 when the segment's checksum is correct). */
export function transportChecksum(src: number, dst: number, proto: number, segment: Uint8Array): number {
  const sum = (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + proto + segment.length;
  return foldChecksum(onesSum(segment, 0, segment.length, sum));
}

export interface EthernetFrame {
  dst: Uint8Array;
  src: Uint8Array;
  type: number;
  payload: Uint8Array;
}

export function parseEthernet(frame: Uint8Array): EthernetFrame | undefined {
  if (frame.length < ETH_HEADER_BYTES) return undefined;
  return { dst: frame.subarray(0, 6), src: frame.subarray(6, 12), type: readU16(frame, 12), payload: frame.subarray(ETH_HEADER_BYTES) };
}

export function buildEthernet(dst: Uint8Array, src: Uint8Array, type: number, payload: Uint8Array): Uint8Array {
  const frame = new Uint8Array(ETH_HEADER_BYTES + payload.length);
  frame.set(dst, 0);
  frame.set(src, 6);
  writeU16(frame, 12, type);
  frame.set(payload, ETH_HEADER_BYTES);
  return frame;
}

export const ARP_REQUEST = 1;
export const ARP_REPLY = 2;

export interface ArpPacket {
  op: number;
  senderMac: Uint8Array;
  senderIp: number;
  targetMac: Uint8Array;
  targetIp: number;
}

/** An Ethernet/IPv4 ARP packet, or undefined for anything else. */
export function parseArp(p: Uint8Array): ArpPacket | undefined {
  if (p.length < 28 || readU16(p, 0) !== 1 || readU16(p, 2) !== ETHERTYPE_IPV4 || p[4] !== 6 || p[5] !== 4) return undefined;
  return { op: readU16(p, 6), senderMac: p.slice(8, 14), senderIp: readU32(p, 14), targetMac: p.slice(18, 24), targetIp: readU32(p, 24) };
}

export function buildArp(a: ArpPacket): Uint8Array {
  const p = new Uint8Array(28);
  writeU16(p, 0, 1);
  writeU16(p, 2, ETHERTYPE_IPV4);
  p[4] = 6;
  p[5] = 4;
  writeU16(p, 6, a.op);
  p.set(a.senderMac, 8);
  writeU32(p, 14, a.senderIp);
  p.set(a.targetMac, 18);
  writeU32(p, 24, a.targetIp);
  return p;
}

export interface Ipv4Packet {
  src: number;
  dst: number;
  proto: number;
  ttl: number;
  payload: Uint8Array;
}

/**
 * A whole, unfragmented IPv4 datagram with a correct header checksum, or undefined. Fragments are dropped:
 * guests send at most the MTU, and nothing the stack serves needs reassembly.
 */
export function parseIpv4(p: Uint8Array): Ipv4Packet | undefined {
  if (p.length < IPV4_HEADER_BYTES || p[0] >> 4 !== 4) return undefined;
  const headerBytes = (p[0] & 0xf) * 4;
  const totalBytes = readU16(p, 2);
  if (headerBytes < IPV4_HEADER_BYTES || totalBytes < headerBytes || totalBytes > p.length) return undefined;
  if (internetChecksum(p, 0, headerBytes) !== 0) return undefined;
  const moreFragments = (p[6] & 0x20) !== 0;
  const fragmentOffset = readU16(p, 6) & 0x1fff;
  if (moreFragments || fragmentOffset !== 0) return undefined;
  return { src: readU32(p, 12), dst: readU32(p, 16), proto: p[9], ttl: p[8], payload: p.subarray(headerBytes, totalBytes) };
}

/** An IPv4 datagram (no options, DF clear) around a payload. */
export function buildIpv4(proto: number, src: number, dst: number, id: number, payload: Uint8Array): Uint8Array {
  const p = new Uint8Array(IPV4_HEADER_BYTES + payload.length);
  p[0] = 0x45;
  writeU16(p, 2, p.length);
  writeU16(p, 4, id);
  p[8] = 64;
  p[9] = proto;
  writeU32(p, 12, src);
  writeU32(p, 16, dst);
  writeU16(p, 10, internetChecksum(p, 0, IPV4_HEADER_BYTES));
  p.set(payload, IPV4_HEADER_BYTES);
  return p;
}

export interface UdpDatagram {
  srcPort: number;
  dstPort: number;
  data: Uint8Array;
}

/** A UDP datagram whose length and (non-zero) checksum are right, or undefined. */
export function parseUdp(ip: Ipv4Packet): UdpDatagram | undefined {
  const p = ip.payload;
  if (p.length < UDP_HEADER_BYTES) return undefined;
  const length = readU16(p, 4);
  if (length < UDP_HEADER_BYTES || length > p.length) return undefined;
  const datagram = p.subarray(0, length);
  if (readU16(p, 6) !== 0 && transportChecksum(ip.src, ip.dst, IPPROTO_UDP, datagram) !== 0) return undefined;
  return { srcPort: readU16(p, 0), dstPort: readU16(p, 2), data: p.subarray(UDP_HEADER_BYTES, length) };
}

export function buildUdp(src: number, dst: number, srcPort: number, dstPort: number, data: Uint8Array): Uint8Array {
  const p = new Uint8Array(UDP_HEADER_BYTES + data.length);
  writeU16(p, 0, srcPort);
  writeU16(p, 2, dstPort);
  writeU16(p, 4, p.length);
  p.set(data, UDP_HEADER_BYTES);
  writeU16(p, 6, transportChecksum(src, dst, IPPROTO_UDP, p) || 0xffff);
  return p;
}

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
const TCP_OPTION_END = 0;
const TCP_OPTION_NOP = 1;
const TCP_OPTION_MSS = 2;

export interface TcpSegment {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  flags: number;
  window: number;
  /** The MSS option, when the segment carries one. */
  mss?: number;
  data: Uint8Array;
}

/** A TCP segment with a right checksum and header length, or undefined. Only the MSS option is read. */
export function parseTcp(ip: Ipv4Packet): TcpSegment | undefined {
  const p = ip.payload;
  if (p.length < 20) return undefined;
  const headerBytes = (p[12] >> 4) * 4;
  if (headerBytes < 20 || headerBytes > p.length) return undefined;
  if (transportChecksum(ip.src, ip.dst, IPPROTO_TCP, p) !== 0) return undefined;
  let mss: number | undefined;
  for (let i = 20; i < headerBytes; ) {
    const kind = p[i];
    if (kind === TCP_OPTION_END) break;
    if (kind === TCP_OPTION_NOP) {
      i++;
      continue;
    }
    if (i + 1 >= headerBytes) break;
    const length = p[i + 1];
    if (length < 2 || i + length > headerBytes) break;
    if (kind === TCP_OPTION_MSS && length === 4) mss = readU16(p, i + 2);
    i += length;
  }
  return {
    srcPort: readU16(p, 0),
    dstPort: readU16(p, 2),
    seq: readU32(p, 4),
    ack: readU32(p, 8),
    flags: p[13] & 0x3f,
    window: readU16(p, 14),
    mss,
    data: p.subarray(headerBytes),
  };
}

export function buildTcp(src: number, dst: number, s: TcpSegment): Uint8Array {
  const headerBytes = s.mss === undefined ? 20 : 24;
  const p = new Uint8Array(headerBytes + s.data.length);
  writeU16(p, 0, s.srcPort);
  writeU16(p, 2, s.dstPort);
  writeU32(p, 4, s.seq);
  writeU32(p, 8, s.ack);
  p[12] = (headerBytes / 4) << 4;
  p[13] = s.flags;
  writeU16(p, 14, s.window);
  if (s.mss !== undefined) {
    p[20] = TCP_OPTION_MSS;
    p[21] = 4;
    writeU16(p, 22, s.mss);
  }
  p.set(s.data, headerBytes);
  writeU16(p, 16, transportChecksum(src, dst, IPPROTO_TCP, p));
  return p;
}

export const ICMP_ECHO_REPLY = 0;
export const ICMP_ECHO_REQUEST = 8;

/** The echo reply to an ICMP echo request (same identifier, sequence and data), or undefined for anything else. */
export function icmpEchoReply(p: Uint8Array): Uint8Array | undefined {
  if (p.length < 8 || p[0] !== ICMP_ECHO_REQUEST || p[1] !== 0 || internetChecksum(p, 0, p.length) !== 0) return undefined;
  const reply = p.slice();
  reply[0] = ICMP_ECHO_REPLY;
  writeU16(reply, 2, 0);
  writeU16(reply, 2, internetChecksum(reply, 0, reply.length));
  return reply;
}

export function macToString(mac: Uint8Array): string {
  return Array.from(mac, (b) => b.toString(16).padStart(2, '0')).join(':');
}
