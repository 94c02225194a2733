import type { IcountConfig } from '../base/clock.js';
import { TsvmError } from '../base/errors.js';
import {
  type DriveConfig,
  type MachineConfig,
  type SerialConfig,
  type VirtioDeviceConfig,
  MAX_MEMORY_BYTES,
  defaultMachineConfig,
} from '../machine/config.js';
import { parseNetOption, parseNetdevOption, parseNicDevice, parseNicOption, parseObjectOption } from './net-options.js';
import { type OptionSpec, parseKeyValueList, parseOnOff, parseQemuArgs, parseSize } from './qemu-args.js';

export const TSVM_OPTIONS: OptionSpec[] = [
  { names: ['h', 'help'], takesValue: false, help: 'print this help and exit' },
  { names: ['version'], takesValue: false, help: 'print the version and exit' },
  { names: ['machine', 'M'], takesValue: true, help: 'machine type: pc (default)' },
  { names: ['accel'], takesValue: true, help: 'accelerator: tcg (emulated CPU, default) or kvm' },
  { names: ['enable-kvm'], takesValue: false, help: 'same as -accel kvm' },
  { names: ['m'], takesValue: true, help: 'guest RAM size in MiB, or with a suffix (256, 1G)' },
  { names: ['smp'], takesValue: true, help: 'number of CPUs' },
  { names: ['kernel'], takesValue: true, help: 'boot this Linux bzImage or Multiboot kernel directly' },
  { names: ['initrd'], takesValue: true, help: 'initial ram disk for -kernel' },
  { names: ['append'], takesValue: true, help: 'kernel command line for -kernel' },
  { names: ['bios'], takesValue: true, help: 'firmware image (default: Debian SeaBIOS)' },
  { names: ['no-acpi'], takesValue: false, help: 'no ACPI tables (the guest cannot power off)' },
  { names: ['no-reboot'], takesValue: false, help: 'exit instead of rebooting' },
  { names: ['nographic'], takesValue: false, help: 'no display; serial console on stdio' },
  { names: ['display'], takesValue: true, help: 'display backend: none' },
  { names: ['vnc'], takesValue: true, help: 'VNC server on [HOST]:N (port 5900+N) or unix:PATH' },
  { names: ['serial'], takesValue: true, help: 'serial port: stdio, file:PATH, unix:PATH[,server][,nowait], none' },
  { names: ['debugcon'], takesValue: true, help: 'debug console (port 0xe9): stdio, file:PATH, none' },
  { names: ['global'], takesValue: true, help: 'device property: isa-debugcon.iobase=PORT (SeaBIOS prints to 0x402)' },
  { names: ['netdev'], takesValue: true, help: 'network back end: user,id=ID[,net=ADDR/MASK][,host=IP][,dns=IP][,dhcpstart=IP][,hostfwd=tcp|udp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT][,restrict=on|off][,hostname=NAME]; socket,id=ID,listen=[HOST]:PORT|connect=HOST:PORT|mcast=GROUP:PORT[,localaddr=IP]|udp=HOST:PORT,localaddr=HOST:PORT; tap,id=ID,ifname=NAME,script=no,downscript=no' },
  { names: ['nic'], takesValue: true, help: 'a card and its back end: none, or TYPE[,model=e1000][,mac=MAC],... (TYPE as -netdev)' },
  { names: ['net'], takesValue: true, help: 'none: no network card' },
  { names: ['object'], takesValue: true, help: 'filter-dump,id=ID,netdev=NETDEV,file=F.pcap[,maxlen=N]: frames of NETDEV into a pcap file' },
  { names: ['device'], takesValue: true, help: 'isa-debug-exit[,iobase=PORT][,iosize=N]: a guest write to PORT exits with status (value << 1) | 1;\n' +
    '                           virtio-blk-pci,drive=ID; virtio-rng-pci; virtio-balloon-pci; virtio-serial-pci with virtconsole,chardev=ID\n' +
    '                           or virtserialport,chardev=ID,name=N after it; e1000,netdev=ID[,mac=MAC]' },
  { names: ['chardev'], takesValue: true, help: 'character backend for virtio-serial ports: stdio,id=ID | file,id=ID,path=P | socket,id=ID,path=P[,server=on][,wait=off]' },
  { names: ['snapshot'], takesValue: false, help: 'write to temporary overlays: disk images stay untouched' },
  { names: ['hda'], takesValue: true, help: 'first IDE hard disk image' },
  { names: ['hdb'], takesValue: true, help: 'second IDE hard disk image' },
  { names: ['hdc'], takesValue: true, help: 'third IDE hard disk image' },
  { names: ['hdd'], takesValue: true, help: 'fourth IDE hard disk image' },
  { names: ['cdrom'], takesValue: true, help: 'CD-ROM image (secondary master)' },
  { names: ['drive'], takesValue: true, help: 'file=F[,format=raw|qcow|qcow2][,if=ide|virtio|none][,id=ID][,media=disk|cdrom][,index=N][,readonly=on]\n' +
    '                           [,cache=none|writeback|writethrough|unsafe][,discard=unmap|ignore]' },
  { names: ['boot'], takesValue: true, help: 'boot order: c (disk), d (CD-ROM), n (network); order=...,menu=on' },
  { names: ['name'], takesValue: true, help: 'guest name' },
  { names: ['pidfile'], takesValue: true, help: 'write the process id to this file' },
  { names: ['S'], takesValue: false, help: 'do not start the CPU (continue from the monitor)' },
  { names: ['icount'], takesValue: true, help: 'deterministic: shift=N[,sleep=on|off] (each instruction is 2^N ns of guest time)' },
  { names: ['rtc'], takesValue: true, help: 'base=utc|YYYY-MM-DD[THH:MM:SS] (the RTC date at power-on)' },
];

