//! The text field of each JSONL line, for the preprocessing reader (`aunet.segment.readers`).
//!
//! The contract is Python's `json.loads` (strict mode): what it accepts, and the text it gives.
//! This scanner decides only the lines it can decide exactly, and hands every other line back
//! to the caller as *doubtful*, for `json.loads` to accept or reject with its own message. A
//! line is taken here only when it is valid UTF-8 and valid RFC 8259 JSON whose top level is an
//! object, and the chosen field is a string without lone surrogates. Everything `json.loads`
//! accepts beyond that (NaN and Infinity, a byte-order mark, UTF-16/32 input, UTF-8-encoded
//! surrogates, lone surrogate escapes) and everything it rejects comes back doubtful, so the
//! two paths cannot disagree: on a line taken here, `json.loads` would succeed and give the
//! same string (its dict keeps the last of duplicate keys, and so does this scan).
//!
//! Lines are validated without building values: the chosen string is decoded once, straight
//! into the output buffer; all other values are only skipped. Nesting is tracked with a
//! stack on the heap, not recursion, so no input can exhaust the thread's stack. Two limits of
//! `json` that RFC 8259 does not have are left to it: nesting (its recursion limit, a runtime
//! setting, so the caller passes `max_depth`) and integers of more digits than Python converts
//! (4300 by default, also a runtime setting: any integer of more than 19 digits is doubtful).

/// Which field holds a document's text.
#[derive(Clone, Copy, Debug)]
pub enum Field<'a> {
    /// `text`, or `content` when there is no `text` key (the reader's default).
    TextOrContent,
    Named(&'a [u8]),
}

/// One run of a JSONL block: whole lines (the last may lack its newline), or a line that was
/// too long to keep (only counted).
#[derive(Clone, Copy, Debug)]
pub enum Piece<'a> {
    Lines(&'a [u8]),
    Long,
}

/// A line this scan does not decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Other {
    pub long: bool,
    /// 1-based line number.
    pub line: i64,
    pub piece: usize,
    /// The line's byte range in its piece (without the newline); 0..0 for a long line.
    pub start: usize,
    pub end: usize,
    /// Documents taken before this line: where an accepted doubtful line goes in the output.
    pub documents_before: usize,
}

/// Values of a kept field, one per taken line, as an Arrow string array's buffers: the string
/// (JSON-decoded), `true` / `false` / an integer as its JSON text, or null where the line has
/// null or no such key.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Kept {
    pub data: Vec<u8>,
    pub offsets: Vec<i64>,
    pub valid: Vec<u8>,
}

/// Texts of the taken lines, as an Arrow binary array's buffers, with their line numbers.
#[derive(Debug, Default)]
pub struct Extracted {
    pub data: Vec<u8>,
    pub offsets: Vec<i64>,
    pub lines: Vec<i64>,
    /// One per name in `keep`; a line where one of them is a float, an object or an array is
    /// doubtful: `json.dumps` spells those, as the caller does for doubtful lines.
    pub kept: Vec<Kept>,
    pub others: Vec<Other>,
    /// The number of the last line seen (the next call starts after it).
    pub last_line: i64,
}

/// The texts of the lines of `pieces`, numbered from `first_line` + 1. Blank lines (only ASCII
/// white space, as `bytes.strip` sees it) are counted and skipped. A line nested `max_depth`
/// levels deep or more (the top-level object counts) is doubtful. `keep`: the names of other
/// fields to carry (see `Extracted::kept`).
pub fn extract_texts(pieces: &[Piece<'_>], first_line: i64, field: Field<'_>, keep: &[&[u8]], max_depth: usize) -> Extracted {
    let total: usize = pieces.iter().map(|p| if let Piece::Lines(b) = p { b.len() } else { 0 }).sum();
    let mut out = Extracted { data: Vec::with_capacity(total), offsets: vec![0], ..Default::default() };
    out.kept = keep.iter().map(|_| Kept { offsets: vec![0], ..Default::default() }).collect();
    let mut found: Vec<Option<Value>> = vec![None; keep.len()];
    let mut marks: Vec<usize> = Vec::with_capacity(keep.len()); // kept bytes before the line
    let mut line_no = first_line;
    for (index, piece) in pieces.iter().enumerate() {
        let buf = match piece {
            Piece::Long => {
                line_no += 1;
                let documents_before = out.lines.len();
                out.others.push(Other { long: true, line: line_no, piece: index, start: 0, end: 0, documents_before });
                continue;
            }
            Piece::Lines(buf) => *buf,
        };
        let mut start = 0;
        while start < buf.len() {
            let end = memchr::memchr(b'\n', &buf[start..]).map_or(buf.len(), |i| start + i);
            line_no += 1;
            let line = &buf[start..end];
            if !is_blank(line) {
                let mark = out.data.len();
                marks.clear();
                marks.extend(out.kept.iter().map(|k| k.data.len()));
                let line_fields = Fields { field, keep, found: &mut found };
                if text_of(line, line_fields, max_depth, &mut out.data, &mut out.kept).is_some() {
                    out.offsets.push(out.data.len() as i64);
                    out.lines.push(line_no);
                    for k in &mut out.kept {
                        k.offsets.push(k.data.len() as i64);
                    }
                } else {
                    out.data.truncate(mark);
                    for (k, &m) in out.kept.iter_mut().zip(&marks) {
                        k.data.truncate(m);
                        k.valid.truncate(out.lines.len()); // one per taken line
                    }
                    let documents_before = out.lines.len();
                    out.others.push(Other { long: false, line: line_no, piece: index, start, end, documents_before });
                }
            }
            start = end + 1;
        }
    }
    out.last_line = line_no;
    out
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c))
}

