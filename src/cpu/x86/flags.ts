/** EFLAGS bits. */
export const CF = 0x1, PF = 0x4, AF = 0x10, ZF = 0x40, SF = 0x80, TF = 0x100, IF = 0x200, DF = 0x400, OF = 0x800;
export const IOPL = 0x3000, NT = 0x4000, RF = 0x10000, VM = 0x20000, AC = 0x40000, VIF = 0x80000, VIP = 0x100000, ID = 0x200000;
/** The six status flags the lazy-flag machinery may compute on demand. */
export const STATUS_FLAGS = CF | PF | AF | ZF | SF | OF;
/** Bit 1 always reads as one. */
export const FIXED_ONE = 0x2;

/** Parity flag for every byte value: PF is set when the low byte has an even number of one bits. */
export const PARITY = new Uint8Array(256);
for (let i = 0; i < 256; i++) {
  let bits = 0;
  for (let b = i; b; b >>= 1) bits += b & 1;
  PARITY[i] = bits & 1 ? 0 : PF;
}

/** Kinds of the last flag-setting operation (the lazy-flags record). */
export const LAZY_ADD = 0, LAZY_SUB = 1, LAZY_LOGIC = 2;