export interface TsvmInvocation {
  action: 'run' | 'help' | 'version';
  config: MachineConfig;
  /** No kernel, firmware disk or CD given: boot the default guest. */
  useDefaultGuest: boolean;
}

export function parseSerial(option: string, text: string): SerialConfig {
  if (text === 'stdio') return { kind: 'stdio' };
  if (text === 'none' || text === 'null') return { kind: 'none' };
  if (text.startsWith('file:') && text.length > 5) return { kind: 'file', path: text.slice(5) };
  if (text.startsWith('unix:')) {
    const pairs = parseKeyValueList(text.slice(5), 'path');
    let path = '';
    let server = false;
    let wait = true;
    for (const [k, v] of pairs) {
      if (k === 'path') path = v;
      else if (k === 'server') server = parseOnOff(option, k, v);
      else if (k === 'wait') wait = parseOnOff(option, k, v);
      else throw new TsvmError(`${option} ${text}: unknown parameter '${k}'`);
    }
    if (!path) throw new TsvmError(`${option} ${text}: missing socket path`);
    return { kind: 'unix', path, server, wait };
  }
  throw new TsvmError(`${option} ${text}: unsupported character device (use stdio, file:PATH, unix:PATH or none)`);
}

function parseDrive(text: string): DriveConfig {
  const drive: DriveConfig = { file: '', interface: 'ide', media: 'disk', readOnly: false };
  for (const [k, v] of parseKeyValueList(text)) {
    switch (k) {
      case 'file': drive.file = v; break;
      case 'format':
        if (v !== 'raw' && v !== 'qcow' && v !== 'qcow2') throw new TsvmError(`-drive ${text}: unknown format '${v}'`);
        drive.format = v;
        break;
      case 'if':
        if (v !== 'ide' && v !== 'virtio' && v !== 'none') throw new TsvmError(`-drive ${text}: unsupported interface '${v}'`);
        drive.interface = v;
        break;
      case 'media':
        if (v !== 'disk' && v !== 'cdrom') throw new TsvmError(`-drive ${text}: unknown media '${v}'`);
        drive.media = v;
        break;
      case 'index': {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 0 || n > 3) throw new TsvmError(`-drive ${text}: bad index '${v}'`);
        drive.index = n;
        break;
      }
      case 'readonly': drive.readOnly = parseOnOff('-drive', k, v); break;
      case 'id': drive.id = v; break;
      case 'cache':
        if (v !== 'none' && v !== 'writeback' && v !== 'writethrough' && v !== 'unsafe') throw new TsvmError(`-drive ${text}: unknown cache mode '${v}'`);
        drive.cache = v;
        break;
      case 'discard':
        if (v !== 'unmap' && v !== 'on' && v !== 'ignore' && v !== 'off') throw new TsvmError(`-drive ${text}: discard must be unmap or ignore`);
        drive.discard = v === 'unmap' || v === 'on';
        break;
      default: throw new TsvmError(`-drive ${text}: unknown parameter '${k}'`);
    }
  }
  if (!drive.file) throw new TsvmError(`-drive ${text}: missing file=`);
  if (drive.media === 'cdrom') drive.readOnly = true;
  return drive;
}

