import { readFileSync } from 'node:fs';
import { VirtualClock } from '../base/clock.js';
import { TsvmError, errorMessage } from '../base/errors.js';
import type { VersionedState } from '../base/state.js';
import { LEVEL_ISA_IRQS, acpiLoaderFiles } from '../boot/acpi-tables.js';
import { parseBzImage } from '../boot/bzimage.js';
import { DEFAULT_BIOS, DEFAULT_VGA_BIOS, SystemBios, readFirmware } from '../boot/firmware.js';
import { loadLinux } from '../boot/linux-loader.js';
import { findMultibootHeader, loadMultiboot } from '../boot/multiboot.js';
import { CPUID_EDX_APIC, CPUID_FAMILY_MODEL_STEPPING, CPUID_FEATURES, X86Cpu } from '../cpu/x86/cpu.js';
import type { X86Registers } from '../cpu/x86/registers.js';
import { Piix4Pm } from '../devices/acpi/piix4-pm.js';
import { ApicBus } from '../devices/apic/apic-bus.js';
import { IO_APIC_DEFAULT_BASE, IoApic } from '../devices/apic/io-apic.js';
import { LocalApic } from '../devices/apic/local-apic.js';
import type { CharBackend } from '../devices/char-backend.js';
import type { Device } from '../devices/device.js';
import { StdVga } from '../devices/display/std-vga.js';
import { Piix3Ide } from '../devices/ide/piix3-ide.js';
import { E1000 } from '../devices/net/e1000.js';
import { FwCfg, FwCfgKey } from '../devices/fw-cfg/fw-cfg.js';
import { I440fxHostBridge } from '../devices/pci/i440fx.js';
import { PciBus } from '../devices/pci/pci-bus.js';
import { Piix3IsaBridge, Piix4PmFunction } from '../devices/pci/piix.js';
import { IsaDebugExit } from '../devices/isa/debug-exit.js';
import { I8042 } from '../devices/isa/i8042.js';
import { Mc146818Rtc } from '../devices/isa/mc146818-rtc.js';
import { DualPic8259 } from '../devices/isa/pic8259.js';
import { Pit8254 } from '../devices/isa/pit8254.js';
import { SystemPorts } from '../devices/isa/port92.js';
import { Uart16550 } from '../devices/isa/uart16550.js';
import type { SystemControl } from '../devices/system-control.js';
import { TimerQueue } from '../devices/timer-queue.js';
import { GuestRam } from '../memory/guest-ram.js';
import { PhysicalMemory } from '../memory/physical-memory.js';
import { PortIoBus } from '../memory/port-io-bus.js';
import type { OpenedNic } from '../net/netdevs.js';
import { ICOUNT_RTC_BASE, type MachineConfig } from './config.js';
import type { OpenedDrive } from './drives.js';
import type { VirtioDevice } from '../devices/virtio/virtio-device.js';
import { VirtioPciFunction } from '../devices/virtio/virtio-pci.js';
import { createVirtioDevice } from './virtio-devices.js';

/** COM1..COM4 port bases and IRQs. */
const SERIAL_PORTS: [number, number][] = [[0x3f8, 4], [0x2f8, 3], [0x3e8, 4], [0x2e8, 3]];

export interface PcMachineHost extends SystemControl {
  /** Backends for the serial ports in config order (missing ones get a null backend). */
  serials: CharBackend[];
  debugcon?: CharBackend;
  /** Opened IDE drives by position (primary master, primary slave, secondary master, secondary slave). */
  drives: (OpenedDrive | undefined)[];
  /** Network cards with their back ends open, in configuration order. */
  nics?: OpenedNic[];
  /** Opened drives of virtio-blk devices, by drive id. */
  virtioDrives?: Map<string, OpenedDrive>;
  /** Character backends by -chardev id (virtio-serial ports). */
  chardevs?: Map<string, CharBackend>;
  /** An interrupt may have made a halted CPU runnable. */
  wake(): void;
  /** The guest wrote to isa-debug-exit: end with this process exit status. */
  debugExit(status: number): void;
}

