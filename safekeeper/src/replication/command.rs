//! The replication command language (PostgreSQL's `repl_gram.y` and `repl_scanner.l`),
//! for the commands a physical replication client sends.
//!
//! Grammar understood (one command, an optional `;`, nothing else):
//! ```text
//! IDENTIFY_SYSTEM
//! SHOW var_name                          var_name = ident ('.' ident)*
//! READ_REPLICATION_SLOT ident
//! TIMELINE_HISTORY uconst
//! START_REPLICATION [SLOT ident] [PHYSICAL] X/Y [TIMELINE uconst]
//! ```
//! `BASE_BACKUP`, `CREATE_REPLICATION_SLOT`, `DROP_REPLICATION_SLOT` and
//! `START_REPLICATION SLOT s LOGICAL ...` are recognised and answered "not supported".
//!
//! Lexing follows PostgreSQL: unquoted identifiers are folded to lower case and cut at
//! 63 bytes, `"quoted"` identifiers are kept as written (`""` is a quote), `X/Y` is an LSN
//! of two hex numbers, digits are an unsigned constant. One deliberate difference:
//! keywords are matched without regard to case (PostgreSQL only knows them in upper case),
//! which accepts strictly more input.

use postgres_wal::Lsn;

use super::errors::{sqlstate, PgError};
use super::limits::{MAX_IDENTIFIER_BYTES, MAX_QUERY_BYTES};

/// A parsed replication command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationCommand {
    IdentifySystem,
    /// `SHOW name`, name lower-cased unless quoted.
    Show {
        name: String,
    },
    ReadReplicationSlot {
        slot: String,
    },
    TimelineHistory {
        timeline: u32,
    },
    StartReplication {
        slot: Option<String>,
        start: Lsn,
        /// `None` when the client did not say (then the current timeline, 1, is meant).
        timeline: Option<u32>,
    },
    /// A replication command the safekeeper does not implement.
    Unsupported {
        command: &'static str,
    },
}

/// Why a query is not a command we can run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Not a replication command at all (SQL, or an empty query).
    #[error("cannot execute SQL commands in WAL sender for physical replication")]
    NotReplicationCommand,
    #[error("{message}")]
    Syntax {
        message: String,
        hint: Option<&'static str>,
    },
    #[error("replication command is {length} bytes long, more than {max}")]
    TooLong { length: usize, max: usize },
}

impl From<CommandError> for PgError {
    fn from(err: CommandError) -> Self {
        match &err {
            CommandError::NotReplicationCommand => {
                PgError::error(sqlstate::FEATURE_NOT_SUPPORTED, err.to_string()).with_hint(
                    "A safekeeper serves IDENTIFY_SYSTEM, SHOW, READ_REPLICATION_SLOT, \
                     TIMELINE_HISTORY and START_REPLICATION.",
                )
            }
            CommandError::Syntax { message, hint } => {
                let pg = PgError::error(sqlstate::SYNTAX_ERROR, message.clone());
                match hint {
                    Some(hint) => pg.with_hint(*hint),
                    None => pg,
                }
            }
            CommandError::TooLong { .. } => PgError::error(sqlstate::SYNTAX_ERROR, err.to_string()),
        }
    }
}

const START_REPLICATION_FORM: &str =
    "The form is START_REPLICATION [SLOT slot_name] [PHYSICAL] XXX/XXX [TIMELINE tli].";

