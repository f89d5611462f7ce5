import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkEnvKey, parseAssignment, parseEnvAssignment, parseOwner, parsePort } from '../../src/spec/values.ts';

test('the value syntaxes shared by flags and spec files', () => {
  assert.deepEqual(parseAssignment('a.b=c=d'), ['a.b', 'c=d']);
  assert.deepEqual(parseEnvAssignment('PATH='), ['PATH', '']);
  assert.equal(checkEnvKey('lower.dotted-name'), 'lower.dotted-name');
  assert.equal(parsePort('8080'), '8080/tcp');
  assert.equal(parsePort('53/UDP'), '53/udp');
  assert.deepEqual(parseOwner('0:65534'), { uid: 0, gid: 65534 });
  assert.deepEqual(parseOwner('4294967295:4294967295'), { uid: 0xffffffff, gid: 0xffffffff });
  for (const [fn, input, message] of [
    [parseAssignment, '=x', /"=x" must be KEY=VALUE/],
    [parseEnvAssignment, 'A B=1', /"A B" is not a valid variable name/],
    [checkEnvKey, '', /is not a valid variable name/],
    [parsePort, '0', /"0" is not a port/],
    [parsePort, '65536', /not a port/],
    [parsePort, '80/http', /not a port/],
    [parseOwner, '1000', /must be numeric "uid:gid"/],
    [parseOwner, '99999999999:0', /must be numeric/],
    [parseOwner, '4294967296:0', /must be numeric/],
    [parseOwner, '0:4294967296', /must be numeric/],
  ] as const) {
    assert.throws(() => (fn as (s: string) => unknown)(input), message, `${fn.name}(${input})`);
  }
});
