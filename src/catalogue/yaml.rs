//! A small YAML tree in which every node knows its line, built from `yaml-rust2`'s event
//! parser (its document API drops positions). Only what a catalogue needs: scalars keep
//! their text and whether they were plain (so `null` and `~` can be told from `"null"`),
//! mappings keep their pairs in file order (duplicates included, so they can be
//! reported), and aliases are kept as such (a catalogue has no use for them).

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Nesting deeper than this is refused rather than recursed into.
const MAX_DEPTH: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Scalar {
        text: String,
        plain: bool,
        line: usize,
    },
    Seq {
        items: Vec<Node>,
        line: usize,
    },
    Map {
        pairs: Vec<(Node, Node)>,
        line: usize,
    },
    Alias {
        line: usize,
    },
}

impl Node {
    pub fn line(&self) -> usize {
        match self {
            Node::Scalar { line, .. }
            | Node::Seq { line, .. }
            | Node::Map { line, .. }
            | Node::Alias { line } => *line,
        }
    }

    /// A plain `null`, `~` or nothing at all.
    pub fn is_null(&self) -> bool {
        matches!(self, Node::Scalar { text, plain: true, .. }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The text of a scalar that is not null.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar { text, .. } if !self.is_null() => Some(text),
            _ => None,
        }
    }

    /// What kind of node this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            _ if self.is_null() => "nothing",
            Node::Scalar { .. } => "a string",
            Node::Seq { .. } => "a list",
            Node::Map { .. } => "a mapping",
            Node::Alias { .. } => "an alias",
        }
    }
}

/// Why a text is not a single YAML document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

fn line_of(m: &Marker) -> usize {
    m.line().max(1)
}

struct Events<'a> {
    parser: Parser<std::str::Chars<'a>>,
}

impl Events<'_> {
    fn next(&mut self) -> Result<(Event, Marker), SyntaxError> {
        self.parser.next_token().map_err(|e| SyntaxError {
            line: line_of(e.marker()),
            message: format!("malformed YAML: {}", e.info()),
        })
    }

    fn node(&mut self, ev: Event, mark: Marker, depth: usize) -> Result<Node, SyntaxError> {
        let line = line_of(&mark);
        if depth > MAX_DEPTH {
            return Err(SyntaxError {
                line,
                message: format!("nested more than {MAX_DEPTH} levels deep"),
            });
        }
        match ev {
            Event::Scalar(text, style, _, _) => Ok(Node::Scalar {
                text,
                plain: style == TScalarStyle::Plain,
                line,
            }),
            Event::Alias(_) => Ok(Node::Alias { line }),
            Event::SequenceStart(..) => {
                let mut items = Vec::new();
                loop {
                    match self.next()? {
                        (Event::SequenceEnd, _) => break,
                        (ev, m) => items.push(self.node(ev, m, depth + 1)?),
                    }
                }
                Ok(Node::Seq { items, line })
            }
            Event::MappingStart(..) => {
                let mut pairs = Vec::new();
                loop {
                    match self.next()? {
                        (Event::MappingEnd, _) => break,
                        (ev, m) => {
                            let key = self.node(ev, m, depth + 1)?;
                            let (ev, m) = self.next()?;
                            let value = self.node(ev, m, depth + 1)?;
                            pairs.push((key, value));
                        }
                    }
                }
                Ok(Node::Map { pairs, line })
            }
            other => Err(SyntaxError {
                line,
                message: format!("malformed YAML: unexpected {other:?}"),
            }),
        }
    }
}

/// Parses a text holding at most one YAML document. `Ok(None)` for an empty text.
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut ev = Events {
        parser: Parser::new_from_str(text),
    };
    let mut root = None;
    loop {
        match ev.next()? {
            (Event::StreamStart, _) | (Event::DocumentEnd, _) | (Event::Nothing, _) => {}
            (Event::StreamEnd, _) => return Ok(root),
            (Event::DocumentStart, m) => {
                if root.is_some() {
                    return Err(SyntaxError {
                        line: line_of(&m),
                        message: "a second YAML document; a catalogue is one document".into(),
                    });
                }
                let (e, m) = ev.next()?;
                root = Some(ev.node(e, m, 0)?);
            }
            (other, m) => {
                return Err(SyntaxError {
                    line: line_of(&m),
                    message: format!("malformed YAML: unexpected {other:?}"),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_carry_one_based_lines() {
        let t = "# comment\nmodels:\n  - name: gpt2\n    sha: \"abc\"\n  - name: x\n";
        let root = parse(t).unwrap().unwrap();
        let Node::Map { pairs, line } = &root else {
            panic!("{root:?}")
        };
        assert_eq!(*line, 2);
        assert_eq!(pairs[0].0.line(), 2);
        let Node::Seq { items, .. } = &pairs[0].1 else {
            panic!()
        };
        let Node::Map { pairs: first, line } = &items[0] else {
            panic!()
        };
        assert_eq!(*line, 3);
        assert_eq!(first[0].0.as_str(), Some("name"));
        assert_eq!(first[1].0.line(), 4);
        assert_eq!(
            first[1].1,
            Node::Scalar {
                text: "abc".into(),
                plain: false,
                line: 4
            }
        );
        assert_eq!(items[1].line(), 5);
    }

    #[test]
    fn nulls_are_told_from_quoted_strings() {
        let root = parse("a:\nb: ~\nc: 'null'\n").unwrap().unwrap();
        let Node::Map { pairs, .. } = root else {
            panic!()
        };
        assert!(pairs[0].1.is_null());
        assert!(pairs[1].1.is_null());
        assert_eq!(pairs[2].1.as_str(), Some("null"));
    }

    #[test]
    fn syntax_errors_have_lines_and_empty_text_is_no_document() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("# only a comment\n").unwrap(), None);
        let e = parse("models:\n  - name: a\n    sha: [1, 2\n").unwrap_err();
        assert!(e.message.starts_with("malformed YAML"), "{e:?}");
        assert!(e.line >= 3, "{e:?}");
        let e = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(e.line, 2, "{e:?}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let t = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(parse(&t).unwrap_err().message.contains("nested"));
    }
}
