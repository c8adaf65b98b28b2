//! Writes out the WGSL loops marked `// unroll` before a kernel is compiled.
//!
//! An array indexed by a loop variable stays in registers only where the driver unrolls the
//! loop. NVIDIA's Vulkan driver left the loops over arrays of cooperative matrices (a
//! subgroup's query, dout and output strips) rolled, kept the arrays in local memory, and
//! ran the tensor-core forward and dq 1.4-1.7x slower than with constant indices
//! (`bench-results/h200-vulkan-coop/unroll-variants`). WGSL has no unroll attribute, so the
//! host unrolls: a loop
//!
//! ```wgsl
//! // unroll
//! for (var t = 0u; t < HEAD_COLUMNS; t++) {
//!     acc[t] = coopMultiplyAdd(a, b[t], acc[t]);
//! }
//! ```
//!
//! becomes one block `{ ... }` per value of `t`, with `t` written as the literal (`0u`,
//! `1u`, ...). The count is a literal or a `const` of the module (integer arithmetic on
//! literals and other constants, as the host prelude and the shaders declare them). Marked
//! loops may nest; the loop header must be exactly of the form above.

use std::collections::HashMap;

/// The marker line (trimmed) that precedes a loop to unroll.
const MARKER: &str = "// unroll";

/// `source` with every marked loop written out. Panics on a malformed marked loop or a
/// count it cannot evaluate: the kernels are ours, and naga's validation test compiles them
/// all.
pub(crate) fn unroll_marked_loops(source: &str) -> String {
    if !source.contains(MARKER) {
        return source.to_string();
    }
    let constants = Constants::declared_in(source);
    let mut lines: Vec<String> = source.lines().map(str::to_string).collect();
    while let Some(marker) = lines.iter().position(|line| line.trim() == MARKER) {
        let header = lines
            .get(marker + 1)
            .unwrap_or_else(|| panic!("`{MARKER}` on the last line"));
        let (variable, count) = loop_header(header.trim()).unwrap_or_else(|| {
            panic!("`{MARKER}` must precede `for (var i = 0u; i < COUNT; i++) {{`, got `{header}`")
        });
        let count = constants.value(count);
        let indent: String = header.chars().take_while(|c| c.is_whitespace()).collect();
        let end = closing_line(&lines, marker + 1);
        let body = &lines[marker + 2..end];
        let mut unrolled = Vec::new();
        for i in 0..count {
            unrolled.push(format!("{indent}{{"));
            let literal = format!("{i}u");
            unrolled.extend(
                body.iter()
                    .map(|line| replace_identifier(line, variable, &literal)),
            );
            unrolled.push(format!("{indent}}}"));
        }
        lines.splice(marker..=end, unrolled);
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// The variable and count of `for (var i = 0u; i < COUNT; i++) {`.
fn loop_header(header: &str) -> Option<(&str, &str)> {
    let inner = header.strip_prefix("for (var ")?.strip_suffix("++) {")?;
    let (variable, rest) = inner.split_once(" = 0u; ")?;
    let (compared, rest) = rest.split_once(" < ")?;
    let (count, incremented) = rest.split_once("; ")?;
    (compared == variable && incremented == variable).then_some((variable, count))
}

/// The index of the line that closes the block opened on line `open`.
fn closing_line(lines: &[String], open: usize) -> usize {
    let mut depth = 0i64;
    for (index, line) in lines.iter().enumerate().skip(open) {
        let code = line.split("//").next().unwrap_or("");
        depth += code.matches('{').count() as i64 - code.matches('}').count() as i64;
        if depth == 0 {
            return index;
        }
    }
    panic!("unclosed loop after `{MARKER}`: `{}`", lines[open]);
}

/// `line` with the whole-word occurrences of `name` replaced by `with`.
fn replace_identifier(line: &str, name: &str, with: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut word = String::new();
    for c in line.chars().chain(std::iter::once('\n')) {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        out.push_str(if word == name { with } else { &word });
        word.clear();
        if c != '\n' {
            out.push(c);
        }
    }
    out
}

/// The module's `const NAME: u32 = EXPR;` (or `const NAME = EXPR;`) declarations, evaluated
/// on demand.
struct Constants<'a> {
    expressions: HashMap<&'a str, &'a str>,
}

impl<'a> Constants<'a> {
    fn declared_in(source: &'a str) -> Self {
        let expressions = source
            .lines()
            .filter_map(|line| {
                let declaration = line.trim().strip_prefix("const ")?.strip_suffix(';')?;
                let (name, expression) = declaration.split_once(" = ")?;
                Some((name.split(':').next()?.trim(), expression.trim()))
            })
            .collect();
        Constants { expressions }
    }

    /// The value of a count: a literal or a constant's expression.
    fn value(&self, count: &str) -> u32 {
        Evaluator {
            constants: self,
            tokens: tokens(count),
            at: 0,
        }
        .whole(count)
    }
}

/// Integer literals (`12`, `12u`), names, `+ - * / %` and parentheses.
fn tokens(expression: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut chars = expression.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c.is_ascii_alphanumeric() || c == '_' {
            let mut word = String::new();
            while let Some(&c) = chars
                .peek()
                .filter(|c| c.is_ascii_alphanumeric() || **c == '_')
            {
                word.push(c);
                chars.next();
            }
            tokens.push(word);
        } else {
            tokens.push(c.to_string());
            chars.next();
        }
    }
    tokens
}

