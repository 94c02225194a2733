import type { VersionedState } from '../../base/state.js';
import { bool, list, record, stateSchema, u8 } from '../../base/state-schema.js';
import type { PhysicalMemory } from '../../memory/physical-memory.js';
import type { PortIoBus } from '../../memory/port-io-bus.js';
import type { Device, IrqLine } from '../device.js';
import type { SystemControl } from '../system-control.js';

const STATUS_OBF = 0x01, STATUS_SYS = 0x04, STATUS_CMD = 0x08, STATUS_UNLOCKED = 0x10, STATUS_AUX = 0x20;
const CMD_KBD_IRQ = 0x01, CMD_AUX_IRQ = 0x02, CMD_KBD_DISABLED = 0x10, CMD_AUX_DISABLED = 0x20;

/** Version 2 names the fields (version 1 packed them into lists). */
const I8042_STATE = stateSchema(2, {
  /** Bytes waiting for the guest: host key events have no bound but the guest's reading. */
  queue: list(record({ byte: u8, aux: bool }), { max: 1 << 16 }),
  commandByte: u8, status: u8, pendingCommand: u8, pendingDevice: u8, pendingAux: u8, scancodeSet: u8,
});

/**
 * The i8042 keyboard controller (0x60/0x64) with a PS/2 keyboard and mouse behind it: enough of both that
 * firmware and Linux probe them cleanly, the A20 gate and reset lines of its output port, and `keyEvent` to
 * type into the guest (bytes in the scancode set the guest sees, set 1 with translation on).
 */
export class I8042 implements Device {
  readonly id = 'i8042';
  private queue: { byte: number; aux: boolean }[] = [];
  private commandByte = CMD_KBD_IRQ | CMD_AUX_IRQ | 0x04 | 0x40;
  private status = STATUS_UNLOCKED;
  /** A controller command waiting for its data byte on port 0x60. */
  private pendingCommand = 0;
  /** A keyboard or mouse command waiting for its argument. */
  private pendingDevice = 0;
  private pendingAux = 0;
  private scancodeSet = 2;
  private kbdLine = false;
  private auxLine = false;

  constructor(
    io: PortIoBus,
    private readonly memory: PhysicalMemory,
    private readonly kbdIrq: IrqLine,
    private readonly auxIrq: IrqLine,
    private readonly control: SystemControl,
  ) {
    io.register(0x60, 1, { read: () => this.readData(), write: (_o, _s, v) => this.writeData(v & 0xff) }, { sizes: 1, name: 'i8042-data' });
    io.register(0x64, 1, { read: () => this.readStatus(), write: (_o, _s, v) => this.writeCommand(v & 0xff) }, { sizes: 1, name: 'i8042-cmd' });
  }

  reset(): void {
    this.queue = [];
    this.commandByte = CMD_KBD_IRQ | CMD_AUX_IRQ | 0x04 | 0x40;
    this.status = STATUS_UNLOCKED;
    this.pendingCommand = this.pendingDevice = this.pendingAux = 0;
    this.scancodeSet = 2;
    this.updateIrq();
  }

  /** Queues scancode bytes from a host keyboard (set 1 bytes, as seen with translation enabled). */
  keyEvent(bytes: number[]): void {
    if (this.commandByte & CMD_KBD_DISABLED) return;
    for (const b of bytes) this.queue.push({ byte: b & 0xff, aux: false });
    this.updateIrq();
  }

  private push(byte: number, aux = false): void {
    this.queue.push({ byte, aux });
    this.updateIrq();
  }

  private readStatus(): number {
    let s = this.status & ~(STATUS_OBF | STATUS_AUX);
    if (this.queue.length > 0) s |= STATUS_OBF | (this.queue[0].aux ? STATUS_AUX : 0);
    return s;
  }

  private readData(): number {
    const item = this.queue.shift();
    this.updateIrq();
    return item ? item.byte : 0;
  }

  private updateIrq(): void {
    const head = this.queue[0];
    const kbd = head !== undefined && !head.aux && (this.commandByte & CMD_KBD_IRQ) !== 0;
    const aux = head !== undefined && head.aux && (this.commandByte & CMD_AUX_IRQ) !== 0;
    // Edge per byte: drop and raise again so each queued byte is a new interrupt.
    if (kbd !== this.kbdLine || kbd) {
      this.kbdIrq.set(false);
      if (kbd) this.kbdIrq.set(true);
      this.kbdLine = kbd;
    }
    if (aux !== this.auxLine || aux) {
      this.auxIrq.set(false);
      if (aux) this.auxIrq.set(true);
      this.auxLine = aux;
    }
  }

