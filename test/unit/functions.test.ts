import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { ArtificerError, NetworkError, RegistryError, TagsIncompleteError, UsageError } from '../../src/errors.ts';
import { bundleEntries, bundlePath } from '../../src/source/bundle.ts';
import { isAllowedTarget, MIN_MAX_EVENT_AGE_SECONDS, parseFunctionConfig } from '../../src/functions/config.ts';
import { MISSING_FILE_GRACE_MS, tagsAfterFailure } from '../../src/functions/handler.ts';
import { isSpecObject, parseRebuildMessage, parseStorageEvent } from '../../src/functions/events.ts';
import { GoogleCredentialProvider, isGoogleRegistry } from '../../src/functions/google-credentials.ts';
import { jsonLogger, redactSecrets } from '../../src/functions/logger.ts';
import { isTemporaryGcsError } from '../../src/functions/gcs-source.ts';
import { crc32c, crc32cValidator } from '../../src/functions/crc32c.ts';
import { createStorage } from '../../src/functions/storage.ts';
import { CRC32C } from '@google-cloud/storage';
import {
  claimValue, keptImage, layerInputs, MAX_ERROR_BYTES, MAX_ERROR_WITH_IMAGE_BYTES, MAX_RECORD_BYTES, MAX_TAGS_BYTES, metadataBytes, RECORD_KEYS, recordedLayer, recordError, recordFields,
  recordTags, tagsUnmovedSince, unfinishedClaim, type ObjectState,
} from '../../src/functions/record.ts';
import { createLayer, LAYER_FORMAT } from '../../src/layer/layer.ts';
import type { LayerEntry } from '../../src/layer/entry.ts';
import { metadataEnv, startMetadataServer } from '../support/metadata-server.ts';
import { tarOf } from '../support/bundles.ts';

