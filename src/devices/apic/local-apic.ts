import { debugLog } from '../../base/log.js';
import type { VersionedState } from '../../base/state.js';
import { bool, nullable, num, stateSchema, u32, u32s, u8, uint53 } from '../../base/state-schema.js';
import type { PhysicalMemory } from '../../memory/physical-memory.js';
import type { CpuLocalApic, Device, InterruptAcknowledge, IntrPin } from '../device.js';
import type { Timer, TimerQueue } from '../timer-queue.js';
import { type ApicBus, type ApicBusCpu, DeliveryMode } from './apic-bus.js';

/** Where IA32_APIC_BASE puts the registers after reset. */
export const LOCAL_APIC_DEFAULT_BASE = 0xfee00000;
/** An integrated xAPIC with six LVT entries (max LVT 5), as QEMU's APIC reports. */
export const LOCAL_APIC_VERSION = 0x00050014;
const BASE_BSP = 1 << 8, BASE_ENABLE = 1 << 11;
/** IA32_APIC_BASE bits 0-7, 9 and 10 (x2APIC mode, not implemented) are reserved. */
const BASE_RESERVED = 0x6ff;

// LVT entries in register order (0x320 timer, 0x330 thermal, 0x340 performance, 0x350 LINT0, 0x360 LINT1, 0x370 error).
const LVT_TIMER = 0, LVT_LINT0 = 3, LVT_LINT1 = 4, LVT_ERROR = 5;
const LVT_COUNT = 6;
const LVT_MASKED = 1 << 16;
/** Writable bits per LVT entry: vector, delivery mode, polarity, trigger, mask, timer mode as applicable. */
const LVT_WRITABLE = [0x700ff, 0x107ff, 0x107ff, 0x1a7ff, 0x1a7ff, 0x100ff];
const TIMER_ONE_SHOT = 0, TIMER_PERIODIC = 1, TIMER_TSC_DEADLINE = 2;
const SVR_ENABLE = 1 << 8;
/** SVR: vector, software enable, focus processor checking (no EOI-broadcast suppression in this version). */
const SVR_WRITABLE = 0x3ff;
const ESR_SEND_ILLEGAL_VECTOR = 1 << 5, ESR_RECEIVE_ILLEGAL_VECTOR = 1 << 6, ESR_ILLEGAL_REGISTER = 1 << 7;
/** ICR bits kept on write: vector, delivery mode, destination mode, level, trigger, shorthand. */
const ICR_WRITABLE = 0xccfff;
/** The APIC timer counts at 1 GHz before the divider (the bus clock, as QEMU's), one tick per guest ns. */
const TIMER_NS_PER_TICK = 1;

/** The pins a local APIC drives on its processor. */
export interface ApicCpuPins extends IntrPin {
  raiseNmi(): void;
}

export interface LocalApicOptions {
  /** Initial (and reset) APIC ID. */
  id: number;
  /** The bootstrap processor: IA32_APIC_BASE.BSP, and LINT0 in virtual-wire mode from reset. */
  bsp: boolean;
  memory: PhysicalMemory;
  bus: ApicBus;
  timers: TimerQueue;
  cpu: ApicCpuPins;
  /** The 8259 pair behind LINT0: ExtINT vectors come from its INTA cycle. */
  pic: InterruptAcknowledge;
}

function highestBit(bits: Uint32Array): number {
  for (let i = 7; i >= 0; i--) if (bits[i] !== 0) return i * 32 + 31 - Math.clz32(bits[i]);
  return -1;
}

const setBit = (bits: Uint32Array, v: number) => (bits[v >>> 5] |= 1 << (v & 31));
const clearBit = (bits: Uint32Array, v: number) => (bits[v >>> 5] &= ~(1 << (v & 31)));
const testBit = (bits: Uint32Array, v: number) => (bits[v >>> 5] & (1 << (v & 31))) !== 0;

/** Version 2: an idle timer's deadline is null (was -1). */
const LOCAL_APIC_STATE = stateSchema(2, {
  base: u32, apicId: u8, tpr: u8, ldr: u32, dfr: u32, svr: u32,
  irr: u32s(8), isr: u32s(8), tmr: u32s(8), lvt: u32s(LVT_COUNT),
  icrLow: u32, icrHigh: u32, esr: u32, esrPending: u32, divideConfig: u32, initialCount: u32,
  /** Guest-clock ns. */
  timerStartNs: num(), timerDeadlineNs: nullable(num()),
  tscDeadline: uint53, lint0: bool, extIntMessage: bool,
}, { rule: (s) => (s.base & BASE_RESERVED ? ['base', `sets reserved bits (0x${(s.base & BASE_RESERVED).toString(16)})`] : undefined) });