/// Parse the text of a `Query` message on a replication connection.
pub fn parse_command(text: &str) -> Result<ReplicationCommand, CommandError> {
    if text.len() > MAX_QUERY_BYTES {
        return Err(CommandError::TooLong {
            length: text.len(),
            max: MAX_QUERY_BYTES,
        });
    }
    let tokens = tokenize(text)?;
    let mut parser = Parser { tokens, pos: 0 };
    let Some(Token::Word {
        text: first,
        quoted: false,
    }) = parser.peek().cloned()
    else {
        return Err(CommandError::NotReplicationCommand);
    };
    let keyword = first.to_ascii_uppercase();
    let command = match keyword.as_str() {
        "IDENTIFY_SYSTEM" => {
            parser.next();
            ReplicationCommand::IdentifySystem
        }
        "SHOW" => {
            parser.next();
            ReplicationCommand::Show {
                name: parser.var_name("SHOW")?,
            }
        }
        "READ_REPLICATION_SLOT" => {
            parser.next();
            ReplicationCommand::ReadReplicationSlot {
                slot: parser.identifier(Some("The form is READ_REPLICATION_SLOT slot_name."))?,
            }
        }
        "TIMELINE_HISTORY" => {
            parser.next();
            ReplicationCommand::TimelineHistory {
                timeline: parser.timeline(Some("The form is TIMELINE_HISTORY tli."))?,
            }
        }
        "START_REPLICATION" => {
            parser.next();
            match parser.start_replication()? {
                Some(command) => command,
                None => return Ok(unsupported("START_REPLICATION ... LOGICAL")),
            }
        }
        "BASE_BACKUP" => return Ok(unsupported("BASE_BACKUP")),
        "CREATE_REPLICATION_SLOT" => return Ok(unsupported("CREATE_REPLICATION_SLOT")),
        "DROP_REPLICATION_SLOT" => return Ok(unsupported("DROP_REPLICATION_SLOT")),
        _ => return Err(CommandError::NotReplicationCommand),
    };
    parser.end()?;
    Ok(command)
}

fn unsupported(command: &'static str) -> ReplicationCommand {
    ReplicationCommand::Unsupported { command }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An identifier or keyword.
    Word { text: String, quoted: bool },
    /// Decimal digits (`UCONST`).
    Number(String),
    /// `X/Y` (`RECPTR`), kept as text until parsed in context.
    RecPtr(String),
    /// `'string'` (`SCONST`).
    String(String),
    /// Any other single character.
    Char(char),
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Word { text, .. } | Token::Number(text) | Token::RecPtr(text) => {
                format!("\"{text}\"")
            }
            Token::String(text) => format!("'{text}'"),
            Token::Char(c) => format!("\"{c}\""),
        }
    }
}

fn syntax(message: impl Into<String>, hint: Option<&'static str>) -> CommandError {
    CommandError::Syntax {
        message: message.into(),
        hint,
    }
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c')
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || !c.is_ascii()
}

fn is_ident_cont(c: char) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == '$'
}

fn tokenize(text: &str) -> Result<Vec<Token>, CommandError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if is_space(c) {
            i += 1;
            continue;
        }
        let (token, next) = if c.is_ascii_hexdigit() {
            lex_number_or_lsn(&chars, i)
        } else {
            None
        }
        .map_or_else(|| lex_other(&chars, i), Ok)?;
        tokens.push(token);
        i = next;
    }
    Ok(tokens)
}

/// `hex+/hex+` or `digit+`, longest match first as flex does; `None` if neither (then the
/// text is an identifier that happens to start with a hex letter).
fn lex_number_or_lsn(chars: &[char], start: usize) -> Option<(Token, usize)> {
    let hex_end = scan(chars, start, |c| c.is_ascii_hexdigit());
    if chars.get(hex_end) == Some(&'/') {
        let lo_end = scan(chars, hex_end + 1, |c| c.is_ascii_hexdigit());
        if lo_end > hex_end + 1 {
            let text: String = chars[start..lo_end].iter().collect();
            return Some((Token::RecPtr(text), lo_end));
        }
    }
    let digit_end = scan(chars, start, |c| c.is_ascii_digit());
    if digit_end > start {
        let text: String = chars[start..digit_end].iter().collect();
        return Some((Token::Number(text), digit_end));
    }
    None
}

fn lex_other(chars: &[char], start: usize) -> Result<(Token, usize), CommandError> {
    let c = chars[start];
    if is_ident_start(c) {
        let end = scan(chars, start, is_ident_cont);
        let text: String = chars[start..end].iter().collect();
        let word = truncate_identifier(text.to_ascii_lowercase());
        return Ok((
            Token::Word {
                text: word,
                quoted: false,
            },
            end,
        ));
    }
    if c == '"' || c == '\'' {
        let (body, end) = lex_quoted(chars, start)?;
        if c == '\'' {
            return Ok((Token::String(body), end));
        }
        if body.is_empty() {
            return Err(syntax("zero-length delimited identifier", None));
        }
        let word = truncate_identifier(body);
        return Ok((
            Token::Word {
                text: word,
                quoted: true,
            },
            end,
        ));
    }
    Ok((Token::Char(c), start + 1))
}

