/** Requests devices make of the machine: a system reset (keyboard controller, port 0x92, 0xCF9) or power-off (ACPI S5). */
export interface SystemControl {
  requestReset(): void;
  requestPowerOff(): void;
}
