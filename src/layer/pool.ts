/** Bytes per slab: one full-size stream read, or many small files. */
export const SLAB_BYTES = 1024 * 1024;
/** Empty slabs kept for reuse; more would only hold memory a pass no longer needs. */
const SPARE_SLABS = 2;

interface Slab {
  readonly bytes: Buffer;
  /** Next free offset. */
  used: number;
  /** Views leased and not yet released. */
  leases: number;
}

/**
 * Recycles the memory that file contents are read into during one layer pass.
 *
 * Why: on the VMs CI runs on, the first write to freshly allocated memory costs a page fault per
 * 4 KiB, and a read into a fresh buffer (what `readFileSync` and `createReadStream` do for every
 * file and every chunk) costs several times the copy itself: 5,000 small files read in ~170 ms
 * into new buffers, ~70 ms into a reused one. Fresh buffers are also garbage the moment they
 * are copied into a gzip member, and V8 frees that memory only when a GC finds it, so RSS grew
 * with them (bench/README.md).
 *
 * A source {@link lease}s a view, reads into it and hands it on; whoever copies the bytes out
 * {@link release}s it. A slab is reused only once every view leased from it has been released,
 * so a consumer that never releases (a test collecting chunks, a tarball writer) is safe: its
 * views are never overwritten, they just are not recycled.
 */
export class BufferPool {
  readonly #slabs = new Map<ArrayBufferLike, Slab>();
  readonly #spare: Slab[] = [];
  #current: Slab | undefined;

  /**
   * `size` bytes (at most {@link SLAB_BYTES}) of memory no one else is using. An empty lease
   * takes nothing from a slab: there is nothing to recycle, and a consumer that skips empty
   * chunks (never releasing them) would otherwise keep a whole slab from being reused.
   */
  lease(size: number): Buffer {
    if (!Number.isInteger(size) || size < 0 || size > SLAB_BYTES) throw new RangeError(`cannot lease ${size} bytes`);
    if (size === 0) return Buffer.alloc(0);
    let slab = this.#current;
    if (!slab || slab.used + size > SLAB_BYTES) {
      slab = this.#spare.pop() ?? this.#newSlab();
      this.#current = slab;
    }
    const view = slab.bytes.subarray(slab.used, slab.used + size);
    slab.used += size;
    slab.leases++;
    return view;
  }

  /** Gives back a view from {@link lease} whose bytes are no longer needed. Other views are ignored. */
  release(view: Uint8Array): void {
    const slab = this.#slabs.get(view.buffer);
    if (!slab || slab.leases === 0) return;
    if (--slab.leases > 0) return;
    slab.used = 0;
    if (slab !== this.#current && this.#spare.length < SPARE_SLABS) this.#spare.push(slab);
    else if (slab !== this.#current) this.#slabs.delete(slab.bytes.buffer);
  }

  #newSlab(): Slab {
    const slab: Slab = { bytes: Buffer.allocUnsafeSlow(SLAB_BYTES), used: 0, leases: 0 };
    this.#slabs.set(slab.bytes.buffer, slab);
    return slab;
  }
}