describe('parseFunctionConfig', () => {
  test('defaults: nothing allowed, 1 h event age', () => {
    const c = parseFunctionConfig({});
    assert.deepEqual(c.allowedTargets, []);
    assert.equal(c.maxEventAgeMs, 3_600_000);
    assert.equal(c.logLevel, 'info');
    assert.equal(c.rebuild, undefined);
  });
  test('every variable', () => {
    const c = parseFunctionConfig({
      ARTIFICER_ALLOWED_TARGETS: ' us-docker.pkg.dev/p/r/ , Gcr.io/p/app ',
      ARTIFICER_INSECURE_REGISTRIES: '127.0.0.1:5000',
      ARTIFICER_GOOGLE_REGISTRIES: '127.0.0.1:5000',
      ARTIFICER_REBUILD_PREFIX: 'gs://specs-bucket/team/',
      ARTIFICER_REBUILD_TOPIC: 'projects/acme-prod/topics/artificer-rebuild',
      ARTIFICER_MAX_EVENT_AGE: '300',
      ARTIFICER_REGISTRY_RETRY_ATTEMPTS: '2',
      ARTIFICER_LOG_LEVEL: 'DEBUG',
      SOURCE_DATE_EPOCH: '1700000000',
    });
    assert.deepEqual(c.allowedTargets, ['us-docker.pkg.dev/p/r/', 'gcr.io/p/app']);
    assert.deepEqual(c.rebuild, { bucket: 'specs-bucket', prefix: 'team/' });
    assert.equal(c.rebuildTopic, 'projects/acme-prod/topics/artificer-rebuild');
    assert.equal(c.maxEventAgeMs, 300_000);
    assert.equal(c.registryRetryAttempts, 2);
    assert.equal(c.logLevel, 'debug');
    assert.equal(c.sourceDateEpoch, 1700000000);
  });
  const bad: Array<[Record<string, string>, RegExp]> = [
    [{ ARTIFICER_ALLOWED_TARGETS: '*' }, /repository prefix/],
    // A wildcard is no pattern here: refused, rather than kept as a prefix that matches nothing.
    [{ ARTIFICER_ALLOWED_TARGETS: 'us-docker.pkg.dev/p/*' }, /"us-docker.pkg.dev\/p\/\*" must be a repository prefix/],
    [{ ARTIFICER_REBUILD_PREFIX: 'specs/' }, /gs:\/\/bucket/],
    [{ ARTIFICER_REBUILD_TOPIC: 'artificer-rebuild' }, /full topic name like projects\/my-project\/topics\/artificer-rebuild/],
    [{ ARTIFICER_MAX_EVENT_AGE: '-1' }, /non-negative integer/],
    [{ ARTIFICER_MAX_EVENT_AGE: '0' }, /at least 300 seconds/],
    // At 90 s, a spec whose files arrive late (retried for 3 minutes) could be settled as "did not finish".
    [{ ARTIFICER_MAX_EVENT_AGE: '90' }, /at least 300 seconds/],
    [{ ARTIFICER_LOG_LEVEL: 'loud' }, /debug, info or warning/],
    [{ SOURCE_DATE_EPOCH: '2147483648' }, /at most 2147483647 \(2038-01-19T03:14:07Z/],
    // Number() took these: a typo'd or hex value must not become some other number of seconds.
    [{ ARTIFICER_BUILD_TIMEOUT: '1e3' }, /ARTIFICER_BUILD_TIMEOUT must be a non-negative integer in decimal digits, got "1e3"/],
    [{ SOURCE_DATE_EPOCH: '0x10' }, /SOURCE_DATE_EPOCH must be a non-negative integer in decimal digits/],
    // 0 means no time for a build, no attempt at a request: it was quietly raised to 1.
    [{ ARTIFICER_BUILD_TIMEOUT: '0' }, /ARTIFICER_BUILD_TIMEOUT must be at least 1, got "0"/],
    [{ ARTIFICER_REGISTRY_RETRY_ATTEMPTS: '0' }, /ARTIFICER_REGISTRY_RETRY_ATTEMPTS must be at least 1, got "0"/],
  ];
  for (const [env, message] of bad) {
    test(`rejects ${JSON.stringify(env)}`, () => assert.throws(() => parseFunctionConfig(env), (e: unknown) => e instanceof UsageError && message.test(e.message)));
  }
  test('the least ARTIFICER_MAX_EVENT_AGE is above the grace for files uploaded after their spec', () => {
    assert.ok(MIN_MAX_EVENT_AGE_SECONDS * 1000 > MISSING_FILE_GRACE_MS);
  });
});

test('isAllowedTarget matches whole path components', () => {
  const allowed = ['reg.example/team', 'us-docker.pkg.dev/p/r/'];
  assert.ok(isAllowedTarget('reg.example/team', allowed));
  assert.ok(isAllowedTarget('reg.example/team/app', allowed));
  assert.ok(!isAllowedTarget('reg.example/team-evil/app', allowed));
  assert.ok(!isAllowedTarget('reg.example/teamapp', allowed));
  assert.ok(isAllowedTarget('us-docker.pkg.dev/p/r/app', allowed));
  assert.ok(!isAllowedTarget('us-docker.pkg.dev/p/r', allowed));
  assert.ok(!isAllowedTarget('evil.example/reg.example/team', allowed));
  assert.ok(!isAllowedTarget('anything/x', []));
  // Registry hosts are case-insensitive: a host written in capitals is the same registry.
  assert.ok(isAllowedTarget('Reg.Example/team/app', allowed));
  assert.ok(isAllowedTarget('US-Docker.pkg.dev/p/r/app', allowed));
});

test('isTemporaryGcsError: what a retry can fix', () => {
  const err = (props: Record<string, unknown>): Error => Object.assign(new Error('x'), props);
  for (const t of [err({ code: 503 }), err({ code: 500 }), err({ code: 408 }), err({ status: 502 }), err({ code: 429 }), err({ code: 'ECONNRESET' }), err({ code: 'CONTENT_DOWNLOAD_MISMATCH' }), err({ cause: err({ code: 'ETIMEDOUT' }) })]) {
    assert.ok(isTemporaryGcsError(t), JSON.stringify(t));
  }
  for (const p of [err({ code: 403 }), err({ code: 400 }), err({ code: 'ERR_INVALID_ARG_TYPE' }), new Error('plain')]) assert.ok(!isTemporaryGcsError(p), p.message);
});

test('recordTags: whole tags only, within the metadata value limit, and how many were left out', () => {
  const tags = Array.from({ length: 80 }, (_, i) => `europe-docker.pkg.dev/acme-prod/apps/service-${i}:release-2026.11.${i}`);
  const { tags: value, omitted } = recordTags(tags);
  assert.ok(Buffer.byteLength(value) <= MAX_TAGS_BYTES, String(value.length));
  const kept = value.split(',');
  assert.deepEqual(kept, tags.slice(0, kept.length), 'a prefix of the list, no tag cut in half');
  assert.equal(omitted, tags.length - kept.length);
  assert.ok(omitted > 0);
  assert.deepEqual(recordTags(tags.slice(0, 3)), { tags: tags.slice(0, 3).join(','), omitted: 0 });
  assert.deepEqual(recordTags([]), { tags: '', omitted: 0 });
});

test('isSpecObject', () => {
  for (const yes of ['artificer.json', 'a/b/artificer.json', 'x/web.artificer.json']) assert.ok(isSpecObject(yes), yes);
  for (const no of ['artificer.json.bak', 'a/.artificer.json', 'myartificer.json', 'a/artificer.json/x', 'app.js']) assert.ok(!isSpecObject(no), no);
});

describe('crc32c', () => {
  test('the check values of RFC 3720 (iSCSI) and of the CRC catalogue', () => {
    assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
    assert.equal(crc32c(Buffer.alloc(32, 0)), 0x8a9136aa);
    assert.equal(crc32c(Buffer.alloc(32, 0xff)), 0x62a8ab43);
    assert.equal(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => i))), 0x46dd794e);
    assert.equal(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => 31 - i))), 0x113fdb5c);
    assert.equal(crc32c(Buffer.alloc(0)), 0);
  });

  test("the same as @google-cloud/storage's own, for every length and however the bytes are cut", () => {
    const data = Buffer.from(Array.from({ length: 4099 }, (_, i) => (i * 131 + 7) & 0xff));
    for (const len of [1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 4099]) {
      const ref = new CRC32C();
      ref.update(data.subarray(0, len));
      const v = crc32cValidator();
      // Cut at odd places: the 8-byte steps must not depend on where a chunk starts.
      for (let at = 0; at < len; at += 13) v.update(data.subarray(at, Math.min(len, at + 13)));
      assert.equal(v.toString(), ref.toString(), `length ${len}`);
      assert.ok(v.validate(ref.toString()));
      assert.ok(!v.validate(new CRC32C(1).toString()));
    }
  });

  test("is what the function's storage client checks downloads with", () => {
    assert.equal(createStorage({}).crc32cGenerator, crc32cValidator);
    assert.equal(createStorage({ STORAGE_EMULATOR_HOST: 'http://127.0.0.1:1' }).crc32cGenerator, crc32cValidator);
  });

  test('the validator speaks base64 of the big-endian value, as x-goog-hash does', () => {
    const v = crc32cValidator();
    v.update(Buffer.from('data'));
    assert.equal(v.toString(), 'rth90Q==');
    assert.ok(v.validate('rth90Q=='));
    assert.ok(!v.validate('DkjKuA=='));
  });
});

