import type { VersionedState } from '../../base/state.js';
import { bool, bytes, int, nullable, num, stateSchema, u8 } from '../../base/state-schema.js';
import type { PortIoBus } from '../../memory/port-io-bus.js';
import type { CharBackend } from '../char-backend.js';
import type { Device, IrqLine } from '../device.js';
import type { Timer, TimerQueue } from '../timer-queue.js';

const IER_RDA = 1, IER_THRE = 2, IER_RLS = 4, IER_MS = 8;
const LSR_DR = 1, LSR_OE = 2, LSR_BI = 0x10, LSR_THRE = 0x20, LSR_TEMT = 0x40;
const MCR_OUT2 = 8, MCR_LOOP = 0x10;
const FIFO_SIZE = 16;
/** LSR reads in a row, with no transmission between, after which a guest counts as polling for input. */
const POLLS_BEFORE_INPUT = 256;
/** How long the receive interrupt must stay enabled before queued input flows (guest time). */
const RX_ENABLE_SETTLE_NS = 5e6;

/** Version 2 names the registers and adds the receiver's start: the poll count and the settle timer. */
const UART_STATE = stateSchema(2, {
  ier: int(0, 0x0f), lcr: u8, mcr: int(0, 0x1f), lsr: u8, msr: u8, scr: u8, dll: u8, dlm: u8, fcr: int(0, 0xc9),
  rx: bytes({ max: FIFO_SIZE }),
  /** Host input not yet in the receiver: bounded only by what the host typed ahead. */
  backlog: bytes({ max: 1 << 30 }),
  thrIrq: bool, guestReading: bool, emptyPolls: int(0, POLLS_BEFORE_INPUT),
  /** Guest-clock time the receive interrupt's settle timer fires, null while not armed. */
  startReadingNs: nullable(num()),
});

/**
 * A 16550A UART. Transmission is instantaneous (bytes go straight to the backend and THRE is raised at once).
 * Received bytes wait in an unbounded queue behind the 16-byte FIFO and move in as the guest reads, so input
 * that arrives before the guest listens is never dropped. IRQ output is gated by MCR.OUT2, as on PCs.
 */
export class Uart16550 implements Device {
  private ier = 0;
  private lcr = 0;
  private mcr = 0;
  private lsr = LSR_THRE | LSR_TEMT;
  private msr = 0xb0;
  private scr = 0;
  private dll = 12;
  private dlm = 0;
  private fcr = 0;
  private rx: number[] = [];
  private backlog: number[] = [];
  /**
   * Queued input only enters the receiver once the guest is reading: when the receive interrupt has stayed
   * enabled for a moment (Linux's probe sets IER to 0x0F for a few instructions), or when it keeps polling LSR
   * without transmitting (a polled input loop; a console driver polls LSR too, but between characters it
   * sends). Drivers read and discard the receiver while they initialize it (Linux's 8250 startup does so
   * twice); bytes typed ahead must not be eaten then.
   */
  private guestReading = false;
  private emptyPolls = 0;
  /** THRE interrupt pending (cleared by reading IIR while it is the highest source, or writing THR). */
  private thrIrq = false;
  private irqLevel = false;

  private readonly startReading: Timer;

  constructor(
    readonly id: string,
    io: PortIoBus,
    base: number,
    private readonly irq: IrqLine,
    private readonly backend: CharBackend,
    private readonly timers: TimerQueue,
  ) {
    this.startReading = timers.createTimer(`${id}-rx`, () => this.beginReading());
    io.register(base, 8, {
      read: (offset) => this.read(offset),
      write: (offset, _size, value) => this.write(offset, value & 0xff),
    }, { sizes: 1, name: id });
    backend.onInput((bytes) => {
      for (const b of bytes) this.backlog.push(b);
      this.refill();
      this.update();
    });
    backend.onBreak?.(() => this.sendBreak());
  }

  reset(): void {
    this.ier = this.lcr = this.mcr = this.scr = this.fcr = 0;
    this.lsr = LSR_THRE | LSR_TEMT;
    this.msr = 0xb0;
    this.dll = 12;
    this.dlm = 0;
    this.rx = [];
    this.thrIrq = false;
    this.guestReading = false;
    this.emptyPolls = 0;
    this.startReading.cancel();
    this.update();
  }

  /** A break condition on the line (QEMU's Ctrl-A b): a NUL character received with LSR.BI set; Linux takes it as SysRq. */
  sendBreak(): void {
    if (this.rx.length >= (this.fifoEnabled ? FIFO_SIZE : 1)) this.lsr |= LSR_OE;
    else this.rx.push(0);
    this.lsr |= LSR_BI | LSR_DR;
    this.update();
  }

  private get fifoEnabled(): boolean {
    return (this.fcr & 1) !== 0;
  }

  private beginReading(): void {
    this.guestReading = true;
    this.startReading.cancel();
    this.refill();
    this.update();
  }

  /** Moves queued input into the receive buffer while it has room. */
  private refill(): void {
    if (!this.guestReading) return;
    const room = this.fifoEnabled ? FIFO_SIZE : 1;
    while (this.rx.length < room && this.backlog.length > 0) this.rx.push(this.backlog.shift()!);
    if (this.rx.length > 0) this.lsr |= LSR_DR;
  }

