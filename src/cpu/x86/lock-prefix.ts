/**
 * Whether a LOCK prefix is allowed on an instruction (anything else raises #UD): the read-modify-write
 * instructions ADD ADC AND BTC BTR BTS CMPXCHG CMPXCHG8B DEC INC NEG NOT OR SBB SUB XOR XADD XCHG, and only
 * with a memory destination. `op` is the opcode byte after the prefixes, `op2` the byte after 0x0F (for
 * two-byte opcodes), `modrm` the ModR/M byte that follows the opcode. Shared by the interpreter and the block
 * compiler, which both decode before deciding.
 */
export function lockAllowed(op: number, op2: number, modrm: number): boolean {
  if (modrm >= 0xc0) return false;
  const reg = (modrm >> 3) & 7;
  if (op < 0x40 && op !== 0x0f) return (op & 7) < 2 && op >> 3 !== 7; // ALU r/m, reg (not CMP)
  switch (op) {
    case 0x80: case 0x81: case 0x82: case 0x83: return reg !== 7; // group 1 but CMP
    case 0x86: case 0x87: return true; // XCHG
    case 0xf6: case 0xf7: return reg === 2 || reg === 3; // NOT, NEG
    case 0xfe: case 0xff: return reg < 2; // INC, DEC
    case 0x0f:
      switch (op2) {
        case 0xab: case 0xb3: case 0xbb: return true; // BTS, BTR, BTC r/m, reg
        case 0xba: return reg >= 5; // BTS, BTR, BTC r/m, imm8
        case 0xb0: case 0xb1: case 0xc0: case 0xc1: return true; // CMPXCHG, XADD
        case 0xc7: return reg === 1; // CMPXCHG8B
      }
  }
  return false;
}