describe('the recorded layer', () => {
  const digest = `sha256:${'a'.repeat(64)}`;
  const diffId = `sha256:${'b'.repeat(64)}`;
  const inputs = layerInputs('f'.repeat(64), { mtime: 0 });
  const rec = (over: Record<string, string> = {}): Record<string, string> => ({
    [RECORD_KEYS.status]: 'succeeded',
    [RECORD_KEYS.layer]: digest,
    [RECORD_KEYS.layerDiffId]: diffId,
    [RECORD_KEYS.layerSize]: '1234',
    [RECORD_KEYS.layerInputs]: inputs,
    ...over,
  });

  test('is read back when it was made of the same inputs', () => {
    assert.deepEqual(recordedLayer(rec(), inputs), { digest, diffId, size: 1234 });
  });

  test('inputs differ with the objects, the policy and nothing else', () => {
    assert.equal(layerInputs('f'.repeat(64), { mtime: 0 }), inputs, 'a function of its arguments');
    const others = [
      layerInputs('e'.repeat(64), { mtime: 0 }),
      layerInputs('f'.repeat(64), { mtime: 1 }),
      layerInputs('f'.repeat(64), { mtime: 0, chown: { uid: 1000, gid: 1000 } }),
      layerInputs('f'.repeat(64), { mtime: 0, keepSpecialBits: true }),
    ];
    assert.equal(new Set([inputs, ...others]).size, 5);
    assert.equal(layerInputs('f'.repeat(64), { mtime: 0, keepSpecialBits: false }), inputs, 'an absent default is the default');
  });

  test('is ignored unless the record is a success of the same inputs with well-formed fields', () => {
    const cases: Array<[string, Record<string, string>]> = [
      ['failed, naming no image', rec({ [RECORD_KEYS.status]: 'failed' })],
      ['other inputs', rec({ [RECORD_KEYS.layerInputs]: 'c'.repeat(64) })],
      ['no digest', rec({ [RECORD_KEYS.layer]: '' })],
      ['bad digest', rec({ [RECORD_KEYS.layer]: 'sha256:xyz' })],
      ['bad diffid', rec({ [RECORD_KEYS.layerDiffId]: `sha512:${'b'.repeat(128)}` })],
      ['negative size', rec({ [RECORD_KEYS.layerSize]: '-1' })],
      ['fractional size', rec({ [RECORD_KEYS.layerSize]: '1.5' })],
      ['huge size', rec({ [RECORD_KEYS.layerSize]: '9'.repeat(16) })],
    ];
    for (const [name, r] of cases) assert.equal(recordedLayer(r, inputs), undefined, name);
  });

  test('is read back from a failed record that keeps the earlier image (the layer that image was pushed with)', () => {
    assert.deepEqual(recordedLayer(rec({ [RECORD_KEYS.status]: 'failed', [RECORD_KEYS.digest]: `sha256:${'d'.repeat(64)}` }), inputs), { digest, diffId, size: 1234 });
  });
});