/**
 * QEMU's `pc` machine as far as built: RAM, the emulated CPU, the ISA platform devices (8259 pair, 8254 with
 * port 0x61, CMOS RTC, 16550 UARTs, i8042, port 0x92/0xCF9), PIIX4 ACPI power management, and direct Linux
 * boot. This is the only module that knows every device and how they are wired.
 */
export class PcMachine {
  readonly clock = new VirtualClock();
  readonly timers = new TimerQueue(this.clock);
  readonly ram: GuestRam;
  readonly memory: PhysicalMemory;
  readonly io = new PortIoBus();
  readonly cpu: X86Cpu;
  readonly pic: DualPic8259;
  readonly apicBus = new ApicBus();
  readonly lapic: LocalApic;
  readonly ioApic: IoApic;
  readonly pm: Piix4Pm;
  readonly rtc: Mc146818Rtc;
  readonly pci: PciBus;
  readonly fwCfg: FwCfg;
  readonly vga: StdVga;
  readonly ide: Piix3Ide;
  readonly keyboard: I8042;
  readonly nics: E1000[] = [];
  /** Virtio PCI functions, in slot order. */
  readonly virtio: VirtioPciFunction[] = [];
  private readonly isaBridge: Piix3IsaBridge;
  private readonly pmFunction: Piix4PmFunction;
  private readonly devices: Device[] = [];
  private readonly kernel: Uint8Array | null;
  /** Set when booting from firmware (no -kernel). */
  private readonly bios: SystemBios | null;
  private readonly initrd: Uint8Array | undefined;

