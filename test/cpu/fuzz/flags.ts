/** Status flags, and what an instruction does to them, for masking the flags the Intel SDM leaves undefined. */
export const CF = 0x1, PF = 0x4, AF = 0x10, ZF = 0x40, SF = 0x80, DF = 0x400, OF = 0x800;
export const STATUS = CF | PF | AF | ZF | SF | OF;

/**
 * `reads`: flags the instruction's result depends on (they must be defined when it runs); `defines`: flags it
 * sets to a defined value; `undefines`: flags it leaves undefined. Others are unchanged. `maySkip`: the instruction
 * sits on a path that may not run (after a conditional branch).
 */
export interface FlagEffect {
  readonly reads: number;
  readonly defines: number;
  readonly undefines: number;
  readonly maySkip?: boolean;
}

export const NO_FLAGS: FlagEffect = { reads: 0, defines: 0, undefines: 0 };
export const effect = (reads: number, defines: number, undefines = 0): FlagEffect => ({ reads, defines, undefines });

/** Undefined flags after `effects` run from a state where `undefinedBefore` are undefined; null if one reads an undefined flag. */
export function applyEffects(undefinedBefore: number, effects: readonly FlagEffect[]): number | null {
  let undef = undefinedBefore;
  for (const e of effects) {
    if (e.reads & undef) return null;
    const after = (undef & ~(e.defines | e.undefines)) | e.undefines;
    undef = e.maySkip ? after | undef : after;
  }
  return undef;
}

/** Condition codes in encoding order (the suffix of Jcc/SETcc/CMOVcc) and the flags each tests. */
export const CONDITIONS: readonly { readonly name: string; readonly reads: number }[] = [
  { name: 'o', reads: OF }, { name: 'no', reads: OF }, { name: 'b', reads: CF }, { name: 'ae', reads: CF },
  { name: 'e', reads: ZF }, { name: 'ne', reads: ZF }, { name: 'be', reads: CF | ZF }, { name: 'a', reads: CF | ZF },
  { name: 's', reads: SF }, { name: 'ns', reads: SF }, { name: 'p', reads: PF }, { name: 'np', reads: PF },
  { name: 'l', reads: SF | OF }, { name: 'ge', reads: SF | OF }, { name: 'le', reads: ZF | SF | OF }, { name: 'g', reads: ZF | SF | OF },
];

export type ShiftOp = 'shl' | 'sal' | 'shr' | 'sar' | 'rol' | 'ror' | 'rcl' | 'rcr';

/** Flags after a shift or rotate of a `width`-bit operand by `count` (before masking to 5 bits). */
export function shiftEffect(op: ShiftOp, width: number, count: number): FlagEffect {
  const c = count & 31;
  const reads = op === 'rcl' || op === 'rcr' ? CF : 0;
  if (c === 0) return effect(reads, 0);
  const of = c === 1 ? OF : 0;
  if (op === 'rol' || op === 'ror' || op === 'rcl' || op === 'rcr') return effect(reads, CF | of, OF & ~of);
  // SHL/SHR: CF is undefined when the count reaches the operand size (SAR keeps shifting in the sign).
  const cfUndefined = op !== 'sar' && c >= width ? CF : 0;
  return effect(0, (CF | SF | ZF | PF | of) & ~cfUndefined, AF | (OF & ~of) | cfUndefined);
}

/** SHLD/SHRD by `count`; counts above a 16-bit width (undefined result) are never generated. */
export function doubleShiftEffect(count: number): FlagEffect {
  const c = count & 31;
  if (c === 0) return NO_FLAGS;
  const of = c === 1 ? OF : 0;
  return effect(0, CF | SF | ZF | PF | of, AF | (OF & ~of));
}