  private interruptId(): number {
    if (this.ier & IER_RLS && this.lsr & (LSR_OE | LSR_BI)) return 0x6;
    if (this.ier & IER_RDA && this.rx.length > 0) {
      // With the FIFO, data below the trigger level is reported as a character timeout.
      const trigger = [1, 4, 8, 14][this.fcr >> 6];
      return !this.fifoEnabled || this.rx.length >= trigger ? 0x4 : 0xc;
    }
    if (this.ier & IER_THRE && this.thrIrq) return 0x2;
    if (this.ier & IER_MS && this.msr & 0x0f) return 0x0;
    return 0x1;
  }

  private update(): void {
    const level = (this.interruptId() & 1) === 0 && (this.mcr & MCR_OUT2) !== 0;
    if (level !== this.irqLevel) {
      this.irqLevel = level;
      this.irq.set(level);
    }
  }

  private read(offset: number): number {
    const dlab = (this.lcr & 0x80) !== 0;
    let v = 0;
    switch (offset) {
      case 0:
        if (dlab) return this.dll;
        v = this.rx.length > 0 ? this.rx.shift()! : 0;
        if (this.rx.length === 0) this.lsr &= ~LSR_DR;
        this.refill();
        break;
      case 1: return dlab ? this.dlm : this.ier;
      case 2: {
        const id = this.interruptId();
        v = id | (this.fifoEnabled ? 0xc0 : 0);
        if (id === 0x2) this.thrIrq = false;
        break;
      }
      case 3: return this.lcr;
      case 4: return this.mcr;
      case 5:
        if (!this.guestReading && this.backlog.length > 0 && ++this.emptyPolls >= POLLS_BEFORE_INPUT) this.beginReading();
        v = this.lsr;
        this.lsr &= ~(LSR_OE | LSR_BI);
        break;
      case 6:
        if (this.mcr & MCR_LOOP) {
          const m = this.mcr;
          v = ((m & 2) << 3) | ((m & 1) << 5) | ((m & 4) << 4) | ((m & 8) << 4) | (this.msr & 0x0f);
        } else v = this.msr;
        this.msr &= 0xf0;
        break;
      default: return this.scr;
    }
    this.update();
    return v;
  }

  private write(offset: number, value: number): void {
    const dlab = (this.lcr & 0x80) !== 0;
    switch (offset) {
      case 0:
        if (dlab) {
          this.dll = value;
          return;
        }
        this.emptyPolls = 0;
        if (this.mcr & MCR_LOOP) {
          if (this.rx.length < (this.fifoEnabled ? FIFO_SIZE : 1)) this.rx.push(value);
          else this.lsr |= LSR_OE;
          this.lsr |= LSR_DR;
        } else {
          this.backend.write(Uint8Array.of(value));
        }
        this.lsr |= LSR_THRE | LSR_TEMT;
        this.thrIrq = true;
        break;
      case 1:
        if (dlab) {
          this.dlm = value;
          return;
        }
        // Enabling the THRE interrupt while the holding register is empty raises it at once (8250 behaviour
        // Linux's driver tests for).
        if (value & IER_THRE && !(this.ier & IER_THRE) && this.lsr & LSR_THRE) this.thrIrq = true;
        this.ier = value & 0x0f;
        if (!this.guestReading) {
          if (this.ier & IER_RDA) {
            if (!this.startReading.armed) this.startReading.arm(this.timers.nowNs() + RX_ENABLE_SETTLE_NS);
          } else {
            this.startReading.cancel();
          }
        }
        break;
      case 2:
        if (value & 2) {
          this.rx = [];
          this.lsr &= ~LSR_DR;
        }
        this.fcr = value & 0xc9;
        this.refill();
        break;
      case 3: this.lcr = value; return;
      case 4: this.mcr = value & 0x1f; break;
      case 5: return;
      case 6: return;
      default: this.scr = value; return;
    }
    this.update();
  }

  saveState(): VersionedState {
    const { ier, lcr, mcr, lsr, msr, scr, dll, dlm, fcr, thrIrq, guestReading, emptyPolls } = this;
    return UART_STATE.save({
      ier, lcr, mcr, lsr, msr, scr, dll, dlm, fcr, rx: Uint8Array.from(this.rx), backlog: Uint8Array.from(this.backlog),
      thrIrq, guestReading, emptyPolls, startReadingNs: this.startReading.armed ? this.startReading.deadlineNs : null,
    });
  }

  checkState(state: VersionedState): void {
    UART_STATE.restore(this.id, state);
  }

  restoreState(state: VersionedState): void {
    const s = UART_STATE.restore(this.id, state);
    ({
      ier: this.ier, lcr: this.lcr, mcr: this.mcr, lsr: this.lsr, msr: this.msr, scr: this.scr, dll: this.dll, dlm: this.dlm, fcr: this.fcr,
      thrIrq: this.thrIrq, guestReading: this.guestReading, emptyPolls: this.emptyPolls,
    } = s);
    this.rx = Array.from(s.rx);
    this.backlog = Array.from(s.backlog);
    if (s.startReadingNs === null) this.startReading.cancel();
    else this.startReading.arm(s.startReadingNs);
    this.update();
  }
}