  constructor(readonly config: MachineConfig, host: PcMachineHost) {
    this.kernel = config.kernel ? readImage('kernel', config.kernel) : null;
    this.initrd = config.initrd ? readImage('initrd', config.initrd) : undefined;
    this.ram = new GuestRam(config.memoryBytes);
    this.memory = new PhysicalMemory(this.ram);
    // The 8259s' INTR goes to the local APIC's LINT0; the local APIC drives the CPU's INTR pin and answers its INTA
    // cycle, and needs the CPU for that: connect through forwarding pins.
    let cpu: X86Cpu | null = null;
    const cpuPins = {
      setIntr: (level: boolean) => { cpu?.setIntr(level); if (level) host.wake(); },
      raiseNmi: () => { cpu?.raiseNmi(); host.wake(); },
    };
    this.pic = new DualPic8259(this.io, { setIntr: (level) => this.lapic.setIntr(level) });
    this.lapic = new LocalApic({ id: 0, bsp: true, memory: this.memory, bus: this.apicBus, timers: this.timers, cpu: cpuPins, pic: this.pic });
    this.ioApic = new IoApic(this.memory.mmio, IO_APIC_DEFAULT_BASE, this.apicBus);
    cpu = this.cpu = new X86Cpu({
      memory: this.memory,
      io: this.io,
      interrupts: this.lapic,
      clock: this.clock,
      apic: this.lapic,
      onFerr: (level) => this.setIsaIrq(13, level),
    });
    if (config.icount) {
      const executing = cpu;
      this.clock.useInstructionCount(() => executing.executedInstructions(), config.icount.shift);
    }
    const irq = (n: number) => ({ set: (level: boolean) => this.setIsaIrq(n, level) });
    this.devices.push(this.pic, this.lapic, this.ioApic, new Pit8254(this.io, irq(0), this.timers));
    this.rtc = new Mc146818Rtc(this.io, irq(8), this.timers, config.rtcBase ?? (config.icount ? ICOUNT_RTC_BASE : undefined));
    this.devices.push(this.rtc);
    config.serials.forEach((_, i) => {
      if (i >= SERIAL_PORTS.length) throw new TsvmError(`too many serial ports (at most ${SERIAL_PORTS.length})`);
      const [base, line] = SERIAL_PORTS[i];
      this.devices.push(new Uart16550(`serial${i}`, this.io, base, irq(line), host.serials[i], this.timers));
    });
    this.keyboard = new I8042(this.io, this.memory, irq(1), irq(12), host);
    this.devices.push(this.keyboard);
    this.devices.push(new SystemPorts(this.io, this.memory, host));
    this.pm = new Piix4Pm(this.io, irq(9), this.timers, host);
    this.devices.push(this.pm);

    // PCI: 00:00.0 host bridge, 00:01.0 ISA bridge, 00:01.3 power management, as on QEMU's pc.
    this.pci = new PciBus(this.io, this.memory, (n, level) => this.setIsaIrq(n, level));
    this.isaBridge = new Piix3IsaBridge(() => this.pci.updateIrqs());
    this.pci.router = this.isaBridge.route;
    this.pmFunction = new Piix4PmFunction(this.pm);
    this.pci.add(new I440fxHostBridge(), 0);
    this.pci.add(this.isaBridge, 1, 0);
    this.ide = new Piix3Ide({
      io: this.io,
      memory: this.memory,
      irqs: [irq(14), irq(15)],
      drives: host.drives.map((d) => d && (d.config.media === 'cdrom' ? { kind: 'cdrom', image: d.image } : { kind: 'disk', image: d.image, geometry: d.geometry })),
    });
    this.pci.add(this.ide, 1, 1);
    this.pci.add(this.pmFunction, 1, 3);
    this.devices.push(this.pci, this.isaBridge, this.ide, this.pmFunction, this.pci.get(0)!);
    // 00:02.0: the standard VGA, as QEMU's default -vga std. Its BIOS is an option ROM the firmware runs.
    const vgaBios = this.kernel ? undefined : readFirmware('VGA BIOS', DEFAULT_VGA_BIOS, { maxBytes: 2 ** 20, multipleOf: 512 });
    this.vga = new StdVga({ io: this.io, memory: this.memory, vgabiosRom: vgaBios });
    this.pci.add(this.vga, 2);
    this.devices.push(this.vga);

    // Network cards from slot 3 on, in order, as QEMU places -device cards after the VGA.
    for (const [i, nic] of (host.nics ?? []).entries()) {
      const e1000 = new E1000({ id: `e1000.${i}`, memory: this.memory, mac: nic.mac, backend: nic.backend });
      this.pci.addToFreeSlot(e1000);
      this.nics.push(e1000);
      this.devices.push(e1000);
    }
    const resources = { memory: this.memory, drives: host.virtioDrives ?? new Map(), chardevs: host.chardevs ?? new Map() };
    (config.virtioDevices ?? []).forEach((d, i) => this.addVirtioDevice(createVirtioDevice(d, i, resources)));

    this.fwCfg = new FwCfg(this.io, this.memory);
    this.devices.push(this.fwCfg);
    this.bios = this.kernel ? null : new SystemBios(this.memory, readFirmware('BIOS', config.bios ?? DEFAULT_BIOS, { maxBytes: 16 * 2 ** 20, multipleOf: 64 * 1024 }));
    this.fillFwCfg(host.drives);
    if (host.debugcon) {
      const sink = host.debugcon;
      this.io.register(this.config.debugconPort ?? 0xe9, 1, { read: () => 0xe9, write: (_o, _s, v) => sink.write(Uint8Array.of(v)) }, { sizes: 1, name: 'debugcon' });
    }
    if (config.debugExit) {
      this.devices.push(new IsaDebugExit(this.io, config.debugExit.iobase, config.debugExit.iosize, (status) => host.debugExit(status)));
    }
    this.io.register(0x80, 1, { read: () => 0xff, write: () => {} }, { sizes: 1, name: 'post-code' });
    this.fillCmos();
    this.boot();
  }

  /** Puts a virtio device on the PCI bus (next free slot) behind the virtio PCI transport. */
  addVirtioDevice(device: VirtioDevice): VirtioPciFunction {
    const fn = new VirtioPciFunction(device, { memory: this.memory, deliverMsi: (address, data) => this.apicBus.deliverMsi(address, data) });
    this.pci.addToFreeSlot(fn);
    this.devices.push(fn);
    this.virtio.push(fn);
    return fn;
  }

