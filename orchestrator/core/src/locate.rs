//! Finds where a key path (`space.lr.float`) sits in a YAML document, so that errors
//! found after parsing still point at a line and column.

use yaml_rust2::parser::{Event, Parser};

/// One step of a path into a YAML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathStep {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

impl From<&str> for PathStep {
    fn from(s: &str) -> Self {
        PathStep::Key(s.to_owned())
    }
}

impl From<usize> for PathStep {
    fn from(i: usize) -> Self {
        PathStep::Index(i)
    }
}

#[derive(Debug)]
enum Node {
    Scalar,
    Seq(Vec<Located>),
    Map(Vec<(String, (usize, usize), Located)>),
}

#[derive(Debug)]
struct Located {
    at: (usize, usize),
    node: Node,
}

/// The 1-based line and column of the node at `path`: the deepest step found is used
/// when the path goes further than the document (a missing key points at its parent).
/// Keys are located at the key itself. `None` when the document does not parse.
pub fn locate(source: &str, path: &[PathStep]) -> Option<(usize, usize)> {
    let mut parser = Parser::new_from_str(source);
    let mut events = Vec::new();
    loop {
        let (ev, mark) = parser.next_token().ok()?;
        let end = matches!(ev, Event::StreamEnd);
        events.push((ev, (mark.line(), mark.col() + 1)));
        if end {
            break;
        }
    }
    let mut pos = 0;
    // Skip to the first node of the first document.
    while pos < events.len()
        && matches!(
            events[pos].0,
            Event::StreamStart | Event::DocumentStart | Event::Nothing
        )
    {
        pos += 1;
    }
    let root = build(&events, &mut pos)?;
    let mut current = &root;
    let mut at = root.at;
    for step in path {
        match (&current.node, step) {
            (Node::Map(entries), PathStep::Key(k)) => {
                match entries.iter().find(|(key, _, _)| key == k) {
                    Some((_, key_at, value)) => {
                        at = *key_at;
                        current = value;
                    }
                    None => return Some(at),
                }
            }
            (Node::Seq(items), PathStep::Index(i)) => match items.get(*i) {
                Some(item) => {
                    at = item.at;
                    current = item;
                }
                None => return Some(at),
            },
            _ => return Some(at),
        }
    }
    Some(at)
}

/// The first key that appears twice in one mapping: (line, column, key) of the second.
pub fn duplicate_key(source: &str) -> Option<(usize, usize, String)> {
    let mut parser = Parser::new_from_str(source);
    // One set of keys per open mapping; `None` marks an open sequence. `expect_key`
    // tracks whether the next scalar in the innermost mapping is a key.
    let mut stack: Vec<Option<(Vec<String>, bool)>> = Vec::new();
    loop {
        let (ev, mark) = parser.next_token().ok()?;
        match ev {
            Event::StreamEnd => return None,
            Event::MappingStart(..) => {
                flip(&mut stack);
                stack.push(Some((Vec::new(), true)));
            }
            Event::SequenceStart(..) => {
                flip(&mut stack);
                stack.push(None);
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
            }
            Event::Scalar(s, ..) => {
                if let Some(Some((keys, expect))) = stack.last_mut() {
                    if *expect {
                        if keys.contains(&s) {
                            return Some((mark.line(), mark.col() + 1, s));
                        }
                        keys.push(s);
                    }
                    *expect = !*expect;
                }
            }
            Event::Alias(_) => flip(&mut stack),
            _ => {}
        }
    }
}

/// After a complex value in a mapping, the next scalar is a key again.
fn flip(stack: &mut [Option<(Vec<String>, bool)>]) {
    if let Some(Some((_, expect))) = stack.last_mut() {
        *expect = !*expect;
    }
}

fn build(events: &[(Event, (usize, usize))], pos: &mut usize) -> Option<Located> {
    let (ev, at) = events.get(*pos)?;
    let at = *at;
    *pos += 1;
    match ev {
        Event::Scalar(..) | Event::Alias(_) => Some(Located {
            at,
            node: Node::Scalar,
        }),
        Event::SequenceStart(..) => {
            let mut items = Vec::new();
            while !matches!(events.get(*pos)?.0, Event::SequenceEnd) {
                items.push(build(events, pos)?);
            }
            *pos += 1;
            Some(Located {
                at,
                node: Node::Seq(items),
            })
        }
        Event::MappingStart(..) => {
            let mut entries = Vec::new();
            while !matches!(events.get(*pos)?.0, Event::MappingEnd) {
                let (key_ev, key_at) = &events[*pos];
                let key = match key_ev {
                    Event::Scalar(s, ..) => s.clone(),
                    _ => String::new(),
                };
                let key_at = *key_at;
                let _ = build(events, pos)?;
                let value = build(events, pos)?;
                entries.push((key, key_at, value));
            }
            *pos += 1;
            Some(Located {
                at,
                node: Node::Map(entries),
            })
        }
        _ => Some(Located {
            at,
            node: Node::Scalar,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str =
        "version: 1\nspace:\n  lr: { float: [0.1, 0.01] }\n  depth:\n    choice: [1, 2]\n";

    #[test]
    fn finds_block_and_flow_keys() {
        assert_eq!(locate(DOC, &["space".into(), "lr".into()]), Some((3, 3)));
        assert_eq!(
            locate(DOC, &["space".into(), "lr".into(), "float".into()]),
            Some((3, 9))
        );
        assert_eq!(
            locate(
                DOC,
                &["space".into(), "lr".into(), "float".into(), 1.into()]
            ),
            Some((3, 22))
        );
        assert_eq!(
            locate(DOC, &["space".into(), "depth".into(), "choice".into()]),
            Some((5, 5))
        );
    }

    #[test]
    fn duplicate_keys_are_found_where_they_repeat() {
        assert_eq!(duplicate_key(DOC), None);
        let dup = "space:\n  x: 1\n  y: { a: [1, 2], b: 2 }\n  x: 2\n";
        assert_eq!(duplicate_key(dup), Some((4, 3, "x".into())));
        assert_eq!(
            duplicate_key("a: 1\nb: [1, 1]\na: 2\n"),
            Some((3, 1, "a".into()))
        );
        assert_eq!(
            duplicate_key("a: { x: 1, x: 2 }\n"),
            Some((1, 12, "x".into()))
        );
    }

    #[test]
    fn missing_key_points_at_parent() {
        assert_eq!(locate(DOC, &["space".into(), "nope".into()]), Some((2, 1)));
    }
}
