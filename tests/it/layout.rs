//! The layout of `src/` stays what the README says: no import cycle between files or between
//! folders, and no file over 450 lines without a note at its top saying why (`// reason: …`).
//!
//! The checker reads the crate from `src/lib.rs` along its `mod` declarations, collects every
//! `use` and every `crate::…`, `super::…`, `self::…` or child-module path in the code (comments
//! and strings left out), resolves each one to the file that defines the item — following
//! `use` re-exports, so `super::Failure` re-exported by `backend/mod.rs` from `failure.rs`
//! counts as an import of `failure.rs` — and looks for cycles among files, and among the
//! files and folders of each folder.
//!
//! A module's own file (`store/sqlite/mod.rs`, `backend/local_cli.rs`) and the files under it
//! are one unit: a child naming what its parent defines (`super::SqliteStore`) while the
//! parent calls into its children is how a module is built, so an import of an ancestor's own
//! file is not an edge. Siblings importing each other, and folders importing each other, are
//! cycles.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files may be longer than this only with a reason at their top.
const MAX_LINES: usize = 450;
/// The reason must be within this many lines of the top.
const REASON_WITHIN: usize = 20;

#[test]
fn src_has_no_import_cycle_and_no_unexplained_long_file() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let report = check(&src);
    assert!(report.files > 10, "the checker found the crate: {report:?}");
    assert!(report.is_clean(), "{}", report.describe());
}

/// What [`check`] found.
#[derive(Debug, Default)]
struct Report {
    /// Source files read.
    files: usize,
    /// Resolved imports between distinct files.
    edges: usize,
    /// Each a set of files that import each other, with the imports that close the cycle.
    file_cycles: Vec<Vec<String>>,
    /// Each a set of siblings (files or folders of one folder) that import each other.
    folder_cycles: Vec<Vec<String>>,
    /// Files over [`MAX_LINES`] without a reason, with their length.
    long_files: Vec<(String, usize)>,
}

impl Report {
    fn is_clean(&self) -> bool {
        self.file_cycles.is_empty() && self.folder_cycles.is_empty() && self.long_files.is_empty()
    }

    fn describe(&self) -> String {
        let mut out = String::new();
        for cycle in &self.file_cycles {
            out += &format!("import cycle between files:\n  {}\n", cycle.join("\n  "));
        }
        for cycle in &self.folder_cycles {
            out += &format!(
                "import cycle between folders or files:\n  {}\n",
                cycle.join("\n  ")
            );
        }
        for (file, lines) in &self.long_files {
            out += &format!(
                "{file}: {lines} lines (over {MAX_LINES}) and no `// reason: …` in its first {REASON_WITHIN} lines\n"
            );
        }
        out
    }
}

/// A module: where it is written and the modules it declares.
#[derive(Debug)]
struct Module {
    /// The file, relative to `src/`.
    file: String,
    /// Names bound by `use` in this module → the absolute path they name (`None` for `*`).
    imports: BTreeMap<String, Vec<String>>,
    /// Glob imports (`use path::*`), absolute.
    globs: Vec<Vec<String>>,
    /// Module paths this module refers to, absolute, with the line of the reference.
    references: Vec<(Vec<String>, usize)>,
}

fn check(src: &Path) -> Report {
    let mut modules: BTreeMap<Vec<String>, Module> = BTreeMap::new();
    let mut report = Report::default();
    load(
        src,
        Path::new("lib.rs"),
        Vec::new(),
        &mut modules,
        &mut report,
    );

    // file → file, with one reference that makes the edge, for the message.
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for module in modules.values() {
        for (reference, line) in &module.references {
            let Some(target) = resolve(&modules, reference, 0) else {
                continue;
            };
            if target == module.file || is_ancestor(&target, &module.file) {
                continue;
            }
            edges
                .entry(module.file.clone())
                .or_default()
                .entry(target.clone())
                .or_insert_with(|| {
                    format!("{}:{line} `crate::{}`", module.file, reference.join("::"))
                });
        }
    }
    report.edges = edges.values().map(BTreeMap::len).sum();

    for component in cycles(&edges) {
        report.file_cycles.push(explain(&component, &edges));
    }

    // Sibling level: an import from a/b/x.rs to a/c.rs is an edge b → c.rs inside a/.
    let mut siblings: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (from, targets) in &edges {
        for (to, why) in targets {
            let (a, b) = sibling_pair(from, to);
            if a != b {
                siblings
                    .entry(a)
                    .or_default()
                    .entry(b)
                    .or_insert_with(|| why.clone());
            }
        }
    }
    let files: BTreeSet<&String> = modules.values().map(|m| &m.file).collect();
    for component in cycles(&siblings) {
        // A cycle of single files is already listed above.
        let spans_folders = component.iter().any(|node| {
            let prefix = format!("{node}/");
            files.iter().any(|file| file.starts_with(&prefix))
        });
        if spans_folders {
            report.folder_cycles.push(explain(&component, &siblings));
        }
    }
    report
}

