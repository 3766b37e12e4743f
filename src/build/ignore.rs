//! `.dockerignore` with Docker's semantics (moby/patternmatcher and the docker CLI), so a context
//! beast sends holds exactly what `docker build` would send. Pure: parses text, matches paths.
//!
//! - One pattern a line; a line starting with `#` is a comment; surrounding blanks are trimmed.
//! - Patterns are relative to the context root (a leading `/` is dropped) and cleaned like
//!   Go's `filepath.Clean` (`a//b/./c/` → `a/b/c`).
//! - `*` matches within one path segment, `?` one character but `/`, `**` any number of segments
//!   (`**/` zero or more leading directories), `[a-z]`/`[^a]` a character class, `\x` a literal x.
//! - A pattern matching a directory excludes everything below it.
//! - `!pattern` re-includes; the last matching line wins.
//!
//! Not for: the file system walk (see [`super::context`]).

use std::fmt;

/// A `.dockerignore` line that is not a valid pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// 1-based line in the file.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// The compiled patterns of one `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
struct Pattern {
    /// The cleaned text, without the leading `!`.
    text: String,
    exclusion: bool,
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(char),
    /// `*`: anything but `/`.
    Star,
    /// `?`: one character but `/`.
    Question,
    /// `**/` or `**` inside a pattern: `(.*/)?`.
    AnyDirs,
    /// `**` at the end: `.*`.
    AnyRest,
    Class(Class),
}

#[derive(Debug, Clone, PartialEq)]
struct Class {
    negated: bool,
    /// Inclusive ranges; a single character is `(c, c)`.
    ranges: Vec<(char, char)>,
}

impl Class {
    fn matches(&self, c: char) -> bool {
        self.ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != self.negated
    }
}

impl Matcher {
    /// Parses the text of a `.dockerignore` file.
    pub fn parse(text: &str) -> Result<Matcher, PatternError> {
        let mut patterns = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let raw = if index == 0 {
                raw.trim_start_matches('\u{feff}')
            } else {
                raw
            };
            if let Some(pattern) = parse_line(raw).map_err(|message| PatternError {
                line: index + 1,
                message,
            })? {
                patterns.push(pattern);
            }
        }
        Ok(Matcher { patterns })
    }

    /// Adds `!path` (the docker CLI does so for the Dockerfile and `.dockerignore`, so the
    /// engine always receives them) when `path` would otherwise be excluded.
    pub fn keep(&mut self, path: &str) {
        if self.excludes(path) {
            if let Ok(Some(pattern)) = parse_line(&format!("!{path}")) {
                self.patterns.push(pattern);
            }
        }
    }

    /// True when `path` (relative to the context root, `/`-separated) is not sent: the last
    /// pattern matching it or one of its parent directories is not an exception.
    pub fn excludes(&self, path: &str) -> bool {
        let parents: Vec<&str> = match path.rfind('/') {
            Some(end) => path[..end].split('/').collect(),
            None => Vec::new(),
        };
        let mut excluded = false;
        for pattern in &self.patterns {
            // As Docker: an exception only matters once something matched, and vice versa.
            if pattern.exclusion != excluded {
                continue;
            }
            if pattern.matches(path) || matches_a_parent(pattern, &parents) {
                excluded = !pattern.exclusion;
            }
        }
        excluded
    }

    /// Whether the walk must enter the excluded directory `dir` because an exception could
    /// re-include something below it. Docker's rule, kept as is: an exception whose text starts
    /// with `dir/`.
    pub fn may_include_below(&self, dir: &str) -> bool {
        let prefix = format!("{dir}/");
        self.patterns
            .iter()
            .any(|p| p.exclusion && format!("{}/", p.text).starts_with(&prefix))
    }
}

fn matches_a_parent(pattern: &Pattern, parents: &[&str]) -> bool {
    (1..=parents.len()).any(|n| pattern.matches(&parents[..n].join("/")))
}

/// One line → a pattern, `None` for blanks and comments.
fn parse_line(raw: &str) -> Result<Option<Pattern>, String> {
    if raw.starts_with('#') {
        return Ok(None);
    }
    let mut text = raw.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let exclusion = text.starts_with('!');
    if exclusion {
        text = text[1..].trim();
        if text.is_empty() {
            return Err("illegal exclusion pattern: \"!\"".to_string());
        }
    }
    let mut cleaned = clean(text);
    if cleaned.len() > 1 && cleaned.starts_with('/') {
        cleaned.remove(0);
    }
    let tokens = compile(&cleaned)?;
    Ok(Some(Pattern {
        text: cleaned,
        exclusion,
        tokens,
    }))
}

