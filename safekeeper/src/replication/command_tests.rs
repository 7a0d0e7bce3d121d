use super::*;

fn check(text: &str, expected: ReplicationCommand) {
    assert_eq!(parse_command(text), Ok(expected), "{text:?}");
}

fn check_syntax_error(text: &str, needle: &str) {
    match parse_command(text) {
        Err(CommandError::Syntax { message, .. }) => {
            assert!(
                message.contains(needle),
                "{text:?}: {message:?} lacks {needle:?}"
            )
        }
        other => panic!("{text:?}: expected a syntax error, got {other:?}"),
    }
}

fn start(slot: Option<&str>, lsn: u64, timeline: Option<u32>) -> ReplicationCommand {
    ReplicationCommand::StartReplication {
        slot: slot.map(str::to_owned),
        start: Lsn(lsn),
        timeline,
    }
}

#[test]
fn commands_pg_receivewal_sends() {
    // streamutil.c and receivelog.c, verbatim.
    check("IDENTIFY_SYSTEM", ReplicationCommand::IdentifySystem);
    check(
        "SHOW wal_segment_size",
        ReplicationCommand::Show {
            name: "wal_segment_size".into(),
        },
    );
    check(
        "SHOW data_directory_mode",
        ReplicationCommand::Show {
            name: "data_directory_mode".into(),
        },
    );
    check(
        "READ_REPLICATION_SLOT myslot",
        ReplicationCommand::ReadReplicationSlot {
            slot: "myslot".into(),
        },
    );
    check(
        "TIMELINE_HISTORY 2",
        ReplicationCommand::TimelineHistory { timeline: 2 },
    );
    check(
        "START_REPLICATION 0/1000000 TIMELINE 1",
        start(None, 0x100_0000, Some(1)),
    );
    check(
        "START_REPLICATION SLOT \"my slot\" 1A/2B000000 TIMELINE 1",
        start(Some("my slot"), 0x1A_2B00_0000, Some(1)),
    );
}

#[test]
fn commands_a_walreceiver_sends() {
    // libpqwalreceiver.c: IDENTIFY_SYSTEM, then START_REPLICATION [SLOT "s"] X/Y TIMELINE n.
    check("IDENTIFY_SYSTEM", ReplicationCommand::IdentifySystem);
    check(
        "START_REPLICATION 0/3000000 TIMELINE 1",
        start(None, 0x300_0000, Some(1)),
    );
    check(
        "START_REPLICATION SLOT \"standby_1\" 0/3000000 TIMELINE 1",
        start(Some("standby_1"), 0x300_0000, Some(1)),
    );
}

#[test]
fn optional_parts_whitespace_semicolon_and_case() {
    check("START_REPLICATION PHYSICAL 0/0", start(None, 0, None));
    check(
        "START_REPLICATION SLOT s PHYSICAL FFFFFFFF/FFFFFFFF TIMELINE 4294967295",
        start(Some("s"), u64::MAX, Some(u32::MAX)),
    );
    check(
        " \t\nIDENTIFY_SYSTEM ;\r\n",
        ReplicationCommand::IdentifySystem,
    );
    check("IDENTIFY_SYSTEM;", ReplicationCommand::IdentifySystem);
    // Keywords in any case (PostgreSQL knows them only in upper case).
    check("identify_system", ReplicationCommand::IdentifySystem);
    check(
        "start_replication slot S physical 0/1a timeline 1",
        start(Some("s"), 0x1A, Some(1)),
    );
    // Unquoted identifiers fold to lower case; quoted ones keep case, spaces and "".
    check(
        "SHOW WAL_Segment_Size",
        ReplicationCommand::Show {
            name: "wal_segment_size".into(),
        },
    );
    check(
        "READ_REPLICATION_SLOT \"Mixed\"\"Case\"",
        ReplicationCommand::ReadReplicationSlot {
            slot: "Mixed\"Case".into(),
        },
    );
    check(
        "SHOW a.b.\"C\"",
        ReplicationCommand::Show {
            name: "a.b.C".into(),
        },
    );
    // A slot may be named like a keyword.
    check(
        "START_REPLICATION SLOT slot 0/10",
        start(Some("slot"), 0x10, None),
    );
    check(
        "START_REPLICATION SLOT \"PHYSICAL\" PHYSICAL 0/10",
        start(Some("PHYSICAL"), 0x10, None),
    );
    // Identifiers are cut at 63 bytes.
    let long = "x".repeat(100);
    check(
        &format!("READ_REPLICATION_SLOT {long}"),
        ReplicationCommand::ReadReplicationSlot {
            slot: "x".repeat(63),
        },
    );
    let multibyte = "é".repeat(40);
    let ReplicationCommand::ReadReplicationSlot { slot } =
        parse_command(&format!("READ_REPLICATION_SLOT {multibyte}")).unwrap()
    else {
        panic!("not READ_REPLICATION_SLOT");
    };
    assert_eq!(slot, "é".repeat(31));
}

