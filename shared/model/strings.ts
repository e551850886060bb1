/**
 * Strings an open connection keeps for its whole life (addresses, identities, for telemetry
 * and the admin views). A string built by concatenation is a tree of pieces in V8: an address
 * like "10.0.1.7:8080" takes about three objects (~90 B), an identity URI five or more
 * (~160 B), where one flat copy takes 40-70 B; and strings naming the same peer, built anew
 * for each connection, are as many copies.
 */

/**
 * The same text as one flat string (a fresh copy made in one piece: V8 has no call to flatten
 * a string, and JSON keeps every character as it was, lone surrogates included).
 */
export function flatString(s: string): string {
  return JSON.parse(JSON.stringify(s)) as string;
}

/**
 * One flat copy of each string put in, shared by every connection that names it. Bounded: when
 * full it starts over (strings already handed out stay valid, they are only no longer shared).
 */
export class StringTable {
  private readonly strings = new Map<string, string>();

  constructor(private readonly capacity = 4096) {}

  /** The table's copy of `s` (equal to it). */
  get(s: string): string {
    const known = this.strings.get(s);
    if (known !== undefined) return known;
    if (this.strings.size >= this.capacity) this.strings.clear();
    const copy = flatString(s);
    this.strings.set(copy, copy);
    return copy;
  }

  get size(): number {
    return this.strings.size;
  }
}