/** QEMU's `-icount [shift=]N[,sleep=on|off]` (shift=auto and align are not offered: they follow the host). */
function parseIcount(text: string): IcountConfig {
  const icount: IcountConfig = { shift: 0, sleep: true };
  for (const [k, v] of parseKeyValueList(text, 'shift')) {
    if (k === 'shift') {
      if (!/^\d+$/.test(v) || Number(v) > 10) throw new TsvmError(`-icount ${text}: shift must be a number from 0 to 10`);
      icount.shift = Number(v);
    } else if (k === 'sleep') {
      icount.sleep = parseOnOff('-icount', k, v);
    } else {
      throw new TsvmError(`-icount ${text}: unknown parameter '${k}' (shift=N,sleep=on|off)`);
    }
  }
  return icount;
}

/** `-rtc base=utc|DATE`: seconds since the epoch, or undefined for the host's clock. */
function parseRtcBase(text: string): number | undefined {
  let base: number | undefined;
  for (const [k, v] of parseKeyValueList(text, 'base')) {
    if (k === 'base') {
      if (v === 'utc') base = undefined;
      else {
        const m = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2}):(\d{2}))?$/.exec(v);
        const ms = m ? Date.UTC(+m[1], +m[2] - 1, +m[3], +(m[4] ?? 0), +(m[5] ?? 0), +(m[6] ?? 0)) : NaN;
        // Date.UTC rolls impossible fields over (month 13, hour 99): the date must read back as written.
        const exists = Number.isFinite(ms) && new Date(ms).toISOString().slice(0, v.length) === v;
        if (!exists) throw new TsvmError(`-rtc ${text}: base must be utc or YYYY-MM-DD[THH:MM:SS]`);
        base = ms / 1000;
      }
    } else if (k !== 'clock' && k !== 'driftfix') {
      throw new TsvmError(`-rtc ${text}: unknown parameter '${k}'`);
    }
  }
  return base;
}

function parseBoot(text: string, config: MachineConfig): void {
  for (const [k, v] of parseKeyValueList(text, 'order')) {
    if (k === 'order' || k === 'once') {
      if (!/^[a-dn]+$/.test(v)) throw new TsvmError(`-boot ${text}: invalid boot device '${v}'`);
      config.boot.order = v;
    } else if (k === 'menu') {
      config.boot.menu = parseOnOff('-boot', k, v);
    } else if (k === 'strict' || k === 'splash-time' || k === 'reboot-timeout') {
      // Accepted for compatibility; they only change firmware timing.
    } else {
      throw new TsvmError(`-boot ${text}: unknown parameter '${k}'`);
    }
  }
}

