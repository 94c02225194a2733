/**
 * Diagnostics go to stderr, and only for the topics named in TSVM_DEBUG (comma-separated, or "all"),
 * so that a guest's console on stdout stays clean.
 */
const enabled = new Set((process.env.TSVM_DEBUG ?? '').split(',').filter(Boolean));

export function debugEnabled(topic: string): boolean {
  return enabled.has(topic) || enabled.has('all');
}

export function debugLog(topic: string, message: string): void {
  if (debugEnabled(topic)) process.stderr.write(`[${topic}] ${message}\n`);
}
