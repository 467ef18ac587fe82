//! Reading a crate into modules and references, resolving them to files, finding cycles.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::parse::{parse, tokenize};
use super::{MAX_LINES, REASON_WITHIN};

/// What [`check`] found.
#[derive(Debug, Default)]
pub(super) struct Report {
    /// Source files read.
    pub(super) files: usize,
    /// Resolved imports between distinct files.
    pub(super) edges: usize,
    /// Each a set of files that import each other, with the imports that close the cycle.
    pub(super) file_cycles: Vec<Vec<String>>,
    /// Each a set of siblings (files or folders of one folder) that import each other.
    pub(super) folder_cycles: Vec<Vec<String>>,
    /// Files over [`MAX_LINES`] without a reason, with their length.
    pub(super) long_files: Vec<(String, usize)>,
}

impl Report {
    pub(super) fn is_clean(&self) -> bool {
        self.file_cycles.is_empty() && self.folder_cycles.is_empty() && self.long_files.is_empty()
    }

    pub(super) fn describe(&self) -> String {
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

/// Check the library (`lib.rs`) and, when there is one, the binary (`main.rs`): two crates,
/// each with its own `crate::`.
pub(super) fn check(src: &Path) -> Report {
    let mut report = Report::default();
    for root in ["lib.rs", "main.rs"] {
        check_crate(src, Path::new(root), &mut report);
    }
    report
}

fn check_crate(src: &Path, root: &Path, report: &mut Report) {
    let mut modules: BTreeMap<Vec<String>, Module> = BTreeMap::new();
    load(src, root, Vec::new(), &mut modules, report);

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
    report.edges += edges.values().map(BTreeMap::len).sum::<usize>();

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

/// The shortest cycle inside a tangle, one import per line with the reference that makes it,
/// then how many files or folders the whole tangle holds.
fn explain(
    component: &[String],
    edges: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<String> {
    let members: BTreeSet<&String> = component.iter().collect();
    let next = |node: &String| -> Vec<&String> {
        edges
            .get(node)
            .into_iter()
            .flat_map(|targets| targets.keys())
            .filter(|to| members.contains(to))
            .collect()
    };
    // Breadth-first from each member back to itself; keep the shortest loop.
    let mut best: Option<Vec<&String>> = None;
    for start in component {
        let mut parent: BTreeMap<&String, &String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut closed = None;
        while let Some(node) = queue.pop_front() {
            for to in next(node) {
                if to == start {
                    closed = Some(node);
                    break;
                }
                if !parent.contains_key(to) {
                    parent.insert(to, node);
                    queue.push_back(to);
                }
            }
            if closed.is_some() {
                break;
            }
        }
        let Some(last) = closed else { continue };
        // start → … → last → start, rebuilt from `last` back to `start`.
        let mut path = vec![start, last];
        let mut node = last;
        while let Some(&previous) = parent.get(node) {
            path.insert(1, previous);
            node = previous;
        }
        path.dedup();
        path.push(start);
        if best.as_ref().is_none_or(|b| path.len() < b.len()) {
            best = Some(path);
        }
    }
    let mut lines: Vec<String> = best
        .unwrap_or_default()
        .windows(2)
        .map(|pair| {
            let why = edges.get(pair[0]).and_then(|t| t.get(pair[1]));
            format!(
                "{} → {}   ({})",
                pair[0],
                pair[1],
                why.map_or("", String::as_str)
            )
        })
        .collect();
    if component.len() > lines.len() {
        lines.push(format!(
            "… one of the cycles among {} that import each other: {}",
            component.len(),
            component.join(", ")
        ));
    }
    lines
}
