/**
 * FNV-1a over a string: the one source of variation the simulator needs that
 * is not `Random`. Answers and cache-prefix identities come from it, so the
 * same request always gets the same answer and the same prefix the same id.
 */

/** FNV-1a, for deterministic variation. */
export const hash = (text: string): number => {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}
