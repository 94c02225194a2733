/** `tsvm-img convert` (its own module: the command loads only the block-layer code it uses). */
import { TsvmError } from '../../base/errors.js';
import { type BlockDriver, openImage } from '../../block/block-driver.js';
import { convertImage, copyImage } from '../../block/convert.js';
import { checkFormat, creationOptions, openForCommand } from './open.js';

export async function convertCommand(inputs: string[], output: string, opts: {
  format?: string; outFormat?: string; compress: boolean; progress: boolean; options?: string; backing?: string; noCreate: boolean;
  /** No fsync of the output (cache mode 'unsafe', qemu-img convert's default). */
  unsafe?: boolean;
  /** -S: shortest zero run left sparse (0: fully allocated output). */
  minSparse?: number;
}): Promise<number> {
  if (inputs.length !== 1) throw new TsvmError('converting several images into one is not supported by this version');
  const outFormat = checkFormat(opts.outFormat ?? 'raw', output)!;
  const src = await openForCommand(inputs[0], opts.format, true);
  let shown = -1;
  const progress = opts.progress ? (done: number, total: number) => {
    const percent = (100 * done) / Math.max(total, 1);
    if (Math.floor(percent) === shown) return;
    shown = Math.floor(percent);
    process.stdout.write(`    (${percent.toFixed(2)}/100%)\r`);
  } : undefined;
  try {
    if (opts.noCreate) {
      const dst = await openImage(output, { format: outFormat, lock: true, unsafe: opts.unsafe === true });
      try {
        await copyInto(src, dst, opts.compress, progress, opts.minSparse);
      } finally {
        await dst.close();
      }
    } else {
      const { options } = creationOptions(outFormat, opts.options, output);
      if (opts.backing !== undefined) options.backingFile = opts.backing;
      const convertOptions: Parameters<typeof convertImage>[3] = { ...options, compress: opts.compress, unsafe: opts.unsafe === true };
      if (opts.minSparse !== undefined) convertOptions.minSparse = opts.minSparse;
      if (progress) convertOptions.onProgress = progress;
      progress?.(0, 1);
      await convertImage(src, output, outFormat, convertOptions);
    }
    if (progress) process.stdout.write('    (100.00/100%)\n');
  } finally {
    await src.close();
  }
  return 0;
}

async function copyInto(src: BlockDriver, dst: BlockDriver, compress: boolean, progress?: (done: number, total: number) => void, minSparse?: number): Promise<void> {
  if (compress) throw new TsvmError('-c and -n together are not supported by this version');
  if (dst.virtualSize < src.virtualSize) throw new TsvmError('Target image is smaller than the source');
  // The target's old contents are overwritten, zero ranges included.
  await copyImage(src, dst, { zeroOverBacking: true, ...(progress && { onProgress: progress }), ...(minSparse !== undefined && { minSparse }) });
  await dst.flush();
}