describe('events', () => {
  test('storage event: Eventarc data with string generation', () => {
    const e = parseStorageEvent({ id: '1', time: '2026-01-01T00:00:00Z', data: { bucket: 'b', name: 'a/artificer.json', generation: '123' } });
    assert.deepEqual(e, { bucket: 'b', name: 'a/artificer.json', generation: '123', time: new Date('2026-01-01T00:00:00Z') });
    assert.throws(() => parseStorageEvent({ data: { bucket: 'b' } }), UsageError);
    assert.throws(() => parseStorageEvent({ data: { bucket: 'b', name: 'n', generation: 'x' } }), /no valid generation/);
    assert.throws(() => parseStorageEvent({ data: { bucket: 'b', name: 'n', generation: '12x' } }), /no valid generation/);
  });
  test("storage event: the event's time (ce-time) counts for the age, else the object's updated", () => {
    const data = { bucket: 'b', name: 'a/artificer.json', generation: '1', updated: '2026-01-01T00:05:00Z', timeCreated: '2026-01-01T00:04:00Z' };
    assert.deepEqual(parseStorageEvent({ time: '2026-01-01T00:00:00Z', data }).time, new Date('2026-01-01T00:00:00Z'));
    assert.deepEqual(parseStorageEvent({ data }).time, new Date('2026-01-01T00:05:00Z'));
  });
  test('storage event: data as bytes (an Eventarc binary-mode body), and bytes that are not JSON', () => {
    const data = Buffer.from(JSON.stringify({ bucket: 'b', name: 'a/artificer.json', generation: '5' }));
    assert.equal(parseStorageEvent({ data }).generation, '5');
    assert.equal(parseStorageEvent({ data: new Uint8Array(data) }).name, 'a/artificer.json');
    assert.throws(() => parseStorageEvent({ id: 'e1', data: Buffer.from('{') }), (e: unknown) => e instanceof UsageError && /event e1: data is not JSON/.test(e.message));
  });
  const msg = (payload: unknown) => ({ data: { message: { data: Buffer.from(JSON.stringify(payload)).toString('base64'), messageId: '1' }, subscription: 's' } });
  test('Pub/Sub messages', () => {
    assert.equal(parseRebuildMessage(msg({ bucket: 'b', object: 'a/artificer.json' })).kind, 'spec');
    assert.deepEqual(
      { ...parseRebuildMessage(msg({ bucket: 'b', object: 'a/artificer.json', base: 'r/x:1' })), time: 0 },
      { kind: 'spec', bucket: 'b', object: 'a/artificer.json', base: 'r/x:1', time: 0 },
    );
    assert.deepEqual(
      { ...parseRebuildMessage(msg({ action: 'INSERT', digest: 'r/x@sha256:1', tag: 'r/x:1' })), time: 0 },
      { kind: 'base', tag: 'r/x:1', digest: 'r/x@sha256:1', time: 0 },
    );
    assert.equal(parseRebuildMessage(msg({ action: 'DELETE', tag: 'r/x:1' })).kind, 'ignored');
    assert.equal(parseRebuildMessage(msg({ action: 'INSERT', digest: 'r/x@sha256:1' })).kind, 'ignored');
    assert.equal(parseRebuildMessage(msg({ bucket: 'b', object: 'a/app.js' })).kind, 'ignored');
    assert.equal(parseRebuildMessage({ data: { message: { data: 'not base64 json' } } }).kind, 'ignored');
  });
});

test('isGoogleRegistry: Google hosts and configured extras only', () => {
  for (const h of ['gcr.io', 'eu.gcr.io', 'us-docker.pkg.dev', 'europe-west1-docker.pkg.dev']) assert.ok(isGoogleRegistry(h), h);
  // evilpkg.dev and evilgcr.io are domains anyone can register: a suffix match without the dot
  // would hand them the service account's token.
  for (const h of ['docker.io', 'gcr.io.evil.example', 'pkg.dev.evil.example', 'evilgcr.io', 'evilpkg.dev', 'pkg.dev', 'gcr.io:8443', '127.0.0.1:5000']) {
    assert.ok(!isGoogleRegistry(h), h);
  }
  // Host names are case-insensitive: GCR.IO is gcr.io.
  for (const h of ['GCR.IO', 'US-Docker.PKG.dev']) assert.ok(isGoogleRegistry(h), h);
  assert.ok(isGoogleRegistry('127.0.0.1:5000', ['127.0.0.1:5000']));
});

test('GoogleCredentialProvider: a failure to get a token is worth a retry, and its message carries no token', async () => {
  const provider = new GoogleCredentialProvider({ extraRegistries: [], auth: { getAccessToken: async () => { throw new Error('metadata server said 503 for ya29.leaked-token'); } } });
  await assert.rejects(provider.resolve('us-docker.pkg.dev'), (e: unknown) => e instanceof ArtificerError && e.temporary && !e.message.includes('ya29.') && /from google application default credentials: metadata server said 503/.test(e.message));
});

describe('GoogleCredentialProvider through the real ADC path', () => {
  test('oauth2accesstoken + a metadata-server token for Google hosts, nothing for others, fresh after expiry', async () => {
    const md = await startMetadataServer({ expiresIn: 1 });
    const saved = { ...process.env };
    Object.assign(process.env, metadataEnv(md.host));
    delete process.env.GOOGLE_APPLICATION_CREDENTIALS;
    try {
      const provider = new GoogleCredentialProvider({ extraRegistries: [] });
      assert.equal(await provider.resolve('docker.io'), undefined);
      assert.equal(await provider.resolve('gcr.io.evil.example'), undefined);
      assert.equal(md.issued.length, 0, 'no token fetched for other hosts');
      const first = await provider.resolve('us-docker.pkg.dev');
      assert.equal(first?.credential.username, 'oauth2accesstoken');
      assert.equal(first?.credential.password, md.issued[0]);
      assert.equal(first?.source, 'google application default credentials');
      await new Promise((r) => setTimeout(r, 1100));
      const second = await provider.resolve('gcr.io');
      assert.notEqual(second?.credential.password, first?.credential.password, 'expired token replaced');
      assert.ok(md.isValid(second!.credential.password!));
      assert.ok(md.requests.some((r) => r.endsWith('/service-accounts/default/token')));
    } finally {
      process.env = saved;
      await md.stop();
    }
  });
});

