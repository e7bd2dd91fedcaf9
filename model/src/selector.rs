//! Kubernetes label selectors, read as apimachinery's `labels.Parse` reads the text form
//! (`app=web,tier!=db,zone in (a,b),!legacy`) and `LabelSelectorAsSelector` the structured
//! one (`matchLabels`, `matchExpressions`).
//!
//! A selector is a list of requirements that must all hold:
//!
//! ```text
//! selector     ::= "" | requirement ("," requirement)*
//! requirement  ::= key | "!" key
//!                | key ("=" | "==" | "!=" | ">" | "<") value
//!                | key ("in" | "notin") "(" value ("," value)* ")"
//! ```
//!
//! Keys are qualified names (`[prefix/]name`), values label values (63 characters at most,
//! alphanumerics and `-_.` inside, possibly empty), as Kubernetes checks them; `>` and `<`
//! compare integers. Whitespace between tokens is ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde_json::Value;

/// A parsed label selector: every requirement must hold. The empty selector matches
/// everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// One requirement on one label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    /// Sorted and without repeats, as Kubernetes keeps them; one value for `=`, `!=`, `>`
    /// and `<`, none for existence.
    values: Vec<String>,
}

/// How a requirement relates a label to its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `key=value` or `key==value`.
    Equals,
    /// `key!=value`: the label is absent or has another value.
    NotEquals,
    /// `key in (a,b)`.
    In,
    /// `key notin (a,b)`: the label is absent or has none of the values.
    NotIn,
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
    /// `key>n`: the label is an integer above `n`.
    GreaterThan,
    /// `key<n`: the label is an integer below `n`.
    LessThan,
}

/// A selector that is not one, naming the requirement at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError {
    /// The requirement as written.
    pub requirement: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "label selector requirement {:?} is not understood: {}",
            self.requirement, self.reason
        )
    }
}

impl std::error::Error for SelectorError {}

/// Labels a selector can look into: an object's `metadata.labels` as JSON (anything but an
/// object has no labels; a label that is not a string counts as absent) or as a map.
pub trait Labels {
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for Value {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
}

impl Labels for serde_json::Map<String, Value> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Selector {
    /// Parses the text form, as a `labelSelector` query parameter carries it.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        Parser::new(text).selector()
    }

