use super::*;

fn startup_bytes(code: u32, body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u32(u32::try_from(8 + body.len()).unwrap());
    buf.put_u32(code);
    buf.put_slice(body);
    buf
}

fn message_bytes(tag: u8, body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u8(tag);
    buf.put_u32(u32::try_from(4 + body.len()).unwrap());
    buf.put_slice(body);
    buf
}

/// Decoding any prefix yields nothing and consumes nothing; the whole yields `expected`.
fn check_startup(bytes: &[u8], expected: Result<StartupPacket, ProtocolError>) {
    for cut in 0..bytes.len() {
        let mut partial = BytesMut::from(&bytes[..cut]);
        match decode_startup(&mut partial) {
            Ok(None) => assert_eq!(partial.len(), cut),
            // An error may be detected from the length word alone.
            Err(err) => {
                assert_eq!(Err(err), expected.clone().map(Some), "prefix {cut}");
                return;
            }
            Ok(Some(p)) => panic!("decoded {p:?} from a {cut}-byte prefix"),
        }
    }
    let mut whole = BytesMut::from(bytes);
    assert_eq!(decode_startup(&mut whole), expected.map(Some));
}

fn check_message(bytes: &[u8], expected: Result<FrontendMessage, ProtocolError>) {
    for cut in 0..bytes.len() {
        let mut partial = BytesMut::from(&bytes[..cut]);
        match decode_message(&mut partial) {
            Ok(None) => assert_eq!(partial.len(), cut),
            Err(err) => {
                assert_eq!(Err(err), expected.clone().map(Some), "prefix {cut}");
                return;
            }
            Ok(Some(m)) => panic!("decoded {m:?} from a {cut}-byte prefix"),
        }
    }
    let mut whole = BytesMut::from(bytes);
    assert_eq!(decode_message(&mut whole), expected.map(Some));
}

#[test]
fn startup_message_with_parameters() {
    let body = b"user\0x\0database\0replication\0replication\0true\0\0";
    check_startup(
        &startup_bytes(PROTOCOL_3_0, body),
        Ok(StartupPacket::Startup {
            minor_version: 0,
            parameters: vec![
                ("user".into(), "x".into()),
                ("database".into(), "replication".into()),
                ("replication".into(), "true".into()),
            ],
        }),
    );
    check_startup(
        &startup_bytes(PROTOCOL_3_0 | 2, b"user\0x\0\0"),
        Ok(StartupPacket::Startup {
            minor_version: 2,
            parameters: vec![("user".into(), "x".into())],
        }),
    );
}

#[test]
fn encryption_and_cancel_requests() {
    check_startup(
        &startup_bytes(SSL_REQUEST_CODE, b""),
        Ok(StartupPacket::SslRequest),
    );
    check_startup(
        &startup_bytes(GSSENC_REQUEST_CODE, b""),
        Ok(StartupPacket::GssEncRequest),
    );
    check_startup(
        &startup_bytes(CANCEL_REQUEST_CODE, &[0, 0, 0, 7, 0, 0, 1, 0]),
        Ok(StartupPacket::CancelRequest {
            process_id: 7,
            secret_key: 256,
        }),
    );
}

#[test]
fn malformed_startup_packets_are_refused() {
    let truncated = |what| Err(ProtocolError::Truncated { what });
    // Length words out of range, including ones that would need a huge buffer.
    for length in [0u32, 4, 7, 10_001, u32::MAX] {
        let mut buf = BytesMut::new();
        buf.put_u32(length);
        buf.put_u32(PROTOCOL_3_0);
        let err = decode_startup(&mut buf).unwrap_err();
        assert!(
            matches!(err, ProtocolError::BadLength { .. }),
            "{length}: {err}"
        );
    }
    check_startup(
        &startup_bytes(2 << 16, b"\0"),
        Err(ProtocolError::UnsupportedProtocol { major: 2, minor: 0 }),
    );
    check_startup(
        &startup_bytes(PROTOCOL_3_0, b""),
        Err(ProtocolError::BadStartupLayout),
    );
    check_startup(
        &startup_bytes(PROTOCOL_3_0, b"user\0x\0"),
        Err(ProtocolError::BadStartupLayout),
    );
    check_startup(
        &startup_bytes(PROTOCOL_3_0, b"user\0x"),
        Err(ProtocolError::Unterminated {
            what: "startup packet",
        }),
    );
    check_startup(
        &startup_bytes(PROTOCOL_3_0, b"user\0x\0\0junk"),
        Err(ProtocolError::BadStartupLayout),
    );
    check_startup(
        &startup_bytes(PROTOCOL_3_0, b"user\0\xff\xfe\0\0"),
        Err(ProtocolError::InvalidUtf8 {
            what: "startup packet",
        }),
    );
    check_startup(
        &startup_bytes(CANCEL_REQUEST_CODE, &[0, 0, 0, 7]),
        truncated("startup packet"),
    );
    check_startup(
        &startup_bytes(SSL_REQUEST_CODE, b"x"),
        Err(ProtocolError::TrailingBytes {
            what: "startup packet",
            extra: 1,
        }),
    );
    let mut many = Vec::new();
    for i in 0..=MAX_STARTUP_PARAMETERS {
        many.extend_from_slice(format!("p{i}\0v\0").as_bytes());
    }
    many.push(0);
    check_startup(
        &startup_bytes(PROTOCOL_3_0, &many),
        Err(ProtocolError::TooManyParameters {
            max: MAX_STARTUP_PARAMETERS,
        }),
    );
}

