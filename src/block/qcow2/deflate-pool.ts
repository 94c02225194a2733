/**
 * Raw deflate on a few worker threads running zlib's synchronous API. node:zlib's async one-shot
 * functions also use threads (libuv's pool), but build a stream per call and cost about half again as
 * much CPU per 64 KiB cluster; compressing whole images is CPU-bound, so that matters.
 */
import { availableParallelism } from 'node:os';
import { deflateRaw, type ZlibOptions } from 'node:zlib';
import { Worker } from 'node:worker_threads';

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { deflateRawSync } = require('node:zlib');
parentPort.on('message', (m) => {
  try {
    const z = deflateRawSync(m.buf, m.opts);
    const out = new Uint8Array(z.length);
    out.set(z);
    parentPort.postMessage({ id: m.id, z: out }, [out.buffer]);
  } catch (e) {
    parentPort.postMessage({ id: m.id, error: String(e && e.message || e) });
  }
});
`;

interface Job {
  resolve: (z: Uint8Array) => void;
  reject: (e: Error) => void;
}

interface PoolWorker {
  worker: Worker;
  jobs: Map<number, Job>;
}

let pool: PoolWorker[] | undefined;
let poolFailed = false;
let nextId = 0;
let rr = 0;

function getPool(): PoolWorker[] | undefined {
  if (pool !== undefined || poolFailed) return pool;
  try {
    const n = Math.max(1, Math.min(4, availableParallelism()));
    pool = [];
    for (let i = 0; i < n; i++) {
      const w: PoolWorker = { worker: new Worker(WORKER_SOURCE, { eval: true }), jobs: new Map() };
      w.worker.unref();
      w.worker.on('message', (m: { id: number; z?: Uint8Array; error?: string }) => {
        const job = w.jobs.get(m.id);
        if (!job) return;
        w.jobs.delete(m.id);
        if (w.jobs.size === 0) w.worker.unref();
        if (m.z !== undefined) job.resolve(m.z);
        else job.reject(new Error(m.error ?? 'deflate failed'));
      });
      w.worker.on('error', (e) => failWorker(w, e));
      w.worker.on('exit', () => failWorker(w, new Error('deflate worker exited')));
      pool.push(w);
    }
  } catch {
    poolFailed = true;
    pool = undefined;
  }
  return pool;
}

function failWorker(w: PoolWorker, e: Error): void {
  if (pool) {
    pool = pool.filter((p) => p !== w);
    if (pool.length === 0) {
      pool = undefined;
      poolFailed = true;
    }
  }
  for (const job of w.jobs.values()) job.reject(e);
  w.jobs.clear();
}

/** Compresses `buf` (copied to a worker; the caller may reuse it once this returns). */
export function deflateRawParallel(buf: Uint8Array, opts: ZlibOptions): Promise<Uint8Array> {
  const p = getPool();
  if (p === undefined || p.length === 0) {
    return new Promise((resolve, reject) => deflateRaw(buf, opts, (e, z) => (e ? reject(e) : resolve(z))));
  }
  const w = p[rr++ % p.length]!;
  const id = nextId++;
  return new Promise((resolve, reject) => {
    if (w.jobs.size === 0) w.worker.ref();
    w.jobs.set(id, { resolve, reject });
    // A view would take its whole ArrayBuffer along: send a copy of just these bytes.
    const copy = buf.slice();
    w.worker.postMessage({ id, buf: copy, opts }, [copy.buffer]);
  });
}