/** `-chardev stdio|file|socket,id=ID,...`: a named character backend (the SerialConfig kinds). */
function parseChardev(text: string): { id: string; backend: SerialConfig } {
  const [[, kind], ...properties] = parseKeyValueList(text, 'backend');
  const p = new Map(properties);
  const id = p.get('id');
  if (!id) throw new TsvmError(`-chardev ${text}: missing id=`);
  p.delete('id');
  const known = (...names: string[]) => {
    for (const k of p.keys()) if (!names.includes(k)) throw new TsvmError(`-chardev ${text}: unknown parameter '${k}'`);
  };
  const path = () => p.get('path') || (() => { throw new TsvmError(`-chardev ${text}: missing path=`); })();
  switch (kind) {
    case 'stdio': known('signal', 'mux'); return { id, backend: { kind: 'stdio' } };
    case 'null': known(); return { id, backend: { kind: 'none' } };
    case 'file': known('path'); return { id, backend: { kind: 'file', path: path() } };
    case 'socket': {
      known('path', 'server', 'wait');
      const server = p.has('server') && parseOnOff('-chardev', 'server', p.get('server')!);
      const wait = !p.has('wait') || parseOnOff('-chardev', 'wait', p.get('wait')!);
      return { id, backend: { kind: 'unix', path: path(), server, wait } };
    }
    default: throw new TsvmError(`-chardev ${text}: unsupported backend '${kind}' (stdio, file, socket with path=, null)`);
  }
}

/** The virtio devices of `-device`: each a PCI function, virtconsole/virtserialport ports of the last virtio-serial. */
function parseVirtioDevice(text: string, driver: string, properties: [string, string][], devices: VirtioDeviceConfig[]): void {
  const p = new Map(properties);
  const only = (...names: string[]) => {
    for (const k of p.keys()) if (!names.includes(k)) throw new TsvmError(`-device ${text}: unknown property '${k}'`);
  };
  switch (driver) {
    case 'virtio-blk-pci': case 'virtio-blk': {
      only('drive', 'id');
      const drive = p.get('drive');
      if (!drive) throw new TsvmError(`-device ${text}: missing drive=`);
      devices.push({ kind: 'virtio-blk', drive });
      return;
    }
    case 'virtio-rng-pci': case 'virtio-rng': only('id'); devices.push({ kind: 'virtio-rng' }); return;
    case 'virtio-balloon-pci': case 'virtio-balloon': only('id'); devices.push({ kind: 'virtio-balloon' }); return;
    case 'virtio-serial-pci': case 'virtio-serial': only('id'); devices.push({ kind: 'virtio-serial', ports: [] }); return;
    case 'virtconsole': case 'virtserialport': {
      only('chardev', 'name', 'id');
      const serial = [...devices].reverse().find((d) => d.kind === 'virtio-serial');
      if (!serial || serial.kind !== 'virtio-serial') throw new TsvmError(`-device ${text}: needs a -device virtio-serial-pci before it`);
      const chardev = p.get('chardev');
      if (!chardev) throw new TsvmError(`-device ${text}: missing chardev=`);
      if (driver === 'virtserialport' && !p.get('name')) throw new TsvmError(`-device ${text}: missing name=`);
      serial.ports.push({ console: driver === 'virtconsole', chardev, ...(p.has('name') ? { name: p.get('name') } : {}) });
      return;
    }
  }
  throw new TsvmError(`-device ${text}: unsupported device (supported: isa-debug-exit, e1000, virtio-blk-pci, virtio-rng-pci, virtio-balloon-pci, virtio-serial-pci, virtconsole, virtserialport)`);
}

/** `-device isa-debug-exit[,iobase=P][,iosize=N]`, QEMU's defaults 0x501 and 2; network cards; virtio devices. */
function parseDevice(text: string, config: MachineConfig): void {
  if (parseNicDevice(text, config)) return;
  const [[, driver], ...properties] = parseKeyValueList(text, 'driver');
  if (driver === 'isa-debug-exit') config.debugExit = parseDebugExitDevice(text, properties);
  else parseVirtioDevice(text, driver, properties, (config.virtioDevices ??= []));
}