  /**
   * An ISA IRQ line (devices, and PCI INTx through the PIIX3's PIRQ routing) goes to the 8259s and to the I/O
   * APIC pin of the same number, except IRQ 0, the PIT, on pin 2 (the MADT's interrupt source override), as on
   * QEMU's pc. I/O APIC pins 0 and 16-23 are not connected.
   */
  private setIsaIrq(n: number, level: boolean): void {
    this.pic.setIrq(n, level);
    this.ioApic.setPin(n === 0 ? 2 : n, level);
  }

  /** CMOS memory-size entries, as firmware and old kernels read them. */
  private fillCmos(): void {
    const kib = this.config.memoryBytes / 1024;
    const extendedKib = Math.min(Math.max(kib - 1024, 0), 0xffff);
    this.rtc.setNvram(0x15, 640 & 0xff);
    this.rtc.setNvram(0x16, 640 >> 8);
    this.rtc.setNvram(0x17, extendedKib & 0xff);
    this.rtc.setNvram(0x18, extendedKib >> 8);
    this.rtc.setNvram(0x30, extendedKib & 0xff);
    this.rtc.setNvram(0x31, extendedKib >> 8);
    const above16m = Math.min(Math.max(this.config.memoryBytes - 16 * 2 ** 20, 0) / 65536, 0xffff);
    this.rtc.setNvram(0x34, above16m & 0xff);
    this.rtc.setNvram(0x35, above16m >> 8);
    this.rtc.setNvram(0x14, 0x06); // equipment: VGA, FPU
    this.rtc.setNvram(0x5f, this.config.cpus - 1);
    this.rtc.setNvram(0x39, this.ide.cmosDiskTranslation()); // how SeaBIOS translates each disk's CHS
    // Boot order for SeaBIOS as QEMU's -boot gives it: up to three devices, 1 floppy, 2 disk, 3 CD-ROM, 4 network.
    const codes = [...this.config.boot.order].map((c) => ({ a: 1, b: 1, c: 2, d: 3, n: 4 })[c] ?? 0).slice(0, 3);
    this.rtc.setNvram(0x3d, (codes[0] ?? 0) | ((codes[1] ?? 0) << 4));
    this.rtc.setNvram(0x38, ((codes[2] ?? 0) << 4) | 1); // bit 0: do not check the floppy boot signature
  }

  /** What the firmware reads through fw_cfg: the machine's size and shape, e820, and the ACPI tables. */
  private fillFwCfg(drives: (OpenedDrive | undefined)[]): void {
    const f = this.fwCfg;
    f.setBytes(FwCfgKey.UUID, new Uint8Array(16));
    f.setU64(FwCfgKey.RAM_SIZE, this.config.memoryBytes);
    f.setU16(FwCfgKey.NOGRAPHIC, this.config.nographic ? 1 : 0);
    f.setU16(FwCfgKey.NB_CPUS, this.config.cpus);
    f.setU16(FwCfgKey.MAX_CPUS, this.config.cpus);
    f.setU16(FwCfgKey.BOOT_DEVICE, this.config.boot.order.charCodeAt(0));
    f.setU16(FwCfgKey.BOOT_MENU, this.config.boot.menu ? 1 : 0);
    f.setU32(FwCfgKey.IRQ0_OVERRIDE, 1);
    const e820 = new Uint8Array(20);
    const dv = new DataView(e820.buffer);
    dv.setBigUint64(8, BigInt(this.config.memoryBytes), true);
    dv.setUint32(16, 1, true); // usable RAM; the firmware reserves its own areas inside it
    f.addFile('etc/e820', e820);
    if (this.config.acpi) for (const [name, bytes] of Object.entries(acpiLoaderFiles(this.config.memoryBytes))) f.addFile(name, bytes);
    const bootOrder = bootOrderPaths(this.config.boot.order, drives);
    if (bootOrder.length > 0) f.addFile('bootorder', new TextEncoder().encode(bootOrder.join('\n') + '\0'));
  }