test('logger: JSON lines with severity, secrets redacted, level filter', () => {
  const lines: string[] = [];
  const log = jsonLogger('info', { eventId: 'e' }, (l) => lines.push(l));
  log.debug('hidden');
  log.info('token ya29.abc-DEF_123 used', { auth: 'Bearer abc.def', url: 'https://u:p@h/x?access_token=s3cret' });
  log.error('boom');
  assert.equal(lines.length, 2);
  const first = JSON.parse(lines[0]!);
  assert.deepEqual(first, { eventId: 'e', auth: 'Bearer REDACTED', url: 'https://REDACTED@h/x?access_token=REDACTED', severity: 'INFO', message: 'token REDACTED used' });
  assert.equal(JSON.parse(lines[1]!).severity, 'ERROR');
  assert.equal(redactSecrets('Basic dXNlcjpwYXNz'), 'Basic REDACTED');
  // A header as a server echoes it (lower case), and a signed URL's signature and credential.
  assert.equal(redactSecrets('authorization: bearer abc.def'), 'authorization: bearer REDACTED');
  assert.equal(
    redactSecrets('https://storage.googleapis.com/b/o?X-Goog-Credential=sa%40p&X-Goog-Signature=0a1b&x-amz-security-token=t0k'),
    'https://storage.googleapis.com/b/o?X-Goog-Credential=REDACTED&X-Goog-Signature=REDACTED&x-amz-security-token=REDACTED',
  );
  assert.equal(redactSecrets('https://cdn.example/blob?verify=1707288743-Cy4zDs%2BlI%3D&x=1'), 'https://cdn.example/blob?verify=REDACTED&x=1');
  // However deep a secret sits in the fields, it is redacted.
  lines.length = 0;
  log.info('deep', { a: { b: { c: { d: { e: { f: 'Bearer deep.secret' } } } } } });
  assert.ok(!lines[0]!.includes('deep.secret'), lines[0]);
});

test('recordError: one line, bounded, redacted', () => {
  assert.equal(recordError('a\n  b ya29.x'), 'a b REDACTED');
  const long = recordError('x'.repeat(5000));
  assert.equal(Buffer.byteLength(long), 1024);
  assert.ok(long.endsWith('…'));
  // However long the note (a tag reference may be 455 bytes), the whole stays within the bound.
  for (const max of [MAX_ERROR_BYTES, MAX_ERROR_WITH_IMAGE_BYTES]) {
    const withNote = recordError('x'.repeat(5000), `(perhaps ${'n'.repeat(2000)})`, max);
    assert.ok(Buffer.byteLength(withNote) <= max, `${Buffer.byteLength(withNote)} > ${max}`);
    assert.ok(withNote.startsWith('x'.repeat(190)), 'the message keeps its start');
  }
});

test('recordError: bounded in UTF-8 bytes (what Cloud Storage counts), never half a character', () => {
  // 1, 2, 3 and 4 bytes a character (the last a surrogate pair in a JS string), at every offset.
  for (const ch of ['x', 'é', '€', '😀']) {
    for (let pad = 0; pad < 4; pad++) {
      const value = recordError(`${'x'.repeat(pad)}${ch.repeat(3000)}`);
      const bytes = Buffer.byteLength(value);
      assert.ok(bytes <= MAX_ERROR_BYTES && bytes > MAX_ERROR_BYTES - 4 - 3, `${ch} +${pad}: ${bytes} bytes`);
      assert.ok(!value.includes('\ufffd') && value.isWellFormed(), `${ch} +${pad}: a character was split`);
      assert.ok(value.endsWith(`${ch}…`), `${ch} +${pad}`);
    }
  }
  assert.equal(recordError('é'.repeat(512)), 'é'.repeat(512), 'exactly 1024 bytes: kept whole');
});

describe('unfinishedClaim: the evidence that an attempt started and did not finish', () => {
  const created = Date.parse('2026-11-28T10:00:00.000Z');
  const state = (record: Record<string, string>, at = created): ObjectState => ({ generation: '1', metageneration: '1', size: 1, created: at, record });
  const claim = (ms: number): string => claimValue(randomUUID(), ms);
  const cases: Array<[string, ObjectState, number | undefined]> = [
    ['no claim (never attempted)', state({}), undefined],
    ['a claim without a start (written before claims had one)', state({ [RECORD_KEYS.run]: randomUUID() }), undefined],
    ['a claim older than the generation (copied with the metadata)', state({ [RECORD_KEYS.run]: claim(created - 1) }), undefined],
    ['a claim without a record since', state({ [RECORD_KEYS.run]: claim(created + 5000) }), created + 5000],
    ['a claim after the last record', state({ [RECORD_KEYS.run]: claim(created + 5000), [RECORD_KEYS.builtAt]: new Date(created + 4999).toISOString() }), created + 5000],
    ['a claim whose run recorded', state({ [RECORD_KEYS.run]: claim(created + 5000), [RECORD_KEYS.builtAt]: new Date(created + 9000).toISOString() }), undefined],
    ['no creation time', state({ [RECORD_KEYS.run]: claim(created + 5000) }, Number.NaN), undefined],
  ];
  for (const [name, s, expected] of cases) test(name, () => assert.equal(unfinishedClaim(s), expected));
});

