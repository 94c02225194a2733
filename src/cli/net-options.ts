/** The network options of `tsvm`, as QEMU spells them: -netdev, -nic, -net none, -device e1000, -object filter-dump. */
import { TsvmError } from '../base/errors.js';
import type { MachineConfig, NetDumpConfig, NetdevConfig, NicConfig } from '../machine/config.js';
import type { HostPort, SocketNetdevConfig } from '../net/socket-netdev.js';
import { userNetOptionsFromPairs } from '../net/user/user-net-options.js';
import { parseKeyValueList } from './qemu-args.js';

const NIC_MODELS = ['e1000'] as const;

/** `HOST:PORT` (HOST may be empty: any address to listen on, localhost to connect to). */
function parseHostPort(option: string, text: string): HostPort {
  const m = /^(.*):(\d+)$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new TsvmError(`${option}: '${text}' is not HOST:PORT`);
  return { host: m[1].replace(/^\[(.*)\]$/, '$1'), port };
}

export function parseMac(option: string, text: string): Uint8Array {
  const m = /^([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2})$/i.exec(text);
  if (!m) throw new TsvmError(`${option}: bad MAC address '${text}' (xx:xx:xx:xx:xx:xx)`);
  const mac = Uint8Array.from(m.slice(1), (h) => parseInt(h, 16));
  if (mac[0] & 1) throw new TsvmError(`${option}: MAC address '${text}' is a multicast address`);
  return mac;
}

/** A back end from its type and parameters (shared by -netdev and -nic); unknown parameters are refused. */
function parseBackend(option: string, type: string, id: string, params: [string, string][]): NetdevConfig {
  const get = (key: string) => params.find(([k]) => k === key)?.[1];
  const allow = (keys: string[]) => {
    for (const [k] of params) if (!keys.includes(k)) throw new TsvmError(`${option}: unknown parameter '${k}' for ${type}`);
  };
  switch (type) {
    case 'socket': {
      allow(['listen', 'connect', 'mcast', 'udp', 'localaddr']);
      const modes = (['listen', 'connect', 'mcast', 'udp'] as const).filter((k) => get(k) !== undefined);
      if (modes.length !== 1) throw new TsvmError(`${option}: socket needs exactly one of listen=, connect=, mcast=, udp=`);
      const mode = modes[0];
      const address = parseHostPort(option, get(mode)!);
      const localaddr = get('localaddr');
      let socket: SocketNetdevConfig;
      if (mode === 'udp') {
        if (!localaddr) throw new TsvmError(`${option}: udp= needs localaddr=HOST:PORT`);
        socket = { mode, address, localAddress: parseHostPort(option, localaddr) };
      } else if (mode === 'mcast') {
        if (!/^(22[4-9]|23\d)\./.test(address.host)) throw new TsvmError(`${option}: mcast= needs a multicast address (224.0.0.0/4)`);
        socket = { mode, address, localAddress: localaddr };
      } else {
        if (localaddr !== undefined) throw new TsvmError(`${option}: localaddr= goes with mcast= or udp=`);
        socket = { mode, address };
      }
      return { kind: 'socket', id, socket };
    }
    case 'tap': {
      allow(['ifname', 'script', 'downscript']);
      const ifname = get('ifname');
      if (!ifname) throw new TsvmError(`${option}: tap needs ifname= (a tap device the user made)`);
      for (const k of ['script', 'downscript']) {
        const v = get(k);
        if (v !== undefined && v !== 'no') throw new TsvmError(`${option}: only ${k}=no is supported (configure the host side yourself)`);
      }
      return { kind: 'tap', id, ifname };
    }
    case 'user':
      return { kind: 'user', id, user: userNetOptionsFromPairs(params) };
    default:
      throw new TsvmError(`${option}: unsupported network back end '${type}' (user, socket, tap)`);
  }
}

function netdevs(config: MachineConfig): NetdevConfig[] {
  return (config.netdevs ??= []);
}

