/**
 * The typed description of a virtual machine. The command line, the TypeScript API and (later) QMP all
 * produce one of these; the machine is built from it and from nothing else.
 */

import type { IcountConfig } from '../base/clock.js';
import type { SocketNetdevConfig } from '../net/socket-netdev.js';
import type { UserNetOptions } from '../net/user/user-net-options.js';

export type SerialConfig =
  | { kind: 'stdio' }
  | { kind: 'file'; path: string }
  | { kind: 'unix'; path: string; server: boolean; wait: boolean }
  | { kind: 'none' }
  /** The console is the API's stream (Machine.console); nothing on the host's terminal. */
  | { kind: 'api' };

export type Accelerator = 'tcg' | 'kvm';

export interface DriveConfig {
  file: string;
  format?: 'raw' | 'qcow' | 'qcow2';
  interface: 'ide' | 'virtio' | 'none';
  media: 'disk' | 'cdrom';
  /** IDE position (0 = primary master ... 3 = secondary slave), when given. */
  index?: number;
  readOnly: boolean;
  /** The name `-device virtio-blk-pci,drive=ID` refers to; also the disk's serial number (virtio-blk GET_ID). */
  id?: string;
  /** QEMU's cache modes: unsafe never syncs, writethrough syncs every write, none and writeback on flush. */
  cache?: 'none' | 'writeback' | 'writethrough' | 'unsafe';
  /** discard=unmap: guest discards free space in the image (virtio-blk). */
  discard?: boolean;
}

/** A network back end (-netdev): the host side of a virtual wire. */
export type NetdevConfig =
  | { kind: 'socket'; id: string; socket: SocketNetdevConfig }
  | { kind: 'tap'; id: string; ifname: string }
  | { kind: 'user'; id: string; user: UserNetOptions };

/** A guest network card (-device e1000,netdev=ID,mac=...) on a netdev. */
export interface NicConfig {
  model: 'e1000';
  netdev: string;
  /** Six bytes; unless given, QEMU's 52:54:00:12:34:56 with the last byte counting up per card. */
  mac?: Uint8Array;
}

/** -object filter-dump: frames crossing `netdev` go to a pcap file. */
export interface NetDumpConfig {
  netdev: string;
  file: string;
  maxlen?: number;
}
/** A port of a virtio-serial device: a console (hvc) or a named port (/dev/virtio-ports/NAME), on a chardev. */
export interface VirtioSerialPortConfig {
  console: boolean;
  name?: string;
  chardev: string;
}

/** Virtio devices (-device ...-pci), in command-line order (their PCI slots follow it). */
export type VirtioDeviceConfig =
  | { kind: 'virtio-blk'; drive: string }
  | { kind: 'virtio-rng' }
  | { kind: 'virtio-balloon' }
  | { kind: 'virtio-serial'; ports: VirtioSerialPortConfig[] };

export interface BootConfig {
  /** Drive letters in order: a/b floppy, c first disk, d CD-ROM, n network. */
  order: string;
  menu: boolean;
}

export interface MachineConfig {
  machine: 'pc';
  accel: Accelerator;
  memoryBytes: number;
  cpus: number;
  kernel?: string;
  initrd?: string;
  append: string;
  /** Firmware image used when no kernel is given (SeaBIOS). */
  bios?: string;
  acpi: boolean;
  /** A guest reboot ends tsvm instead of restarting the machine. */
  noReboot: boolean;
  /** Serial ports in order: COM1, COM2... */
  serials: SerialConfig[];
  /** Where the Bochs/QEMU debug console (port 0x402) goes; undefined = nowhere. */
  debugcon?: SerialConfig;
  /** The debug console's port (QEMU's isa-debugcon iobase; 0xe9 unless set). */
  debugconPort?: number;
  drives: DriveConfig[];
  /** -snapshot: guest writes go to temporary overlays that disappear at exit; the images stay untouched. */
  snapshot?: boolean;
  virtioDevices?: VirtioDeviceConfig[];
  /** Character backends by id (-chardev), for virtio-serial ports. */
  chardevs?: Record<string, SerialConfig>;
  /** QEMU's isa-debug-exit device (-device isa-debug-exit,iobase=...,iosize=...): a guest write ends tsvm. */
  debugExit?: { iobase: number; iosize: number };
  boot: BootConfig;
  vnc?: string;
  /** -nographic: the VGA exists but nothing shows it; the firmware is told so (it may use the serial port). */
  nographic: boolean;
  name?: string;
  pidfile?: string;
  /** Start with the CPU stopped (-S). */
  startPaused: boolean;
  /** The deterministic mode (-icount): guest time from the instruction count; the RTC starts at rtcBase. */
  icount?: IcountConfig;
  /** The RTC's date at power-on, seconds since the epoch (-rtc base=); the host's clock unless given. */
  rtcBase?: number;
  /** Network back ends, cards and packet dumps; no card unless given. */
  netdevs?: NetdevConfig[];
  nics?: NicConfig[];
  netDumps?: NetDumpConfig[];
}

/** The RTC's start in the deterministic mode unless -rtc base= says otherwise: runs must not depend on the host's date. */
export const ICOUNT_RTC_BASE = Date.UTC(2025, 0, 1) / 1000;

export const DEFAULT_MEMORY_BYTES = 128 * 2 ** 20;
/** The emulated CPU addresses guest RAM with 32-bit signed indexes; this bound keeps RAM below the PCI hole. */
export const MAX_MEMORY_BYTES = 2047 * 2 ** 20;

export function defaultMachineConfig(): MachineConfig {
  return {
    machine: 'pc',
    accel: 'tcg',
    memoryBytes: DEFAULT_MEMORY_BYTES,
    cpus: 1,
    append: '',
    acpi: true,
    noReboot: false,
    serials: [{ kind: 'stdio' }],
    drives: [],
    boot: { order: 'cdn', menu: false },
    startPaused: false,
    nographic: false,
  };
}