/**
 * A processor's local xAPIC (Intel SDM vol. 3 ch. 10/11) in xAPIC mode: the 4 KiB register page where
 * IA32_APIC_BASE puts it, the IRR/ISR/TMR with priority classes against TPR, the LVT (timer in one-shot,
 * periodic and TSC-deadline modes on the guest clock; LINT0/LINT1; error), IPIs through the ICR and the
 * interrupt messages of the APIC bus.
 *
 * It sits between the 8259s and the CPU: the PIC's INTR arrives on LINT0, and the CPU's INTR pin and INTA
 * cycle go to this APIC, which arbitrates between its own IRR and an ExtINT from the PIC (virtual-wire mode).
 * From reset the bootstrap processor's LINT0 is an unmasked ExtINT (as QEMU sets it; real firmware programs
 * it so), and while IA32_APIC_BASE disables the APIC the PIC's INTR passes straight through: a guest that
 * never touches the APIC sees exactly the 8259s.
 */
export class LocalApic implements Device, ApicBusCpu, CpuLocalApic, IntrPin {
  readonly id: string;
  readonly initialId: number;
  private base = 0;
  /** The page the registers are mapped at (null while globally disabled). */
  private mappedAt: number | null = null;
  private apicId = 0;
  private tpr = 0;
  private ldr = 0;
  private dfr = -1;
  private svr = 0xff;
  private readonly irr = new Uint32Array(8);
  private readonly isr = new Uint32Array(8);
  private readonly tmr = new Uint32Array(8);
  private readonly lvt = new Uint32Array(LVT_COUNT);
  private icrLow = 0;
  private icrHigh = 0;
  /** ESR as last latched by a write, and the errors seen since. */
  private esr = 0;
  private esrPending = 0;
  private divideConfig = 0;
  private initialCount = 0;
  /** Guest time the current count was (re)loaded at. */
  private timerStartNs = 0;
  private tscDeadlineValue = 0;
  /** LINT0's input: the 8259's INTR. */
  private lint0 = false;
  /** An ExtINT message from the APIC bus waits for the INTA cycle. */
  private extIntMessage = false;
  /** Level driven on the CPU's INTR pin. */
  private intrOut = false;
  private readonly timer: Timer;

  constructor(private readonly options: LocalApicOptions) {
    this.id = `lapic${options.id}`;
    this.initialId = options.id;
    this.timer = options.timers.createTimer(this.id, (now) => this.timerExpired(now));
    options.bus.addCpu(this);
    this.reset();
  }

  // ---------------------------------------------------------------------------------------------------
  // Reset, IA32_APIC_BASE, mapping

  reset(): void {
    this.base = LOCAL_APIC_DEFAULT_BASE | BASE_ENABLE | (this.options.bsp ? BASE_BSP : 0);
    this.resetRegisters();
    this.map();
  }

  /** Power-up state of the registers (also what a global disable leaves behind). */
  private resetRegisters(): void {
    this.apicId = this.initialId;
    this.tpr = this.ldr = 0;
    this.dfr = -1;
    this.svr = 0xff;
    this.irr.fill(0);
    this.isr.fill(0);
    this.tmr.fill(0);
    this.lvt.fill(LVT_MASKED);
    if (this.options.bsp) this.lvt[LVT_LINT0] = DeliveryMode.EXTINT << 8;
    this.icrLow = this.icrHigh = this.esr = this.esrPending = 0;
    this.divideConfig = this.initialCount = this.tscDeadlineValue = 0;
    this.extIntMessage = false;
    this.timer.cancel();
    this.update();
  }

  get globallyEnabled(): boolean {
    return (this.base & BASE_ENABLE) !== 0;
  }

  get baseMsr(): number {
    return this.base >>> 0;
  }

