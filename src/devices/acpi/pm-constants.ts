/** I/O addresses of the ACPI power-management registers, as on QEMU's pc machine (PIIX4 PM at PMBA 0x600). */
export const PM_IO_BASE = 0x600;
export const PM1A_EVT_OFFSET = 0;
export const PM1A_CNT_OFFSET = 4;
export const PM_TMR_OFFSET = 8;
export const PM1A_EVT_BLK = PM_IO_BASE + PM1A_EVT_OFFSET;
export const PM1A_EVT_LEN = 4;
export const PM1A_CNT_BLK = PM_IO_BASE + PM1A_CNT_OFFSET;
export const PM1A_CNT_LEN = 2;
export const PM_TMR_BLK = PM_IO_BASE + PM_TMR_OFFSET;
export const PM_TMR_LEN = 4;
export const GPE0_BLK = 0xafe0;
export const GPE0_BLK_LEN = 4;
export const SCI_IRQ = 9;
/** SLP_TYP value of \_S5 (soft off), as QEMU's PIIX4 decodes it. */
export const SLP_TYP_S5 = 0;
export const PM_TIMER_HZ = 3579545;
