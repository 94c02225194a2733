import { TsvmError } from '../base/errors.js';
import type { MachineConfig, NetdevConfig, NicConfig } from '../machine/config.js';
import type { NetBackend } from './net-backend.js';
import { PcapDump } from './pcap-dump.js';
import { openSocketNetdev } from './socket-netdev.js';
import { openTapNetdev } from './tap-netdev.js';
import { UserNetwork } from './user/user-network.js';

/** A configured card with its back end open. */
export interface OpenedNic {
  config: NicConfig;
  mac: Uint8Array;
  backend: NetBackend;
  /** The card's user-mode network (for forwarding ports at run time), when its back end is one. */
  userNetwork?: UserNetwork;
}

/** QEMU's first default MAC address; later cards count up in the last byte. */
const DEFAULT_MAC = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/** Cards the machine has room for (their register windows sit below the I/O APIC). */
const MAX_NICS = 8;

/**
 * Opens the back end of every card (each netdev serves one card), with its packet dump when one is asked for.
 * On failure, whatever was opened is closed again.
 */
export async function openNics(config: MachineConfig): Promise<OpenedNic[]> {
  const nics = config.nics ?? [];
  const netdevs = new Map((config.netdevs ?? []).map((n) => [n.id, n]));
  if (nics.length > MAX_NICS) throw new TsvmError(`at most ${MAX_NICS} network cards are supported`);
  const used = new Set<string>();
  for (const nic of nics) {
    if (!netdevs.has(nic.netdev)) throw new TsvmError(`-device ${nic.model}: netdev '${nic.netdev}' not found`);
    if (used.has(nic.netdev)) throw new TsvmError(`-device ${nic.model}: netdev '${nic.netdev}' already has a card`);
    used.add(nic.netdev);
  }
  for (const dump of config.netDumps ?? []) {
    if (!used.has(dump.netdev)) throw new TsvmError(`filter-dump: netdev '${dump.netdev}' has no card`);
  }
  const opened: OpenedNic[] = [];
  try {
    for (const [i, nic] of nics.entries()) {
      const netdev = netdevs.get(nic.netdev)!;
      const { backend: wire, userNetwork } = await openBackend(netdev);
      let backend = wire;
      for (const dump of config.netDumps ?? []) if (dump.netdev === netdev.id) backend = new PcapDump(backend, dump.file, dump.maxlen);
      const mac = nic.mac ?? Uint8Array.from(DEFAULT_MAC, (b, j) => (j === 5 ? (b + i) & 0xff : b));
      opened.push({ config: nic, mac, backend, userNetwork });
    }
  } catch (e) {
    await closeNics(opened);
    throw e;
  }
  return opened;
}

/** A netdev's back end, and the user-mode network itself when it is one (for port forwards at run time). */
async function openBackend(netdev: NetdevConfig): Promise<{ backend: NetBackend; userNetwork?: UserNetwork }> {
  switch (netdev.kind) {
    case 'socket':
      return { backend: await openSocketNetdev(netdev.id, netdev.socket) };
    case 'tap':
      return { backend: await openTapNetdev(netdev.id, netdev.ifname) };
    case 'user': {
      const userNetwork = await UserNetwork.open(netdev.user);
      return { backend: userNetwork, userNetwork };
    }
  }
}

export async function closeNics(nics: OpenedNic[]): Promise<void> {
  await Promise.all(nics.map((n) => n.backend.close()));
}
