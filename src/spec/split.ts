/**
 * Splits a command line into words the way a POSIX shell would tokenise it, without running a
 * shell and without any expansion: no variables, no globbing, no command substitution.
 *
 * - Unquoted whitespace separates words.
 * - `'…'` is literal.
 * - `"…"` is literal except that a backslash escapes `"`, `\`, `$` and `` ` `` (as in sh).
 * - Outside quotes a backslash escapes the next character; a backslash-newline is removed.
 * - `''` or `""` produce an empty word.
 *
 * Shell operators (`|`, `&&`, `>`, `;`) are ordinary characters here: a `cmd` that needs a shell
 * must say so (`["/bin/sh", "-c", "…"]`), as Docker's exec form does.
 *
 * Throws a plain Error with the reason (unterminated quote, trailing backslash); callers wrap it
 * into their own error type with the location.
 */
export function splitCommand(line: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let i = 0;
  while (i < line.length) {
    const c = line[i]!;
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
      if (inWord) {
        words.push(word);
        word = '';
        inWord = false;
      }
      i++;
    } else if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw new Error('unterminated single quote');
      word += line.slice(i + 1, end);
      inWord = true;
      i = end + 1;
    } else if (c === '"') {
      i++;
      let closed = false;
      while (i < line.length) {
        const d = line[i]!;
        if (d === '"') {
          closed = true;
          i++;
          break;
        }
        if (d === '\\' && i + 1 < line.length && '"\\$`\n'.includes(line[i + 1]!)) {
          if (line[i + 1] !== '\n') word += line[i + 1];
          i += 2;
        } else {
          word += d;
          i++;
        }
      }
      if (!closed) throw new Error('unterminated double quote');
      inWord = true;
    } else if (c === '\\') {
      if (i + 1 >= line.length) throw new Error('trailing backslash');
      if (line[i + 1] !== '\n') {
        word += line[i + 1];
        inWord = true;
      }
      i += 2;
    } else {
      word += c;
      inWord = true;
      i++;
    }
  }
  if (inWord) words.push(word);
  return words;
}

/** Words a shell would treat as operators: without a shell they reach the program as arguments. */
const SHELL_OPERATORS = new Set(['&&', '||', '|', ';', '&', '>', '>>', '<', '<<', '2>', '2>&1', '>&2', '&>']);
/** `$NAME`, `${…}`, `$(…)` or a backtick: expansions only a shell performs. */
const SHELL_EXPANSION = /\$(?:[A-Za-z_{(])|`/;

/**
 * The words of a split command that only mean something to a shell (operators, `$VAR`,
 * `$(…)`, backticks, a trailing `;`), at most a few, for a warning: `splitCommand` keeps them as
 * plain arguments, so `echo $HOME && ls` runs `echo` with the arguments `$HOME`, `&&` and `ls`.
 * Empty when the command looks like a plain program call.
 */
export function shellSyntax(words: readonly string[]): string[] {
  const found = words.filter((w) => SHELL_OPERATORS.has(w) || SHELL_EXPANSION.test(w) || (w.length > 1 && w.endsWith(';')));
  return [...new Set(found)].slice(0, 3);
}

/** Whether a value holds a `$NAME`/`${…}`/`$(…)` a Dockerfile or a shell would expand. */
export function hasShellExpansion(value: string): boolean {
  return SHELL_EXPANSION.test(value);
}
