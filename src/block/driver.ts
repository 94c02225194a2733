/**
 * The contract between disk devices (IDE, virtio-blk) and the block layer. Formats (raw, qcow, qcow2) and
 * backing chains implement it; devices only ever see this. All I/O is asynchronous and may be issued
 * concurrently; drivers serialize metadata updates themselves. Offsets and lengths are in bytes.
 */
export interface BlockDevice {
  /** Size of the virtual disk in bytes. */
  readonly virtualSize: number;
  readonly readOnly: boolean;
  read(offset: number, buffer: Uint8Array): Promise<void>;
  write(offset: number, data: Uint8Array): Promise<void>;
  flush(): Promise<void>;
  close(): Promise<void>;
}
