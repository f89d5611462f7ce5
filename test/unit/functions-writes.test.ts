// The metadata writes on a spec object: the preconditions each carries, and whether an old event
// is settled without a build. fake-gcs-server v1.55.1 ignores ifGenerationMatch and
// ifMetagenerationMatch on a metadata PATCH (see record.ts), and an object's creation time cannot
// be set there, so the integration tests can see neither; here a stand-in File records what is
// sent and answers 412 the way Cloud Storage does when the object changed since it was read.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { File } from '@google-cloud/storage';
import type { Storage } from '@google-cloud/storage';
import { parseFunctionConfig } from '../../src/functions/config.ts';
import { runSpec } from '../../src/functions/handler.ts';
import { jsonLogger } from '../../src/functions/logger.ts';
import { MAX_SPEC_BYTES } from '../../src/spec/spec.ts';
import { claimRun, claimValue, markUntagged, readState, RECORD_KEYS, writeRecord } from '../../src/functions/record.ts';

interface Write {
  readonly metadata: Record<string, string | null>;
  readonly options: Record<string, unknown>;
}

/** A spec object at generation 7 whose metageneration moves with each write, as Cloud Storage's does. */
function specObject(custom: Record<string, string> = {}) {
  const object = { generation: '7', metageneration: 1, size: 10, custom: { ...custom } };
  /** Called after each metadata read: what happens on the object between that read and the next. */
  let afterRead: ((reads: number) => void) | undefined;
  let reads = 0;
  const writes: Write[] = [];
  let downloads = 0;
  /** Called before a write is applied: a change made by someone else in between. */
  let interleave: (() => void) | undefined;
  const file = {
    name: 'a/artificer.json',
    bucket: { name: 'specs' },
    async getMetadata() {
      const md = { generation: object.generation, metageneration: String(object.metageneration), size: object.size, timeCreated: '2026-11-28T10:00:00.000Z', metadata: { ...object.custom } };
      afterRead?.(++reads);
      return [md];
    },
    async download() {
      downloads++;
      return [Buffer.from('{')]; // not a spec: a run that gets this far fails on it, and records that
    },
    async setMetadata(md: { metadata: Record<string, string | null> }, options: Record<string, unknown>) {
      writes.push({ metadata: md.metadata, options });
      const change = interleave;
      interleave = undefined;
      change?.();
      if (options.ifGenerationMatch !== object.generation || options.ifMetagenerationMatch !== String(object.metageneration)) {
        throw Object.assign(new Error('Precondition Failed'), { code: 412 });
      }
      for (const [k, v] of Object.entries(md.metadata)) {
        if (v === null) delete object.custom[k];
        else object.custom[k] = v;
      }
      object.metageneration++;
      return [{}];
    },
  };
  return { file: file as unknown as File, object, writes, downloads: () => downloads, afterEachRead: (f: (reads: number) => void) => (afterRead = f), interleaveNext: (f: () => void) => (interleave = f) };
}

const exact = (generation: string, metageneration: string) => ({ ifGenerationMatch: generation, ifMetagenerationMatch: metageneration });

test('claimRun: only over the generation and metageneration it read; after a 412, re-read and claimed again', async () => {
  const o = specObject({ [RECORD_KEYS.run]: 'older@1' });
  const state = (await readState(o.file))!;
  // Another run claims between this run's read and its write.
  o.interleaveNext(() => {
    o.object.custom[RECORD_KEYS.run] = 'other@2';
    o.object.metageneration++;
  });
  const claimed = await claimRun(o.file, state, 'mine@3');
  assert.equal(claimed.outcome, 'claimed');
  assert.deepEqual(o.writes.map((w) => w.options), [exact('7', '1'), exact('7', '2')]);
  assert.deepEqual(o.writes[1]!.metadata, { [RECORD_KEYS.run]: 'mine@3' }, 'the claim and nothing else');
  assert.equal(claimed.before?.record[RECORD_KEYS.run], 'other@2', 'before: the state the claim was written over');
  // A newer upload since the read: no claim on it.
  o.object.generation = '8';
  assert.deepEqual(await claimRun(o.file, state, 'late@4'), { outcome: 'superseded' });
  assert.equal(o.writes.length, 3, 'one refused write, nothing written to generation 8');
  assert.equal(o.object.custom[RECORD_KEYS.run], 'mine@3');
});