#[test]
fn regular_messages() {
    check_message(
        &message_bytes(b'Q', b"IDENTIFY_SYSTEM\0"),
        Ok(FrontendMessage::Query("IDENTIFY_SYSTEM".into())),
    );
    check_message(&message_bytes(b'X', b""), Ok(FrontendMessage::Terminate));
    check_message(&message_bytes(b'c', b""), Ok(FrontendMessage::CopyDone));
    check_message(
        &message_bytes(b'f', b"oops\0"),
        Ok(FrontendMessage::CopyFail("oops".into())),
    );
    check_message(
        &message_bytes(b'd', b"r123"),
        Ok(FrontendMessage::CopyData(Bytes::from_static(b"r123"))),
    );
    check_message(
        &message_bytes(b'P', b"\0SELECT 1\0\0\0"),
        Ok(FrontendMessage::Unsupported('P')),
    );
}

#[test]
fn two_messages_in_one_buffer_decode_one_at_a_time() {
    let mut buf = message_bytes(b'Q', b"SHOW wal_segment_size\0");
    buf.extend_from_slice(&message_bytes(b'X', b""));
    assert_eq!(
        decode_message(&mut buf),
        Ok(Some(FrontendMessage::Query("SHOW wal_segment_size".into())))
    );
    assert_eq!(
        decode_message(&mut buf),
        Ok(Some(FrontendMessage::Terminate))
    );
    assert_eq!(decode_message(&mut buf), Ok(None));
    assert!(buf.is_empty());
}

#[test]
fn malformed_messages_are_refused() {
    for length in [
        0u32,
        3,
        u32::try_from(MAX_FRONTEND_MESSAGE_BYTES).unwrap() + 1,
        u32::MAX,
    ] {
        let mut buf = BytesMut::new();
        buf.put_u8(b'Q');
        buf.put_u32(length);
        let err = decode_message(&mut buf).unwrap_err();
        assert!(
            matches!(err, ProtocolError::BadLength { .. }),
            "{length}: {err}"
        );
    }
    check_message(
        &message_bytes(b'Q', b"no terminator"),
        Err(ProtocolError::Unterminated { what: "Query" }),
    );
    check_message(
        &message_bytes(b'Q', b"a\0b\0"),
        Err(ProtocolError::TrailingBytes {
            what: "Query",
            extra: 2,
        }),
    );
    check_message(
        &message_bytes(b'X', b"x"),
        Err(ProtocolError::TrailingBytes {
            what: "Terminate",
            extra: 1,
        }),
    );
    check_message(
        &message_bytes(b'Q', b"\xc3\x28\0"),
        Err(ProtocolError::InvalidUtf8 { what: "Query" }),
    );
    check_message(
        &message_bytes(b'!', b""),
        Err(ProtocolError::UnknownMessageType { tag: '!' }),
    );
    check_message(
        &message_bytes(0, b""),
        Err(ProtocolError::UnknownMessageType { tag: '\0' }),
    );
}

fn reply_bytes(reply_requested: u8) -> Vec<u8> {
    let mut buf = vec![b'r'];
    buf.extend_from_slice(&0x100_0000u64.to_be_bytes());
    buf.extend_from_slice(&0x0F0_0000u64.to_be_bytes());
    buf.extend_from_slice(&0u64.to_be_bytes());
    buf.extend_from_slice(&42i64.to_be_bytes());
    buf.push(reply_requested);
    buf
}

#[test]
fn standby_status_update_and_hot_standby_feedback() {
    assert_eq!(
        parse_standby_message(&reply_bytes(1)),
        Ok(StandbyMessage::Reply {
            write_lsn: Lsn(0x100_0000),
            flush_lsn: Lsn(0x0F0_0000),
            apply_lsn: Lsn(0),
            send_time: 42,
            reply_requested: true,
        })
    );
    let mut feedback = vec![b'h'];
    feedback.extend_from_slice(&7i64.to_be_bytes());
    for v in [100u32, 0, 90, 0] {
        feedback.extend_from_slice(&v.to_be_bytes());
    }
    assert_eq!(
        parse_standby_message(&feedback),
        Ok(StandbyMessage::HotStandbyFeedback {
            send_time: 7,
            xmin: 100,
            xmin_epoch: 0,
            catalog_xmin: 90,
            catalog_xmin_epoch: 0,
        })
    );
}

