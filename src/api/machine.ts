import type { Duplex } from 'node:stream';
import { TsvmError, errorMessage } from '../base/errors.js';
import { TcgRunner } from '../accel/tcg/tcg-runner.js';
import type { CharBackend } from '../devices/char-backend.js';
import { type MachineConfig, type SerialConfig, defaultMachineConfig } from '../machine/config.js';
import { type OpenedDrive, closeDrives, openIdeDrives, openVirtioDrives } from '../machine/drives.js';
import type { BalloonInfo } from '../devices/virtio/virtio-balloon.js';
import { VirtioBalloon } from '../devices/virtio/virtio-balloon.js';
import { PcMachine } from '../machine/pc-machine.js';
import { type OpenedNic, closeNics, openNics } from '../net/netdevs.js';
import { parseIpv4Address } from '../net/user/wire.js';
import { FileConsole } from '../ui/console/file-console.js';
import { type HostConsole, NullConsole } from '../ui/console/host-console.js';
import { StdioConsole } from '../ui/console/stdio-console.js';
import { StreamConsole } from '../ui/console/stream-console.js';
import { UnixSocketConsole } from '../ui/console/unix-socket-console.js';
import { VncServer } from '../ui/vnc/vnc-server.js';

export type { MachineConfig } from '../machine/config.js';
export { defaultMachineConfig };

/** How a machine ended. */
export interface MachineExit {
  reason: 'poweroff' | 'reboot' | 'quit' | 'error' | 'debug-exit';
  message?: string;
  /** With 'debug-exit': the process exit status the guest asked for. */
  status?: number;
}

/**
 * A virtual machine, for programs and for the `tsvm` command alike:
 * `const vm = await Machine.create(config); vm.start(); await vm.exited`.
 * With a serial port of kind 'api', the guest console is `vm.console` (a Duplex stream).
 */
export class Machine {
  /** The guest's first 'api' serial port, when the config has one. */
  readonly console: Duplex | null;
  readonly exited: Promise<MachineExit>;
  private resolveExit!: (exit: MachineExit) => void;
  private readonly pc: PcMachine;
  private readonly runner: TcgRunner;
  private readonly consoles: HostConsole[];
  private vnc: VncServer | null = null;
  private pending: 'none' | 'reset' | 'poweroff' = 'none';
  /** Set by a guest write to isa-debug-exit; ends the machine at once. */
  private debugExitStatus: number | null = null;
  private finished = false;

  /** Character backends of kind 'api' by -chardev id (virtio-serial ports), as streams. */
  private readonly chardevStreams = new Map<string, Duplex>();

  private constructor(
    readonly config: MachineConfig, consoles: HostConsole[], debugcon: HostConsole | undefined,
    private readonly drives: (OpenedDrive | undefined)[], private readonly virtioDrives: Map<string, OpenedDrive>, chardevs: Map<string, HostConsole>,
    private readonly nics: OpenedNic[],
  ) {
    this.consoles = [...consoles, ...(debugcon ? [debugcon] : []), ...chardevs.values()];
    for (const [id, c] of chardevs) if (c instanceof StreamConsole) this.chardevStreams.set(id, c.stream);
    this.exited = new Promise((resolve) => (this.resolveExit = resolve));
    const streamConsole = consoles.find((c): c is StreamConsole => c instanceof StreamConsole);
    this.console = streamConsole ? streamConsole.stream : null;
    this.pc = new PcMachine(config, {
      serials: consoles as CharBackend[],
      debugcon,
      drives,
      nics,
      virtioDrives,
      chardevs: chardevs as Map<string, CharBackend>,
      requestReset: () => this.request('reset'),
      requestPowerOff: () => this.request('poweroff'),
      wake: () => this.runner?.wake(),
      debugExit: (status) => {
        this.debugExitStatus ??= status;
        this.pc.cpu.requestExit();
      },
    });
    this.runner = new TcgRunner(this.pc.cpu, this.pc.timers, (event) => this.onCpuEvent(event), () => this.pc.ioPending(), config.icount ?? null);
  }

  static async create(config: MachineConfig): Promise<Machine> {
    if (config.accel === 'kvm') throw new TsvmError('-accel kvm is not supported yet by this version (use tcg)');
    let machine: Machine | null = null;
    const quit = () => void machine?.quit();
    const consoles = await Promise.all(config.serials.map((s) => openConsole(s, quit)));
    const debugcon = config.debugcon ? await openConsole(config.debugcon, quit) : undefined;
    let drives: (OpenedDrive | undefined)[] = [];
    let nics: OpenedNic[] = [];
    let virtioDrives = new Map<string, OpenedDrive>();
    const chardevs = new Map<string, HostConsole>();
    try {
      for (const [id, c] of Object.entries(config.chardevs ?? {})) chardevs.set(id, await openConsole(c, quit));
      drives = await openIdeDrives(config.drives, config.snapshot);
      virtioDrives = await openVirtioDrives(config.drives, config.snapshot);
      nics = await openNics(config);
      machine = new Machine(config, consoles, debugcon, drives, virtioDrives, chardevs, nics);
      if (config.vnc) {
        const pc = machine.pc;
        machine.vnc = new VncServer({ listen: config.vnc, display: pc.vga, keyboard: (bytes) => pc.keyboard.keyEvent(bytes), name: config.name ?? 'tsvm' });
        await machine.vnc.listen();
      }
    } catch (e) {
      await Promise.all([...consoles.map((c) => c.close()), ...[...chardevs.values()].map((c) => c.close()), debugcon?.close(), machine?.vnc?.close(), closeDrives(drives), closeDrives(virtioDrives.values()), closeNics(nics)]);
      throw e;
    }
    return machine;
  }

