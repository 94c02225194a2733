/**
 * `-netdev tap,ifname=NAME` (with script=no, downscript=no: the user made the tap device and configures the
 * host side). Node cannot issue the TUNSETIFF ioctl that attaches a file to a tap device, so socat (Debian's
 * `socat` package) holds the device and relays each frame as one UDP datagram on the loopback: the back end is
 * then a `udp` socket netdev towards socat.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { TsvmError } from '../base/errors.js';
import type { NetBackend, NetReceiver } from './net-backend.js';
import { DatagramNetdev } from './socket-netdev.js';

const LOOPBACK = '127.0.0.1';
/** socat's buffer: one read of the tap device is one frame, so it must hold the largest one. */
const RELAY_BUFFER = 65536;

export async function openTapNetdev(id: string, ifname: string): Promise<NetBackend> {
  if (!/^[\w.-]{1,15}$/.test(ifname)) throw new TsvmError(`-netdev ${id}: bad interface name '${ifname}'`);
  const relayPort = await freeUdpPortGuess();
  const udp = new DatagramNetdev(id, { mode: 'udp', address: { host: LOOPBACK, port: relayPort }, localAddress: { host: LOOPBACK, port: 0 } });
  await udp.open();
  const relay = spawn('socat', ['-d', '-d', '-b', String(RELAY_BUFFER),
    `TUN,tun-type=tap,tun-name=${ifname},iff-no-pi,iff-up`,
    `UDP-DATAGRAM:${LOOPBACK}:${udp.localPort},bind=${LOOPBACK}:${relayPort}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  try {
    await relayStarted(relay, id, ifname);
  } catch (e) {
    relay.kill();
    await udp.close();
    throw e;
  }
  return new TapNetdev(udp, relay);
}

/** Resolves once socat has the tap device and its socket (its "starting data transfer loop" notice). */
function relayStarted(relay: ChildProcess, id: string, ifname: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let log = '';
    const fail = (why: string) => reject(new TsvmError(`-netdev ${id}: cannot attach tap device '${ifname}': ${why}`));
    relay.once('error', (e) => fail(`socat could not run (${e.message}; install Debian's socat package)`));
    relay.once('exit', () => fail((/E (.*)/.exec(log)?.[1] ?? log.trim().split('\n').pop()) || 'socat exited'));
    relay.stderr!.on('data', (d: Buffer) => {
      log += d.toString();
      if (log.includes('starting data transfer loop')) {
        relay.removeAllListeners('exit');
        resolve();
      }
    });
  });
}

/** A port on the loopback that was free a moment ago (socat binds it next; the race is only with other local binds). */
function freeUdpPortGuess(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createSocket('udp4');
    probe.once('error', reject);
    probe.bind(0, LOOPBACK, () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

class TapNetdev implements NetBackend {
  constructor(private readonly udp: DatagramNetdev, private readonly relay: ChildProcess) {}

  attach(receiver: NetReceiver): void {
    this.udp.attach(receiver);
  }

  send(frame: Uint8Array): void {
    this.udp.send(frame);
  }

  receiveReady(): void {
    this.udp.receiveReady();
  }

  async close(): Promise<void> {
    this.relay.kill();
    await this.udp.close();
  }
}