#[test]
fn unsupported_replication_commands_are_recognised() {
    for (text, command) in [
        ("BASE_BACKUP (LABEL 'x')", "BASE_BACKUP"),
        (
            "CREATE_REPLICATION_SLOT s PHYSICAL RESERVE_WAL",
            "CREATE_REPLICATION_SLOT",
        ),
        ("DROP_REPLICATION_SLOT s WAIT", "DROP_REPLICATION_SLOT"),
        (
            "START_REPLICATION SLOT s LOGICAL 0/0 (proto_version '1')",
            "START_REPLICATION ... LOGICAL",
        ),
    ] {
        check(text, ReplicationCommand::Unsupported { command });
    }
}

#[test]
fn sql_and_empty_queries_are_not_replication_commands() {
    for text in [
        "",
        "   ",
        ";",
        "SELECT 1",
        "select pg_current_wal_lsn()",
        "\"IDENTIFY_SYSTEM\"",
        "0/0",
        "BEGIN",
    ] {
        assert_eq!(
            parse_command(text),
            Err(CommandError::NotReplicationCommand),
            "{text:?}"
        );
    }
}

#[test]
fn malformed_commands_are_syntax_errors() {
    check_syntax_error("IDENTIFY_SYSTEM extra", "at or near \"extra\"");
    check_syntax_error("IDENTIFY_SYSTEM;;", "at or near \";\"");
    check_syntax_error("SHOW", "at end of input");
    check_syntax_error("SHOW 5", "at or near \"5\"");
    check_syntax_error("SHOW a.", "at end of input");
    check_syntax_error("SHOW a b", "at or near \"b\"");
    check_syntax_error("READ_REPLICATION_SLOT", "at end of input");
    check_syntax_error("TIMELINE_HISTORY", "at end of input");
    check_syntax_error("TIMELINE_HISTORY 0", "invalid timeline 0");
    check_syntax_error("TIMELINE_HISTORY 4294967296", "invalid timeline 4294967296");
    check_syntax_error("TIMELINE_HISTORY x", "at or near \"x\"");
    check_syntax_error("START_REPLICATION", "at end of input");
    check_syntax_error("START_REPLICATION SLOT", "at end of input");
    check_syntax_error("START_REPLICATION SLOT s", "at end of input");
    check_syntax_error("START_REPLICATION 12", "at or near \"12\"");
    check_syntax_error("START_REPLICATION 0/", "at or near \"0\"");
    check_syntax_error("START_REPLICATION 0/1 TIMELINE", "at end of input");
    check_syntax_error("START_REPLICATION 0/1 TIMELINE 0", "invalid timeline 0");
    check_syntax_error("START_REPLICATION 0/1 TIMELINE -1", "at or near \"-\"");
    check_syntax_error("START_REPLICATION 0/1 1", "at or near \"1\"");
    check_syntax_error(
        "START_REPLICATION 123456789/0",
        "invalid streaming start location",
    );
    check_syntax_error(
        "START_REPLICATION PHYSICAL PHYSICAL 0/0",
        "at or near \"physical\"",
    );
    check_syntax_error(
        "READ_REPLICATION_SLOT \"unterminated",
        "unterminated quoted string",
    );
    check_syntax_error(
        "READ_REPLICATION_SLOT \"\"",
        "zero-length delimited identifier",
    );
    check_syntax_error("SHOW 'x", "unterminated quoted string");
}

#[test]
fn overlong_queries_are_refused_before_lexing() {
    let text = format!("SHOW {}", "a".repeat(MAX_QUERY_BYTES));
    assert!(matches!(
        parse_command(&text),
        Err(CommandError::TooLong { .. })
    ));
}

#[test]
fn errors_carry_sqlstates() {
    let err: PgError = parse_command("SELECT 1").unwrap_err().into();
    assert_eq!(err.code, sqlstate::FEATURE_NOT_SUPPORTED);
    assert_eq!(
        err.message,
        "cannot execute SQL commands in WAL sender for physical replication"
    );
    let err: PgError = parse_command("START_REPLICATION x").unwrap_err().into();
    assert_eq!(err.code, sqlstate::SYNTAX_ERROR);
    assert!(err
        .hint
        .as_deref()
        .is_some_and(|h| h.contains("START_REPLICATION [SLOT")));
    assert!(!err.is_fatal());
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A cheap deterministic fuzz: every prefix of some tricky texts, and byte soup.
    let samples = [
        "START_REPLICATION SLOT \"a\"\"b\" PHYSICAL 0/1 TIMELINE 1;",
        "SHOW a.b.c.\"d\"",
        "é\"'/0/;ÿ\u{0}\u{7f}",
    ];
    for sample in samples {
        for (i, _) in sample.char_indices() {
            let _ = parse_command(&sample[..i]);
        }
    }
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..2000 {
        let mut text = String::new();
        for _ in 0..(state % 40) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let alphabet = b" \"'/;.0129AFafSLOTxX_\t$";
            text.push(char::from(
                alphabet[(state % alphabet.len() as u64) as usize],
            ));
        }
        let _ = parse_command(&text);
        let _ = parse_command(&format!("START_REPLICATION {text}"));
    }
}
