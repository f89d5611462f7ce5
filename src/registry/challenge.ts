/**
 * `WWW-Authenticate` parsing (RFC 7235 §4.1): one or more challenges, each an auth scheme
 * followed by comma-separated `name=value` parameters whose values are tokens or quoted strings
 * (which may contain commas, `=` and backslash escapes). Registries send e.g.
 *
 *     Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push"
 */

export interface Challenge {
  /** Lowercased: "bearer", "basic". */
  readonly scheme: string;
  /** Parameter names lowercased; values unquoted. */
  readonly params: Readonly<Record<string, string>>;
  /** A token68 credential instead of parameters (rare). */
  readonly token68?: string;
}

const TCHAR = /[!#$%&'*+.^_`|~0-9A-Za-z-]/;

export function parseWwwAuthenticate(header: string | readonly string[] | undefined): Challenge[] {
  if (header === undefined) return [];
  if (typeof header !== 'string') return header.flatMap((h) => parseWwwAuthenticate(h));
  const s = header;
  let i = 0;
  const out: Array<{ scheme: string; params: Record<string, string>; token68?: string }> = [];

  const skipWs = (): void => {
    while (i < s.length && (s[i] === ' ' || s[i] === '\t')) i++;
  };
  const readToken = (): string => {
    const start = i;
    while (i < s.length && TCHAR.test(s[i]!)) i++;
    return s.slice(start, i);
  };
  const readQuoted = (): string => {
    // s[i] === '"'
    i++;
    let v = '';
    while (i < s.length && s[i] !== '"') {
      if (s[i] === '\\' && i + 1 < s.length) i++;
      v += s[i];
      i++;
    }
    i++; // closing quote (or end)
    return v;
  };

  while (i < s.length) {
    skipWs();
    if (s[i] === ',') {
      i++;
      continue;
    }
    const scheme = readToken();
    if (!scheme) {
      i++; // garbage: skip a character and resynchronise
      continue;
    }
    const challenge: { scheme: string; params: Record<string, string>; token68?: string } = { scheme: scheme.toLowerCase(), params: {} };
    out.push(challenge);
    skipWs();
    // Parameters until the next challenge (a token followed by whitespace and not by '=').
    for (;;) {
      skipWs();
      if (i >= s.length) break;
      if (s[i] === ',') {
        i++;
        continue;
      }
      const save = i;
      const name = readToken();
      skipWs();
      if (name && s[i] === '=') {
        // name=value, or token68 ending in '=' padding
        i++;
        skipWs();
        if (s[i] === '"') {
          challenge.params[name.toLowerCase()] = readQuoted();
        } else {
          const value = readToken();
          if (value === '' && (s[i] === '=' || i >= s.length || s[i] === ',')) {
            // token68 with padding like "abc=="
            let pad = '=';
            while (s[i] === '=') {
              pad += '=';
              i++;
            }
            challenge.token68 = name + pad;
          } else {
            challenge.params[name.toLowerCase()] = value;
          }
        }
        continue;
      }
      if (name && Object.keys(challenge.params).length === 0 && challenge.token68 === undefined && (i >= s.length || s[i] === ',')) {
        challenge.token68 = name;
        continue;
      }
      // Start of the next challenge.
      i = save;
      break;
    }
  }
  return out;
}

/** The scopes named in a Bearer challenge's `scope` parameter (space-separated per the spec). */
export function challengeScopes(c: Challenge): string[] {
  return (c.params.scope ?? '').split(' ').filter(Boolean);
}
