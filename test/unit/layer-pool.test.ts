import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BufferPool, SLAB_BYTES } from '../../src/layer/pool.ts';

/** True when two views share any byte of memory. */
const overlaps = (a: Uint8Array, b: Uint8Array): boolean =>
  a.buffer === b.buffer && a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;

describe('BufferPool', () => {
  it('never hands out memory that is still leased', () => {
    const pool = new BufferPool();
    const held: Uint8Array[] = [];
    for (let i = 0; i < 40; i++) {
      const v = pool.lease(300_000);
      for (const h of held) assert.ok(!overlaps(v, h), `lease ${i} overlaps a held one`);
      held.push(v);
      if (i % 3 === 0) pool.release(held.shift()!); // release some, keep others across slab changes
    }
  });

  it('reuses a slab once every view from it is released', () => {
    const pool = new BufferPool();
    const a = pool.lease(SLAB_BYTES / 2);
    const b = pool.lease(SLAB_BYTES / 2);
    pool.release(a);
    const c = pool.lease(SLAB_BYTES / 2); // the first slab still has b out: a new slab
    assert.notEqual(c.buffer, a.buffer);
    pool.release(b);
    const d = pool.lease(SLAB_BYTES); // the first slab is spare again
    assert.equal(d.buffer, a.buffer);
  });

  it('a view that is never released is never overwritten', () => {
    const pool = new BufferPool();
    const kept = pool.lease(1024);
    kept.fill(7);
    for (let i = 0; i < 20; i++) {
      const v = pool.lease(SLAB_BYTES / 4);
      v.fill(1);
      pool.release(v);
    }
    assert.ok(kept.every((x) => x === 7));
  });

  it('an empty lease (an empty file) never holds a slab back', () => {
    const pool = new BufferPool();
    const empty = pool.lease(0);
    const a = pool.lease(SLAB_BYTES);
    pool.release(a); // `empty` is never released, as by a consumer that skips empty chunks
    assert.equal(empty.byteLength, 0);
    assert.equal(pool.lease(SLAB_BYTES).buffer, a.buffer);
  });

  it('ignores memory it did not lease and refuses impossible sizes', () => {
    const pool = new BufferPool();
    pool.release(Buffer.alloc(10));
    assert.throws(() => pool.lease(SLAB_BYTES + 1), RangeError);
    assert.throws(() => pool.lease(-1), RangeError);
  });
});
