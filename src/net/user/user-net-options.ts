import { TsvmError } from '../../base/errors.js';
import { parseIpv4Address } from './wire.js';

/** A host port forwarded to a guest port (`hostfwd=`, or added at run time). */
export interface HostForward {
  proto: 'tcp' | 'udp';
  /** The host address to listen on; '' for every address (QEMU's default). */
  hostAddr: string;
  /** 0 lets the host pick a free port. */
  hostPort: number;
  /** The guest address; undefined for the first DHCP address. */
  guestAddr?: number;
  guestPort: number;
}

/** Where the DNS forwarder sends the guest's queries. */
export interface DnsUpstream {
  address: string;
  port: number;
}

/** The virtual network of one user-mode stack (QEMU's `-netdev user`), addresses as 32-bit numbers. */
export interface UserNetOptions {
  network: number;
  prefixLength: number;
  /** The gateway, which is also the host (its loopback) for guest connections. */
  host: number;
  /** The DNS forwarder's address. */
  dns: number;
  /** The first address DHCP hands out. */
  dhcpStart: number;
  /** DHCP option 12, when given. */
  hostname?: string;
  /** DHCP option 15, when given. */
  domainName?: string;
  /** Isolates the guest: only forwarded ports and the stack's own services (DHCP, ping of the gateway) work. */
  restrict: boolean;
  hostForwards: HostForward[];
  /** The DNS server queries go to; by default the host's resolver (its first IPv4 name server). */
  dnsUpstream?: DnsUpstream;
}

export function netmaskOf(prefixLength: number): number {
  return prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
}

/** QEMU's defaults: 10.0.2.0/24, gateway 10.0.2.2, DNS 10.0.2.3, DHCP from 10.0.2.15. */
export function defaultUserNetOptions(): UserNetOptions {
  return fillAddresses({ network: 0x0a000200, prefixLength: 24, restrict: false, hostForwards: [] });
}

type PartialAddresses = Omit<UserNetOptions, 'host' | 'dns' | 'dhcpStart'> & Partial<Pick<UserNetOptions, 'host' | 'dns' | 'dhcpStart'>>;

function fillAddresses(o: PartialAddresses): UserNetOptions {
  return { ...o, host: o.host ?? o.network + 2, dns: o.dns ?? o.network + 3, dhcpStart: o.dhcpStart ?? o.network + 15 };
}

function address(key: string, value: string): number {
  const a = parseIpv4Address(value);
  if (a === undefined) throw new TsvmError(`-netdev user: ${key}=${value} is not an IPv4 address`);
  return a;
}

function port(text: string, rule: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) > 65535) throw new TsvmError(`-netdev user: invalid port '${text}' in hostfwd=${rule}`);
  return Number(text);
}

function onOff(key: string, value: string): boolean {
  if (['on', 'yes', 'y', 'true'].includes(value)) return true;
  if (['off', 'no', 'n', 'false'].includes(value)) return false;
  throw new TsvmError(`-netdev user: ${key}=${value}: expected on or off`);
}

/** `[tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT`, as QEMU writes it. */
export function parseHostForward(rule: string): HostForward {
  const m = /^(tcp|udp|):([^:]*):(\d+)-([^:]*):(\d+)$/.exec(rule);
  if (!m) throw new TsvmError(`-netdev user: invalid host forwarding rule '${rule}' (expected [tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport)`);
  const [, proto, hostAddr, hostPort, guestAddr, guestPort] = m;
  if (hostAddr !== '' && parseIpv4Address(hostAddr) === undefined) throw new TsvmError(`-netdev user: invalid host address '${hostAddr}' in hostfwd=${rule}`);
  const guestPortNumber = port(guestPort, rule);
  if (guestPortNumber === 0) throw new TsvmError(`-netdev user: guest port 0 in hostfwd=${rule}`);
  return {
    proto: proto === 'udp' ? 'udp' : 'tcp',
    hostAddr,
    hostPort: port(hostPort, rule),
    guestAddr: guestAddr === '' ? undefined : address('hostfwd guest address', guestAddr),
    guestPort: guestPortNumber,
  };
}