  /** Puts the boot payload into memory and sets the CPU's starting registers. */
  private boot(): void {
    if (this.bios) {
      this.bios.loadShadow(); // the CPU starts at its reset vector, in the BIOS
      return;
    }
    // Direct Linux boot: set up the chipset as the firmware would have.
    this.isaBridge.routeAsFirmwareDoes();
    this.pci.assignInterruptLines();
    this.pmFunction.configureAsFirmwareDoes();
    this.ide.configureAsFirmwareDoes();
    // Below the I/O APIC: 128 KiB of registers per card; I/O windows after the IDE bus-master block.
    this.nics.forEach((nic, i) => nic.configureAsFirmwareDoes(0xfeb00000 + i * 0x20000, 0xc100 + i * 0x40));
    const multiboot = findMultibootHeader(this.kernel!);
    if (multiboot) {
      if (this.initrd) throw new TsvmError('-initrd: Multiboot modules are not supported');
      // The command line starts with the kernel's name, as GRUB and QEMU give it.
      const commandLine = `${this.config.kernel} ${this.config.append}`;
      this.cpu.setRegisters(loadMultiboot(this.memory, { name: this.config.kernel!, image: this.kernel!, header: multiboot, commandLine }));
      return;
    }
    const kernel = parseBzImage(this.config.kernel!, this.kernel!);
    const registers: X86Registers = loadLinux(this.memory, {
      kernel,
      initrd: this.initrd,
      commandLine: this.config.append,
      acpi: this.config.acpi,
      mpTable: {
        cpuSignature: CPUID_FAMILY_MODEL_STEPPING,
        cpuFeatures: CPUID_FEATURES | CPUID_EDX_APIC,
        pciInterrupts: this.pci.interruptRoutes(),
        levelIsaIrqs: LEVEL_ISA_IRQS,
      },
    });
    this.cpu.setRegisters(registers);
  }

  /** System reset: devices and CPU to power-on state, then boot again. */
  reset(): void {
    this.memory.setA20(true);
    for (const d of this.devices) d.reset();
    this.cpu.reset();
    this.boot();
  }

  /** Device requests to the host are in flight: their completions arrive through Node's event loop. */
  ioPending(): boolean {
    return this.ide.busy || this.virtio.some((fn) => fn.busy);
  }

  /** Waits for device requests still in flight (disk reads and writes); the images are closed after. */
  async close(): Promise<void> {
    await Promise.all([this.ide.close(), ...this.virtio.map((fn) => fn.device.drain())]);
  }

  saveDeviceStates(): Record<string, VersionedState> {
    const out: Record<string, VersionedState> = { [this.cpu.id]: this.cpu.saveState() };
    for (const d of this.devices) out[d.id] = d.saveState();
    return out;
  }
}

/**
 * The firmware's boot order as OpenFirmware device paths (fw_cfg `bootorder`): for each `-boot` letter, the
 * drives of that kind in IDE order (c: disks, d: CD-ROMs; floppies and network cards do not exist here).
 */
function bootOrderPaths(order: string, drives: (OpenedDrive | undefined)[]): string[] {
  const paths: string[] = [];
  for (const letter of order) {
    const media = letter === 'c' ? 'disk' : letter === 'd' ? 'cdrom' : null;
    drives.forEach((d, i) => {
      if (media && d?.config.media === media) paths.push(`/pci@i0cf8/ide@1,1/drive@${i >> 1}/disk@${i & 1}`);
    });
  }
  return paths;
}

function readImage(what: string, path: string): Uint8Array {
  try {
    return new Uint8Array(readFileSync(path));
  } catch (e) {
    throw new TsvmError(`could not load ${what} '${path}': ${errorMessage(e).replace(/^[A-Z]+: /, '')}`);
  }
}