  /** Starts or resumes the guest. */
  start(): void {
    if (this.finished) return;
    this.pc.clock.resume();
    this.runner.start();
  }

  pause(): void {
    this.runner.pause();
    this.pc.clock.pause();
  }

  get running(): boolean {
    return this.runner.isRunning;
  }

  /**
   * Forwards a host port to a guest port over the machine's user-mode network (the first card on one, or the
   * netdev named), as `hostfwd=` does; resolves to the host port bound (hostPort 0 lets the host pick one).
   * hostAddr '' (the default) listens on every address, as QEMU does; guestAddr defaults to the first DHCP address.
   */
  async forward(rule: { proto: 'tcp' | 'udp'; hostPort: number; guestPort: number; hostAddr?: string; guestAddr?: string; netdev?: string }): Promise<number> {
    const nic = this.nics.find((n) => n.userNetwork && (rule.netdev === undefined || n.config.netdev === rule.netdev));
    if (!nic?.userNetwork) throw new TsvmError(rule.netdev === undefined ? 'forward: the machine has no user-mode network' : `forward: netdev '${rule.netdev}' is not a user-mode network`);
    const guestAddr = rule.guestAddr === undefined ? undefined : parseIpv4Address(rule.guestAddr);
    if (guestAddr === undefined && rule.guestAddr !== undefined) throw new TsvmError(`forward: guest address '${rule.guestAddr}' is not an IPv4 address`);
    return nic.userNetwork.addHostForward({ proto: rule.proto, hostAddr: rule.hostAddr ?? '', hostPort: rule.hostPort, guestAddr, guestPort: rule.guestPort });
  }

  /** Stops the machine for good (like QEMU's `quit`). */
  async quit(): Promise<void> {
    await this.finish({ reason: 'quit' });
  }

  /** The VGA's text-mode screen as lines (empty in graphics modes). */
  textScreen(): string[] {
    return this.pc.vga.textScreen();
  }

  /** Key presses and releases as PC scan code set 1 bytes, into the keyboard controller. */
  sendKeys(bytes: number[]): void {
    this.pc.keyboard.keyEvent(bytes);
  }

  /** Guest instructions executed so far (emulated CPU). */
  get instructionCount(): number {
    return this.pc.cpu.instructionCount;
  }

  /** The stream of a -chardev of kind 'api' (a virtio-serial port's host side). */
  chardev(id: string): Duplex | undefined {
    return this.chardevStreams.get(id);
  }

  /** The virtio balloon, if the machine has one. */
  private balloonDevice(): VirtioBalloon {
    const device = this.pc.virtio.map((fn) => fn.device).find((d): d is VirtioBalloon => d instanceof VirtioBalloon);
    if (!device) throw new TsvmError('No balloon device has been activated');
    return device;
  }

  /** Asks the guest to leave itself `bytes` of RAM (QMP `balloon`): the rest is inflated and given back to the host. */
  setBalloonTarget(bytes: number): void {
    this.balloonDevice().setTarget(bytes);
  }

  /** The balloon's size and the guest's last statistics (QMP `query-balloon`, `guest-stats`); asks for fresh ones. */
  balloonInfo(): BalloonInfo {
    const balloon = this.balloonDevice();
    balloon.requestStats();
    return balloon.info();
  }

  private request(kind: 'reset' | 'poweroff'): void {
    if (this.pending === 'poweroff') return;
    this.pending = kind;
    this.pc.cpu.requestExit();
  }

  private onCpuEvent(event: 'triple-fault' | 'exit-request'): boolean {
    if (this.debugExitStatus !== null) {
      void this.finish({ reason: 'debug-exit', status: this.debugExitStatus });
      return false;
    }
    if (event === 'triple-fault') this.pending = 'reset';
    const pending = this.pending;
    this.pending = 'none';
    if (pending === 'poweroff') {
      void this.finish({ reason: 'poweroff' });
      return false;
    }
    if (pending === 'reset') {
      if (this.config.noReboot) {
        void this.finish({ reason: 'reboot' });
        return false;
      }
      try {
        this.pc.reset();
      } catch (e) {
        void this.finish({ reason: 'error', message: errorMessage(e) });
        return false;
      }
    }
    return true;
  }

  private async finish(exit: MachineExit): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    this.runner.pause();
    await Promise.all([...this.consoles.map((c) => c.close()), this.vnc?.close(), closeNics(this.nics)]);
    // Guest writes may still be in flight: let the devices finish them, then flush and release the images.
    await this.pc.close();
    await closeDrives([...this.drives, ...this.virtioDrives.values()]);
    this.resolveExit(exit);
  }
}

async function openConsole(config: SerialConfig, onQuit: () => void): Promise<HostConsole> {
  switch (config.kind) {
    case 'stdio': return new StdioConsole(onQuit);
    case 'file': return new FileConsole(config.path);
    case 'unix': {
      const c = new UnixSocketConsole(config.path, config.server, config.wait);
      await c.ready;
      return c;
    }
    case 'api': return new StreamConsole();
    default: return new NullConsole();
  }
}
