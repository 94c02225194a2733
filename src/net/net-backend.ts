/**
 * One virtual Ethernet wire between a guest NIC (e1000, virtio-net) and a network back end (user-mode networking,
 * socket, tap). Frames are whole Ethernet frames without the FCS. Flow control runs both ways so that nothing
 * buffers without bound: the NIC refuses a frame it has no room for, and the back end then holds it (and stops
 * reading from its host sockets) until the NIC says it has room again.
 */
export interface NetReceiver {
  /** A frame from the network for the guest; false when the NIC has no room now (the frame was not taken). */
  receive(frame: Uint8Array): boolean;
}

export interface NetBackend {
  /** Connects the NIC; frames for the guest go to it from then on. */
  attach(receiver: NetReceiver): void;
  /** A frame the guest sent. The back end copies what it keeps: the NIC may reuse the buffer. */
  send(frame: Uint8Array): void;
  /** The NIC has room again after refusing a frame: deliver what is held, resume reading. */
  receiveReady(): void;
  /** Releases host sockets and listeners. */
  close(): Promise<void>;
}
