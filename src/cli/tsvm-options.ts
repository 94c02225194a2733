import type { IcountConfig } from '../base/clock.js';
import { TsvmError } from '../base/errors.js';
import {
  type DriveConfig,
  type MachineConfig,
  type SerialConfig,
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
  { names: ['device'], takesValue: true, help: 'isa-debug-exit[,iobase=PORT][,iosize=N]: a guest write to PORT exits with status (value << 1) | 1; e1000,netdev=ID[,mac=MAC]' },
  { names: ['netdev'], takesValue: true, help: 'network back end: user,id=ID[,net=ADDR/MASK][,host=IP][,dns=IP][,dhcpstart=IP][,hostfwd=tcp|udp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT][,restrict=on|off][,hostname=NAME]; socket,id=ID,listen=[HOST]:PORT|connect=HOST:PORT|mcast=GROUP:PORT[,localaddr=IP]|udp=HOST:PORT,localaddr=HOST:PORT; tap,id=ID,ifname=NAME,script=no,downscript=no' },
  { names: ['nic'], takesValue: true, help: 'a card and its back end: none, or TYPE[,model=e1000][,mac=MAC],... (TYPE as -netdev)' },
  { names: ['net'], takesValue: true, help: 'none: no network card' },
  { names: ['object'], takesValue: true, help: 'filter-dump,id=ID,netdev=NETDEV,file=F.pcap[,maxlen=N]: frames of NETDEV into a pcap file' },
  { names: ['hda'], takesValue: true, help: 'first IDE hard disk image' },
  { names: ['hdb'], takesValue: true, help: 'second IDE hard disk image' },
  { names: ['hdc'], takesValue: true, help: 'third IDE hard disk image' },
  { names: ['hdd'], takesValue: true, help: 'fourth IDE hard disk image' },
  { names: ['cdrom'], takesValue: true, help: 'CD-ROM image (secondary master)' },
  { names: ['drive'], takesValue: true, help: 'file=F[,format=raw|qcow|qcow2][,if=ide|virtio][,media=disk|cdrom][,index=N][,readonly=on]' },
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

/** `-device isa-debug-exit[,iobase=P][,iosize=N]`, QEMU's defaults 0x501 and 2 (network cards are parsed before). */
function parseDebugExitDevice(text: string): { iobase: number; iosize: number } {
  const [[, driver], ...properties] = parseKeyValueList(text, 'driver');
  if (driver !== 'isa-debug-exit') throw new TsvmError(`-device ${text}: unsupported device (supported: isa-debug-exit, e1000)`);
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
      case 'drive':
        config.drives.push(parseDrive(v));
        firmwareBootMedia = true;
        break;
      case 'device':
        if (!parseNicDevice(v, config)) config.debugExit = parseDebugExitDevice(v);
        break;
      case 'netdev': parseNetdevOption(v, config); break;
      case 'nic': parseNicOption(v, config); break;
      case 'net': parseNetOption(v, config); break;
      case 'object': parseObjectOption(v, config); break;
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
  const useDefaultGuest = !config.kernel && !config.bios && !firmwareBootMedia;
  return { action: 'run', config, useDefaultGuest };
}

export function tsvmUsage(): string {
  const lines = ['usage: tsvm [options]', '', 'With no kernel, disk or CD-ROM, boots the default guest (built on first use).', ''];
  for (const o of TSVM_OPTIONS) {
    const flag = o.names.map((n) => '-' + n).join(', ') + (o.takesValue ? ' ARG' : '');
    lines.push(`  ${flag.padEnd(24)} ${o.help}`);
  }
  return lines.join('\n') + '\n';
}