test("writeRecord: only while the claim is the run's own, over what it read; a 412 re-reads", async () => {
  const o = specObject({ [RECORD_KEYS.run]: 'mine@3', [RECORD_KEYS.error]: 'old failure' });
  o.interleaveNext(() => o.object.metageneration++); // any metadata write in between
  const rec = { status: 'succeeded', digest: `sha256:${'d'.repeat(64)}`, image: `r.example/app@sha256:${'d'.repeat(64)}`, tags: ['r.example/app:1'] } as const;
  assert.equal(await writeRecord(o.file, '7', rec, { run: 'mine@3' }), 'written');
  assert.deepEqual(o.writes.map((w) => w.options), [exact('7', '1'), exact('7', '2')]);
  assert.equal(o.object.custom[RECORD_KEYS.status], 'succeeded');
  assert.equal(o.object.custom[RECORD_KEYS.error], undefined, 'the earlier error deleted');
  // Null (delete) only for keys the object has: fake-gcs-server would store the others as "".
  assert.deepEqual(Object.entries(o.writes[1]!.metadata).filter(([, v]) => v === null).map(([k]) => k), [RECORD_KEYS.error]);

  // A later run claimed: this run writes nothing.
  o.object.custom[RECORD_KEYS.run] = 'later@4';
  const before = o.writes.length;
  assert.equal(await writeRecord(o.file, '7', { status: 'failed', error: 'x' }, { run: 'mine@3' }), 'superseded');
  // A newer upload: nothing either, guard or none.
  o.object.generation = '8';
  assert.equal(await writeRecord(o.file, '7', { status: 'failed', error: 'x' }), 'superseded');
  assert.equal(o.writes.length, before);
});

test('markUntagged: only while the claim is its own, over what it read', async () => {
  const o = specObject({ [RECORD_KEYS.run]: 'mine@3' });
  o.interleaveNext(() => o.object.metageneration++);
  assert.equal(await markUntagged(o.file, '7', 'mine@3'), true);
  assert.deepEqual(o.writes.map((w) => w.options), [exact('7', '1'), exact('7', '2')]);
  assert.equal(o.object.custom[RECORD_KEYS.untagged], 'mine@3');
  o.object.custom[RECORD_KEYS.run] = 'later@4';
  assert.equal(await markUntagged(o.file, '7', 'mine@3'), false);
  assert.equal(o.writes.length, 2);
});

describe('an event past ARTIFICER_MAX_EVENT_AGE whose generation carries an unfinished claim', () => {
  const created = Date.parse('2026-11-28T10:00:00.000Z');
  const run = async (claimedAt: number, eventAt: number) => {
    const o = specObject({ [RECORD_KEYS.run]: claimValue('killed', claimedAt) });
    const storage = { bucket: () => ({ name: 'specs', file: () => o.file }) } as unknown as Storage;
    const outcome = await runSpec(
      {
        storage,
        publisher: { publish: async () => [] },
        credentials: { resolve: async () => undefined },
        config: parseFunctionConfig({ ARTIFICER_MAX_EVENT_AGE: '600' }),
        logger: jsonLogger('warning', {}, () => {}),
        now: () => created + 3_600_000, // an hour after the upload: every event here is past the limit
      },
      { bucket: 'specs', name: 'a/artificer.json', generation: '7', time: new Date(eventAt), skipRecorded: false, trigger: 'rebuild' },
    );
    return { outcome, o };
  };

  test('started since the event (a killed attempt of it): settled as failed, nothing read', async () => {
    const { outcome, o } = await run(created + 20_000, created + 10_000);
    assert.equal(outcome, 'failed');
    assert.equal(o.downloads(), 0);
    assert.deepEqual(o.writes.map((w) => w.metadata[RECORD_KEYS.run]), [undefined], 'no claim: only the record');
    assert.match(o.object.custom[RECORD_KEYS.error]!, /^earlier attempts since 2026-11-28T10:00:10\.000Z .*did not finish/);
  });

  test('started before the event (an attempt of another one): no evidence about this event, which builds', async () => {
    const { o } = await run(created + 5_000, created + 10_000);
    assert.equal(o.writes[0]?.metadata[RECORD_KEYS.run]?.endsWith(`@${created + 3_600_000}`), true, 'claimed, to build');
    assert.equal(o.downloads(), 1, 'the spec was read');
    assert.doesNotMatch(o.object.custom[RECORD_KEYS.error] ?? '', /earlier attempts/);
  });
});