    /// Reads a structured `metav1.LabelSelector` (`matchLabels`, `matchExpressions` with
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`); `{}` matches everything. Kubernetes reads
    /// an absent selector as matching nothing; callers where absence means "any" decide
    /// that before calling.
    pub fn from_label_selector(selector: &Value) -> Result<Self, SelectorError> {
        let object = selector
            .as_object()
            .ok_or_else(|| error(selector.to_string(), "a label selector is an object"))?;
        let mut requirements = Vec::new();
        match object.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(labels)) => {
                for (key, value) in labels {
                    let text = || format!("{key}: {value}");
                    let value = value
                        .as_str()
                        .ok_or_else(|| error(text(), "a matchLabels value is a string"))?;
                    let requirement =
                        Requirement::new(key, Operator::Equals, vec![value.to_owned()])
                            .map_err(|reason| error(text(), reason))?;
                    requirements.push(requirement);
                }
            }
            Some(other) => return Err(error(other.to_string(), "matchLabels is an object")),
        }
        match object.get("matchExpressions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(expressions)) => {
                for expression in expressions {
                    let requirement = Requirement::from_expression(expression)?;
                    if matches!(
                        requirement.operator,
                        Operator::GreaterThan | Operator::LessThan
                    ) {
                        return Err(error(
                            expression.to_string(),
                            "a label selector's operators are In, NotIn, Exists and DoesNotExist",
                        ));
                    }
                    requirements.push(requirement);
                }
            }
            Some(other) => return Err(error(other.to_string(), "matchExpressions is a list")),
        }
        Ok(Self { requirements })
    }

    /// True when every requirement holds for `labels`.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// The (key, value) terms when every requirement is a plain equality (`a=b,c==d`, or
    /// nothing at all), or `None` for any other form: what an index by label can answer.
    pub fn equality_terms(&self) -> Option<Vec<(&str, &str)>> {
        self.requirements
            .iter()
            .map(|r| match (r.operator, r.values.as_slice()) {
                (Operator::Equals, [value]) => Some((r.key.as_str(), value.as_str())),
                _ => None,
            })
            .collect()
    }

    /// The requirements, in the order written.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// True for the selector that matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl Requirement {
    /// A requirement checked as Kubernetes' `NewRequirement` checks it: a qualified key,
    /// label values, as many values as the operator takes (integers for `>` and `<`).
    fn new(key: &str, operator: Operator, mut values: Vec<String>) -> Result<Self, String> {
        check_key(key)?;
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err("in and notin need at least one value".into());
            }
            Operator::Equals | Operator::NotEquals if values.len() != 1 => {
                return Err("=, == and != take exactly one value".into());
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return Err("existence takes no values".into());
            }
            Operator::GreaterThan | Operator::LessThan => match values.as_slice() {
                [value] if value.parse::<i64>().is_ok() => {}
                _ => return Err("> and < take exactly one integer".into()),
            },
            _ => {}
        }
        for value in &values {
            check_value(value)?;
        }
        values.sort();
        values.dedup();
        Ok(Self {
            key: key.to_owned(),
            operator,
            values,
        })
    }

    /// Reads one `matchExpressions` entry (`{key, operator, values}`), as label selectors
    /// and node selector terms carry them; operators by their API names, `Gt` and `Lt`
    /// included (node selectors have them).
    pub fn from_expression(expression: &Value) -> Result<Self, SelectorError> {
        let text = || expression.to_string();
        let key = expression["key"]
            .as_str()
            .ok_or_else(|| error(text(), "an expression needs a key"))?;
        let operator = expression["operator"]
            .as_str()
            .and_then(Operator::from_api_name)
            .ok_or_else(|| {
                error(
                    text(),
                    "the operator is not In, NotIn, Exists, DoesNotExist, Gt or Lt",
                )
            })?;
        let values = match &expression["values"] {
            Value::Null => Vec::new(),
            Value::Array(values) => values
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| error(text(), "values are strings"))?,
            _ => return Err(error(text(), "values is a list")),
        };
        Self::new(key, operator, values).map_err(|reason| error(text(), reason))
    }

    /// True when the requirement holds for `labels`.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        self.operator.admits(labels.label(&self.key), &self.values)
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn operator(&self) -> Operator {
        self.operator
    }

    pub fn values(&self) -> &[String] {
        &self.values
    }
}

impl Operator {
    /// The operator of a `matchExpressions` entry: `In`, `NotIn`, `Exists`,
    /// `DoesNotExist`, `Gt`, `Lt`.
    pub fn from_api_name(name: &str) -> Option<Self> {
        Some(match name {
            "In" => Self::In,
            "NotIn" => Self::NotIn,
            "Exists" => Self::Exists,
            "DoesNotExist" => Self::DoesNotExist,
            "Gt" => Self::GreaterThan,
            "Lt" => Self::LessThan,
            _ => return None,
        })
    }

    /// Whether a label's value (`None`: the object lacks the label) satisfies the
    /// operator with these values, as Kubernetes' `Requirement.Matches` decides. For
    /// callers that match something other than labels (a node selector's `matchFields`).
    pub fn admits<S: AsRef<str>>(self, actual: Option<&str>, values: &[S]) -> bool {
        let listed = || actual.is_some_and(|a| values.iter().any(|v| v.as_ref() == a));
        let compared = |above: bool| {
            let (Some(actual), [bound]) = (actual, values) else {
                return false;
            };
            match (actual.parse::<i64>(), bound.as_ref().parse::<i64>()) {
                (Ok(actual), Ok(bound)) => {
                    if above {
                        actual > bound
                    } else {
                        actual < bound
                    }
                }
                _ => false,
            }
        };
        match self {
            Self::Equals | Self::In => listed(),
            Self::NotEquals | Self::NotIn => !listed(),
            Self::Exists => actual.is_some(),
            Self::DoesNotExist => actual.is_none(),
            Self::GreaterThan => compared(true),
            Self::LessThan => compared(false),
        }
    }
}

fn error(requirement: String, reason: impl Into<String>) -> SelectorError {
    SelectorError {
        requirement,
        reason: reason.into(),
    }
}

/// A qualified name: `name` or `prefix/name`, the prefix a DNS subdomain.
fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let label = |l: &str| {
            let inner = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            l.bytes().next().is_some_and(inner)
                && l.bytes().last().is_some_and(inner)
                && l.bytes().all(|b| inner(b) || b == b'-')
        };
        if prefix.len() > 253 || !prefix.split('.').all(label) {
            return Err(format!("key prefix {prefix:?} is not a DNS subdomain"));
        }
    }
    if !is_name(name) {
        return Err(format!(
            "key {key:?} is not a qualified name (63 characters at most, alphanumerics and -_. \
             inside, an optional DNS prefix and /)"
        ));
    }
    Ok(())
}

/// A label value: empty or a name.
fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_name(value) {
        Ok(())
    } else {
        Err(format!(
            "value {value:?} is not a label value (63 characters at most, alphanumerics and \
             -_. inside)"
        ))
    }
}

/// 1 to 63 characters, alphanumeric at both ends, `-_.` allowed inside.
fn is_name(text: &str) -> bool {
    let end = |b: u8| b.is_ascii_alphanumeric();
    text.len() <= 63
        && text.bytes().next().is_some_and(end)
        && text.bytes().last().is_some_and(end)
        && text
            .bytes()
            .all(|b| end(b) || matches!(b, b'-' | b'_' | b'.'))
}

/// A token of the text form, as `labels.Parse`'s lexer cuts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    /// Anything up to whitespace or a symbol: a key, a value, `in`, `notin`.
    Word(&'a str),
    Comma,
    Open,
    Close,
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    Greater,
    Less,
    End,
}

impl fmt::Display for Token<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let symbol = match self {
            Self::Word(word) => return write!(f, "{word:?}"),
            Self::End => return f.write_str("the end"),
            Self::Comma => ",",
            Self::Open => "(",
            Self::Close => ")",
            Self::Not => "!",
            Self::Equals => "=",
            Self::DoubleEquals => "==",
            Self::NotEquals => "!=",
            Self::Greater => ">",
            Self::Less => "<",
        };
        write!(f, "'{symbol}'")
    }
}

/// Tokens with the byte offset each starts at, ending with [`Token::End`].
fn tokens(text: &str) -> Vec<(usize, Token<'_>)> {
    let bytes = text.as_bytes();
    let symbol_or_space = |b: u8| b",()!=<> \t\r\n".contains(&b);
    let mut tokens = Vec::new();
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        let start = at;
        let followed_by_equals = bytes.get(at + 1) == Some(&b'=');
        let (token, length) = match byte {
            b' ' | b'\t' | b'\r' | b'\n' => {
                at += 1;
                continue;
            }
            b',' => (Token::Comma, 1),
            b'(' => (Token::Open, 1),
            b')' => (Token::Close, 1),
            b'>' => (Token::Greater, 1),
            b'<' => (Token::Less, 1),
            b'=' if followed_by_equals => (Token::DoubleEquals, 2),
            b'=' => (Token::Equals, 1),
            b'!' if followed_by_equals => (Token::NotEquals, 2),
            b'!' => (Token::Not, 1),
            _ => {
                let length = bytes[at..]
                    .iter()
                    .take_while(|&&b| !symbol_or_space(b))
                    .count();
                // Symbols and whitespace are ASCII, so the cut falls between characters.
                (Token::Word(&text[at..at + length]), length)
            }
        };
        tokens.push((start, token));
        at += length;
    }
    tokens.push((text.len(), Token::End));
    tokens
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<(usize, Token<'a>)>,
    next: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            tokens: tokens(text),
            next: 0,
        }
    }

    fn peek(&self) -> Token<'a> {
        self.tokens.get(self.next).map_or(Token::End, |&(_, t)| t)
    }

    fn take(&mut self) -> Token<'a> {
        let token = self.peek();
        self.next = (self.next + 1).min(self.tokens.len());
        token
    }

    fn offset(&self) -> usize {
        self.tokens
            .get(self.next)
            .map_or(self.text.len(), |&(at, _)| at)
    }

    fn selector(mut self) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        if self.peek() == Token::End {
            return Ok(Selector { requirements });
        }
        loop {
            let start = self.offset();
            let requirement = self
                .requirement()
                .map_err(|reason| error(self.requirement_at(start), reason))?;
            requirements.push(requirement);
            match self.take() {
                Token::End => return Ok(Selector { requirements }),
                Token::Comma => {}
                other => {
                    let reason = format!("found {other}, expected ',' or the end");
                    return Err(error(self.requirement_at(start), reason));
                }
            }
        }
    }

    /// The requirement starting at `start` as written: up to the next comma outside
    /// parentheses.
    fn requirement_at(&self, start: usize) -> String {
        let rest = self.text.get(start..).unwrap_or_default();
        let mut depth = 0_usize;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth = depth.saturating_sub(1),
                    ',' if depth == 0 => return true,
                    _ => {}
                }
                false
            })
            .map_or(rest.len(), |(i, _)| i);
        rest[..end].trim().to_owned()
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let negated = self.peek() == Token::Not;
        if negated {
            self.take();
        }
        let key = match self.take() {
            Token::Word(key) => key,
            other => return Err(format!("found {other}, expected a key")),
        };
        if matches!(self.peek(), Token::Comma | Token::End) {
            let operator = if negated {
                Operator::DoesNotExist
            } else {
                Operator::Exists
            };
            return Requirement::new(key, operator, Vec::new());
        }
        if negated {
            return Err(format!(
                "found {} after !{key}, expected ',' or the end",
                self.peek()
            ));
        }
        let operator = match self.take() {
            Token::Word("in") => Operator::In,
            Token::Word("notin") => Operator::NotIn,
            Token::Equals | Token::DoubleEquals => Operator::Equals,
            Token::NotEquals => Operator::NotEquals,
            Token::Greater => Operator::GreaterThan,
            Token::Less => Operator::LessThan,
            other => {
                return Err(format!(
                    "found {other}, expected one of in, notin, =, ==, !=, >, <"
                ));
            }
        };
        let values = match operator {
            Operator::In | Operator::NotIn => self.value_set()?,
            _ => vec![self.exact_value()?],
        };
        Requirement::new(key, operator, values)
    }

    /// The value after `=`, `!=`, `>` or `<`; nothing before a comma or the end is the
    /// empty value.
    fn exact_value(&mut self) -> Result<String, String> {
        match self.peek() {
            Token::Comma | Token::End => Ok(String::new()),
            Token::Word(value) => {
                self.take();
                Ok(value.to_owned())
            }
            other => Err(format!("found {other}, expected a value")),
        }
    }

    /// `(a, b)`; an empty place (`()`, `(a,)`, `(a,,b)`) is the empty value.
    fn value_set(&mut self) -> Result<Vec<String>, String> {
        match self.take() {
            Token::Open => {}
            other => return Err(format!("found {other}, expected '('")),
        }
        let mut values = Vec::new();
        loop {
            match self.take() {
                Token::Word(value) => {
                    values.push(value.to_owned());
                    match self.take() {
                        Token::Comma => {}
                        Token::Close => return Ok(values),
                        other => return Err(format!("found {other}, expected ',' or ')'")),
                    }
                }
                Token::Comma => values.push(String::new()),
                Token::Close => {
                    values.push(String::new());
                    return Ok(values);
                }
                other => return Err(format!("found {other}, expected a value, ',' or ')'")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(text: &str) -> Selector {
        Selector::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[test]
    fn equality_inequality_and_existence() {
        let labels = json!({"app": "vm", "tier": "web"});
        assert!(parse("app=vm").matches(&labels));
        assert!(parse("app==vm,tier!=db").matches(&labels));
        assert!(parse("tier").matches(&labels));
        assert!(parse("!missing").matches(&labels));
        assert!(parse("missing!=x").matches(&labels));
        assert!(!parse("app=db").matches(&labels));
        assert!(!parse("missing").matches(&labels));
        assert!(!parse("!app").matches(&labels));
        assert!(parse("").matches(&labels));
        assert!(parse("  ").is_empty());
    }

    #[test]
    fn set_based_requirements() {
        let labels = json!({"app": "x"});
        assert!(parse("app in (x, z),!missing").matches(&labels));
        assert!(!parse("app notin (x)").matches(&labels));
        assert!(parse("app notin (y)").matches(&labels));
        assert!(parse("other notin (y)").matches(&labels));
        assert!(!parse("other in (y)").matches(&labels));
        assert_eq!(parse("a in (b,a,b)").requirements()[0].values(), ["a", "b"]);
        assert_eq!(parse("a in ()").requirements()[0].values(), [""]);
        assert_eq!(parse("a in (b,)").requirements()[0].values(), ["", "b"]);
        assert!(parse("in in (notin)").matches(&json!({"in": "notin"})));
    }

    #[test]
    fn integer_comparisons() {
        let labels = json!({"gen": "5", "name": "five"});
        assert!(parse("gen>4").matches(&labels));
        assert!(!parse("gen>5").matches(&labels));
        assert!(parse("gen<6").matches(&labels));
        assert!(!parse("name>1").matches(&labels));
        assert!(!parse("missing<1").matches(&labels));
        assert!(Selector::parse("gen>five").is_err());
    }

    #[test]
    fn labels_as_a_map_or_json() {
        let map = BTreeMap::from([("zone".to_owned(), "a".to_owned())]);
        assert!(parse("zone=a").matches(&map));
        assert!(!parse("zone").matches(&Value::Null));
        assert!(!parse("n").matches(&json!({"n": 1})));
    }

    #[test]
    fn equality_terms_only_for_plain_equality() {
        assert_eq!(
            parse("a=b, c==d").equality_terms(),
            Some(vec![("a", "b"), ("c", "d")])
        );
        assert_eq!(parse("").equality_terms(), Some(vec![]));
        assert_eq!(parse("a=").equality_terms(), Some(vec![("a", "")]));
        assert_eq!(parse("a!=b").equality_terms(), None);
        assert_eq!(parse("a in (b, c)").equality_terms(), None);
        assert_eq!(parse("a in (b)").equality_terms(), None);
        assert_eq!(parse("a").equality_terms(), None);
        assert_eq!(parse("a=b,!c").equality_terms(), None);
    }

    #[test]
    fn qualified_keys_and_label_values() {
        assert!(
            parse("vm.novasphere.dev/wukong=vm1")
                .matches(&json!({"vm.novasphere.dev/wukong": "vm1"}))
        );
        for bad in [
            "a=b c",
            "a=b=c",
            "-a=b",
            "a=-b",
            "Upper.Case/a=b",
            "a/b/c",
            "/a",
            "a in b",
            "a in (b",
            "a in (b c)",
            "!a=b",
            "=b",
            "a,",
            ",a",
            "a,,b",
            "a b",
            "a=(b)",
            &format!("a={}", "v".repeat(64)),
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn errors_quote_the_requirement() {
        let error = Selector::parse("app=x, tier in (a b), zone").expect_err("bad");
        assert_eq!(error.requirement, "tier in (a b)");
        assert_eq!(
            error.to_string(),
            "label selector requirement \"tier in (a b)\" is not understood: found \"b\", expected ',' or ')'"
        );
        assert_eq!(Selector::parse("a,").expect_err("bad").requirement, "");
    }

    #[test]
    fn structured_selectors() {
        let node = json!({"node-type": "compute", "zone": "a"});
        let select = |s: Value| Selector::from_label_selector(&s);
        assert!(select(json!({})).expect("empty").matches(&node));
        assert!(
            select(json!({"matchLabels": {"node-type": "compute"}}))
                .expect("labels")
                .matches(&node)
        );
        assert!(
            !select(json!({"matchLabels": {"node-type": "gpu"}}))
                .expect("labels")
                .matches(&node)
        );
        let expressions = json!({"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a", "b"]},
            {"key": "gpu", "operator": "DoesNotExist"}]});
        assert!(select(expressions).expect("expressions").matches(&node));
        for bad in [
            json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": []}]}),
            json!({"matchExpressions": [{"key": "zone", "operator": "Bogus"}]}),
            json!({"matchExpressions": [{"key": "zone", "operator": "Exists", "values": ["a"]}]}),
            json!({"matchExpressions": [{"key": "zone", "operator": "Gt", "values": ["1"]}]}),
            json!({"matchLabels": {"zone": 1}}),
            json!({"matchLabels": ["zone"]}),
            json!("zone=a"),
        ] {
            assert!(select(bad.clone()).is_err(), "{bad} accepted");
        }
        let error = select(json!({"matchExpressions": [{"key": "x", "operator": "Bogus"}]}))
            .expect_err("bogus");
        assert!(error.requirement.contains("Bogus"), "{error}");
    }

    #[test]
    fn node_selector_expressions_and_fields() {
        let gt = Requirement::from_expression(
            &json!({"key": "cores", "operator": "Gt", "values": ["4"]}),
        )
        .expect("gt");
        assert!(gt.matches(&json!({"cores": "8"})));
        assert!(!gt.matches(&json!({"cores": "2"})));
        assert!(Operator::In.admits(Some("node-1"), &["node-1"]));
        assert!(Operator::NotIn.admits(None, &["node-1"]));
        assert!(!Operator::In.admits(None, &["node-1"]));
        assert_eq!(Operator::from_api_name("Bogus"), None);
    }
}