/// What to take out of a line, and the per-line slots of the kept fields (reused across lines).
struct Fields<'a, 'b> {
    field: Field<'a>,
    keep: &'a [&'a [u8]],
    found: &'b mut [Option<Value>],
}

/// Appends the chosen field's text to `data`, and each kept field's value to `kept` (a null
/// pushes no bytes, only its validity); None: the line is doubtful (`data` and `kept` may then
/// hold partial values, which the caller drops).
fn text_of(line: &[u8], fields: Fields<'_, '_>, max_depth: usize, data: &mut Vec<u8>, kept: &mut [Kept]) -> Option<()> {
    let Fields { field, keep, found } = fields;
    simdutf8::basic::from_utf8(line).ok()?;
    found.iter_mut().for_each(|f| *f = None);
    let mut p = Parser { s: line, i: 0, max_depth };
    let mut chosen: Option<Value> = None;
    let mut fallback: Option<Value> = None; // `content`, when looking for `text` or `content`
    let mut key = Vec::new();
    p.ws();
    p.expect(b'{')?;
    p.ws();
    if p.peek() == Some(b'}') {
        p.i += 1;
    } else {
        loop {
            p.ws();
            let k = p.string()?;
            p.ws();
            p.expect(b':')?;
            p.ws();
            let v = p.value()?;
            let k = k.bytes(line, &mut key)?;
            for (slot, name) in found.iter_mut().zip(keep) {
                if k == *name {
                    *slot = Some(v); // the last of duplicate keys, as `json`'s dict keeps
                }
            }
            match field {
                Field::Named(name) if k == name => chosen = Some(v),
                Field::TextOrContent if k == b"text" => chosen = Some(v),
                Field::TextOrContent if k == b"content" => fallback = Some(v),
                _ => {}
            }
            p.ws();
            match p.next()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
    }
    p.ws();
    if p.i != line.len() {
        return None; // "Extra data"
    }
    // Floats, objects and arrays are spelled by the caller (`json.dumps`).
    if found.iter().any(|f| matches!(f, Some(Value::Other))) {
        return None;
    }
    match chosen.or(fallback)? {
        Value::Str(s) => s.decode_into(line, data)?,
        _ => return None, // not a string: `json` says what it is
    }
    for (slot, k) in found.iter().zip(kept) {
        match slot {
            Some(Value::Str(s)) => {
                s.decode_into(line, &mut k.data)?;
                k.valid.push(1);
            }
            Some(Value::Spelled(a, b)) => {
                k.data.extend_from_slice(if &line[*a..*b] == b"-0" { b"0" } else { &line[*a..*b] });
                k.valid.push(1);
            }
            _ => k.valid.push(0),
        }
    }
    Some(())
}

/// A string's span (between its quotes) and whether it holds escapes.
#[derive(Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    escaped: bool,
}

impl Span {
    /// The string's bytes: the span itself, or decoded into `scratch` when it has escapes.
    fn bytes<'a>(&self, line: &'a [u8], scratch: &'a mut Vec<u8>) -> Option<&'a [u8]> {
        if !self.escaped {
            return Some(&line[self.start..self.end]);
        }
        scratch.clear();
        self.decode_into(line, scratch)?;
        Some(scratch)
    }

