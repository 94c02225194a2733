import { setFlagsFromString } from 'node:v8';
import { debugEnabled } from '../../../base/log.js';
import { CompiledBlock, compileBlock, type BlockHost } from './block-compiler.js';

/** What the cache needs from the CPU besides the state the generated code uses. */
export interface CodeCacheHost extends BlockHost {
  /** Drops fast write paths to a physical page, so writes to it reach `written()`. */
  protectCodePage(page: number): void;
  /** Compiled code was dropped: the running block must return to the run loop at its next jump. */
  codeInvalidated(): void;
}

/** A page that was rewritten this often stops being compiled (code and data sharing a page). */
const MAX_INVALIDATIONS = 64;
/** Marks a start address that cannot begin a block (the first instruction crosses the page). */
const NO_BLOCK = new CompiledBlock(() => 0, NaN, 0, 0, 0, 0, -1);

const RECENT_SIZE = 1 << 16;

class CodePage {
  /** Blocks by (offset << 2 | mode). */
  readonly blocks = new Map<number, CompiledBlock>();
  /** Executions counted by the interpreter per (offset << 2 | mode) before a block is compiled. */
  readonly hits = new Uint8Array(4096 << 2);
  /** 1 for bytes some block was compiled from. */
  readonly code = new Uint8Array(4096);
  invalidations = 0;
}

/**
 * V8 tiers functions up for long-lived application code: feedback vectors after a few calls, optimization
 * after 64 KiB of bytecode run. Compiled blocks are thousands of small functions that are hot from the start,
 * and until TurboFan has them they run in V8's bytecode interpreter, slower than our own interpreter. Collecting
 * feedback from the first call and optimizing after a quarter of the usual budget took a boot of the default
 * guest from ~48 s to ~31 s of main-thread CPU time. The flags are process-wide; they only move tier-up
 * earlier.
 */
function tuneV8TieringForBlocks(): void {
  setFlagsFromString('--no-lazy-feedback-allocation');
  setFlagsFromString('--interrupt-budget=16384');
}

/**
 * Compiled blocks by physical address. The interpreter asks for a block at each instruction it is about to
 * execute; a start address executed `threshold` times gets compiled. Pages holding compiled code are
 * write-protected in the CPU's TLB: a write that touches compiled bytes drops every block of the page
 * (self-modifying code, a module loaded where code used to be, DMA from a disk).
 */
export class CodeCache {
  private readonly pages: (CodePage | undefined)[];
  /** 1 for RAM pages holding compiled code. */
  readonly codePages: Uint8Array;
  /** Direct-mapped front of the block maps, by RAM index: most lookups end here. */
  private readonly recent: (CompiledBlock | undefined)[] = new Array<CompiledBlock | undefined>(RECENT_SIZE).fill(undefined);
  compiledBlocks = 0;
  invalidations = 0;
  /** With TSVM_DEBUG=jit: how often each instruction left to the interpreter ran, printed at exit. */
  private readonly fallbacks: Map<string, number> | null = debugEnabled('jit') ? new Map() : null;

  constructor(private readonly host: CodeCacheHost, private readonly ram: Uint8Array, private readonly threshold: number) {
    tuneV8TieringForBlocks();
    const pageCount = Math.ceil(ram.length / 4096);
    this.pages = new Array<CodePage | undefined>(pageCount).fill(undefined);
    this.codePages = new Uint8Array(pageCount);
    const fallbacks = this.fallbacks;
    if (fallbacks) {
      process.on('exit', () => {
        const top = [...fallbacks].sort((a, b) => b[1] - a[1]).slice(0, 40);
        process.stderr.write(`[jit] ${this.compiledBlocks} blocks compiled, ${this.invalidations} page invalidations; interpreted from blocks:\n`);
        for (const [bytes, n] of top) process.stderr.write(`[jit]   ${bytes.padEnd(9)} ${n}\n`);
      });
    }
  }

  private readonly countFallback = (bytes: string): void => {
    this.fallbacks!.set(bytes, (this.fallbacks!.get(bytes) ?? 0) + 1);
  };

  /** The block for RAM index `phys` entered at `eip`, compiling it once hot; undefined to interpret. */
  lookup(phys: number, eip: number, mode: number): CompiledBlock | undefined {
    const recent = this.recent[phys & (RECENT_SIZE - 1)];
    if (recent !== undefined && recent.start === phys && recent.eip === eip && recent.mode === mode) return recent;
    return this.lookupSlow(phys, eip, mode);
  }

  private lookupSlow(phys: number, eip: number, mode: number): CompiledBlock | undefined {
    const pageNumber = phys >>> 12;
    let page = this.pages[pageNumber];
    if (page === undefined) page = this.pages[pageNumber] = new CodePage();
    const key = ((phys & 0xfff) << 2) | mode;
    const block = page.blocks.get(key);
    if (block !== undefined) {
      if (block.eip !== eip) return undefined;
      this.recent[phys & (RECENT_SIZE - 1)] = block;
      return block;
    }
    if (++page.hits[key] < this.threshold || page.invalidations >= MAX_INVALIDATIONS) return undefined;
    return this.compile(page, pageNumber, phys, eip, mode, key);
  }

  private compile(page: CodePage, pageNumber: number, phys: number, eip: number, mode: number, key: number): CompiledBlock | undefined {
    const pageStart = pageNumber << 12;
    const blockStartsAt = (pos: number): boolean => {
      const other = page.blocks.get(((pos & 0xfff) << 2) | mode);
      return other !== undefined && other !== NO_BLOCK;
    };
    const block = compileBlock(this.host, this.ram, phys, pageStart + 4096, eip, mode, blockStartsAt, this.fallbacks ? this.countFallback : undefined);
    if (!block) {
      page.blocks.set(key, NO_BLOCK);
      return undefined;
    }
    page.blocks.set(key, block);
    page.code.fill(1, block.codeStart - pageStart, block.codeEnd - pageStart);
    this.compiledBlocks++;
    if (this.codePages[pageNumber] === 0) {
      this.codePages[pageNumber] = 1;
      this.host.protectCodePage(pageNumber);
    }
    return block;
  }

  /** A write of `size` bytes at RAM index `phys` (within one page) to a page that holds code. */
  written(phys: number, size: number): void {
    const pageNumber = phys >>> 12;
    const page = this.pages[pageNumber];
    if (page === undefined) return;
    const offset = phys & 0xfff;
    const end = Math.min(offset + size, 4096);
    for (let i = offset; i < end; i++) {
      if (page.code[i] !== 0) {
        this.invalidate(page, pageNumber);
        return;
      }
    }
  }

  /** Device writes (DMA, firmware loading) to guest RAM: any range, any pages. */
  writtenRange(phys: number, length: number): void {
    for (let p = phys >>> 12; p <= (phys + length - 1) >>> 12 && p < this.codePages.length; p++) {
      const page = this.pages[p];
      if (this.codePages[p] !== 0 && page !== undefined) this.invalidate(page, p);
    }
  }

  private invalidate(page: CodePage, pageNumber: number): void {
    for (const block of page.blocks.values()) {
      const slot = block.start & (RECENT_SIZE - 1);
      if (this.recent[slot] === block) this.recent[slot] = undefined;
    }
    page.blocks.clear();
    page.code.fill(0);
    page.hits.fill(0);
    page.invalidations++;
    this.invalidations++;
    this.host.codeInvalidated();
    this.codePages[pageNumber] = 0;
  }

  /** Drops everything (machine reset). */
  clear(): void {
    this.pages.fill(undefined);
    this.recent.fill(undefined);
    this.codePages.fill(0);
  }
}