/// A quoted literal starting at `start` (the opening quote); a doubled quote stands for one.
fn lex_quoted(chars: &[char], start: usize) -> Result<(String, usize), CommandError> {
    let quote = chars[start];
    let mut body = String::new();
    let mut i = start + 1;
    loop {
        match chars.get(i) {
            None => return Err(syntax("unterminated quoted string", None)),
            Some(&c) if c == quote => {
                if chars.get(i + 1) == Some(&quote) {
                    body.push(quote);
                    i += 2;
                } else {
                    return Ok((body, i + 1));
                }
            }
            Some(&c) => {
                body.push(c);
                i += 1;
            }
        }
    }
}

fn scan(chars: &[char], start: usize, accept: impl Fn(char) -> bool) -> usize {
    let mut end = start;
    while chars.get(end).is_some_and(|&c| accept(c)) {
        end += 1;
    }
    end
}

/// Cut an identifier to `NAMEDATALEN - 1` bytes on a character boundary.
fn truncate_identifier(mut text: String) -> String {
    if text.len() > MAX_IDENTIFIER_BYTES {
        let mut end = MAX_IDENTIFIER_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).cloned();
        if token.is_some() {
            self.pos += 1;
        }
        token
    }

    fn unexpected(&self, hint: Option<&'static str>) -> CommandError {
        match self.peek() {
            Some(token) => syntax(
                format!("syntax error at or near {}", token.describe()),
                hint,
            ),
            None => syntax("syntax error at end of input", hint),
        }
    }

    /// Consume an unquoted keyword if it is next.
    fn keyword(&mut self, keyword: &str) -> bool {
        let found = matches!(
            self.peek(),
            Some(Token::Word { text, quoted: false }) if text.eq_ignore_ascii_case(keyword)
        );
        if found {
            self.pos += 1;
        }
        found
    }

    fn identifier(&mut self, hint: Option<&'static str>) -> Result<String, CommandError> {
        match self.peek() {
            Some(Token::Word { text, .. }) => {
                let text = text.clone();
                self.pos += 1;
                Ok(text)
            }
            _ => Err(self.unexpected(hint)),
        }
    }

    fn var_name(&mut self, command: &'static str) -> Result<String, CommandError> {
        let hint = match command {
            "SHOW" => Some("The form is SHOW setting_name."),
            _ => None,
        };
        let mut name = self.identifier(hint)?;
        while self.peek() == Some(&Token::Char('.')) {
            self.pos += 1;
            name.push('.');
            name.push_str(&self.identifier(hint)?);
        }
        Ok(name)
    }

    /// `uconst`, which must be a positive 32-bit timeline id.
    fn timeline(&mut self, hint: Option<&'static str>) -> Result<u32, CommandError> {
        let Some(Token::Number(digits)) = self.peek().cloned() else {
            return Err(self.unexpected(hint));
        };
        self.pos += 1;
        match digits.parse::<u32>() {
            Ok(0) => Err(syntax("invalid timeline 0", hint)),
            Ok(timeline) => Ok(timeline),
            Err(_) => Err(syntax(format!("invalid timeline {digits}"), hint)),
        }
    }

    /// After `START_REPLICATION`; `None` for a logical replication request.
    fn start_replication(&mut self) -> Result<Option<ReplicationCommand>, CommandError> {
        let hint = Some(START_REPLICATION_FORM);
        let slot = if self.keyword("SLOT") {
            Some(self.identifier(hint)?)
        } else {
            None
        };
        if self.keyword("LOGICAL") {
            return Ok(None);
        }
        self.keyword("PHYSICAL");
        let Some(Token::RecPtr(text)) = self.peek().cloned() else {
            return Err(self.unexpected(hint));
        };
        self.pos += 1;
        let start: Lsn = text
            .parse()
            .map_err(|_| syntax("invalid streaming start location", hint))?;
        let timeline = if self.keyword("TIMELINE") {
            Some(self.timeline(hint)?)
        } else {
            None
        };
        Ok(Some(ReplicationCommand::StartReplication {
            slot,
            start,
            timeline,
        }))
    }

    /// An optional `;` and then the end of the text.
    fn end(&mut self) -> Result<(), CommandError> {
        if self.peek() == Some(&Token::Char(';')) {
            self.pos += 1;
        }
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.unexpected(None)),
        }
    }
}

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
