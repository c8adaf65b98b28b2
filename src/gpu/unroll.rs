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
//! `1u`, ...). The count is a literal or a module-scope `const` (an unindented declaration:
//! integer arithmetic on literals and other constants, as the host prelude and the shaders
//! declare them). Marked loops may nest. The loop header must be exactly of the form above,
//! its closing brace alone on its line, and its body free of `break` and `continue` (which
//! would leave the enclosing loop once written out) and of `/* */` comments.

use std::collections::HashMap;

/// The marker line (trimmed) that precedes a loop to unroll.
const MARKER: &str = "// unroll";

/// `source` with every marked loop written out, or what is wrong with a marked loop (a
/// kernel of `MOBA_WGSL_DIR` may have one; naga's validation test compiles the built-in
/// ones).
pub(crate) fn unroll_marked_loops(source: &str) -> Result<String, String> {
    if !source.contains(MARKER) {
        return Ok(source.to_string());
    }
    let constants = Constants::declared_in(source)?;
    let mut lines: Vec<String> = source.lines().map(str::to_string).collect();
    while let Some(marker) = lines.iter().position(|line| line.trim() == MARKER) {
        let header = lines
            .get(marker + 1)
            .ok_or_else(|| format!("`{MARKER}` on the last line"))?;
        let (variable, count) = loop_header(header.trim()).ok_or_else(|| {
            format!("`{MARKER}` must precede `for (var i = 0u; i < COUNT; i++) {{`, got `{header}`")
        })?;
        let count = constants.value(count)?;
        let indent: String = header.chars().take_while(|c| c.is_whitespace()).collect();
        let end = closing_line(&lines, marker + 1)?;
        let body = &lines[marker + 2..end];
        if let Some(line) = body.iter().find(|line| {
            let code = code_of(line);
            code.contains("/*") || has_word(code, "break") || has_word(code, "continue")
        }) {
            return Err(format!(
                "a loop marked `{MARKER}` may hold no `break`, `continue` or `/*`: `{line}`"
            ));
        }
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
    Ok(out)
}

/// The variable and count of `for (var i = 0u; i < COUNT; i++) {`.
fn loop_header(header: &str) -> Option<(&str, &str)> {
    let inner = header.strip_prefix("for (var ")?.strip_suffix("++) {")?;
    let (variable, rest) = inner.split_once(" = 0u; ")?;
    let (compared, rest) = rest.split_once(" < ")?;
    let (count, incremented) = rest.split_once("; ")?;
    (compared == variable && incremented == variable).then_some((variable, count))
}

/// A line without its `//` comment.
fn code_of(line: &str) -> &str {
    line.split("//").next().unwrap_or("")
}

/// The index of the line that closes the block opened on line `open`: a line `}` alone.
fn closing_line(lines: &[String], open: usize) -> Result<usize, String> {
    let mut depth = 0i64;
    for (index, line) in lines.iter().enumerate().skip(open) {
        let code = code_of(line);
        depth += code.matches('{').count() as i64 - code.matches('}').count() as i64;
        if depth == 0 {
            return match line.trim() {
                "}" => Ok(index),
                _ => Err(format!(
                    "a loop marked `{MARKER}` must end on a line `}}` alone, got `{line}`"
                )),
            };
        }
    }
    Err(format!("unclosed loop after `{MARKER}`: `{}`", lines[open]))
}

/// Whether `code` holds the identifier `word`.
fn has_word(code: &str, word: &str) -> bool {
    code.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|w| w == word)
}

/// `line` with the whole-word occurrences of the identifier `name` replaced by `with`
/// (member names, after a `.`, stay).
fn replace_identifier(line: &str, name: &str, with: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut word = String::new();
    for c in line.chars().chain(std::iter::once('\n')) {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        let member = out.ends_with('.');
        out.push_str(if word == name && !member { with } else { &word });
        word.clear();
        if c != '\n' {
            out.push(c);
        }
    }
    out
}

/// The module's unindented `const NAME: u32 = EXPR;` (or `const NAME = EXPR;`) declarations,
/// evaluated on demand.
struct Constants<'a> {
    expressions: HashMap<&'a str, &'a str>,
}

impl<'a> Constants<'a> {
    fn declared_in(source: &'a str) -> Result<Self, String> {
        let mut expressions = HashMap::new();
        for line in source.lines() {
            let Some(declaration) = code_of(line)
                .trim_end()
                .strip_prefix("const ")
                .and_then(|d| d.strip_suffix(';'))
            else {
                continue;
            };
            let Some((name, expression)) = declaration.split_once(" = ") else {
                continue;
            };
            let name = name.split(':').next().unwrap_or(name).trim();
            if expressions.insert(name, expression.trim()).is_some() {
                return Err(format!("`const {name}` is declared twice"));
            }
        }
        Ok(Constants { expressions })
    }