/// Read the module in `file` (relative to `src`) and, recursively, the modules it declares.
fn load(
    src: &Path,
    file: &Path,
    path: Vec<String>,
    modules: &mut BTreeMap<Vec<String>, Module>,
    report: &mut Report,
) {
    let Ok(text) = std::fs::read_to_string(src.join(file)) else {
        return;
    };
    report.files += 1;
    let shown = file.display().to_string();
    let lines = text.lines().count();
    if lines > MAX_LINES && !has_reason(&text) {
        report.long_files.push((shown.clone(), lines));
    }
    // Where this file's child modules live: beside lib.rs/mod.rs, else in a folder named
    // after the file.
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let children_dir: PathBuf = match stem {
        "lib" | "mod" | "main" => file.parent().map(Path::to_path_buf).unwrap_or_default(),
        _ => file.with_extension(""),
    };
    let tokens = tokenize(&text);
    let parsed = parse(&tokens, &path);
    for (module_path, inline) in parsed {
        let is_root = module_path == path;
        for child in &inline.file_children {
            let mut child_path = module_path.clone();
            child_path.push(child.clone());
            // Only modules declared at the top of a file live in their own files.
            if !is_root {
                continue;
            }
            let candidates = [
                children_dir.join(format!("{child}.rs")),
                children_dir.join(child).join("mod.rs"),
            ];
            if let Some(found) = candidates.iter().find(|c| src.join(c).is_file()) {
                load(src, found, child_path, modules, report);
            }
        }
        modules.insert(
            module_path,
            Module {
                file: shown.clone(),
                imports: inline.imports,
                globs: inline.globs,
                references: inline.references,
            },
        );
    }
}

fn has_reason(text: &str) -> bool {
    text.lines().take(REASON_WITHIN).any(|line| {
        let line = line
            .trim_start()
            .trim_start_matches('/')
            .trim_start_matches('!');
        line.trim_start()
            .to_ascii_lowercase()
            .starts_with("reason:")
    })
}

/// The file that defines what `path` names, following `use` re-exports.
fn resolve(
    modules: &BTreeMap<Vec<String>, Module>,
    path: &[String],
    depth: usize,
) -> Option<String> {
    let mut prefix = path.len();
    while prefix > 0 && !modules.contains_key(&path[..prefix]) {
        prefix -= 1;
    }
    let module = modules.get(&path[..prefix])?;
    if depth < 8 {
        if let Some(item) = path.get(prefix) {
            if let Some(target) = module.imports.get(item) {
                let mut next = target.clone();
                next.extend_from_slice(&path[prefix + 1..]);
                if let Some(found) = resolve(modules, &next, depth + 1) {
                    return Some(found);
                }
            }
            for glob in &module.globs {
                let mut next = glob.clone();
                next.extend_from_slice(&path[prefix..]);
                // Through a glob only what resolves to a deeper module is known to be there.
                let mut inner = next.len();
                while inner > 0 && !modules.contains_key(&next[..inner]) {
                    inner -= 1;
                }
                if inner > glob.len() {
                    return resolve(modules, &next, depth + 1);
                }
            }
        }
    }
    Some(module.file.clone())
}

/// Whether `ancestor` is the own file of a module that contains `file`.
fn is_ancestor(ancestor: &str, file: &str) -> bool {
    let (outer, inner) = (module_path(ancestor), module_path(file));
    outer.len() < inner.len() && inner.starts_with(&outer)
}

/// A file's module path from `src/`: `backend/local_cli.rs` and `backend/local_cli/mod.rs`
/// are `[backend, local_cli]`, `lib.rs` is `[]`.
fn module_path(file: &str) -> Vec<String> {
    let mut parts: Vec<String> = file.split('/').map(str::to_string).collect();
    if let Some(last) = parts.pop() {
        let stem = last.strip_suffix(".rs").unwrap_or(&last);
        if stem != "mod" && stem != "lib" {
            parts.push(stem.to_string());
        }
    }
    parts
}