    /// The decoded string, as UTF-8; None on a lone surrogate (valid for `json`, which keeps it
    /// as such, but not UTF-8: the caller's `json` path handles it).
    fn decode_into(&self, line: &[u8], out: &mut Vec<u8>) -> Option<()> {
        let s = &line[self.start..self.end];
        if !self.escaped {
            out.extend_from_slice(s);
            return Some(());
        }
        let mut i = 0;
        while i < s.len() {
            let Some(j) = memchr::memchr(b'\\', &s[i..]) else {
                out.extend_from_slice(&s[i..]);
                break;
            };
            out.extend_from_slice(&s[i..i + j]);
            i += j + 1;
            let c = s[i];
            i += 1;
            let byte = match c {
                b'"' => b'"',
                b'\\' => b'\\',
                b'/' => b'/',
                b'b' => 0x08,
                b'f' => 0x0c,
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'u' => {
                    let hi = hex4(&s[i..i + 4])?;
                    i += 4;
                    let cp = if (0xD800..0xDC00).contains(&hi) {
                        // `Parser::string` checked that a low surrogate escape follows.
                        let lo = hex4(&s[i + 2..i + 6])?;
                        i += 6;
                        0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                    } else {
                        hi
                    };
                    let ch = char::from_u32(cp)?;
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    continue;
                }
                _ => return None,
            };
            out.push(byte);
        }
        Some(())
    }
}

#[derive(Clone, Copy)]
enum Value {
    Str(Span),
    Null,
    /// `true`, `false` or an integer (of at most 19 digits): a kept field's value is its JSON
    /// text as `json.dumps` writes it, which is the literal itself (but `-0`, which is `0`).
    Spelled(usize, usize),
    /// A float, an object or an array: its JSON text is left to `json.dumps`.
    Other,
}