function parseDebugExitDevice(text: string, properties: [string, string][]): { iobase: number; iosize: number } {
  const device = { iobase: 0x501, iosize: 2 };
  for (const [k, v] of properties) {
    const n = /^(0x[0-9a-f]+|\d+)$/i.test(v) ? Number(v) : NaN;
    if (k === 'iobase' && n >= 0 && n <= 0xffff) device.iobase = n;
    else if (k === 'iosize' && n >= 1 && n <= 4) device.iosize = n;
    else throw new TsvmError(`-device ${text}: bad or unknown property '${k}'`);
  }
  if (device.iobase + device.iosize > 0x10000) throw new TsvmError(`-device ${text}: ports beyond 0xffff`);
  return device;
}

export function parseTsvmArgs(argv: string[]): TsvmInvocation {
  const config = defaultMachineConfig();
  let serialGiven = false;
  let firmwareBootMedia = false;
  for (const { name, value } of parseQemuArgs(argv, TSVM_OPTIONS)) {
    const v = value ?? '';
    switch (name) {
      case 'h': return { action: 'help', config, useDefaultGuest: false };
      case 'version': return { action: 'version', config, useDefaultGuest: false };
      case 'machine': {
        const type = parseKeyValueList(v, 'type').find(([k]) => k === 'type')?.[1];
        if (type !== 'pc' && !type?.startsWith('pc-i440fx')) {
          throw new TsvmError(`-machine ${v}: unsupported machine type (supported: pc)`);
        }
        break;
      }
      case 'accel': {
        const accel = parseKeyValueList(v, 'accel')[0]?.[1];
        if (accel !== 'tcg' && accel !== 'kvm') throw new TsvmError(`-accel ${v}: invalid accelerator (tcg or kvm)`);
        config.accel = accel;
        break;
      }
      case 'enable-kvm': config.accel = 'kvm'; break;
      case 'm': {
        const sizeText = parseKeyValueList(v, 'size').find(([k]) => k === 'size')?.[1] ?? '';
        const bytes = parseSize(sizeText, 2 ** 20);
        if (bytes === null || bytes <= 0) throw new TsvmError(`-m ${v}: invalid memory size`);
        if (bytes < 2 ** 20) throw new TsvmError(`-m ${v}: at least 1 MiB of RAM is needed`);
        if (bytes > MAX_MEMORY_BYTES) throw new TsvmError(`-m ${v}: at most ${MAX_MEMORY_BYTES / 2 ** 20} MiB is supported`);
        config.memoryBytes = Math.ceil(bytes / 2 ** 20) * 2 ** 20;
        break;
      }
      case 'smp': {
        const cpus = Number(parseKeyValueList(v, 'cpus').find(([k]) => k === 'cpus')?.[1]);
        if (!Number.isInteger(cpus) || cpus < 1) throw new TsvmError(`-smp ${v}: invalid number of CPUs`);
        if (cpus > 1) throw new TsvmError(`-smp ${v}: only 1 CPU is supported by this version`);
        config.cpus = cpus;
        break;
      }
      case 'kernel': config.kernel = v; break;
      case 'initrd': config.initrd = v; break;
      case 'append': config.append = v; break;
      case 'bios': config.bios = v; break;
      case 'no-acpi': config.acpi = false; break;
      case 'no-reboot': config.noReboot = true; break;
      case 'nographic': config.nographic = true; break;
      case 'display':
        if (parseKeyValueList(v, 'type')[0]?.[1] !== 'none') throw new TsvmError(`-display ${v}: only 'none' is supported (use -vnc for a screen)`);
        break;
      case 'vnc': config.vnc = v; break;
      case 'serial':
        if (!serialGiven) config.serials = [];
        serialGiven = true;
        config.serials.push(parseSerial('-serial', v));
        break;
      case 'debugcon': config.debugcon = parseSerial('-debugcon', v); break;
      case 'global': {
        const m = /^isa-debugcon\.iobase=(0x[0-9a-f]+|\d+)$/i.exec(v);
        const port = m ? Number(m[1]) : NaN;
        if (!(port >= 0 && port <= 0xffff)) throw new TsvmError(`-global ${v}: only isa-debugcon.iobase=PORT is supported`);
        config.debugconPort = port;
        break;
      }
      case 'hda': case 'hdb': case 'hdc': case 'hdd':
        config.drives.push({ file: v, interface: 'ide', media: 'disk', index: 'abcd'.indexOf(name[2]), readOnly: false });
        firmwareBootMedia = true;
        break;
      case 'cdrom':
        config.drives.push({ file: v, interface: 'ide', media: 'cdrom', index: 2, readOnly: true });
        firmwareBootMedia = true;
        break;
      case 'drive': {
        const drive = parseDrive(v);
        config.drives.push(drive);
        // Virtio disks beside the default guest are the usual case: only IDE drives mean "boot from firmware".
        if (drive.interface === 'ide') firmwareBootMedia = true;
        break;
      }
      case 'device': parseDevice(v, config); break;
      case 'netdev': parseNetdevOption(v, config); break;
      case 'nic': parseNicOption(v, config); break;
      case 'net': parseNetOption(v, config); break;
      case 'object': parseObjectOption(v, config); break;
      case 'chardev': {
        const { id, backend } = parseChardev(v);
        config.chardevs ??= {};
        if (config.chardevs[id]) throw new TsvmError(`-chardev ${v}: duplicate id '${id}'`);
        config.chardevs[id] = backend;
        break;
      }
      case 'snapshot': config.snapshot = true; break;
      case 'boot': parseBoot(v, config); break;
      case 'name': config.name = parseKeyValueList(v, 'guest')[0]?.[1]; break;
      case 'pidfile': config.pidfile = v; break;
      case 'S': config.startPaused = true; break;
      case 'icount': config.icount = parseIcount(v); break;
      case 'rtc': config.rtcBase = parseRtcBase(v); break;
    }
  }
  if (config.initrd && !config.kernel) throw new TsvmError('-initrd requires -kernel');
  if (config.append && !config.kernel) throw new TsvmError('-append requires -kernel');
  checkVirtioReferences(config);
  const useDefaultGuest = !config.kernel && !config.bios && !firmwareBootMedia;
  return { action: 'run', config, useDefaultGuest };
}