describe('an old rebuild of a recorded generation, settled without a build', () => {
  const created = Date.parse('2026-11-28T10:00:00.000Z');
  const recorded = { [RECORD_KEYS.status]: 'succeeded', [RECORD_KEYS.generation]: '7', [RECORD_KEYS.builtAt]: new Date(created + 1000).toISOString(), [RECORD_KEYS.digest]: `sha256:${'1'.repeat(64)}` };
  const settle = (prepare?: (o: ReturnType<typeof specObject>) => void) => {
    const o = specObject({ [RECORD_KEYS.run]: claimValue('inprogress', created + 20_000), ...recorded });
    prepare?.(o);
    const storage = { bucket: () => ({ name: 'specs', file: () => o.file }) } as unknown as Storage;
    const deps = {
      storage,
      publisher: { publish: async () => [] },
      credentials: { resolve: async () => undefined },
      config: parseFunctionConfig({ ARTIFICER_MAX_EVENT_AGE: '600' }),
      logger: jsonLogger('warning', {}, () => {}),
      now: () => created + 3_600_000,
    };
    return { o, result: runSpec(deps, { bucket: 'specs', name: 'a/artificer.json', generation: '7', time: new Date(created + 10_000), skipRecorded: false, trigger: 'rebuild' as const }) };
  };

  test('over the record it read: failed, not rebuilt', async () => {
    const { o, result } = settle();
    assert.equal(await result, 'failed');
    assert.match(o.object.custom[RECORD_KEYS.error]!, /^not rebuilt: earlier attempts since/);
  });

  test('a record written since the read (the run it took for killed finished): that record stands', async () => {
    const { o, result } = settle((spec) =>
      spec.afterEachRead((reads) => {
        // Between the handler's read and the record write's: the run in progress records its success.
        if (reads === 1) spec.object.custom[RECORD_KEYS.builtAt] = new Date(created + 3_599_000).toISOString();
      }),
    );
    assert.equal(await result, 'duplicate');
    assert.equal(o.object.custom[RECORD_KEYS.status], 'succeeded');
    assert.equal(o.writes.length, 0);
  });
});

test('a spec object over MAX_SPEC_BYTES is recorded as failed without a byte downloaded', async () => {
  const o = specObject();
  o.object.size = MAX_SPEC_BYTES + 1;
  const storage = { bucket: () => ({ name: 'specs', file: () => o.file }) } as unknown as Storage;
  const outcome = await runSpec(
    { storage, publisher: { publish: async () => [] }, credentials: { resolve: async () => undefined }, config: parseFunctionConfig({}), logger: jsonLogger('warning', {}, () => {}) },
    { bucket: 'specs', name: 'a/artificer.json', generation: '7', time: new Date(), skipRecorded: true, trigger: 'upload' },
  );
  assert.equal(outcome, 'failed');
  assert.equal(o.downloads(), 0);
  assert.match(o.object.custom[RECORD_KEYS.error]!, new RegExp(`is ${MAX_SPEC_BYTES + 1} bytes; a spec may be at most ${MAX_SPEC_BYTES} bytes`));
});