/// For an edge between two files, the two siblings it connects inside their deepest common
/// module: a module (`jobs`, `backend/local_cli`: its file and everything under it) or, when
/// one side is that common module itself, its own file (`backend/mod.rs`).
fn sibling_pair(from: &str, to: &str) -> (String, String) {
    let (a, b) = (module_path(from), module_path(to));
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let node = |path: &[String], file: &str| match path.len() == common {
        true => file.to_string(),
        false => path[..=common].join("/"),
    };
    (node(&a, from), node(&b, to))
}

/// Strongly connected components with more than one node (Tarjan), each sorted.
fn cycles(edges: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeMap<String, String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, node: &'a str) {
        let i = s.index.len();
        s.index.insert(node, i);
        s.low.insert(node, i);
        s.stack.push(node);
        s.on_stack.insert(node);
        if let Some(targets) = s.edges.get(node) {
            for next in targets.keys() {
                let next = next.as_str();
                if !s.index.contains_key(next) {
                    visit(s, next);
                    let low = s.low[node].min(s.low[next]);
                    s.low.insert(node, low);
                } else if s.on_stack.contains(next) {
                    let low = s.low[node].min(s.index[next]);
                    s.low.insert(node, low);
                }
            }
        }
        if s.low[node] == s.index[node] {
            let mut component = Vec::new();
            while let Some(top) = s.stack.pop() {
                s.on_stack.remove(top);
                component.push(top.to_string());
                if top == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in edges.keys() {
        if !state.index.contains_key(node.as_str()) {
            visit(&mut state, node);
        }
    }
    state.found
}

/// Every edge inside a cycle, with the reference that makes it.
fn explain(
    component: &[String],
    edges: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<String> {
    let members: BTreeSet<&String> = component.iter().collect();
    let mut lines = Vec::new();
    for from in component {
        for (to, why) in edges.get(from).into_iter().flatten() {
            if members.contains(to) {
                lines.push(format!("{from} → {to}   ({why})"));
            }
        }
    }
    lines
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
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
fn tokenize(text: &str) -> Vec<(Token, usize)> {
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
struct Parsed {
    /// `mod x;` declarations.
    file_children: Vec<String>,
    imports: BTreeMap<String, Vec<String>>,
    globs: Vec<Vec<String>>,
    references: Vec<(Vec<String>, usize)>,
}

/// Walk the tokens of a file whose module path is `root`; one entry per module in the file.
fn parse(tokens: &[(Token, usize)], root: &[String]) -> Vec<(Vec<String>, Parsed)> {
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

/// The checker itself, on small crates written for the purpose.
mod checker {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn two_files_importing_each_other_are_a_cycle() {
        let dir = tree(&[
            ("lib.rs", "mod a;\nmod b;\n"),
            ("a.rs", "use crate::b::Bee;\npub struct Ay;\n"),
            (
                "b.rs",
                "pub struct Bee;\nfn f() -> crate::a::Ay { todo!() }\n",
            ),
        ]);
        let report = check(dir.path());
        assert_eq!(report.files, 3);
        assert_eq!(report.file_cycles.len(), 1, "{report:?}");
        let text = report.describe();
        assert!(
            text.contains("a.rs → b.rs") && text.contains("b.rs → a.rs"),
            "{text}"
        );
        assert!(text.contains("b.rs:2 `crate::a::Ay`"), "{text}");
    }

    #[test]
    fn one_way_imports_and_comments_are_no_cycle() {
        let dir = tree(&[
            ("lib.rs", "mod a;\nmod b;\n"),
            ("a.rs", "use crate::b::Bee;\n"),
            (
                "b.rs",
                "pub struct Bee;\n// crate::a::Ay in a comment\nconst S: &str = \"crate::a::Ay\";\n/* use crate::a; */\n",
            ),
        ]);
        let report = check(dir.path());
        assert!(report.is_clean(), "{}", report.describe());
        assert_eq!(report.edges, 1);
    }

    #[test]
    fn re_exports_are_followed_to_the_defining_file() {
        // backend/mod.rs re-exports Failure from failure.rs; modal.rs uses it through
        // `super::`: an import of failure.rs, not of mod.rs, so no cycle with mod.rs.
        let dir = tree(&[
            ("lib.rs", "pub mod backend;\n"),
            (
                "backend/mod.rs",
                "mod failure;\npub mod modal;\npub use failure::Failure;\n",
            ),
            ("backend/failure.rs", "pub struct Failure;\n"),
            ("backend/modal.rs", "use super::Failure;\n"),
        ]);
        let report = check(dir.path());
        assert!(report.is_clean(), "{}", report.describe());

        // A child using what its parent defines while the parent re-exports the child: one
        // module, no cycle.
        let dir = tree(&[
            ("lib.rs", "pub mod backend;\n"),
            (
                "backend/mod.rs",
                "pub mod modal;\npub use modal::Modal;\npub trait Backend {}\n",
            ),
            (
                "backend/modal.rs",
                "pub struct Modal;\nimpl super::Backend for Modal {}\n",
            ),
        ]);
        let report = check(dir.path());
        assert!(report.is_clean(), "{}", report.describe());

        // Two children importing each other through the facade: a cycle between siblings.
        let dir = tree(&[
            ("lib.rs", "pub mod backend;\n"),
            (
                "backend/mod.rs",
                "mod failure;\npub mod modal;\npub use failure::Failure;\npub use modal::Modal;\n",
            ),
            ("backend/failure.rs", "pub struct Failure(super::Modal);\n"),
            (
                "backend/modal.rs",
                "pub struct Modal;\nfn f(_: super::Failure) {}\n",
            ),
        ]);
        let report = check(dir.path());
        assert_eq!(report.file_cycles.len(), 1, "{}", report.describe());
        let text = report.describe();
        assert!(
            text.contains("backend/failure.rs → backend/modal.rs")
                && text.contains("backend/modal.rs → backend/failure.rs"),
            "{text}"
        );
    }

    #[test]
    fn folders_importing_each_other_are_a_cycle_even_without_a_file_cycle() {
        // jobs/runner.rs → ws/outbound.rs and ws/handlers.rs → jobs/registry.rs: no two files
        // import each other, but the folders jobs/ and ws/ do.
        let dir = tree(&[
            ("lib.rs", "pub mod jobs;\npub mod ws;\n"),
            ("jobs/mod.rs", "pub mod registry;\npub mod runner;\n"),
            ("jobs/registry.rs", "pub struct Jobs;\n"),
            ("jobs/runner.rs", "use crate::ws::outbound::Outbound;\n"),
            ("ws/mod.rs", "pub mod handlers;\npub mod outbound;\n"),
            ("ws/outbound.rs", "pub struct Outbound;\n"),
            (
                "ws/handlers.rs",
                "use crate::jobs::{registry::Jobs, self};\n",
            ),
        ]);
        let report = check(dir.path());
        assert!(report.file_cycles.is_empty(), "{}", report.describe());
        assert_eq!(report.folder_cycles.len(), 1, "{}", report.describe());
        let text = report.describe();
        assert!(
            text.contains("jobs → ws") && text.contains("ws → jobs"),
            "{text}"
        );
    }

    #[test]
    fn relative_child_paths_and_inline_modules_resolve() {
        // `use output::Parser` in local_cli.rs names its child module; the test module's
        // `use super::*` is the file itself.
        let dir = tree(&[
            ("lib.rs", "pub mod local_cli;\n"),
            (
                "local_cli.rs",
                "mod output;\nuse output::Parser;\npub struct Cli;\n#[cfg(test)]\nmod tests {\n    use super::*;\n    fn f() { let _ = self::super::Cli; }\n}\n",
            ),
            ("local_cli/output.rs", "pub struct Parser;\nfn g() -> super::Cli { super::Cli }\n"),
        ]);
        let report = check(dir.path());
        assert_eq!(report.files, 3);
        // local_cli.rs → output.rs counts; output.rs → local_cli.rs is a child naming its
        // parent, inside one module.
        assert_eq!(report.edges, 1, "{report:?}");
        assert!(report.is_clean(), "{}", report.describe());
    }

    #[test]
    fn a_long_file_needs_a_reason_at_its_top() {
        let long = "fn f() {}\n".repeat(MAX_LINES + 1);
        let explained =
            format!("// reason: one state machine, splitting it hides the transitions\n{long}");
        let dir = tree(&[
            ("lib.rs", "mod long;\nmod explained;\n"),
            ("long.rs", &long),
            ("explained.rs", &explained),
        ]);
        let report = check(dir.path());
        assert_eq!(
            report.long_files,
            vec![("long.rs".to_string(), MAX_LINES + 1)]
        );
    }
}