    /// The value of a count: a literal or a constant's expression.
    fn value(&self, count: &str) -> Result<u32, String> {
        let mut evaluator = Evaluator {
            constants: self,
            tokens: tokens(count),
            at: 0,
        };
        let value = evaluator.sum()?;
        match evaluator.at == evaluator.tokens.len() {
            true => Ok(value),
            false => Err(format!("cannot evaluate the unroll count `{count}`")),
        }
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
    fn sum(&mut self) -> Result<u32, String> {
        let mut value = self.product()?;
        while let Some(op) = self.next_if(&["+", "-"]) {
            let rhs = self.product()?;
            value = match op.as_str() {
                "+" => value.checked_add(rhs),
                _ => value.checked_sub(rhs),
            }
            .ok_or("an unroll count out of range")?;
        }
        Ok(value)
    }

    fn product(&mut self) -> Result<u32, String> {
        let mut value = self.atom()?;
        while let Some(op) = self.next_if(&["*", "/", "%"]) {
            let rhs = self.atom()?;
            value = match op.as_str() {
                "*" => value.checked_mul(rhs),
                "/" => value.checked_div(rhs),
                _ => value.checked_rem(rhs),
            }
            .ok_or("an unroll count out of range (or divided by 0)")?;
        }
        Ok(value)
    }

    fn atom(&mut self) -> Result<u32, String> {
        let token = self.tokens.get(self.at).cloned().unwrap_or_default();
        self.at += 1;
        if token == "(" {
            let value = self.sum()?;
            return match self.next_if(&[")"]) {
                Some(_) => Ok(value),
                None => Err("unbalanced parentheses in an unroll count".into()),
            };
        }
        if let Ok(value) = token.strip_suffix('u').unwrap_or(&token).parse() {
            return Ok(value);
        }
        match self.constants.expressions.get(token.as_str()) {
            Some(defined) => self.constants.value(defined),
            None => Err(format!(
                "unroll count: `{token}` is not a module-scope constant"
            )),
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

    fn balanced(source: &str) -> bool {
        source.matches('{').count() == source.matches('}').count()
    }

    #[test]
    fn a_marked_loop_becomes_one_block_per_index() {
        let source = "const HEAD_COLUMNS: u32 = HEAD_DIM / 16u; // three\r\nconst HEAD_DIM: u32 = 48u;\r\n\
                      fn f() {\r\n    // unroll\r\n    for (var t = 0u; t < HEAD_COLUMNS; t++) {\r\n        \
                      acc[t] = b[t] + tt + v.t; // t\r\n    }\r\n    for (var i = 0u; i < 2u; i++) {}\r\n}\r\n";
        let out = unroll_marked_loops(source).unwrap();
        for t in 0..3 {
            assert!(out.contains(&format!(
                "        acc[{t}u] = b[{t}u] + tt + v.t; // {t}u\n"
            )));
        }
        assert_eq!(out.matches("    {\n").count(), 3);
        assert!(!out.contains("// unroll") && !out.contains("t < HEAD_COLUMNS"));
        assert!(balanced(&out));
        // An unmarked loop stays.
        assert!(out.contains("for (var i = 0u; i < 2u; i++) {}"));
    }

    #[test]
    fn nested_marked_loops_unroll_both() {
        let source = "const N: u32 = (1u + 1u) * 2u % 3u;\nfn f() {\n// unroll\n\
                      for (var a = 0u; a < N; a++) {\n// unroll\nfor (var b = 0u; b < 3u; b++) {\n\
                      m[a * 3u + b] = 0.0;\n}\n}\n}\n";
        let out = unroll_marked_loops(source).unwrap();
        // N = (2 * 2) % 3 = 1 outer copy of 3 inner ones.
        for b in 0..3 {
            assert!(out.contains(&format!("m[0u * 3u + {b}u] = 0.0;")), "{out}");
        }
        assert_eq!(out.matches("= 0.0;").count(), 3, "{out}");
        assert!(balanced(&out));
    }

    #[test]
    fn malformed_marked_loops_are_refused() {
        for (source, says) in [
            (
                "// unroll\nfor (var i = lid; i < 4u; i += 2u) {\n}\n",
                "must precede",
            ),
            (
                "// unroll\nfor (var i = 0u; i < MISSING; i++) {\n}\n",
                "not a module-scope",
            ),
            (
                "// unroll\nfor (var i = 0u; i < 2u; i++) {\nf(i); }\n",
                "alone",
            ),
            (
                "// unroll\nfor (var i = 0u; i < 2u; i++) {\nif i > 0u { break; }\n}\n",
                "break",
            ),
            ("// unroll\nfor (var i = 0u; i < 2u; i++) {\n", "unclosed"),
            (
                "const N = 2u;\nconst N = 3u;\n// unroll\nfor (var i = 0u; i < N; i++) {\n}\n",
                "twice",
            ),
            (
                "const N = 2u - 3u;\n// unroll\nfor (var i = 0u; i < N; i++) {\n}\n",
                "range",
            ),
        ] {
            let error = unroll_marked_loops(source).unwrap_err();
            assert!(error.contains(says), "{error}");
        }
    }

    #[test]
    fn a_constant_inside_a_function_is_not_a_count() {
        let source =
            "fn f() {\n    const N = 2u;\n}\n// unroll\nfor (var i = 0u; i < N; i++) {\n}\n";
        assert!(unroll_marked_loops(source).is_err());
    }
}