  writeBaseMsr(value: number, high: number): boolean {
    if (high !== 0 || (value & BASE_RESERVED) !== 0) return false;
    const wasEnabled = this.globallyEnabled;
    this.base = (value & ~(BASE_RESERVED | BASE_BSP)) | (this.base & BASE_BSP);
    if (wasEnabled && !this.globallyEnabled) this.resetRegisters();
    this.map();
    this.update();
    return true;
  }

  /** Maps the register page where IA32_APIC_BASE says, or nowhere while the APIC is disabled. */
  private map(): void {
    const at = this.globallyEnabled ? (this.base & ~0xfff) >>> 0 : null;
    if (at === this.mappedAt) return;
    const memory = this.options.memory;
    if (this.mappedAt !== null) {
      memory.mmio.unregister(this.mappedAt);
      if (this.mappedAt < memory.ramSize) memory.removeHole(this.mappedAt);
      this.mappedAt = null;
    }
    if (at === null) return;
    try {
      memory.mmio.register(at, 0x1000, { read: (o, s) => this.read(o, s), write: (o, s, v) => this.write(o, s, v) }, { name: this.id });
    } catch {
      // Moved onto another device's registers: that device keeps the range (the guest made a conflicting choice).
      debugLog('apic', `${this.id}: cannot map at 0x${at.toString(16)}`);
      return;
    }
    if (at < memory.ramSize) memory.addHole(at, 0x1000); // the APIC page hides the RAM under it
    this.mappedAt = at;
  }

  // ---------------------------------------------------------------------------------------------------
  // Interrupt arbitration: what the CPU's INTR pin and INTA cycle see

  private get softwareEnabled(): boolean {
    return (this.svr & SVR_ENABLE) !== 0;
  }

  /** An 8259 interrupt reaches the CPU: LINT0 programmed as an unmasked ExtINT (or the APIC is off), or an ExtINT message. */
  private extIntPending(): boolean {
    if (!this.globallyEnabled) return this.lint0;
    const lint0 = this.lvt[LVT_LINT0];
    return (this.lint0 && (lint0 & LVT_MASKED) === 0 && ((lint0 >> 8) & 7) === DeliveryMode.EXTINT) || this.extIntMessage;
  }

  /** Processor priority: the TPR, or the class of the highest vector in service when that is higher. */
  private processorPriority(): number {
    const inService = highestBit(this.isr);
    const isrClass = inService < 0 ? 0 : inService & 0xf0;
    return (this.tpr & 0xf0) >= isrClass ? this.tpr : isrClass;
  }

  /** The IRR vector the CPU would take now, or -1. */
  private deliverableVector(): number {
    if (!this.softwareEnabled) return -1;
    const v = highestBit(this.irr);
    return v >= 0 && (v & 0xf0) > (this.processorPriority() & 0xf0) ? v : -1;
  }

  /** Recomputes the CPU's INTR pin after any change of IRR, ISR, TPR, SVR, LINT0 or mode. */
  private update(): void {
    const level = this.extIntPending() || this.deliverableVector() >= 0;
    if (level === this.intrOut) return;
    this.intrOut = level;
    this.options.cpu.setIntr(level);
  }

  /** The PIC's INTR output (LINT0 input). */
  setIntr(level: boolean): void {
    const rising = level && !this.lint0;
    this.lint0 = level;
    // ExtINT follows the level (update below); fixed and NMI LINT0 modes take the rising edge.
    if (rising && this.globallyEnabled) this.localInterrupt(LVT_LINT0);
    this.update();
  }

  /** The CPU's INTA cycle: an ExtINT vector from the PIC first (it ignores priorities), else the highest IRR vector. */
  acknowledge(): number {
    if (!this.globallyEnabled) return this.options.pic.acknowledge();
    if (this.extIntPending()) {
      this.extIntMessage = false;
      const vector = this.options.pic.acknowledge();
      this.update();
      return vector;
    }
    const v = this.deliverableVector();
    if (v < 0) return this.svr & 0xff; // raised, then masked by a TPR write before INTA: the spurious vector
    clearBit(this.irr, v);
    setBit(this.isr, v);
    this.update();
    return v;
  }

  get arbitrationPriority(): number {
    const irrv = highestBit(this.irr) & 0xf0;
    const isrv = highestBit(this.isr) & 0xf0;
    const tprClass = this.tpr & 0xf0;
    return tprClass >= irrv && tprClass >= isrv ? this.tpr : Math.max(tprClass, irrv, isrv);
  }