/// A recursive-descent evaluation of one expression's tokens.
struct Evaluator<'c, 'a> {
    constants: &'c Constants<'a>,
    tokens: Vec<String>,
    at: usize,
}

impl Evaluator<'_, '_> {
    fn whole(mut self, expression: &str) -> u32 {
        let value = self.sum(expression);
        assert!(
            self.at == self.tokens.len(),
            "cannot evaluate `{expression}` (unroll count)"
        );
        value
    }

    fn sum(&mut self, expression: &str) -> u32 {
        let mut value = self.product(expression);
        while let Some(op) = self.next_if(&["+", "-"]) {
            let rhs = self.product(expression);
            value = if op == "+" { value + rhs } else { value - rhs };
        }
        value
    }

    fn product(&mut self, expression: &str) -> u32 {
        let mut value = self.atom(expression);
        while let Some(op) = self.next_if(&["*", "/", "%"]) {
            let rhs = self.atom(expression);
            value = match op.as_str() {
                "*" => value * rhs,
                "/" => value / rhs,
                _ => value % rhs,
            };
        }
        value
    }

    fn atom(&mut self, expression: &str) -> u32 {
        let token = self.tokens.get(self.at).cloned().unwrap_or_default();
        self.at += 1;
        if token == "(" {
            let value = self.sum(expression);
            assert_eq!(
                self.next_if(&[")"]).as_deref(),
                Some(")"),
                "unbalanced `{expression}`"
            );
            return value;
        }
        let digits = token.strip_suffix('u').unwrap_or(&token);
        if let Ok(value) = digits.parse() {
            return value;
        }
        match self.constants.expressions.get(token.as_str()) {
            Some(defined) => self.constants.value(defined),
            None => {
                panic!("unroll count `{expression}`: `{token}` is not a constant of the module")
            }
        }
    }

    fn next_if(&mut self, ops: &[&str]) -> Option<String> {
        let token = self
            .tokens
            .get(self.at)
            .filter(|t| ops.contains(&t.as_str()))?
            .clone();
        self.at += 1;
        Some(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_loop_becomes_one_block_per_index() {
        let source = "const HEAD_COLUMNS: u32 = HEAD_DIM / 16u;\nconst HEAD_DIM: u32 = 48u;\n\
                      fn f() {\n    // unroll\n    for (var t = 0u; t < HEAD_COLUMNS; t++) {\n        \
                      acc[t] = b[t] + tt; // t\n    }\n    for (var i = 0u; i < 2u; i++) {}\n}\n";
        let out = unroll_marked_loops(source);
        for t in 0..3 {
            assert!(out.contains(&format!("        acc[{t}u] = b[{t}u] + tt; // {t}u\n")));
        }
        assert_eq!(out.matches("    {\n").count(), 3);
        assert!(!out.contains("// unroll") && !out.contains("t < HEAD_COLUMNS"));
        // An unmarked loop stays.
        assert!(out.contains("for (var i = 0u; i < 2u; i++) {}"));
    }

    #[test]
    fn nested_marked_loops_unroll_both() {
        let source = "const N: u32 = (1u + 1u) * 2u % 3u;\nfn f() {\n// unroll\n\
                      for (var a = 0u; a < N; a++) {\n// unroll\nfor (var b = 0u; b < 3u; b++) {\n\
                      m[a * 3u + b] = 0.0;\n}\n}\n}\n";
        let out = unroll_marked_loops(source);
        // N = (2 * 2) % 3 = 1 outer copy of 3 inner ones.
        for b in 0..3 {
            assert!(out.contains(&format!("m[0u * 3u + {b}u] = 0.0;")), "{out}");
        }
        assert_eq!(out.matches("= 0.0;").count(), 3, "{out}");
    }

    #[test]
    #[should_panic(expected = "must precede")]
    fn a_marker_before_anything_but_a_counted_loop_is_refused() {
        unroll_marked_loops("// unroll\nfor (var i = lid; i < 4u; i += 2u) {\n}\n");
    }

    #[test]
    #[should_panic(expected = "not a constant")]
    fn an_unknown_count_is_refused() {
        unroll_marked_loops("// unroll\nfor (var i = 0u; i < MISSING; i++) {\n}\n");
    }
}