  private writeCommand(cmd: number): void {
    this.status |= STATUS_CMD;
    switch (cmd) {
      case 0x20: this.push(this.commandByte); return;
      case 0x60: case 0xd1: case 0xd2: case 0xd3: case 0xd4: this.pendingCommand = cmd; return;
      case 0xa7: this.commandByte |= CMD_AUX_DISABLED; return;
      case 0xa8: this.commandByte &= ~CMD_AUX_DISABLED; return;
      case 0xa9: case 0xab: this.push(0x00); return;
      case 0xaa:
        this.status |= STATUS_SYS;
        this.push(0x55);
        return;
      case 0xad: this.commandByte |= CMD_KBD_DISABLED; return;
      case 0xae: this.commandByte &= ~CMD_KBD_DISABLED; return;
      case 0xd0: this.push((this.memory.a20Enabled ? 2 : 0) | 1); return;
      default:
        if (cmd >= 0xf0 && (cmd & 1) === 0) this.control.requestReset();
    }
  }

  private writeData(v: number): void {
    this.status &= ~STATUS_CMD;
    const cmd = this.pendingCommand;
    this.pendingCommand = 0;
    switch (cmd) {
      case 0x60:
        this.commandByte = v;
        this.updateIrq();
        return;
      case 0xd1:
        this.memory.setA20((v & 2) !== 0);
        if ((v & 1) === 0) this.control.requestReset();
        return;
      case 0xd2: this.push(v); return;
      case 0xd3: this.push(v, true); return;
      case 0xd4: this.auxCommand(v); return;
    }
    this.keyboardCommand(v);
  }

  private keyboardCommand(v: number): void {
    if (this.pendingDevice) {
      const c = this.pendingDevice;
      this.pendingDevice = 0;
      if (c === 0xf0 && v === 0) {
        this.push(0xfa);
        this.push(this.scancodeSet);
        return;
      }
      if (c === 0xf0) this.scancodeSet = v;
      this.push(0xfa);
      return;
    }
    switch (v) {
      case 0xff:
        this.push(0xfa);
        this.push(0xaa);
        return;
      case 0xf2:
        this.push(0xfa);
        this.push(0xab);
        this.push(0x83);
        return;
      case 0xee: this.push(0xee); return;
      case 0xed: case 0xf0: case 0xf3:
        this.pendingDevice = v;
        this.push(0xfa);
        return;
      default: this.push(0xfa);
    }
  }

  private auxCommand(v: number): void {
    if (this.pendingAux) {
      this.pendingAux = 0;
      this.push(0xfa, true);
      return;
    }
    switch (v) {
      case 0xff:
        this.push(0xfa, true);
        this.push(0xaa, true);
        this.push(0x00, true);
        return;
      case 0xf2:
        this.push(0xfa, true);
        this.push(0x00, true);
        return;
      case 0xe9:
        this.push(0xfa, true);
        this.push(0, true);
        this.push(2, true);
        this.push(100, true);
        return;
      case 0xe8: case 0xf3:
        this.pendingAux = v;
        this.push(0xfa, true);
        return;
      default: this.push(0xfa, true);
    }
  }

  saveState(): VersionedState {
    const { commandByte, status, pendingCommand, pendingDevice, pendingAux, scancodeSet } = this;
    return I8042_STATE.save({ queue: this.queue, commandByte, status, pendingCommand, pendingDevice, pendingAux, scancodeSet });
  }

  checkState(state: VersionedState): void {
    I8042_STATE.restore(this.id, state);
  }

  restoreState(state: VersionedState): void {
    const s = I8042_STATE.restore(this.id, state);
    this.queue = s.queue.map(({ byte, aux }) => ({ byte, aux }));
    ({ commandByte: this.commandByte, status: this.status, pendingCommand: this.pendingCommand, pendingDevice: this.pendingDevice, pendingAux: this.pendingAux, scancodeSet: this.scancodeSet } = s);
    this.updateIrq();
  }
}
