import type { StateValue, VersionedState } from './state.js';

/**
 * For tests of hostile states: a deep copy of `state` with the field at `path` (names and list indices under
 * `fields`) replaced by `value`, or removed when `value` is undefined.
 */
export function alterState(state: VersionedState, path: (string | number)[], value: StateValue | undefined): VersionedState {
  const copy = structuredClone(state);
  let node: StateValue = copy.fields;
  for (const [i, key] of path.entries()) {
    const last = i === path.length - 1;
    if (Array.isArray(node) && typeof key === 'number') {
      if (!last) node = node[key];
      else if (value === undefined) node.splice(key, 1);
      else node[key] = value;
    } else if (typeof node === 'object' && node !== null && !Array.isArray(node) && !ArrayBuffer.isView(node) && typeof key === 'string') {
      if (!last) node = node[key];
      else if (value === undefined) delete node[key];
      else node[key] = value;
    } else {
      throw new Error(`alterState: no field ${path.slice(0, i + 1).join('.')}`);
    }
  }
  return copy;
}