function nics(config: MachineConfig): NicConfig[] {
  return (config.nics ??= []);
}

/** `-netdev TYPE,id=ID,...` */
export function parseNetdevOption(text: string, config: MachineConfig): void {
  const [[, type], ...rest] = parseKeyValueList(text, 'type');
  const id = rest.find(([k]) => k === 'id')?.[1];
  if (!id) throw new TsvmError(`-netdev ${text}: missing id=`);
  if (netdevs(config).some((n) => n.id === id)) throw new TsvmError(`-netdev ${text}: duplicate id '${id}'`);
  netdevs(config).push(parseBackend(`-netdev ${text}`, type, id, rest.filter(([k]) => k !== 'id')));
}

/** `-nic none` or `-nic TYPE[,model=e1000][,mac=...],BACKEND-OPTIONS`: a card and its back end in one. */
export function parseNicOption(text: string, config: MachineConfig): void {
  const [[, type], ...rest] = parseKeyValueList(text, 'type');
  if (type === 'none') {
    nics(config);
    return;
  }
  const option = `-nic ${text}`;
  const model = rest.find(([k]) => k === 'model')?.[1] ?? 'e1000';
  if (!(NIC_MODELS as readonly string[]).includes(model)) throw new TsvmError(`${option}: unsupported model '${model}' (${NIC_MODELS.join(', ')})`);
  const mac = rest.find(([k]) => k === 'mac')?.[1];
  const id = `nic.${nics(config).length}`;
  netdevs(config).push(parseBackend(option, type, id, rest.filter(([k]) => k !== 'model' && k !== 'mac')));
  nics(config).push({ model: 'e1000', netdev: id, ...(mac !== undefined && { mac: parseMac(option, mac) }) });
}

/** `-net none` (the old -net nic / -net TYPE pairs are not offered: use -nic or -netdev with -device). */
export function parseNetOption(text: string, config: MachineConfig): void {
  if (text !== 'none') throw new TsvmError(`-net ${text}: only -net none is supported (use -nic, or -netdev with -device)`);
  nics(config);
}

/** `-device e1000,netdev=ID[,mac=...]`; false when the driver is not a network card. */
export function parseNicDevice(text: string, config: MachineConfig): boolean {
  const [[, driver], ...rest] = parseKeyValueList(text, 'driver');
  if (!(NIC_MODELS as readonly string[]).includes(driver)) return false;
  const option = `-device ${text}`;
  const nic: NicConfig = { model: 'e1000', netdev: '' };
  for (const [k, v] of rest) {
    if (k === 'netdev') nic.netdev = v;
    else if (k === 'mac') nic.mac = parseMac(option, v);
    else if (k !== 'id') throw new TsvmError(`${option}: unknown property '${k}'`);
  }
  if (!nic.netdev) throw new TsvmError(`${option}: missing netdev=`);
  nics(config).push(nic);
  return true;
}

/** `-object filter-dump,id=ID,netdev=NETDEV,file=F[,maxlen=N]` (the only -object offered). */
export function parseObjectOption(text: string, config: MachineConfig): void {
  const [[, type], ...rest] = parseKeyValueList(text, 'qom-type');
  if (type !== 'filter-dump') throw new TsvmError(`-object ${text}: unsupported object (supported: filter-dump)`);
  const dump: Partial<NetDumpConfig> = {};
  for (const [k, v] of rest) {
    if (k === 'netdev' || k === 'file') dump[k] = v;
    else if (k === 'maxlen' && /^\d+$/.test(v) && Number(v) > 0) dump.maxlen = Number(v);
    else if (k !== 'id' && !(k === 'queue' && v === 'all')) throw new TsvmError(`-object ${text}: bad or unknown parameter '${k}'`);
  }
  if (!dump.netdev || !dump.file) throw new TsvmError(`-object ${text}: needs netdev= and file=`);
  (config.netDumps ??= []).push(dump as NetDumpConfig);
}