fn hex4(s: &[u8]) -> Option<u32> {
    if s.len() < 4 {
        return None;
    }
    let mut v = 0u32;
    for &b in &s[..4] {
        v = v * 16 + (b as char).to_digit(16)?;
    }
    Some(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    max_depth: usize,
}

// Longer integers are left to `json`: Python refuses to convert integers of more than
// `sys.get_int_max_str_digits()` digits (never set below 640), and floats have no such limit.
const MAX_INT_DIGITS: usize = 19;

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        (self.next()? == b).then_some(())
    }

    /// JSON white space only (`json`'s set): not form feed or vertical tab.
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// A string starting at its opening quote; the bytes are known to be valid UTF-8.
    fn string(&mut self) -> Option<Span> {
        self.expect(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            let rest = &self.s[self.i..];
            let j = memchr::memchr2(b'"', b'\\', rest)?;
            // Raw control characters are errors in strict JSON (as in `json.loads`).
            if rest[..j].iter().fold(false, |acc, &b| acc | (b < 0x20)) {
                return None;
            }
            self.i += j;
            if rest[j] == b'"' {
                let end = self.i;
                self.i += 1;
                return Some(Span { start, end, escaped });
            }
            escaped = true;
            self.i += 1;
            match self.next()? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                b'u' => {
                    let cp = hex4(self.s.get(self.i..)?)?;
                    self.i += 4;
                    if (0xDC00..0xE000).contains(&cp) {
                        return None; // a low surrogate alone
                    }
                    if (0xD800..0xDC00).contains(&cp) {
                        // Only a pair makes a character; `json` keeps a lone one as is.
                        if self.s.get(self.i..self.i + 2) != Some(b"\\u") {
                            return None;
                        }
                        let lo = hex4(self.s.get(self.i + 2..)?)?;
                        if !(0xDC00..0xE000).contains(&lo) {
                            return None;
                        }
                        self.i += 6;
                    }
                }
                _ => return None,
            }
        }
    }

    /// Skips one value; `Str` keeps a string's span (the candidates for the text field).
    fn value(&mut self) -> Option<Value> {
        let start = self.i;
        match self.peek()? {
            b'"' => return self.string().map(Value::Str),
            b'n' => {
                self.literal(b"null")?;
                return Some(Value::Null);
            }
            b't' | b'f' => {
                self.scalar()?;
                return Some(Value::Spelled(start, self.i));
            }
            b'-' | b'0'..=b'9' => {
                let integer = self.number()?;
                return Some(if integer { Value::Spelled(start, self.i) } else { Value::Other });
            }
            b'{' | b'[' => self.container()?,
            _ => self.scalar()?,
        }
        Some(Value::Other)
    }

    fn scalar(&mut self) -> Option<()> {
        match self.peek()? {
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number().map(|_| ()),
            _ => None, // NaN, Infinity and errors: `json` decides
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        (self.s.get(self.i..self.i + word.len())? == word).then(|| self.i += word.len())
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }

    /// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?; Some(true) for an integer.
    fn number(&mut self) -> Option<bool> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let int_digits = match self.peek()? {
            b'0' => {
                self.i += 1;
                1
            }
            b'1'..=b'9' => self.digits(),
            _ => return None,
        };
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.i += 1;
            float = true;
            if self.digits() == 0 {
                return None;
            }
        }
        if !float && int_digits > MAX_INT_DIGITS && !matches!(self.peek(), Some(b'e' | b'E')) {
            return None;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
            return Some(false);
        }
        Some(!float)
    }

    /// An object or array, nested ones included, without recursion: `stack` holds the kind of
    /// each open container.
    fn container(&mut self) -> Option<()> {
        let mut stack: Vec<u8> = Vec::new();
        loop {
            // At the start of a value.
            match self.peek()? {
                open @ (b'{' | b'[') => {
                    self.i += 1;
                    if stack.len() + 2 >= self.max_depth {
                        return None;
                    }
                    let close = if open == b'{' { b'}' } else { b']' };
                    stack.push(close);
                    self.ws();
                    if self.peek() == Some(close) {
                        self.i += 1;
                        stack.pop();
                    } else {
                        if close == b'}' {
                            self.member_key()?;
                        }
                        continue;
                    }
                }
                b'"' => {
                    self.string()?;
                }
                _ => self.scalar()?,
            }
            // After a value: close containers or move to the next element.
            loop {
                let Some(&close) = stack.last() else { return Some(()) };
                self.ws();
                match self.next()? {
                    b',' => {
                        self.ws();
                        if close == b'}' {
                            self.member_key()?;
                        }
                        break;
                    }
                    b if b == close => {
                        stack.pop();
                    }
                    _ => return None,
                }
            }
        }
    }

    /// `"key" :` and the white space up to the value.
    fn member_key(&mut self) -> Option<()> {
        self.ws();
        self.string()?;
        self.ws();
        self.expect(b':')?;
        self.ws();
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str, field: Field<'_>) -> Option<Vec<u8>> {
        let e = extract_texts(&[Piece::Lines(line.as_bytes())], 0, field, &[], 512);
        if e.lines.len() == 1 {
            Some(e.data)
        } else {
            None
        }
    }

    fn text(line: &str) -> Option<String> {
        one(line, Field::TextOrContent).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn plain_and_escaped_strings() {
        assert_eq!(text(r#"{"text": "héllo"}"#).as_deref(), Some("héllo"));
        assert_eq!(text(r#"{"text":"a\nb\t\"q\"\\\/\u00e9\ud83d\ude00"}"#).as_deref(), Some("a\nb\t\"q\"\\/é😀"));
        assert_eq!(text(r#"{"text":"\u0000"}"#).as_deref(), Some("\0"));
        assert_eq!(text(r#"  {"id": 1, "text": "x"} "#).as_deref(), Some("x"));
    }

    #[test]
    fn field_choice_follows_json_loads() {
        assert_eq!(text(r#"{"content": "c", "text": "t"}"#).as_deref(), Some("t"));
        assert_eq!(text(r#"{"content": "c"}"#).as_deref(), Some("c"));
        assert_eq!(text(r#"{"text": "a", "text": "b"}"#).as_deref(), Some("b"));
        assert_eq!(text(r#"{"te\u0078t": "esc"}"#).as_deref(), Some("esc"));
        assert_eq!(text(r#"{"text": 1, "content": "c"}"#), None); // `text` wins, and is no string
        assert_eq!(text(r#"{"text": "a", "text": null}"#), None);
        assert_eq!(one(r#"{"body": "b", "text": "t"}"#, Field::Named(b"body")), Some(b"b".to_vec()));
        assert_eq!(one(r#"{"text": "t"}"#, Field::Named(b"body")), None);
    }

    #[test]
    fn doubtful_lines_are_left_to_json() {
        for line in [
            r#"{"text": "a""#,
            r#"{"text": "a"} x"#,
            r#"{"text": "a",}"#,
            r#"{"text": "\ud800"}"#,
            r#"{"text": "\udc00"}"#,
            r#"{"text": "\ud800\u0041"}"#,
            r#"{"text": "a\x"}"#,
            "{\"text\": \"tab\there\"}",
            r#"{"text": "a", "n": NaN}"#,
            r#"{"text": "a", "n": 01}"#,
            r#"{"text": "a", "n": 1.}"#,
            r#"{"text": "a", "n": [1, 2,]}"#,
            r#"{"text": "a", "n": {"k" 1}}"#,
            "\u{feff}{\"text\": \"a\"}",
            r#"["text"]"#,
            r#"{"text": "a"}"#.trim_end_matches('}'),
            "{\"text\": \"a\"}\u{0c}",
        ] {
            assert_eq!(text(line), None, "{line}");
        }
        let invalid = [b"{\"text\": \"\xff\"}".as_slice()];
        let e = extract_texts(&[Piece::Lines(invalid[0])], 0, Field::TextOrContent, &[], 512);
        assert!(e.lines.is_empty() && e.others.len() == 1);
    }

    #[test]
    fn nesting_and_scalars_are_skipped() {
        let line = r#"{"meta": {"a": [1, -2.5e+3, true, false, null, {"b": []}, "s\"]"]}, "text": "ok", "z": {}}"#;
        assert_eq!(text(line).as_deref(), Some("ok"));
        let deep = format!("{{\"text\": \"d\", \"x\": {}{}}}", "[".repeat(600), "]".repeat(600));
        assert_eq!(text(&deep), None);
        let fine = format!("{{\"text\": \"d\", \"x\": {}{}}}", "[".repeat(100), "]".repeat(100));
        assert_eq!(text(&fine).as_deref(), Some("d"));
        // The top-level object is level 1: 510 brackets make 511 levels, 511 make 512.
        let at = |n: usize| format!("{{\"text\": \"d\", \"x\": {}{}}}", "[".repeat(n), "]".repeat(n));
        assert_eq!(text(&at(510)).as_deref(), Some("d"));
        assert_eq!(text(&at(511)), None);
    }

    #[test]
    fn kept_fields_are_strings_or_null_else_the_line_is_doubtful() {
        let lines = concat!(
            "{\"text\": \"a\", \"id\": \"x1\", \"url\": \"u\\u00e9\"}\n",
            "{\"text\": \"b\", \"id\": null}\n",
            "{\"text\": \"c\", \"id\": 7.5, \"url\": \"v\"}\n",
            "{\"id\": \"first\", \"text\": \"d\", \"id\": \"last\", \"url\": \"w\"}\n",
        );
        let e = extract_texts(&[Piece::Lines(lines.as_bytes())], 0, Field::TextOrContent, &[b"id", b"url"], 512);
        assert_eq!(e.data, b"abd");
        assert_eq!(e.lines, vec![1, 2, 4]);
        assert_eq!(e.kept[0], Kept { data: b"x1last".to_vec(), offsets: vec![0, 2, 2, 6], valid: vec![1, 0, 1] });
        assert_eq!(e.kept[1], Kept { data: "uéw".as_bytes().to_vec(), offsets: vec![0, 3, 3, 4], valid: vec![1, 0, 1] });
        assert_eq!(e.others.iter().map(|o| o.line).collect::<Vec<_>>(), vec![3]);
        let spelled = "{\"text\": \"a\", \"id\": -0, \"url\": true}\n{\"text\": \"b\", \"id\": -12, \"url\": false}\n";
        let e = extract_texts(&[Piece::Lines(spelled.as_bytes())], 0, Field::TextOrContent, &[b"id", b"url"], 512);
        assert_eq!(e.kept[0].data, b"0-12");
        assert_eq!(e.kept[1].data, b"truefalse");
    }

    #[test]
    fn long_integers_are_left_to_json() {
        let with = |n: &str| format!("{{\"text\": \"t\", \"n\": {n}}}");
        assert_eq!(text(&with(&"9".repeat(19))).as_deref(), Some("t"));
        assert_eq!(text(&with(&format!("-{}", "9".repeat(19)))).as_deref(), Some("t"));
        assert_eq!(text(&with(&"9".repeat(20))), None);
        assert_eq!(text(&with(&format!("[{}]", "1".repeat(5000)))), None);
        // Floats convert whatever their length.
        assert_eq!(text(&with(&format!("{}.5", "9".repeat(50)))).as_deref(), Some("t"));
        assert_eq!(text(&with(&format!("{}e3", "9".repeat(50)))).as_deref(), Some("t"));
    }

    #[test]
    fn lines_are_numbered_across_pieces_blank_and_long_ones_included() {
        let a = b"{\"text\": \"one\"}\n\n  \r\n{\"text\": 5}\n";
        let b = b"{\"text\": \"two\"}";
        let e = extract_texts(&[Piece::Lines(a), Piece::Long, Piece::Lines(b)], 10, Field::TextOrContent, &[], 512);
        assert_eq!(e.data, b"onetwo");
        assert_eq!(e.offsets, vec![0, 3, 6]);
        assert_eq!(e.lines, vec![11, 16]);
        assert_eq!(e.last_line, 16);
        assert_eq!(
            e.others,
            vec![
                Other { long: false, line: 14, piece: 0, start: 21, end: 32, documents_before: 1 },
                Other { long: true, line: 15, piece: 1, start: 0, end: 0, documents_before: 1 },
            ]
        );
    }
}