/** Splits QEMU's `key=value,key=value` (a doubled comma is a comma inside a value). */
function splitOptions(text: string): string[] {
  const parts: string[] = [];
  let current = '';
  for (let i = 0; i < text.length; i++) {
    if (text[i] !== ',') current += text[i];
    else if (text[i + 1] === ',') current += text[++i];
    else {
      parts.push(current);
      current = '';
    }
  }
  parts.push(current);
  return parts;
}

/**
 * The options of `-netdev user,...` or `-nic user,...`: QEMU's keys for the virtual network, and the keys
 * listed in `otherKeys` (id, model, mac: what the caller handles) returned as they are in `other`.
 * Anything else is a one-line error.
 */
export function parseUserNetdevOptions(text: string, otherKeys: readonly string[] = ['id']): { options: UserNetOptions; other: Map<string, string> } {
  const parts = splitOptions(text);
  if (parts[0] === 'user') parts.shift();
  const other = new Map<string, string>();
  const pairs: [string, string][] = [];
  for (const part of parts) {
    const eq = part.indexOf('=');
    if (eq < 0) throw new TsvmError(`-netdev user: '${part}' is not key=value`);
    const key = part.slice(0, eq);
    if (otherKeys.includes(key)) other.set(key, part.slice(eq + 1));
    else pairs.push([key, part.slice(eq + 1)]);
  }
  return { options: userNetOptionsFromPairs(pairs), other };
}

/** The virtual network from `key=value` pairs already split (the CLI's -netdev/-nic parser hands them over). */
export function userNetOptionsFromPairs(pairs: readonly (readonly [string, string])[]): UserNetOptions {
  const o: PartialAddresses = { ...defaultUserNetOptions(), hostForwards: [] };
  delete o.host;
  delete o.dns;
  delete o.dhcpStart;
  for (const [key, value] of pairs) {
    switch (key) {
      case 'net': {
        const [addr, mask, extra] = value.split('/');
        if (extra !== undefined) throw new TsvmError(`-netdev user: invalid net=${value}`);
        let prefix = 24;
        if (mask !== undefined) {
          if (/^\d{1,2}$/.test(mask) && Number(mask) <= 32) prefix = Number(mask);
          else {
            const m = address('net mask', mask);
            prefix = Math.clz32(~m);
            if (netmaskOf(prefix) !== m) throw new TsvmError(`-netdev user: net mask ${mask} is not contiguous`);
          }
        }
        if (prefix < 8 || prefix > 30) throw new TsvmError(`-netdev user: net=${value}: the prefix must be from /8 to /30`);
        o.prefixLength = prefix;
        o.network = (address('net', addr) & netmaskOf(prefix)) >>> 0;
        break;
      }
      case 'host':
        o.host = address(key, value);
        break;
      case 'dns':
        o.dns = address(key, value);
        break;
      case 'dhcpstart':
        o.dhcpStart = address(key, value);
        break;
      case 'hostname':
        if (value.length > 255) throw new TsvmError('-netdev user: hostname= is longer than 255 bytes');
        o.hostname = value;
        break;
      case 'domainname':
        if (value.length > 255) throw new TsvmError('-netdev user: domainname= is longer than 255 bytes');
        o.domainName = value;
        break;
      case 'restrict':
        o.restrict = onOff(key, value);
        break;
      case 'hostfwd':
        o.hostForwards.push(parseHostForward(value));
        break;
      case 'ipv4':
        if (!onOff(key, value)) throw new TsvmError('-netdev user: ipv4=off is not supported (the stack is IPv4)');
        break;
      case 'ipv6':
        if (onOff(key, value)) throw new TsvmError('-netdev user: ipv6=on is not supported (the stack is IPv4; use ipv6=off)');
        break;
      default:
        throw new TsvmError(`-netdev user: unknown or unsupported option '${key}'`);
    }
  }
  const options = fillAddresses(o);
  const mask = netmaskOf(options.prefixLength);
  for (const [name, a] of [['host', options.host], ['dns', options.dns], ['dhcpstart', options.dhcpStart]] as const) {
    if (((a & mask) >>> 0) !== options.network || a === options.network || ((a | ~mask) >>> 0) === a) {
      throw new TsvmError(`-netdev user: ${name} address is not a host address in the network`);
    }
  }
  if (options.host === options.dns) throw new TsvmError('-netdev user: host and dns must be different addresses');
  return options;
}
