import type { UserNetOptions } from './user-net-options.js';
import { netmaskOf } from './user-net-options.js';
import { BROADCAST_IPV4, readU16, readU32, writeU16, writeU32, macToString } from './wire.js';

export const DHCP_SERVER_PORT = 67;
export const DHCP_CLIENT_PORT = 68;
const BOOTP_REQUEST = 1;
const BOOTP_REPLY = 2;
const BOOTP_FIXED_BYTES = 236;
const DHCP_MAGIC = 0x63825363;
/** Replies are padded to BOOTP's minimum message size, which some clients insist on. */
const BOOTP_MIN_BYTES = 300;
const LEASE_SECONDS = 86400;
/** As many leases as libslirp hands out. */
const LEASE_COUNT = 16;

const DISCOVER = 1;
const OFFER = 2;
const REQUEST = 3;
const ACK = 5;
const NAK = 6;
const RELEASE = 7;

const OPT_PAD = 0;
const OPT_SUBNET_MASK = 1;
const OPT_ROUTER = 3;
const OPT_DNS = 6;
const OPT_HOSTNAME = 12;
const OPT_DOMAIN_NAME = 15;
const OPT_REQUESTED_ADDRESS = 50;
const OPT_LEASE_TIME = 51;
const OPT_MESSAGE_TYPE = 53;
const OPT_SERVER_ID = 54;
const OPT_END = 255;

export interface DhcpReply {
  message: Uint8Array;
  clientMac: Uint8Array;
  /** The address given (0 in a NAK). */
  yiaddr: number;
  /** The IP destination: the client's new address, or broadcast when the client asked for it (or for a NAK). */
  dst: number;
  broadcast: boolean;
}

/**
 * The DHCP server of the virtual network: a lease per client MAC from the first DHCP address on, handing out
 * what libslirp does (mask, router, DNS, a day's lease, the hostname and domain when configured).
 */
export class DhcpServer {
  /** The MAC (as text) holding each lease, by lease index. */
  private readonly leases: (string | undefined)[] = new Array(LEASE_COUNT).fill(undefined);

  constructor(private readonly options: UserNetOptions) {}

  /** The reply to one message from a client, or undefined when there is none to give. */
  handle(m: Uint8Array): DhcpReply | undefined {
    if (m.length < BOOTP_FIXED_BYTES + 4 || m[0] !== BOOTP_REQUEST || m[1] !== 1 || m[2] !== 6) return undefined;
    if (readU32(m, BOOTP_FIXED_BYTES) !== DHCP_MAGIC) return undefined;
    const options = readOptions(m.subarray(BOOTP_FIXED_BYTES + 4));
    const type = options.get(OPT_MESSAGE_TYPE)?.[0];
    const clientMac = m.slice(28, 34);
    const mac = macToString(clientMac);
    const requestedOption = options.get(OPT_REQUESTED_ADDRESS);
    const requested = requestedOption?.length === 4 ? readU32(requestedOption, 0) : readU32(m, 12) || undefined;
    if (type === DISCOVER) {
      const lease = this.leaseFor(mac, requested) ?? this.leaseFor(mac, undefined);
      return lease === undefined ? undefined : this.reply(m, clientMac, OFFER, lease);
    }
    if (type === REQUEST) {
      const lease = this.leaseFor(mac, requested);
      return lease === undefined ? this.reply(m, clientMac, NAK, 0) : this.reply(m, clientMac, ACK, lease);
    }
    if (type === RELEASE) {
      const index = this.leases.indexOf(mac);
      if (index >= 0) this.leases[index] = undefined;
    }
    return undefined;
  }

  /** The address of the client's lease: the requested one when it is free or already the client's, else its own or a new one. */
  private leaseFor(mac: string, requested: number | undefined): number | undefined {
    const own = this.leases.indexOf(mac);
    if (requested !== undefined) {
      const index = requested - this.options.dhcpStart;
      if (index < 0 || index >= LEASE_COUNT || (this.leases[index] !== undefined && this.leases[index] !== mac)) return undefined;
      if (own >= 0) this.leases[own] = undefined;
      this.leases[index] = mac;
      return requested;
    }
    if (own >= 0) return this.options.dhcpStart + own;
    const free = this.leases.indexOf(undefined);
    if (free < 0) return undefined;
    this.leases[free] = mac;
    return this.options.dhcpStart + free;
  }

  private reply(request: Uint8Array, clientMac: Uint8Array, type: number, yiaddr: number): DhcpReply {
    const o = this.options;
    const opts: number[] = [OPT_MESSAGE_TYPE, 1, type, OPT_SERVER_ID, 4, ...u32Bytes(o.host)];
    if (type !== NAK) {
      opts.push(OPT_LEASE_TIME, 4, ...u32Bytes(LEASE_SECONDS));
      opts.push(OPT_SUBNET_MASK, 4, ...u32Bytes(netmaskOf(o.prefixLength)));
      opts.push(OPT_ROUTER, 4, ...u32Bytes(o.host));
      opts.push(OPT_DNS, 4, ...u32Bytes(o.dns));
      for (const [code, text] of [[OPT_HOSTNAME, o.hostname], [OPT_DOMAIN_NAME, o.domainName]] as const) {
        if (text === undefined) continue;
        const bytes = Buffer.from(text).subarray(0, 255);
        opts.push(code, bytes.length, ...bytes);
      }
    }
    opts.push(OPT_END);
    const m = new Uint8Array(Math.max(BOOTP_MIN_BYTES, BOOTP_FIXED_BYTES + 4 + opts.length));
    m[0] = BOOTP_REPLY;
    m[1] = 1;
    m[2] = 6;
    m.set(request.subarray(4, 8), 4); // xid
    writeU16(m, 10, readU16(request, 10)); // flags
    writeU32(m, 16, yiaddr);
    writeU32(m, 20, o.host); // siaddr
    m.set(request.subarray(28, 44), 28); // chaddr
    writeU32(m, BOOTP_FIXED_BYTES, DHCP_MAGIC);
    m.set(opts, BOOTP_FIXED_BYTES + 4);
    const broadcast = type === NAK || (readU16(request, 10) & 0x8000) !== 0;
    return { message: m, clientMac, yiaddr, dst: broadcast ? BROADCAST_IPV4 : yiaddr, broadcast };
  }
}

function u32Bytes(v: number): number[] {
  return [v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];
}

/** The options of a DHCP message by code (the first of each), stopping at END or a truncated option. */
function readOptions(b: Uint8Array): Map<number, Uint8Array> {
  const options = new Map<number, Uint8Array>();
  for (let i = 0; i < b.length; ) {
    const code = b[i];
    if (code === OPT_END) break;
    if (code === OPT_PAD) {
      i++;
      continue;
    }
    if (i + 1 >= b.length || i + 2 + b[i + 1] > b.length) break;
    if (!options.has(code)) options.set(code, b.subarray(i + 2, i + 2 + b[i + 1]));
    i += 2 + b[i + 1];
  }
  return options;
}