  isDestination(destination: number, logical: boolean): boolean {
    if (!this.globallyEnabled) return false;
    if (!logical) return destination === 0xff || destination === this.apicId;
    const ldr = this.ldr >>> 24;
    if (destination === 0xff) return true;
    if (((this.dfr >>> 28) & 0xf) === 0xf) return (ldr & destination) !== 0; // flat model
    // Cluster model: the high nibble names the cluster, the low nibble selects up to four APICs in it.
    return (ldr >> 4) === (destination >> 4) && (ldr & destination & 0xf) !== 0;
  }

  /** An interrupt message addressed to this APIC. */
  accept(deliveryMode: number, vector: number, levelTriggered: boolean): void {
    switch (deliveryMode) {
      case DeliveryMode.FIXED:
      case DeliveryMode.LOWEST_PRIORITY:
        if (vector < 16) {
          this.error(ESR_RECEIVE_ILLEGAL_VECTOR);
          return;
        }
        setBit(this.irr, vector);
        if (levelTriggered) setBit(this.tmr, vector);
        else clearBit(this.tmr, vector);
        this.update();
        return;
      case DeliveryMode.NMI:
        this.options.cpu.raiseNmi();
        return;
      case DeliveryMode.EXTINT:
        this.extIntMessage = true;
        this.update();
        return;
      default:
        // INIT, start-up and SMI: no processor here is waiting for them (a single CPU; SMP brings the targets).
        debugLog('apic', `${this.id}: ignored delivery mode ${deliveryMode}`);
    }
  }

  /** An LVT entry fires (timer, LINT edge, error): its delivery mode decides what reaches the CPU. */
  private localInterrupt(index: number): void {
    const entry = this.lvt[index];
    if (entry & LVT_MASKED) return;
    const mode = index === LVT_TIMER || index === LVT_ERROR ? DeliveryMode.FIXED : (entry >> 8) & 7;
    if (mode === DeliveryMode.FIXED) {
      const vector = entry & 0xff;
      if (vector < 16) {
        if (index !== LVT_ERROR) this.error(ESR_RECEIVE_ILLEGAL_VECTOR);
        return;
      }
      // LINT0/LINT1 may be level-triggered fixed interrupts; the timer and error entries are edges.
      this.accept(DeliveryMode.FIXED, vector, (index === LVT_LINT0 || index === LVT_LINT1) && (entry & 0x8000) !== 0);
    } else if (mode === DeliveryMode.NMI) {
      this.options.cpu.raiseNmi();
    }
  }

  private error(bit: number): void {
    const fresh = (this.esrPending & bit) === 0;
    this.esrPending |= bit;
    if (fresh) this.localInterrupt(LVT_ERROR);
  }

  private endOfInterrupt(): void {
    const v = highestBit(this.isr);
    if (v < 0) return;
    clearBit(this.isr, v);
    if (testBit(this.tmr, v)) this.options.bus.broadcastEoi(v);
    this.update();
  }

  /** An IPI: the ICR was written. Delivery is immediate, so the delivery status bit always reads idle. */
  private sendIpi(): void {
    const low = this.icrLow;
    const mode = (low >> 8) & 7;
    const vector = low & 0xff;
    const levelTriggered = (low & 0x8000) !== 0;
    // An INIT level de-assert only synchronizes arbitration IDs (P6); nothing to deliver.
    if (mode === DeliveryMode.INIT && (low & 0xc000) === 0x8000) return;
    if ((mode === DeliveryMode.FIXED || mode === DeliveryMode.LOWEST_PRIORITY) && vector < 16) {
      this.error(ESR_SEND_ILLEGAL_VECTOR);
      return;
    }
    const bus = this.options.bus;
    switch ((low >> 18) & 3) {
      case 0: bus.deliver({ destination: this.icrHigh >>> 24, logical: (low & 0x800) !== 0, deliveryMode: mode, vector, levelTriggered }); break;
      case 1: this.accept(mode, vector, levelTriggered); break;
      case 2: bus.deliverToAll(null, mode, vector, levelTriggered); break;
      case 3: bus.deliverToAll(this, mode, vector, levelTriggered); break;
    }
  }

  // ---------------------------------------------------------------------------------------------------
  // Timer

  private get timerMode(): number {
    return (this.lvt[LVT_TIMER] >> 17) & 3;
  }