test('recordFields: a worst-case record stays within MAX_RECORD_BYTES of custom metadata', () => {
  const repo = `us-docker.pkg.dev/${'p'.repeat(200)}/app`; // 255 characters with the host: the most a name may be
  const tags = Array.from({ length: 300 }, (_, i) => `${repo}:${String(i).padEnd(128, 't')}`);
  const digest = `sha256:${'a'.repeat(64)}` as const;
  const base = `${repo.replace('us-docker', 'eu-docker')}:${'b'.repeat(128)}`;
  const now = new Date();
  const succeeded = recordFields('1764355200000000', {
    status: 'succeeded', digest, image: `${repo}@${digest}`, tags, base,
    layer: { digests: { digest, diffId: digest, size: 10 ** 15 - 1 }, inputs: 'c'.repeat(64) },
  }, now);
  const failed = recordFields('1764355200000000', { status: 'failed', error: '失敗 😀 '.repeat(2000), digest, tags, base }, now);
  const partial = recordFields('1764355200000000', { status: 'failed', error: '失敗 😀 '.repeat(2000), note: 'n'.repeat(300), digest, image: `${repo}@${digest}`, tags, base }, now);
  // A failed record keeping the worst-case success above, as it was written (the largest size a record is read back with).
  const state: ObjectState = { generation: '1764355200000000', metageneration: '3', size: 1, created: 0, record: Object.fromEntries(Object.entries(succeeded).filter((e): e is [string, string] => e[1] !== null)) };
  const earlier = keptImage(state, '1764355200000000');
  assert.ok(earlier?.layer && earlier.image && earlier.tags && earlier.tagsOmitted && earlier.base, JSON.stringify(earlier));
  const kept = recordFields('1764355200000000', { status: 'failed', error: '失敗 😀 '.repeat(2000), note: 'n'.repeat(300), kept: earlier }, now);
  for (const key of [RECORD_KEYS.digest, RECORD_KEYS.image, RECORD_KEYS.tags, RECORD_KEYS.tagsOmitted, RECORD_KEYS.layer, RECORD_KEYS.layerDiffId, RECORD_KEYS.layerSize, RECORD_KEYS.layerInputs]) {
    assert.equal(kept[key], succeeded[key], key);
  }
  for (const fields of [partial, kept]) {
    assert.ok(Buffer.byteLength(fields[RECORD_KEYS.error]!) <= MAX_ERROR_WITH_IMAGE_BYTES);
    assert.ok(fields[RECORD_KEYS.error]!.endsWith(`${'n'.repeat(300)}`), 'the note is never cut');
    // The mark of a claim that moved no tag may sit beside it until the next record.
    const claim = claimValue(randomUUID(), now.getTime());
    const all = { ...fields, [RECORD_KEYS.run]: claim, [RECORD_KEYS.untagged]: claim };
    assert.ok(metadataBytes(all) <= MAX_RECORD_BYTES, `${metadataBytes(all)} bytes`);
  }
  for (const fields of [succeeded, failed, partial, kept]) {
    assert.equal(fields[RECORD_KEYS.base], base);
    assert.ok(Number(fields[RECORD_KEYS.tagsOmitted]) > 0);
    // With the claim beside it (a UUID and a start), which stays on the object with the record.
    const all = { ...fields, [RECORD_KEYS.run]: claimValue(randomUUID(), now.getTime()) };
    assert.ok(metadataBytes(all) <= MAX_RECORD_BYTES, `${metadataBytes(all)} bytes`);
  }
  // Bytes, not characters: 2,000 × 8 characters of up to 4 bytes each.
  assert.ok(Buffer.byteLength(failed[RECORD_KEYS.error]!) <= MAX_ERROR_BYTES);
  // A base too long to keep is left out (the fan-out then reads the spec), never cut.
  assert.equal(recordFields('1', { status: 'failed', error: 'x', base: `${base}${'x'.repeat(600)}` }, now)[RECORD_KEYS.base], null);
});