/** Every drive= and chardev= names something given, once; `if=virtio` drives get their own virtio-blk. */
function checkVirtioReferences(config: MachineConfig): void {
  const devices = config.virtioDevices ?? [];
  const used = new Set<string>();
  for (const d of devices) {
    if (d.kind === 'virtio-blk') {
      const drive = config.drives.find((x) => x.id === d.drive);
      if (!drive || drive.interface === 'ide') throw new TsvmError(`-device virtio-blk-pci,drive=${d.drive}: no -drive with if=none,id=${d.drive}`);
      if (used.has(d.drive)) throw new TsvmError(`-device virtio-blk-pci,drive=${d.drive}: drive is used twice`);
      used.add(d.drive);
    }
    if (d.kind === 'virtio-serial') {
      for (const port of d.ports) if (!config.chardevs?.[port.chardev]) throw new TsvmError(`-device ${port.console ? 'virtconsole' : 'virtserialport'}: chardev '${port.chardev}' not found`);
    }
  }
  config.drives.forEach((drive, i) => {
    if (drive.interface !== 'virtio' || (drive.id !== undefined && used.has(drive.id))) return;
    drive.id ??= `virtio${i}`;
    devices.push({ kind: 'virtio-blk', drive: drive.id });
  });
  if (devices.length > 0) config.virtioDevices = devices;
}

export function tsvmUsage(): string {
  const lines = ['usage: tsvm [options]', '', 'With no kernel, disk or CD-ROM, boots the default guest (built on first use).', ''];
  for (const o of TSVM_OPTIONS) {
    const flag = o.names.map((n) => '-' + n).join(', ') + (o.takesValue ? ' ARG' : '');
    lines.push(`  ${flag.padEnd(24)} ${o.help}`);
  }
  return lines.join('\n') + '\n';
}
