import { test } from 'node:test';
import assert from 'node:assert/strict';
import { challengeScopes, parseWwwAuthenticate } from '../../src/registry/challenge.ts';

const cases: Array<[name: string, header: string | string[] | undefined, expected: Array<{ scheme: string; params: Record<string, string>; token68?: string }>]> = [
  ['absent', undefined, []],
  ['empty', '', []],
  ['basic', 'Basic realm="Registry Realm"', [{ scheme: 'basic', params: { realm: 'Registry Realm' } }]],
  [
    'docker hub bearer with a comma inside the quoted scope',
    'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push"',
    [{ scheme: 'bearer', params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:samalba/my-app:pull,push' } }],
  ],
  [
    'error and spaces around separators, mixed-case names',
    'BEARER  Realm = "https://a/t" , Service=reg , error="insufficient_scope"',
    [{ scheme: 'bearer', params: { realm: 'https://a/t', service: 'reg', error: 'insufficient_scope' } }],
  ],
  [
    'two challenges in one header',
    'Basic realm="x", Bearer realm="https://y/token",service="s"',
    [
      { scheme: 'basic', params: { realm: 'x' } },
      { scheme: 'bearer', params: { realm: 'https://y/token', service: 's' } },
    ],
  ],
  [
    'two header lines',
    ['Basic realm="x"', 'Bearer realm="y"'],
    [
      { scheme: 'basic', params: { realm: 'x' } },
      { scheme: 'bearer', params: { realm: 'y' } },
    ],
  ],
  ['escaped quote and backslash', 'Basic realm="a \\"quoted\\" \\\\ realm, ok"', [{ scheme: 'basic', params: { realm: 'a "quoted" \\ realm, ok' } }]],
  ['tabs as white space (RFC 7230 OWS)', 'Bearer\trealm="https://a/t",\tservice="reg"', [{ scheme: 'bearer', params: { realm: 'https://a/t', service: 'reg' } }]],
  ['scheme alone', 'Negotiate', [{ scheme: 'negotiate', params: {} }]],
  ['token68', 'Negotiate abc123==', [{ scheme: 'negotiate', params: {}, token68: 'abc123==' }]],
  ['unterminated quote keeps the rest', 'Bearer realm="https://a/t', [{ scheme: 'bearer', params: { realm: 'https://a/t' } }]],
  ['empty quoted value', 'Bearer realm="",service=x', [{ scheme: 'bearer', params: { realm: '', service: 'x' } }]],
];

for (const [name, header, expected] of cases) {
  test(`parseWwwAuthenticate: ${name}`, () => {
    const got = parseWwwAuthenticate(header).map((c) => ({ scheme: c.scheme, params: { ...c.params }, ...(c.token68 !== undefined ? { token68: c.token68 } : {}) }));
    assert.deepEqual(got, expected);
  });
}

test('challengeScopes splits on spaces', () => {
  const [c] = parseWwwAuthenticate('Bearer realm="r",scope="repository:a:pull repository:b:pull,push"');
  assert.deepEqual(challengeScopes(c!), ['repository:a:pull', 'repository:b:pull,push']);
  const [d] = parseWwwAuthenticate('Bearer realm="r"');
  assert.deepEqual(challengeScopes(d!), []);
});