describe('what a failed run records about the tags', () => {
  const created = Date.parse('2026-11-28T10:00:00.000Z');
  const d1 = `sha256:${'1'.repeat(64)}`;
  const d2 = `sha256:${'2'.repeat(64)}`;
  const builtAt = new Date(created + 1000).toISOString();
  const recorded = {
    [RECORD_KEYS.status]: 'succeeded', [RECORD_KEYS.generation]: '7', [RECORD_KEYS.builtAt]: builtAt,
    [RECORD_KEYS.digest]: d1, [RECORD_KEYS.image]: `r.example/app@${d1}`, [RECORD_KEYS.tags]: 'r.example/app:v1,r.example/app:two',
  };
  const claim = (ms: number): string => claimValue('c1a1m', ms);
  const state = (extra: Record<string, string> = {}, record: Record<string, string> = recorded): ObjectState => ({ generation: '7', metageneration: '2', size: 1, created, record: { ...record, ...extra } });
  const settled = state({ [RECORD_KEYS.run]: claim(created + 500) }); // the claim of the run that recorded
  const unfinished = state({ [RECORD_KEYS.run]: claim(created + 5000) });
  const vouched = state({ [RECORD_KEYS.run]: claim(created + 5000), [RECORD_KEYS.untagged]: claim(created + 5000) });
  const refused = new RegistryError('tagging r.example/app:v1: 400', { method: 'PUT', url: 'http://r.example/v2/app/manifests/v1', status: 400 });
  const lost = new NetworkError('tagging r.example/app:v1: socket hang up');
  const status = (n: number) => new RegistryError(`tagging r.example/app:v1: ${n}`, { method: 'PUT', url: 'http://r.example/v2/app/manifests/v1', status: n });
  const notFound = new RegistryError('base: 404', { method: 'GET', url: 'http://b.example/v2/base/manifests/1', status: 404 });
  const still = `(no tag was moved by this build; the tags recorded beside ${d1} at ${builtAt} still name it)`;

  test('tagsUnmovedSince: only when every claim since the record ended, or vouched it moved no tag', () => {
    assert.equal(tagsUnmovedSince(state()), true, 'no claim');
    assert.equal(tagsUnmovedSince(settled), true);
    assert.equal(tagsUnmovedSince(unfinished), false);
    assert.equal(tagsUnmovedSince(vouched), true);
    assert.equal(tagsUnmovedSince(state({ [RECORD_KEYS.run]: claim(created + 5000), [RECORD_KEYS.untagged]: claim(created + 4000) })), false, 'a mark of an earlier claim');
    assert.equal(tagsUnmovedSince(state({ [RECORD_KEYS.run]: 'c1a1m' })), false, 'a claim without a start cannot be placed');
  });

  const cases: Array<[string, Parameters<typeof tagsAfterFailure>, ReturnType<typeof tagsAfterFailure>]> = [
    ['nothing sent, the earlier record settled: kept', [notFound, 0, undefined, settled, '7'], { kept: keptImage(settled, '7')!, note: still }],
    ['the first tag refused outright: kept', [refused, 1, 'r.example/app:v1', settled, '7'], { kept: keptImage(settled, '7')!, note: still }],
    ['nothing sent after runs that vouched they moved no tag: kept', [notFound, 0, undefined, vouched, '7'], { kept: keptImage(vouched, '7')!, note: still }],
    ['a run since did not finish: not kept, and said', [notFound, 0, undefined, unfinished, '7'], {
      note: `(no tag was moved by this build; the tags recorded beside ${d1} at ${builtAt} named it then, and a run since that did not finish may have moved them)`,
    }],
    ['the first tag got no definite answer: not kept, and said', [lost, 1, 'r.example/app:v1', settled, '7'], {
      note: `(no tag was moved by this build, but perhaps r.example/app:v1 (its request got no definite answer); the other tags recorded beside ${d1} at ${builtAt} still name it)`,
    }],
    // A 5xx, 408 or 429 may come after the registry applied the PUT (or a retry of it): not a refusal.
    ...[500, 503, 408, 429].map((n): (typeof cases)[number] => [`the first tag answered ${n}: not kept, and said`, [status(n), 1, 'r.example/app:v1', settled, '7'], {
      note: `(no tag was moved by this build, but perhaps r.example/app:v1 (its request got no definite answer); the other tags recorded beside ${d1} at ${builtAt} still name it)`,
    }]),
    ['a record of another generation: nothing', [notFound, 0, undefined, settled, '8'], {}],
    ['a failed record naming no image: nothing', [notFound, 0, undefined, state({}, { [RECORD_KEYS.status]: 'failed', [RECORD_KEYS.generation]: '7', [RECORD_KEYS.builtAt]: builtAt }), '7'], {}],
    ['no record, a run before that did not finish', [notFound, 0, undefined, state({ [RECORD_KEYS.run]: claim(created + 5000) }, {}), '7'], {
      note: '(no tag was moved by this build; a run before this one that did not finish may have moved tags)',
    }],
    ['failed before claiming: nothing', [notFound, 0, undefined, undefined, '7'], {}],
    ['some tags moved: exactly those, their image, and what the others name', [new TagsIncompleteError(d2, ['r.example/app:v1'], refused), 2, 'r.example/app:two', settled, '7'], {
      digest: d2, image: `r.example/app@${d2}`, tags: ['r.example/app:v1'],
      note: `(the spec's other tags were not moved by this build; the other tags recorded beside ${d1} at ${builtAt} still name it)`,
    }],
    ['some tags moved, the next one unanswered', [new TagsIncompleteError(d2, ['r.example/app:v1'], lost), 2, 'r.example/app:two', settled, '7'], {
      digest: d2, image: `r.example/app@${d2}`, tags: ['r.example/app:v1'],
      note: `(the spec's other tags were not moved by this build, but perhaps r.example/app:two (its request got no definite answer); the other tags recorded beside ${d1} at ${builtAt} still name it)`,
    }],
  ];
  for (const [name, args, expected] of cases) test(`tagsAfterFailure: ${name}`, () => assert.deepEqual(tagsAfterFailure(...args), expected));

  test('keptImage: the record as written, fields of the wrong form left out', () => {
    const bad = state({ [RECORD_KEYS.image]: `r.example/other@${d2}`, [RECORD_KEYS.layer]: 'sha256:xyz', [RECORD_KEYS.layerDiffId]: d1, [RECORD_KEYS.layerSize]: '1', [RECORD_KEYS.layerInputs]: 'f'.repeat(64) });
    assert.deepEqual(keptImage(bad, '7'), { digest: d1, tags: 'r.example/app:v1,r.example/app:two', builtAt });
    assert.equal(keptImage(state({ [RECORD_KEYS.digest]: 'sha256:nope' }), '7'), undefined);
  });
});

