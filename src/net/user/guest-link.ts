/** What the stack's parts (TCP connections, UDP flows, forwarders) need from the stack to reach the guest. */
export interface GuestLink {
  /**
   * Sends an IPv4 datagram to the guest. False when it was dropped: the stack's bounded queue toward the NIC
   * is full, or the guest's MAC is not known yet (an ARP request went out instead).
   */
  sendIpv4(proto: number, src: number, dst: number, payload: Uint8Array): boolean;
  /** Whether the NIC takes frames now; TCP only sends data while it does, and resumes when told. */
  readonly writable: boolean;
}

/** A host address as the guest sees it: the host's loopback is the gateway, other IPv4 addresses stay. */
export type HostToGuestAddress = (hostAddress: string) => number;