#[test]
fn malformed_standby_messages_are_refused() {
    let reply = reply_bytes(0);
    for cut in 0..reply.len() {
        assert!(
            parse_standby_message(&reply[..cut]).is_err(),
            "prefix {cut}"
        );
    }
    let mut long = reply.clone();
    long.push(0);
    assert!(parse_standby_message(&long).is_err());
    assert!(parse_standby_message(b"z1234").is_err());
    assert!(parse_standby_message(b"h").is_err());
}

/// Splits encoded backend messages into (type, body) pairs, checking every length word.
fn split_backend(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some((&tag, rest)) = bytes.split_first() {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        out.push((tag, rest[4..len].to_vec()));
        bytes = &rest[len..];
    }
    out
}

#[test]
fn backend_messages_encode_as_postgresql_does() {
    let mut w = BackendWriter::new();
    w.authentication_ok();
    w.parameter_status("integer_datetimes", "on");
    w.backend_key_data(1, 2);
    w.ready_for_query();
    w.command_complete("SHOW");
    w.copy_both_response();
    w.copy_done();
    let messages = split_backend(&w.buf);
    assert_eq!(
        messages,
        vec![
            (b'R', vec![0, 0, 0, 0]),
            (b'S', b"integer_datetimes\0on\0".to_vec()),
            (b'K', vec![0, 0, 0, 1, 0, 0, 0, 2]),
            (b'Z', b"I".to_vec()),
            (b'C', b"SHOW\0".to_vec()),
            (b'W', vec![0, 0, 0]),
            (b'c', vec![]),
        ]
    );
}

#[test]
fn row_description_and_data_row() {
    let mut w = BackendWriter::new();
    w.row_description(&[
        Column::text("systemid"),
        Column {
            name: "timeline",
            type_oid: INT4_OID,
        },
    ]);
    w.data_row(&[Some("123"), None]);
    let messages = split_backend(&w.buf);
    let mut expected_t = vec![0, 2];
    expected_t.extend_from_slice(b"systemid\0");
    expected_t.extend_from_slice(&[
        0, 0, 0, 0, 0, 0, 0, 0, 0, 25, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0,
    ]);
    expected_t.extend_from_slice(b"timeline\0");
    expected_t.extend_from_slice(&[
        0, 0, 0, 0, 0, 0, 0, 0, 0, 23, 0, 4, 0xff, 0xff, 0xff, 0xff, 0, 0,
    ]);
    assert_eq!(messages[0], (b'T', expected_t));
    assert_eq!(
        messages[1],
        (
            b'D',
            vec![0, 2, 0, 0, 0, 3, b'1', b'2', b'3', 0xff, 0xff, 0xff, 0xff]
        )
    );
}

#[test]
fn error_response_fields() {
    let mut w = BackendWriter::new();
    let err = PgError::error("42601", "syntax error\0 here").with_hint("try again");
    w.error_response(&err);
    let messages = split_backend(&w.buf);
    assert_eq!(
        messages,
        vec![(
            b'E',
            b"SERROR\0VERROR\0C42601\0Msyntax error here\0Htry again\0\0".to_vec()
        )]
    );
    let mut w = BackendWriter::new();
    w.error_response(&PgError::fatal("08P01", "x".repeat(5000)));
    let (_, body) = &split_backend(&w.buf)[0];
    assert!(body.len() < MAX_ERROR_MESSAGE_BYTES + 64);
}

#[test]
fn xlog_data_and_keepalive_layout() {
    let mut w = BackendWriter::new();
    w.xlog_data(Lsn(0x100_0000), Lsn(0x100_0100), 5, b"wal");
    w.keepalive(Lsn(0x100_0003), 6, true);
    let messages = split_backend(&w.buf);
    let mut xlog = vec![b'w'];
    xlog.extend_from_slice(&0x100_0000u64.to_be_bytes());
    xlog.extend_from_slice(&0x100_0100u64.to_be_bytes());
    xlog.extend_from_slice(&5i64.to_be_bytes());
    xlog.extend_from_slice(b"wal");
    let mut keepalive = vec![b'k'];
    keepalive.extend_from_slice(&0x100_0003u64.to_be_bytes());
    keepalive.extend_from_slice(&6i64.to_be_bytes());
    keepalive.push(1);
    assert_eq!(messages, vec![(b'd', xlog), (b'd', keepalive)]);
}

#[test]
fn negotiate_protocol_version_lists_unknown_options() {
    let mut w = BackendWriter::new();
    w.negotiate_protocol_version(&["_pq_.x".to_string()]);
    let messages = split_backend(&w.buf);
    assert_eq!(
        messages,
        vec![(b'v', b"\0\x03\0\0\0\0\0\x01_pq_.x\0".to_vec())]
    );
}

#[test]
fn pg_timestamps_count_from_2000() {
    let now = pg_now();
    // 2024-01-01 is 24 years after the PostgreSQL epoch.
    assert!(now > 24 * 365 * 86_400 * 1_000_000, "{now}");
}