describe('bundle re-packer', () => {

  test('a fixed bundle re-packs to a fixed layer under LAYER_FORMAT 2: a change to that needs a new LAYER_FORMAT', async () => {
    // The Cloud Function reuses a recorded layer while LAYER_FORMAT and its inputs match.
    const tar = await tarOf([
      [{ name: './', type: 'directory' }],
      [{ name: 'b.txt', mode: 0o600 }, 'bee'],
      [{ name: 'a/', type: 'directory', mode: 0o750 }],
      [{ name: 'a/x', mode: 0o4755, uid: 1000, gid: 1000 }, 'x'.repeat(100_000)],
      [{ name: 'a/l', type: 'link', linkname: 'a/x' }],
      [{ name: 's', type: 'symlink', linkname: '/etc/hosts' }],
    ]);
    const source = () => bundleEntries(async () => Readable.from([tar]), { to: '/opt/app', origin: 'gs://b/t.tar' });
    const { diffId } = await createLayer(source, { mtime: 0 }).measure();
    assert.deepEqual({ LAYER_FORMAT, diffId }, { LAYER_FORMAT: 2, diffId: 'sha256:6bbfd95b964c5ce94734b235734de52843d1be2f1872aa5211517a97548208de' });
  });

  test('bundlePath', () => {
    assert.equal(bundlePath('./a/b/', 'x'), 'a/b');
    assert.equal(bundlePath('./', 'x'), '');
    assert.throws(() => bundlePath('a/../../b', 'x'), /"\.\."/);
    assert.throws(() => bundlePath('/abs', 'x'), /absolute/);
  });

  test('entries come out in bundle order with their content, consumed one at a time', async () => {
    const tar = await tarOf([
      [{ name: './', type: 'directory' }],
      [{ name: 'b.txt', mode: 0o600 }, 'bee'],
      [{ name: 'a/', type: 'directory', mode: 0o750 }],
      [{ name: 'a/x', mode: 0o755 }, 'x'.repeat(100_000)],
      [{ name: 'a/l', type: 'link', linkname: 'a/x' }],
      [{ name: 's', type: 'symlink', linkname: '/etc/hosts' }],
    ]);
    const seen: Array<[string, string, number, string | undefined, string]> = [];
    for await (const e of bundleEntries(async () => Readable.from([tar]), { to: '/opt/app', origin: 'gs://b/t.tar' })) {
      let body = '';
      if (e.open) {
        const r = await e.open();
        for await (const c of r as AsyncIterable<Buffer>) body += c.toString();
      }
      seen.push([e.path, e.type, e.mode, e.linkname, body.length > 10 ? `${body.length} bytes` : body]);
    }
    assert.deepEqual(seen, [
      ['opt/app/b.txt', 'file', 0o600, undefined, 'bee'],
      ['opt/app/a', 'directory', 0o750, undefined, ''],
      ['opt/app/a/x', 'file', 0o755, undefined, '100000 bytes'],
      ['opt/app/a/l', 'hardlink', 0o644, 'opt/app/a/x', ''],
      ['opt/app/s', 'symlink', 0o777, '/etc/hosts', ''],
    ]);
  });

  test('the layer writer consumes bundle entries in order: two passes give the same digests', async () => {
    const tar = await tarOf([[{ name: 'one' }, '1'.repeat(70_000)], [{ name: 'skipped-dir/', type: 'directory' }], [{ name: 'two' }, '2']]);
    let opens = 0;
    const files = () =>
      bundleEntries(
        async () => {
          opens++;
          return Readable.from([tar.subarray(0, 1000), tar.subarray(1000)]);
        },
        { to: '/', origin: 'mem' },
      ) as AsyncIterable<LayerEntry>;
    const layer = createLayer(files, { mtime: 0 });
    const a = await layer.measure();
    const { stream, done } = layer.open();
    stream.resume();
    const b = await done;
    assert.deepEqual(a, b);
    assert.equal(opens, 2, 'each pass re-opens the bundle');
  });
});