/// Go's `path.Clean`: drops empty and `.` segments, resolves `..` lexically, no trailing `/`.
pub fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => match out.last() {
                Some(&last) if last != ".." => {
                    out.pop();
                }
                _ if rooted => {}
                _ => out.push(".."),
            },
            other => out.push(other),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Translates a cleaned pattern into tokens, as moby/patternmatcher translates it to a regexp.
fn compile(pattern: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        let token = match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                if chars.peek().is_none() {
                    Token::AnyRest
                } else {
                    Token::AnyDirs
                }
            }
            '*' => Token::Star,
            '?' => Token::Question,
            '\\' => Token::Literal(chars.next().unwrap_or('\\')),
            '[' => Token::Class(compile_class(&mut chars)?),
            other => Token::Literal(other),
        };
        tokens.push(token);
    }
    Ok(tokens)
}

/// Reads a class after its `[` up to and including the closing `]`.
fn compile_class(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<Class, String> {
    let negated = chars.peek() == Some(&'^');
    if negated {
        chars.next();
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = match chars.next() {
            None => return Err("unterminated character class".to_string()),
            Some(']') if !first => return Ok(Class { negated, ranges }),
            Some('\\') => chars.next().ok_or("unterminated character class")?,
            Some(c) => c,
        };
        first = false;
        let mut lookahead = chars.clone();
        if lookahead.next() == Some('-') && lookahead.peek().is_some_and(|n| *n != ']') {
            chars.next();
            let hi = match chars.next() {
                Some('\\') => chars.next().ok_or("unterminated character class")?,
                Some(hi) => hi,
                None => return Err("unterminated character class".to_string()),
            };
            if hi < c {
                return Err(format!("invalid character class range {c}-{hi}"));
            }
            ranges.push((c, hi));
        } else {
            ranges.push((c, c));
        }
    }
}

impl Pattern {
    /// Whole-string match, by dynamic programming over (token, position): linear in the pattern
    /// times the path, whatever the stars.
    fn matches(&self, path: &str) -> bool {
        let s: Vec<char> = path.chars().collect();
        let n = s.len();
        // next[j]: do tokens[i+1..] match s[j..]?
        let mut next = vec![false; n + 1];
        next[n] = true;
        for token in self.tokens.iter().rev() {
            let mut cur = vec![false; n + 1];
            // For AnyDirs: is there a k >= j with s[k] == '/' and next[k + 1]?
            let mut slash_then_rest = false;
            for j in (0..=n).rev() {
                let here = s.get(j).copied();
                let step = |ok: bool| ok && next[j + 1];
                cur[j] = match token {
                    Token::Literal(c) => here.is_some_and(|h| step(h == *c)),
                    Token::Question => here.is_some_and(|h| step(h != '/')),
                    Token::Class(class) => here.is_some_and(|h| step(class.matches(h))),
                    Token::Star => next[j] || here.is_some_and(|h| h != '/' && cur[j + 1]),
                    Token::AnyRest => next[j] || (here.is_some() && cur[j + 1]),
                    Token::AnyDirs => {
                        if here == Some('/') && next[j + 1] {
                            slash_then_rest = true;
                        }
                        next[j] || slash_then_rest
                    }
                };
            }
            next = cur;
        }
        next[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(text: &str) -> Matcher {
        Matcher::parse(text).unwrap()
    }

    #[test]
    fn comments_and_blanks_are_skipped() {
        let matcher = m("# secret.txt\n\n   \nbuild\n");
        assert!(!matcher.excludes("secret.txt"));
        assert!(!matcher.excludes("# secret.txt"));
        assert!(matcher.excludes("build"));
    }

    #[test]
    fn a_hash_after_blanks_is_a_pattern_as_in_docker() {
        // Docker only treats a line as a comment when `#` is its very first character.
        assert!(m("  #x").excludes("#x"));
    }

    #[test]
    fn star_stays_within_a_segment() {
        let matcher = m("*.log");
        assert!(matcher.excludes("a.log"));
        assert!(!matcher.excludes("dir/a.log"));
        assert!(m("*/*.log").excludes("dir/a.log"));
        assert!(!m("*/*.log").excludes("a/b/c.log"));
    }

    #[test]
    fn question_mark_is_one_character_but_a_slash() {
        assert!(m("file?.txt").excludes("file1.txt"));
        assert!(!m("file?.txt").excludes("file10.txt"));
        assert!(!m("a?b").excludes("a/b"));
    }

    #[test]
    fn double_star_spans_directories() {
        let matcher = m("**/*.pyc");
        assert!(matcher.excludes("x.pyc"));
        assert!(matcher.excludes("a/b/c/x.pyc"));
        assert!(!matcher.excludes("a/b/x.py"));
        assert!(m("docs/**").excludes("docs/a/b.md"));
        assert!(m("a/**/z").excludes("a/z"));
        assert!(m("a/**/z").excludes("a/b/c/z"));
        assert!(!m("a/**/z").excludes("a/b/zz"));
    }

    #[test]
    fn a_directory_pattern_excludes_what_is_below() {
        let matcher = m("node_modules/\n/secret");
        assert!(matcher.excludes("node_modules"));
        assert!(matcher.excludes("node_modules/x/y.js"));
        assert!(matcher.excludes("secret/key"));
        // Patterns are anchored at the context root, unlike .gitignore.
        assert!(!matcher.excludes("sub/node_modules/x.js"));
    }

    #[test]
    fn exceptions_reinclude_and_the_last_match_wins() {
        let matcher = m("*.md\n!README.md\nREADME*");
        assert!(matcher.excludes("CHANGES.md"));
        assert!(matcher.excludes("README.md"));
        let matcher = m("*.md\n!README.md");
        assert!(!matcher.excludes("README.md"));
        assert!(matcher.excludes("NOTES.md"));
    }

    #[test]
    fn exceptions_below_an_excluded_directory_are_reachable() {
        let matcher = m("data\n!data/keep.txt");
        assert!(matcher.excludes("data"));
        assert!(matcher.excludes("data/drop.txt"));
        assert!(!matcher.excludes("data/keep.txt"));
        assert!(matcher.may_include_below("data"));
        assert!(!matcher.may_include_below("other"));
        // Docker only enters an excluded directory for exceptions spelled below it.
        assert!(!m("data\n!**/keep.txt").may_include_below("data"));
    }

    #[test]
    fn the_dockerfile_and_dockerignore_are_always_kept() {
        let mut matcher = m("*\n");
        matcher.keep("Dockerfile");
        matcher.keep(".dockerignore");
        matcher.keep("docker/Dockerfile.prod");
        assert!(!matcher.excludes("Dockerfile"));
        assert!(!matcher.excludes(".dockerignore"));
        assert!(matcher.excludes("hello.txt"));
        assert!(!matcher.excludes("docker/Dockerfile.prod"));
        assert!(matcher.may_include_below("docker"));
    }

    #[test]
    fn classes_and_escapes() {
        assert!(m("[ab].txt").excludes("a.txt"));
        assert!(!m("[ab].txt").excludes("c.txt"));
        assert!(m("[^ab].txt").excludes("c.txt"));
        assert!(m("v[0-9]").excludes("v7"));
        assert!(m("\\*.txt").excludes("*.txt"));
        assert!(!m("\\*.txt").excludes("a.txt"));
        // Regexp characters are literal.
        assert!(m("a+b(1).txt").excludes("a+b(1).txt"));
        assert!(!m("a.txt").excludes("abtxt"));
    }

    #[test]
    fn patterns_are_cleaned() {
        assert!(m("./a//b/../c/").excludes("a/c"));
        assert_eq!(clean("/x/../../y"), "/y");
        assert_eq!(clean("../a"), "../a");
        assert_eq!(clean("a/.."), ".");
    }

    #[test]
    fn bad_patterns_name_their_line() {
        let err = Matcher::parse("ok\n[abc\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(Matcher::parse("!\n").is_err());
    }

    #[test]
    fn many_stars_stay_fast() {
        let matcher = m("*a*a*a*a*a*a*a*a*a*a*b");
        assert!(!matcher.excludes(&"a".repeat(200)));
    }
}