  /** Timer ticks per count: the divide configuration register (bits 0, 1, 3). */
  private get divisor(): number {
    const code = (this.divideConfig & 3) | ((this.divideConfig >> 1) & 4);
    return code === 7 ? 1 : 2 << code;
  }

  private get countNs(): number {
    return this.divisor * TIMER_NS_PER_TICK;
  }

  private startCount(count: number): void {
    this.initialCount = count >>> 0;
    this.timerStartNs = this.options.timers.nowNs();
    if (this.initialCount === 0 || this.timerMode === TIMER_TSC_DEADLINE) this.timer.cancel();
    else this.timer.arm(this.timerStartNs + this.initialCount * this.countNs);
  }

  private currentCount(): number {
    if (this.initialCount === 0 || this.timerMode === TIMER_TSC_DEADLINE) return 0;
    const elapsed = Math.floor((this.options.timers.nowNs() - this.timerStartNs) / this.countNs);
    if (this.timerMode === TIMER_PERIODIC) return this.initialCount - (elapsed % this.initialCount);
    return Math.max(0, this.initialCount - elapsed);
  }

  private timerExpired(nowNs: number): void {
    const mode = this.timerMode;
    if (mode === TIMER_PERIODIC && this.initialCount !== 0) {
      // Next period boundary after now: periods the host stalled through become one interrupt.
      const period = this.initialCount * this.countNs;
      this.timerStartNs += period * Math.max(1, Math.floor((nowNs - this.timerStartNs) / period));
      this.timer.arm(this.timerStartNs + period);
    } else if (mode === TIMER_TSC_DEADLINE) {
      this.tscDeadlineValue = 0;
    }
    this.localInterrupt(LVT_TIMER);
  }

  get tscDeadline(): number {
    return this.timerMode === TIMER_TSC_DEADLINE ? this.tscDeadlineValue : 0;
  }

  writeTscDeadline(tsc: number, deadlineNs: number): void {
    if (this.timerMode !== TIMER_TSC_DEADLINE) return;
    this.tscDeadlineValue = tsc;
    if (tsc === 0) this.timer.cancel();
    else this.timer.arm(deadlineNs);
  }

  // ---------------------------------------------------------------------------------------------------
  // Registers

  read(offset: number, size: number): number {
    const value = this.readRegister(offset >> 4);
    if (size === 4 && (offset & 3) === 0) return value >>> 0;
    return (value >>> ((offset & 3) * 8)) & (size === 1 ? 0xff : 0xffff);
  }

  private readRegister(index: number): number {
    if (index >= 0x10 && index < 0x28) {
      const bits = index < 0x18 ? this.isr : index < 0x20 ? this.tmr : this.irr;
      return bits[index & 7];
    }
    if (index >= 0x32 && index <= 0x37) return this.lvt[index - 0x32];
    switch (index) {
      case 0x02: return this.apicId << 24;
      case 0x03: return LOCAL_APIC_VERSION;
      case 0x08: return this.tpr;
      case 0x09: return this.arbitrationPriority;
      case 0x0a: return this.processorPriority();
      case 0x0b: return 0; // EOI is write-only
      case 0x0d: return this.ldr;
      case 0x0e: return this.dfr;
      case 0x0f: return this.svr;
      case 0x28: return this.esr;
      case 0x30: return this.icrLow;
      case 0x31: return this.icrHigh;
      case 0x38: return this.initialCount;
      case 0x39: return this.currentCount();
      case 0x3e: return this.divideConfig;
      default:
        this.error(ESR_ILLEGAL_REGISTER);
        return 0;
    }
  }

