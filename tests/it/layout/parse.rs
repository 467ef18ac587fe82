//! A small Rust reader: identifiers and path punctuation without comments or strings, and
//! the modules, `use` bindings and paths they form.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Semi,
    Star,
    Hash,
    Other,
}

/// Identifiers and the punctuation paths are made of, with their line; comments, strings and
/// character literals are dropped.
pub(super) fn tokenize(text: &str) -> Vec<(Token, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let (mut i, mut line) = (0, 1);
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            '/' if at(i + 1) == '/' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if at(i + 1) == '*' => {
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && at(i + 1) == '*' {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && at(i + 1) == '/' {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        if chars[i] == '\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                }
            }
            'r' | 'b' if raw_string_start(&chars, i).is_some() => {
                let (hashes, body) = raw_string_start(&chars, i).unwrap_or((0, i));
                let closing: Vec<char> = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                i = body;
                while i < chars.len() && !chars[i..].starts_with(&closing) {
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
                i += closing.len();
            }
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    if at(i) == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            '\'' => {
                // A character literal ('x', '\n', '\u{1F600}') or a lifetime ('a).
                if at(i + 1) == '\\' {
                    i += 2;
                    while i < chars.len() && chars[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                } else if at(i + 2) == '\'' {
                    i += 3;
                } else {
                    i += 1;
                }
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                // b"…" and b'…' prefixes are handled by the string and char arms.
                if (word == "b" || word == "br") && matches!(at(i), '"' | '\'') {
                    continue;
                }
                tokens.push((Token::Ident(word), line));
            }
            ':' if at(i + 1) == ':' => {
                tokens.push((Token::PathSep, line));
                i += 2;
            }
            _ => {
                let token = match c {
                    '{' => Token::Open,
                    '}' => Token::Close,
                    ',' => Token::Comma,
                    ';' => Token::Semi,
                    '*' => Token::Star,
                    '#' => Token::Hash,
                    _ => Token::Other,
                };
                if !c.is_whitespace() {
                    tokens.push((token, line));
                }
                i += 1;
            }
        }
    }
    tokens
}

/// `r"`, `r#"`, `br#"` at `i`: the number of `#` and where the body starts.
fn raw_string_start(chars: &[char], i: usize) -> Option<(usize, usize)> {
    let mut j = i;
    if chars.get(j) == Some(&'b') {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    // Not the tail of an identifier such as `for`.
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return None;
    }
    j += 1;
    let hashes = chars[j..].iter().take_while(|c| **c == '#').count();
    (chars.get(j + hashes) == Some(&'"')).then_some((hashes, j + hashes + 1))
}

/// What one module (the file's own, or an inline `mod x { … }`) declares and uses.
#[derive(Debug, Default)]
pub(super) struct Parsed {
    /// `mod x;` declarations.
    pub(super) file_children: Vec<String>,
    pub(super) imports: BTreeMap<String, Vec<String>>,
    pub(super) globs: Vec<Vec<String>>,
    pub(super) references: Vec<(Vec<String>, usize)>,
}

/// Walk the tokens of a file whose module path is `root`; one entry per module in the file.
pub(super) fn parse(tokens: &[(Token, usize)], root: &[String]) -> Vec<(Vec<String>, Parsed)> {
    let mut done: Vec<(Vec<String>, Parsed)> = Vec::new();
    // Open modules: path, parsed so far, brace depth at which it closes.
    let mut open: Vec<(Vec<String>, Parsed, usize)> = vec![(root.to_vec(), Parsed::default(), 0)];
    // Child module names known per module, for relative paths (`output::Parser`).
    let children = child_names(tokens, root);
    let mut depth = 0usize;
    let mut i = 0;
    let ident = |i: usize| match tokens.get(i) {
        Some((Token::Ident(word), _)) => Some(word.as_str()),
        _ => None,
    };
    while i < tokens.len() {
        let (token, line) = &tokens[i];
        let current = open.last().map(|(p, _, _)| p.clone()).unwrap_or_default();
        match token {
            Token::Open => {
                depth += 1;
                i += 1;
            }
            Token::Close => {
                depth = depth.saturating_sub(1);
                if open.len() > 1 && open.last().is_some_and(|(_, _, d)| *d == depth) {
                    if let Some((path, parsed, _)) = open.pop() {
                        done.push((path, parsed));
                    }
                }
                i += 1;
            }
            Token::Ident(word)
                if word == "mod" && matches!(tokens.get(i + 2), Some((Token::Open, _))) =>
            {
                if let Some(name) = ident(i + 1) {
                    let mut path = current.clone();
                    path.push(name.to_string());
                    open.push((path, Parsed::default(), depth));
                }
                depth += 1;
                i += 3;
            }
            Token::Ident(word)
                if word == "mod" && matches!(tokens.get(i + 2), Some((Token::Semi, _))) =>
            {
                if let (Some(name), Some((_, parsed, _))) = (ident(i + 1), open.last_mut()) {
                    parsed.file_children.push(name.to_string());
                }
                i += 3;
            }
            Token::Ident(word) if word == "use" => {
                let end = tokens[i..]
                    .iter()
                    .position(|(t, _)| *t == Token::Semi)
                    .map_or(tokens.len(), |p| i + p);
                let mut leaves = Vec::new();
                use_tree(&tokens[i + 1..end], Vec::new(), &mut leaves);
                if let Some((_, parsed, _)) = open.last_mut() {
                    for (path, binding) in leaves {
                        let Some(absolute) = absolute(&path, &current, &children) else {
                            continue;
                        };
                        parsed.references.push((absolute.clone(), *line));
                        match binding {
                            Binding::Name(name) => {
                                parsed.imports.insert(name, absolute);
                            }
                            Binding::Glob => parsed.globs.push(absolute),
                            Binding::Hidden => {}
                        }
                    }
                }
                i = end + 1;
            }
            Token::Ident(word) => {
                // A path in code: `crate::a::b`, `super::x`, `self::x` or `child::x`.
                let previous_is_sep = i > 0 && tokens[i - 1].0 == Token::PathSep;
                let mut path = vec![word.clone()];
                let mut j = i + 1;
                while tokens.get(j).map(|(t, _)| t) == Some(&Token::PathSep) {
                    match ident(j + 1) {
                        Some(next) => path.push(next.to_string()),
                        None => break,
                    }
                    j += 2;
                }
                if !previous_is_sep && path.len() > 1 {
                    if let (Some(absolute), Some((_, parsed, _))) =
                        (absolute(&path, &current, &children), open.last_mut())
                    {
                        parsed.references.push((absolute, *line));
                    }
                }
                i = j.max(i + 1);
            }
            _ => i += 1,
        }
    }
    while let Some((path, parsed, _)) = open.pop() {
        done.push((path, parsed));
    }
    done
}

/// The `mod` names declared in each module of a file (inline ones included).
fn child_names(
    tokens: &[(Token, usize)],
    root: &[String],
) -> BTreeMap<Vec<String>, BTreeSet<String>> {
    let mut names: BTreeMap<Vec<String>, BTreeSet<String>> = BTreeMap::new();
    let mut open: Vec<(Vec<String>, usize)> = vec![(root.to_vec(), 0)];
    let mut depth = 0usize;
    for (k, (token, _)) in tokens.iter().enumerate() {
        match token {
            Token::Open => {
                if k >= 2 && matches!(&tokens[k - 2].0, Token::Ident(w) if w == "mod") {
                    if let Token::Ident(name) = &tokens[k - 1].0 {
                        let mut path = open.last().map(|(p, _)| p.clone()).unwrap_or_default();
                        names.entry(path.clone()).or_default().insert(name.clone());
                        path.push(name.clone());
                        open.push((path, depth));
                    }
                }
                depth += 1;
            }
            Token::Close => {
                depth = depth.saturating_sub(1);
                if open.len() > 1 && open.last().is_some_and(|(_, d)| *d == depth) {
                    open.pop();
                }
            }
            Token::Semi if k >= 2 && matches!(&tokens[k - 2].0, Token::Ident(w) if w == "mod") => {
                if let Token::Ident(name) = &tokens[k - 1].0 {
                    let path = open.last().map(|(p, _)| p.clone()).unwrap_or_default();
                    names.entry(path).or_default().insert(name.clone());
                }
            }
            _ => {}
        }
    }
    names
}

/// How a `use` leaf binds a name.
#[derive(Debug)]
enum Binding {
    Name(String),
    Glob,
    /// `as _`
    Hidden,
}

/// Expand a `use` tree (`a::{b, c::d as e, f::*}`) into its leaves.
fn use_tree(
    tokens: &[(Token, usize)],
    prefix: Vec<String>,
    leaves: &mut Vec<(Vec<String>, Binding)>,
) {
    let mut path = prefix;
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i].0 {
            Token::Ident(word) if word == "as" => {
                let binding = match tokens.get(i + 1) {
                    Some((Token::Ident(name), _)) if name == "_" => Binding::Hidden,
                    Some((Token::Ident(name), _)) => Binding::Name(name.clone()),
                    _ => Binding::Hidden,
                };
                leaves.push((path.clone(), binding));
                return;
            }
            Token::Ident(word) => {
                path.push(word.clone());
                i += 1;
            }
            Token::PathSep => i += 1,
            Token::Star => {
                leaves.push((path.clone(), Binding::Glob));
                return;
            }
            Token::Open => {
                // Split the group at top-level commas.
                let mut level = 0;
                let mut start = i + 1;
                for k in i + 1..tokens.len() {
                    match tokens[k].0 {
                        Token::Open => level += 1,
                        Token::Close if level == 0 => {
                            use_tree(&tokens[start..k], path.clone(), leaves);
                            return;
                        }
                        Token::Close => level -= 1,
                        Token::Comma if level == 0 => {
                            use_tree(&tokens[start..k], path.clone(), leaves);
                            start = k + 1;
                        }
                        _ => {}
                    }
                }
                return;
            }
            _ => i += 1,
        }
    }
    // `use a::b::{self}` names `b`.
    if path.last().is_some_and(|last| last == "self") {
        path.pop();
    }
    if let Some(name) = path.last().cloned() {
        leaves.push((path, Binding::Name(name)));
    }
}

/// `path` as written in module `current`, made absolute; `None` when it names another crate.
fn absolute(
    path: &[String],
    current: &[String],
    children: &BTreeMap<Vec<String>, BTreeSet<String>>,
) -> Option<Vec<String>> {
    let first = path.first()?;
    let mut base: Vec<String> = match first.as_str() {
        "crate" => Vec::new(),
        "self" => current.to_vec(),
        "super" => {
            let mut base = current.to_vec();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            base.extend(rest.iter().filter(|s| *s != "self").cloned());
            return Some(base);
        }
        name if children.get(current).is_some_and(|c| c.contains(name)) => {
            let mut base = current.to_vec();
            base.push(name.to_string());
            base.extend(path[1..].iter().filter(|s| *s != "self").cloned());
            return Some(base);
        }
        _ => return None,
    };
    base.extend(path[1..].iter().filter(|s| *s != "self").cloned());
    Some(base)
}
