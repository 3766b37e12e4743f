//! Where things are in a manifest file: a `field path → line:column` index per YAML document.
//!
//! serde_yaml reports positions only for its own errors, so validation errors (which know a field
//! path such as `spec.ports[0].port` but not where it was written) are placed with this index, built
//! from yaml-rust2's marked event stream. It owns position lookup only: it never decides whether a
//! document is valid, and it is best effort (a document the event parser rejects is indexed up to
//! the error). Positions are 1-based and absolute in the file, across `---` documents.

use std::collections::BTreeMap;

use yaml_rust2::parser::{Event, Parser};

/// A 1-based line and column in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// One node of a document: where its key (for mapping entries) and its value start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub key: Option<Pos>,
    pub value: Pos,
    /// The text of a scalar value (`None` for mappings, sequences and aliases).
    pub scalar: Option<String>,
}

/// The positions of every node of one YAML document, by field path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocIndex {
    /// Line of the document's root node (or of its `---` marker when it is empty).
    pub line: usize,
    nodes: BTreeMap<String, Node>,
}

impl DocIndex {
    /// The node at `path` (`""` is the root), if it was written.
    pub fn node(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Whether `path` names a node of this document.
    pub fn contains(&self, path: &str) -> bool {
        self.nodes.contains_key(path)
    }

    /// Where an error about `path` should point: the key of a mapping entry (where a reader looks
    /// for a field), the value of a sequence item; for a field that was not written, the nearest
    /// ancestor that was.
    pub fn locate(&self, path: &str) -> Option<Pos> {
        let mut current = path;
        loop {
            if let Some(node) = self.nodes.get(current) {
                return Some(node.key.unwrap_or(node.value));
            }
            if current.is_empty() {
                return None;
            }
            current = parent(current);
        }
    }

    /// The path of the mapping entry whose key starts at `pos`, if any.
    pub fn key_at(&self, pos: Pos) -> Option<&str> {
        self.nodes
            .iter()
            .find(|(_, node)| node.key == Some(pos))
            .map(|(path, _)| path.as_str())
    }

    /// The text of the scalar at `path`.
    pub fn scalar(&self, path: &str) -> Option<&str> {
        self.nodes.get(path).and_then(|n| n.scalar.as_deref())
    }
}

/// The parent of a field path: `spec.ports[0].port` → `spec.ports[0]` → `spec.ports` → `spec` → ``.
pub fn parent(path: &str) -> &str {
    match path.rfind(['.', '[']) {
        Some(i) => &path[..i],
        None => "",
    }
}

/// Joins a mapping key onto a path.
pub fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Joins a sequence index onto a path.
pub fn join_index(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

enum Frame {
    Map {
        path: String,
        /// The key just read, waiting for its value.
        key: Option<(String, Pos)>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

/// Indexes every document of `text`. Stops quietly at the first syntax error, keeping what was
/// indexed so far (serde_yaml, not this index, reports syntax errors).
pub fn index(text: &str) -> Vec<DocIndex> {
    let mut parser = Parser::new_from_str(text);
    let mut docs: Vec<DocIndex> = Vec::new();
    let mut current: Option<DocIndex> = None;
    let mut stack: Vec<Frame> = Vec::new();
    while let Ok((event, marker)) = parser.next_token() {
        let pos = Pos {
            line: marker.line(),
            col: marker.col() + 1,
        };
        match event {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                if let Some(doc) = current.take() {
                    docs.push(doc);
                }
                stack.clear();
                current = Some(DocIndex {
                    line: pos.line,
                    nodes: BTreeMap::new(),
                });
            }
            Event::DocumentEnd => {
                if let Some(doc) = current.take() {
                    docs.push(doc);
                }
                stack.clear();
            }
            Event::Scalar(ref value, ..) => {
                let Some(doc) = current.as_mut() else {
                    continue;
                };
                if let Some(Frame::Map {
                    path,
                    key: key @ None,
                }) = stack.last_mut()
                {
                    *key = Some((value.clone(), pos));
                    first_key(doc, path, pos);
                    continue;
                }
                let (path, key) = next_path(&mut stack);
                record(doc, path, key, pos, Some(value.clone()));
            }
            Event::Alias(_) => {
                let Some(doc) = current.as_mut() else {
                    continue;
                };
                if let Some(Frame::Map {
                    key: key @ None, ..
                }) = stack.last_mut()
                {
                    *key = Some(("*".to_string(), pos));
                    continue;
                }
                let (path, key) = next_path(&mut stack);
                record(doc, path, key, pos, None);
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let Some(doc) = current.as_mut() else {
                    continue;
                };
                let (path, key) = match stack.last_mut() {
                    // A complex (non-scalar) key: index what is under it as `?`.
                    Some(Frame::Map {
                        path,
                        key: key @ None,
                    }) => {
                        *key = Some(("?".to_string(), pos));
                        (join_key(path, "?"), None)
                    }
                    _ => next_path(&mut stack),
                };
                record(doc, path.clone(), key, pos, None);
                stack.push(if matches!(event, Event::MappingStart(..)) {
                    Frame::Map { path, key: None }
                } else {
                    Frame::Seq { path, next: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                // After a complex key closes, its map still holds the `?` key for the value.
                stack.pop();
            }
            Event::StreamStart | Event::Nothing => {}
        }
    }
    if let Some(doc) = current.take() {
        docs.push(doc);
    }
    docs
}

/// The path of the value node about to start, consuming the pending key or sequence slot.
fn next_path(stack: &mut [Frame]) -> (String, Option<Pos>) {
    match stack.last_mut() {
        None => (String::new(), None),
        Some(Frame::Map { path, key }) => match key.take() {
            Some((k, key_pos)) => (join_key(path, &k), Some(key_pos)),
            None => (join_key(path, "?"), None),
        },
        Some(Frame::Seq { path, next }) => {
            let p = join_index(path, *next);
            *next += 1;
            (p, None)
        }
    }
}

/// yaml-rust2 marks a block mapping's start at the `:` of its first key: move it to the key
/// (any key before the recorded start is the first one).
fn first_key(doc: &mut DocIndex, path: &str, key: Pos) {
    if let Some(node) = doc.nodes.get_mut(path) {
        if key < node.value {
            node.value = key;
            if path.is_empty() {
                doc.line = key.line;
            }
        }
    }
}

fn record(doc: &mut DocIndex, path: String, key: Option<Pos>, value: Pos, scalar: Option<String>) {
    if path.is_empty() {
        doc.line = value.line;
    }
    // A duplicate key keeps its first position (serde_yaml reports the duplicate itself).
    doc.nodes.entry(path).or_insert(Node { key, value, scalar });
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn p(line: usize, col: usize) -> Pos {
        Pos { line, col }
    }

    #[test]
    fn indexes_keys_values_and_sequence_items() {
        let text = "\
apiVersion: beast/v1
spec:
  ports:
    - port: 1337
      hostPort: 31337
    - {port: 53, protocol: udp}
  command: [nc, -l]
";
        let docs = index(text);
        assert_eq!(docs.len(), 1);
        let d = &docs[0];
        assert_eq!(d.line, 1);
        let port = d.node("spec.ports[0].port").unwrap();
        assert_eq!(port.key, Some(p(4, 7)));
        assert_eq!(port.value, p(4, 13));
        assert_eq!(d.scalar("spec.ports[0].port"), Some("1337"));
        assert_eq!(d.locate("spec.ports[0].hostPort"), Some(p(5, 7)));
        assert_eq!(d.locate("spec.ports[1].protocol"), Some(p(6, 18)));
        assert_eq!(d.locate("spec.command[1]"), Some(p(7, 17)));
        // Not written: the nearest ancestor.
        assert_eq!(d.locate("spec.ports[1].hostPort"), Some(p(6, 7)));
        assert_eq!(d.locate("metadata.name"), Some(p(1, 1)));
        assert_eq!(d.key_at(p(5, 7)), Some("spec.ports[0].hostPort"));
        // Block mappings start at their first key (yaml-rust2 marks the `:`).
        assert_eq!(d.node("spec.ports[0]").unwrap().value, p(4, 7));
        assert_eq!(d.node("spec.ports[1]").unwrap().value, p(6, 7));
    }

    #[test]
    fn lines_are_absolute_across_documents() {
        let text = "a: 1\n---\n# c\n\nb:\n  c: 2\n---\n---\nd: [x]\n";
        let docs = index(text);
        assert_eq!(docs.len(), 4);
        assert_eq!(docs[0].locate("a"), Some(p(1, 1)));
        assert_eq!(docs[1].line, 5);
        assert_eq!(docs[1].locate("b.c"), Some(p(6, 3)));
        assert_eq!(docs[2].scalar(""), Some(""));
        assert_eq!(docs[3].locate("d[0]"), Some(p(9, 5)));
    }

    #[test]
    fn keeps_what_it_indexed_before_a_syntax_error() {
        let docs = index("metadata:\n  name: echo\nspec: [1\n");
        assert_eq!(docs[0].scalar("metadata.name"), Some("echo"));
    }

    #[test]
    fn parent_of_paths() {
        assert_eq!(parent("spec.ports[0].port"), "spec.ports[0]");
        assert_eq!(parent("spec.ports[0]"), "spec.ports");
        assert_eq!(parent("spec"), "");
    }
}