  write(offset: number, size: number, value: number): void {
    // Only aligned 32-bit accesses are defined; narrower writes are dropped.
    if (size !== 4 || (offset & 3) !== 0) return;
    const index = offset >> 4;
    if (index >= 0x32 && index <= 0x37) {
      this.writeLvt(index - 0x32, value);
      return;
    }
    switch (index) {
      case 0x02: this.apicId = value >>> 24; return;
      case 0x08: this.tpr = value & 0xff; this.update(); return;
      case 0x0b: this.endOfInterrupt(); return;
      case 0x0d: this.ldr = value & 0xff000000; return;
      case 0x0e: this.dfr = value | 0x0fffffff; return;
      case 0x0f: this.writeSvr(value); return;
      case 0x28: this.esr = this.esrPending; this.esrPending = 0; return;
      case 0x30: this.icrLow = value & ICR_WRITABLE; this.sendIpi(); return;
      case 0x31: this.icrHigh = value & 0xff000000; return;
      case 0x38: if (this.timerMode !== TIMER_TSC_DEADLINE) this.startCount(value); return;
      case 0x3e: {
        // A new divider applies from now: the remaining count goes on at the new rate.
        const remaining = this.currentCount();
        this.divideConfig = value & 0xb;
        if (remaining !== 0) this.continueCount(remaining);
        return;
      }
      case 0x03: case 0x09: case 0x0a: case 0x39:
        return; // read-only
      default:
        if (index >= 0x10 && index < 0x28) return; // ISR, TMR, IRR are read-only
        this.error(ESR_ILLEGAL_REGISTER);
    }
  }

  /** The current count goes on from `remaining` (after a divider change), the initial count unchanged. */
  private continueCount(remaining: number): void {
    const initial = this.initialCount;
    this.startCount(remaining);
    this.initialCount = initial;
    this.timerStartNs -= (initial - remaining) * this.countNs;
  }

  private writeSvr(value: number): void {
    const wasEnabled = this.softwareEnabled;
    this.svr = value & SVR_WRITABLE;
    // Software disable masks every LVT entry (and keeps them masked until enabled again).
    if (wasEnabled && !this.softwareEnabled) for (let i = 0; i < LVT_COUNT; i++) this.lvt[i] |= LVT_MASKED;
    this.update();
  }

  private writeLvt(index: number, value: number): void {
    let entry = value & LVT_WRITABLE[index];
    if (!this.softwareEnabled) entry |= LVT_MASKED;
    const oldMode = this.timerMode;
    this.lvt[index] = entry;
    if (index === LVT_TIMER && this.timerMode !== oldMode) {
      // Changing the timer mode disarms it (SDM 10.5.4.1).
      this.initialCount = this.tscDeadlineValue = 0;
      this.timer.cancel();
    }
    this.update();
  }

  // ---------------------------------------------------------------------------------------------------
  // State

  saveState(): VersionedState {
    return LOCAL_APIC_STATE.save({
      base: this.base >>> 0, apicId: this.apicId, tpr: this.tpr, ldr: this.ldr >>> 0, dfr: this.dfr >>> 0, svr: this.svr,
      irr: this.irr, isr: this.isr, tmr: this.tmr, lvt: this.lvt, icrLow: this.icrLow, icrHigh: this.icrHigh >>> 0,
      esr: this.esr, esrPending: this.esrPending, divideConfig: this.divideConfig, initialCount: this.initialCount,
      timerStartNs: this.timerStartNs, timerDeadlineNs: this.timer.armed ? this.timer.deadlineNs : null,
      tscDeadline: this.tscDeadlineValue, lint0: this.lint0, extIntMessage: this.extIntMessage,
    });
  }

  checkState(state: VersionedState): void {
    LOCAL_APIC_STATE.restore(this.id, state);
  }

  restoreState(state: VersionedState): void {
    const s = LOCAL_APIC_STATE.restore(this.id, state);
    // Bits software cannot set are dropped, as a write would.
    this.base = s.base;
    this.apicId = s.apicId;
    this.tpr = s.tpr;
    this.ldr = s.ldr & 0xff000000;
    this.dfr = s.dfr | 0x0fffffff;
    this.svr = s.svr & SVR_WRITABLE;
    this.irr.set(s.irr);
    this.isr.set(s.isr);
    this.tmr.set(s.tmr);
    s.lvt.forEach((v, i) => (this.lvt[i] = v & LVT_WRITABLE[i]));
    this.icrLow = s.icrLow & ICR_WRITABLE;
    this.icrHigh = s.icrHigh & 0xff000000;
    this.esr = s.esr & 0xff;
    this.esrPending = s.esrPending & 0xff;
    this.divideConfig = s.divideConfig & 0xb;
    this.initialCount = s.initialCount;
    this.timerStartNs = s.timerStartNs;
    this.tscDeadlineValue = s.tscDeadline;
    this.lint0 = s.lint0;
    this.extIntMessage = s.extIntMessage;
    if (s.timerDeadlineNs === null) this.timer.cancel();
    else this.timer.arm(s.timerDeadlineNs);
    this.map();
    this.update();
  }
}
