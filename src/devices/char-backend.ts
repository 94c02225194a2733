/**
 * The host side a character device (UART, debug console) talks to. Input arrives pushed; the device queues
 * it until the guest reads, so nothing is lost while the guest is not yet reading.
 */
export interface CharBackend {
  write(bytes: Uint8Array): void;
  onInput(listener: (bytes: Uint8Array) => void): void;
  /** A break condition from the host side (QEMU's Ctrl-A b), for backends that can send one. */
  onBreak?(listener: () => void): void;
}
