/** Host-side servers the user-mode networking tests and benchmarks run on the loopback. */
import { type Socket as UdpSocket, createSocket } from 'node:dgram';
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface HostServer {
  port: number;
  close(): Promise<void>;
}

/** An HTTP server on 127.0.0.1 serving `body` at every path. */
export async function serveHttp(body: Uint8Array): Promise<HostServer> {
  const server = createHttpServer((_req, res) => {
    res.writeHead(200, { 'content-length': body.length, 'content-type': 'application/octet-stream' });
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

function bindUdp(): Promise<UdpSocket> {
  const socket = createSocket('udp4');
  return new Promise((resolve) => socket.bind(0, '127.0.0.1', () => resolve(socket)));
}

/** A DNS server on 127.0.0.1 answering A queries for `names` (name → dotted quad); other names get no answer records. */
export async function serveDns(names: Record<string, string>): Promise<HostServer> {
  const socket = await bindUdp();
  socket.on('message', (q, from) => {
    if (q.length < 12) return;
    let i = 12;
    const labels: string[] = [];
    while (i < q.length && q[i] !== 0) {
      labels.push(q.subarray(i + 1, i + 1 + q[i]).toString('latin1'));
      i += 1 + q[i];
    }
    const questionEnd = i + 5;
    if (questionEnd > q.length) return;
    const known = names[labels.join('.').toLowerCase()];
    const address = q.readUInt16BE(i + 1) === 1 ? known : undefined;
    // A response, recursion available; NXDOMAIN for a name it does not know, no records for another type.
    const header = Buffer.from([q[0], q[1], 0x81, known ? 0x80 : 0x83, 0, 1, 0, address ? 1 : 0, 0, 0, 0, 0]);
    const answer = address ? Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, ...address.split('.').map(Number)]) : Buffer.alloc(0);
    socket.send(Buffer.concat([header, q.subarray(12, questionEnd), answer]), from.port, from.address);
  });
  return { port: socket.address().port, close: () => new Promise((resolve) => socket.close(() => resolve())) };
}

/**
 * A read-only TFTP server (RFC 1350, octet mode) on 127.0.0.1 serving `body` under any name. Each transfer
 * answers from a new port, as TFTP does, and resends a block until it is acknowledged.
 */
export async function serveTftp(body: Uint8Array): Promise<HostServer> {
  const socket = await bindUdp();
  /** Stops each transfer still running. */
  const stops = new Set<() => void>();
  socket.on('message', async (request, from) => {
    if (request.readUInt16BE(0) !== 1) return;
    const transfer = await bindUdp();
    let block = 1;
    let timer: NodeJS.Timeout | undefined;
    const stop = () => {
      clearTimeout(timer);
      stops.delete(stop);
      transfer.close();
    };
    stops.add(stop);
    const sendBlock = () => {
      const data = body.subarray((block - 1) * 512, block * 512);
      const packet = Buffer.concat([Buffer.from([0, 3, block >> 8, block & 0xff]), data]);
      transfer.send(packet, from.port, from.address);
      clearTimeout(timer);
      timer = setTimeout(sendBlock, 1000);
    };
    transfer.on('message', (ack) => {
      if (ack.readUInt16BE(0) !== 4 || ack.readUInt16BE(2) !== (block & 0xffff)) return;
      if ((block - 1) * 512 + 512 > body.length) {
        stop();
        return;
      }
      block++;
      sendBlock();
    });
    sendBlock();
  });
  return {
    port: socket.address().port,
    close: async () => {
      for (const stop of [...stops]) stop();
      await new Promise<void>((resolve) => socket.close(() => resolve()));
    },
  };
}
